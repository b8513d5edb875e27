"""Shared fixtures.

Integration tests run against real servers: the PostgreSQL and Redis named by
``CALLMESH_TEST_PG_ADMIN`` / ``CALLMESH_TEST_REDIS_URL`` (default: the ones on 127.0.0.1), and
the embedded default. Each test session gets its own database and its own Redis key prefix, so
several sessions can run side by side on one machine. A fixture that needs those servers asks
for ``require_servers`` first: if either does not answer, its tests fail with one sentence
saying so, and unit tests (``pytest -m unit``) never ask.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from services.db import create_pool, migrate
from services.demo import load_demo_data
from services.kv import create_redis
from services.settings import Settings

CATEGORIES = ("unit", "integration", "e2e")
PG_ADMIN = os.environ.get("CALLMESH_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CALLMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SERVER_CHECK_TIMEOUT_SECONDS = 5.0
# How to start each, as the README's "make test needs ..." says and .ci/run does.
START_POSTGRES = (
    "PostgreSQL on 127.0.0.1:5432, user postgres, trust: `pg_ctlcluster <version> main start`"
)
START_REDIS = "Redis on 127.0.0.1:6379: `redis-server --daemonize yes --bind 127.0.0.1 --port 6379`"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = sorted(
        {
            item.module.__name__
            for item in items
            if item.module is not None and not any(item.get_closest_marker(c) for c in CATEGORIES)
        }
    )
    if missing:
        raise pytest.UsageError(
            "every test module declares its category with pytestmark = pytest.mark.unit "
            f"(or integration, e2e); missing in: {', '.join(missing)}"
        )


@pytest.fixture(autouse=True)
def _unit_tests_start_no_ray(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    if request.node.get_closest_marker("unit"):
        try:
            import ray
        except ImportError:  # pragma: no cover
            return

        def refuse(*args: object, **kwargs: object) -> None:
            raise RuntimeError("unit tests must not start Ray; mark the module integration")

        monkeypatch.setattr(ray, "init", refuse)


def _masked(url: str) -> str:
    """``url`` without its password, if it has one."""
    return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)


async def _unanswered_servers() -> list[tuple[str, str, str]]:
    """For each server of ``PG_ADMIN`` / ``REDIS_URL`` that does not answer: what is missing
    and where it was looked for, how to start it, and the variable naming it."""
    missing = []
    try:
        conn = await asyncpg.connect(PG_ADMIN, timeout=SERVER_CHECK_TIMEOUT_SECONDS)
    except Exception as exc:  # whatever the reason, the tests cannot use it
        var = "CALLMESH_TEST_PG_ADMIN"
        where = f"{_masked(PG_ADMIN)} ({var}; {type(exc).__name__})"
        missing.append((f"no PostgreSQL answered at {where}", START_POSTGRES, var))
    else:
        await conn.close()
    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=SERVER_CHECK_TIMEOUT_SECONDS)
    try:
        await client.ping()
    except Exception as exc:
        var = "CALLMESH_TEST_REDIS_URL"
        where = f"{_masked(REDIS_URL)} ({var}; {type(exc).__name__})"
        missing.append((f"no Redis answered at {where}", START_REDIS, var))
    finally:
        await client.aclose()
    return missing


@pytest.fixture(scope="session")
def require_servers() -> None:
    """Fails, once for the session and with one sentence, every test that needs the
    PostgreSQL and Redis servers when either does not answer (instead of a traceback per
    connection). Ask for it before connecting to them."""
    # Not an async fixture: `stores` asks for it from inside the running event loop, where
    # pytest-asyncio cannot run another; the check runs on a loop of its own in a thread.
    with ThreadPoolExecutor(max_workers=1) as thread:
        missing = thread.submit(asyncio.run, _unanswered_servers()).result()
    if missing:
        what = " and ".join(m for m, _, _ in missing)
        how = "; ".join(h for _, h, _ in missing)
        them, ones = ("them", "running ones") if len(missing) > 1 else ("it", "a running one")
        names = " / ".join(v for _, _, v in missing)
        pytest.fail(
            f"These tests need a PostgreSQL and a Redis server, but {what}: start {them} as "
            f".ci/run does ({how}), or name {ones} in {names}; "
            "`pytest -m unit` needs neither.",
            pytrace=False,
        )


@dataclass
class Stores:
    """One backend's PostgreSQL pool and Redis client, set up for a test session."""

    kind: str
    database_url: str
    redis_url: str
    prefix: str
    pool: asyncpg.Pool
    redis: aioredis.Redis

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "redis_prefix": self.prefix,
            "environment": "test",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    async def flush_redis(self) -> None:
        """Lose every key of this session, as a Redis restart or FLUSHALL would."""
        async for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000):
            await self.redis.delete(key)

    async def reset(self) -> None:
        """Empty every table, reload the demo data, and drop this session's Redis keys."""
        async with self.pool.acquire() as conn:
            tables = await conn.fetch(
                """SELECT tablename FROM pg_tables
                    WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"""
            )
            if tables:
                names = ", ".join(f'"{t["tablename"]}"' for t in tables)
                await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
            await load_demo_data(conn)
        await self.flush_redis()


async def _server_stores() -> tuple[Stores, object]:
    name = f"callmesh_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    return await _open("server", dsn, REDIS_URL), name


async def _drop_database(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _open(kind: str, dsn: str, redis_url: str) -> Stores:
    # Races of hundreds of callers share these 20 connections on a busy machine; the bounded
    # acquire (5 s in production) is tested on pools of its own (test_store_down.py).
    pool = await create_pool(dsn, min_size=2, max_size=20, acquire_timeout=60)
    await migrate(pool)
    prefix = f"t{secrets.token_hex(4)}"
    stores = Stores(kind, dsn, redis_url, prefix, pool, create_redis(redis_url))
    await stores.reset()
    return stores


@pytest.fixture(scope="session")
def embedded_dir() -> Iterator[Path]:
    # Short path: unix socket paths are limited to about 100 bytes.
    path = Path(tempfile.mkdtemp(prefix="cmt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", params=["server", "embedded"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    """Both kinds of backend: tests using this run once against each."""
    if request.param == "server":
        request.getfixturevalue("require_servers")
        s, name = await _server_stores()
        yield s
        await s.redis.aclose()
        await s.pool.close()
        await _drop_database(str(name))
        return
    from services.embedded import EmbeddedStores

    data_dir: Path = request.getfixturevalue("embedded_dir")
    embedded = EmbeddedStores(data_dir)
    dsn, redis_url = await asyncio.to_thread(embedded.start)
    s = await _open("embedded", dsn, redis_url)
    yield s
    await s.redis.aclose()
    await s.pool.close()
    await asyncio.to_thread(embedded.stop)


@pytest.fixture
async def fresh(stores: Stores) -> Stores:
    """The backend with demo data only: each test starts from the same state."""
    await stores.reset()
    return stores
