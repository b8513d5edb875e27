"""The stores one replica talks to: its own asyncpg pool and Redis client, opened from the one
:class:`~services.settings.Settings` and closed when the replica stops.

Storage is resolved once, where the applications are built (``callmesh up``, ``serve run``,
the test session): with no ``DATABASE_URL`` / ``REDIS_URL`` the embedded servers are started
under the data folder and their URLs are written into the settings each replica receives, so
replicas never race to start servers of their own.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from services.db import create_pool
from services.kv import create_redis
from services.settings import Settings

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 2.0


def resolve_storage(settings: Settings) -> Settings:
    """Settings naming real servers: the configured ones, else the embedded default (started
    here if it is not running). The data folder becomes absolute, since replicas run in
    other working directories."""
    data_dir = settings.data_dir.expanduser().resolve()
    if not settings.uses_embedded_storage:
        return settings.model_copy(update={"data_dir": data_dir})
    from services.embedded import EmbeddedStores

    data_dir.mkdir(parents=True, exist_ok=True)
    # Two builders starting the servers at once (serve deploy builds apps in parallel) would
    # both find them stopped; a lock file in the data folder serialises them.
    with (data_dir / "embedded.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        database_url, redis_url = EmbeddedStores(data_dir).start()
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "database_url": settings.database_url or database_url,
            "redis_url": settings.redis_url or redis_url,
        }
    )


async def prepare_database(settings: Settings, *, load_demo: bool) -> None:
    """Migrate (safe from many processes at once), and load the demo data into an empty
    database if asked."""
    from services.db import migrate
    from services.demo import database_is_empty, load_demo_data

    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        applied = await migrate(pool)
        if applied:
            log.info("applied migrations", extra={"versions": applied})
        if load_demo:
            async with pool.acquire() as conn:
                if await database_is_empty(conn):
                    await load_demo_data(conn)
                    log.info("loaded demo data")
    finally:
        await pool.close()


@dataclass
class Backends:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis

    @classmethod
    async def open(cls, settings: Settings) -> Backends:
        if settings.database_url is None or settings.redis_url is None:
            raise ValueError("resolve_storage(settings) before opening backends in a replica")
        pool = await create_pool(
            settings.database_url,
            min_size=settings.pg_pool_min,
            max_size=settings.pg_pool_max,
            acquire_timeout=settings.pg_acquire_timeout_seconds,
        )
        return cls(settings=settings, pool=pool, redis=create_redis(settings.redis_url))

    async def close(self) -> None:
        await self.redis.aclose()
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except TimeoutError:
            self.pool.terminate()

    async def health(self) -> dict[str, str]:
        """``{"postgres": "ok" | "down", "redis": "ok" | "down"}``."""
        postgres, redis = await asyncio.gather(self._postgres_ok(), self._redis_ok())
        return {"postgres": "ok" if postgres else "down", "redis": "ok" if redis else "down"}

    async def _postgres_ok(self) -> bool:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                return bool(await self.pool.fetchval("SELECT 1") == 1)
        except Exception:  # any failure means "down"; the reason goes to the log
            log.warning("postgres health check failed", exc_info=True)
            return False

    async def _redis_ok(self) -> bool:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                return bool(await self.redis.ping())
        except Exception:
            log.warning("redis health check failed", exc_info=True)
            return False
