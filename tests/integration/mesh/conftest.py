"""One real Ray Serve mesh per test session, over real HTTP.

Ray starts once (it takes seconds on two cores), with the throughput flags the mesh ships
with, every application deployed against this session's own PostgreSQL database and Redis key
prefix, and an API token set so the 401 path is real. Tests talk to it only through HTTP.
As under `callmesh up`, HAProxy's files live in a private folder and its access log reaches
``<data_dir>/logs/haproxy-access.log`` through the masking relay (``Mesh.haproxy``).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from deployments.haproxy_files import HAProxyFiles
from services.db import create_pool, migrate
from services.demo import load_demo_data
from services.kv import create_redis
from services.settings import Settings

PG_ADMIN = os.environ.get("CALLMESH_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CALLMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
API_TOKEN = f"test-{secrets.token_hex(16)}"
API_HOST = "127.0.0.1"
THROUGHPUT_FLAGS = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# Direct-ingress replicas drain 30 s on shutdown so HAProxy can stop routing to them; a test
# session ends with no traffic in flight.
FAST_SHUTDOWN = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}


@dataclass
class MeshDb:
    database_url: str
    name: str
    prefix: str
    pool: asyncpg.Pool
    redis: aioredis.Redis


@dataclass
class Mesh:
    url: str
    settings: Settings
    db: MeshDb
    haproxy: HAProxyFiles


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((API_HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
async def mesh_db(require_servers: None) -> AsyncIterator[MeshDb]:
    name = f"callmesh_mesh_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    pool = await create_pool(dsn, min_size=1, max_size=10)
    await migrate(pool)
    async with pool.acquire() as conn:
        await load_demo_data(conn)
    db = MeshDb(dsn, name, f"m{secrets.token_hex(4)}", pool, create_redis(REDIS_URL))
    yield db
    async for key in db.redis.scan_iter(match=f"{db.prefix}:*", count=1000):
        await db.redis.delete(key)
    await db.redis.aclose()
    await pool.close()
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def mesh(mesh_db: MeshDb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    # Set before Ray starts: its processes inherit this environment.
    os.environ.update(THROUGHPUT_FLAGS)
    os.environ.update(FAST_SHUTDOWN)
    import ray
    from ray import serve

    from deployments.applications import mesh_applications
    from deployments.haproxy_files import private_haproxy
    from deployments.local_ray import init_local_ray

    settings = Settings(
        database_url=mesh_db.database_url,
        redis_url=REDIS_URL,
        redis_prefix=mesh_db.prefix,
        environment="test",
        api_token=API_TOKEN,  # type: ignore[arg-type]
        data_dir=tmp_path_factory.mktemp("mesh"),
        pg_pool_min=1,
        pg_pool_max=4,
    )
    port = _free_port()
    # HAProxy's folder and access log relay, as `callmesh up` sets them up: before Ray starts,
    # gone after it stopped.
    with private_haproxy(settings.data_dir) as haproxy:
        # A new local cluster bound to 127.0.0.1, as `callmesh up` starts it: never one found
        # through RAY_ADDRESS, which the serve.shutdown() below would otherwise stop.
        init_local_ray(
            API_HOST, num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="serve"
        )
        try:
            haproxy.prepare_node(ray.get_runtime_context().get_node_id())
            serve.start(http_options={"host": API_HOST, "port": port})
            for app in mesh_applications(settings):
                serve.run(app.app, name=app.name, route_prefix=app.route_prefix)
            yield Mesh(
                url=f"http://{API_HOST}:{port}", settings=settings, db=mesh_db, haproxy=haproxy
            )
        finally:
            serve.shutdown()
            ray.shutdown()


@pytest.fixture(scope="session")
async def client(mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that sends the session's bearer token."""
    async with httpx.AsyncClient(
        base_url=mesh.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
    ) as c:
        yield c


@pytest.fixture(scope="session")
async def anonymous(mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client without a token."""
    async with httpx.AsyncClient(base_url=mesh.url, timeout=30) as c:
        yield c
