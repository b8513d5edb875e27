"""What the write limits cost one request, in process against the real Redis: the window
limiter's script, and a hold with and without the call's hold quota, interleaved in one run.

    python -m loadtest.bench_limits --rounds 2000

Sequential (one request at a time), so the figure is the added latency of each round trip,
not a throughput: compare the rows of one run as ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from datetime import datetime, timedelta

import asyncpg

from services.db import create_pool, migrate
from services.demo import load_demo_data
from services.inventory import HoldRequest, InventoryService
from services.kv import create_redis
from services.ratelimit import WriteLimiter
from services.settings import Settings

PG_ADMIN = os.environ.get(
    "CALLMESH_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


async def _timed(fn, rounds: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(rounds):
        t0 = time.perf_counter()
        await fn(i)
        out.append(time.perf_counter() - t0)
    return out


def _row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    return f"{name:34s} median {statistics.median(samples) * 1e6:8.1f} us  p99 {p99 * 1e6:8.1f} us"


async def main(rounds: int) -> None:
    name = f"callmesh_limits_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    prefix = f"lim{secrets.token_hex(4)}"
    pool = await create_pool(dsn, min_size=1, max_size=4)
    redis = create_redis(REDIS_URL)
    try:
        await migrate(pool)
        async with pool.acquire() as conn:
            await load_demo_data(conn)
        base = Settings(
            environment="test", database_url=dsn, redis_url=REDIS_URL, redis_prefix=prefix
        )
        limiter = WriteLimiter.from_settings(redis, base)
        plain = InventoryService(
            pool=pool, redis=redis, settings=base.model_copy(update={"max_holds_per_call": 0})
        )
        quota = InventoryService(
            pool=pool,
            redis=redis,
            settings=base.model_copy(update={"max_holds_per_call": 1_000_000}),
        )
        today = datetime.now(base.tz).date()

        def hold(svc: InventoryService, unit: str):  # type: ignore[no-untyped-def]
            async def one(i: int) -> None:
                day = today + timedelta(days=1 + i % 360)
                await svc.create_hold(
                    HoldRequest(unit_id=f"{unit}", start=day.isoformat(), call_id=f"c{i}")
                )

            return one

        async def ping(i: int) -> None:
            await redis.ping()

        async def admit(i: int) -> None:
            await limiter.admit(client="bench", call_id=f"c{i % 50}")

        rows: dict[str, list[float]] = {}
        # Interleaved in chunks so a noisy neighbour hits every row alike.
        for _chunk in range(10):
            n = rounds // 10
            for label, fn in (
                ("redis PING (one round trip)", ping),
                ("window limiter, token + call", admit),
                ("hold, quota off", hold(plain, "GEN-701")),
                ("hold, quota on", hold(quota, "GEN-702")),
            ):
                rows.setdefault(label, []).extend(await _timed(fn, n))
            await redis.delete(*[k async for k in redis.scan_iter(match=f"{prefix}:*")])
        for label, samples in rows.items():
            print(_row(label, samples))
    finally:
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()
        await pool.close()
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    asyncio.run(main(parser.parse_args().rounds))
