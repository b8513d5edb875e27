"""The stores one replica talks to: its own asyncpg pool and Redis client, opened from the one
:class:`~services.settings.Settings` and closed when the replica stops.

The settings name running servers by then (:func:`deployments.store_setup.resolve_storage`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from services.db import create_pool
from services.kv import create_redis
from services.settings import Settings

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 2.0


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
