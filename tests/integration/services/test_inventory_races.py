"""Many callers racing for one unit: coroutines in one process, and several OS processes.

The requested ranges form blocks of pairwise-overlapping ranges (every range of a block covers
the block's middle day) and the blocks are disjoint, so however the race is ordered exactly one
request per block can win: the feasible number of winners is the size of a largest set of
pairwise-disjoint requested ranges, computed below, and it must be exactly the number who win.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.errors import Unavailable
from services.inventory import HoldRequest, InventoryService
from services.settings import Settings

pytestmark = pytest.mark.integration

UNIT = "GEN-701"  # requires nothing, so every winner confirms without verification
BLOCKS = 4
FIRST_DAY = 40  # days from today


def requested_range(i: int) -> tuple[int, int]:
    """The i-th caller's rental as day offsets [start, end): block i % 4, starting on one of
    the block's first three days and returning on its fourth or fifth."""
    base = FIRST_DAY + 5 * (i % BLOCKS)
    start = base + (i // BLOCKS) % 3
    end = base + 3 + (i // (BLOCKS * 3)) % 2
    return start, end


def feasible_winners(ranges: list[tuple[int, int]]) -> int:
    """The most pairwise-disjoint half-open ranges (earliest end first is optimal)."""
    count, free_from = 0, -(10**9)
    for start, end in sorted(set(ranges), key=lambda r: r[1]):
        if start >= free_from:
            count, free_from = count + 1, end
    return count


async def attempt(svc: InventoryService, i: int, today: date) -> str:
    start, end = requested_range(i)
    request = HoldRequest(
        unit_id=UNIT,
        start=(today + timedelta(days=start)).isoformat(),
        end=(today + timedelta(days=end)).isoformat(),
        call_id=f"race-{i}",
    )
    try:
        hold = await svc.create_hold(request)
        await svc.confirm_hold(hold.hold_id)
    except Unavailable:
        return "conflict"
    return "won"


async def _bookings_and_overlaps(pool: asyncpg.Pool) -> tuple[int, int, int]:
    return (
        await pool.fetchval("SELECT count(*) FROM bookings WHERE status = 'confirmed'"),
        await pool.fetchval("SELECT count(*) FROM rentals"),
        await pool.fetchval(
            """SELECT count(*) FROM bookings a JOIN bookings b
                 ON a.resource_id = b.resource_id AND a.booking_id < b.booking_id
                AND a.during && b.during
              WHERE a.status = 'confirmed' AND b.status = 'confirmed'"""
        ),
    )


async def test_200_coroutines_race_for_overlapping_days(fresh):
    settings = fresh.settings()
    svc = InventoryService(pool=fresh.pool, redis=fresh.redis, settings=settings)
    today = datetime.now(settings.tz).date()
    n = 200
    feasible = feasible_winners([requested_range(i) for i in range(n)])
    assert feasible == BLOCKS

    results = Counter(await asyncio.gather(*(attempt(svc, i, today) for i in range(n))))

    tally = f"[{fresh.kind}] 200 coroutines: {dict(results)} (feasible {feasible})"
    print("\n" + tally)
    assert results == {"won": feasible, "conflict": n - feasible}, tally
    assert await _bookings_and_overlaps(fresh.pool) == (feasible, feasible, 0)


# -- several OS processes -----------------------------------------------------------------------


def _race_in_process(
    database_url: str,
    redis_url: str,
    prefix: str,
    indexes: list[int],
    barrier: Any,
    results: Any,
) -> None:
    """Runs in a spawned process: its own pool, Redis client and service."""
    results.put(asyncio.run(_race(database_url, redis_url, prefix, indexes, barrier)))


async def _race(
    database_url: str, redis_url: str, prefix: str, indexes: list[int], barrier: Any
) -> dict[str, int]:
    from services.db import create_pool
    from services.kv import create_redis

    settings = Settings(
        database_url=database_url, redis_url=redis_url, redis_prefix=prefix, environment="test"
    )
    # A race of many callers, not a bound on waiting (tested in test_store_down.py).
    pool = await create_pool(database_url, min_size=2, max_size=10, acquire_timeout=60)
    redis = create_redis(redis_url)
    try:
        svc = InventoryService(pool=pool, redis=redis, settings=settings)
        await svc.get_unit(UNIT)  # warm the unit cache and the connections before the start
        await redis.ping()
        today = datetime.now(settings.tz).date()
        await asyncio.to_thread(barrier.wait, 60)
        outcomes = await asyncio.gather(
            *(attempt(svc, i, today) for i in indexes), return_exceptions=True
        )
        counts = Counter(o if isinstance(o, str) else type(o).__name__ for o in outcomes)
        return dict(counts)
    finally:
        await redis.aclose()
        await pool.close()


def _importable_from_a_spawned_process() -> None:
    # A spawned child unpickles the target by module name; put the folder that makes this
    # module's name importable on sys.path, which the child inherits.
    root = Path(__file__).resolve().parents[len(__name__.split(".")) - 1]
    if str(root) not in sys.path:
        sys.path.append(str(root))


async def test_4_processes_race_for_overlapping_days(fresh):
    _importable_from_a_spawned_process()
    processes, per_process = 4, 50
    n = processes * per_process
    feasible = feasible_winners([requested_range(i) for i in range(n)])
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    queue = ctx.Queue()
    workers = [
        ctx.Process(
            target=_race_in_process,
            args=(
                fresh.database_url,
                fresh.redis_url,
                fresh.prefix,
                # 50 consecutive callers span every block, so processes compete in each.
                list(range(p * per_process, (p + 1) * per_process)),
                barrier,
                queue,
            ),
        )
        for p in range(processes)
    ]
    for w in workers:
        w.start()
    try:
        per_worker = [await asyncio.to_thread(queue.get, True, 120) for _ in workers]
    finally:
        for w in workers:
            await asyncio.to_thread(w.join, 30)
    total: Counter[str] = Counter()
    for counts in per_worker:
        total.update(counts)

    tally = (
        f"[{fresh.kind}] {processes}x{per_process} processes: {per_worker} -> {dict(total)} "
        f"(feasible {feasible})"
    )
    print("\n" + tally)
    assert all(w.exitcode == 0 for w in workers), tally
    assert total == {"won": feasible, "conflict": n - feasible}, tally
    assert await _bookings_and_overlaps(fresh.pool) == (feasible, feasible, 0)


async def test_postgres_alone_refuses_double_booking_when_redis_holds_disagree(fresh):
    """Twenty replicas whose Redis state has split (each sees its own key prefix, as after a
    failover that lost writes) all hold the same days; PostgreSQL lets exactly one confirm."""
    replicas = 20
    services = [
        InventoryService(
            pool=fresh.pool,
            redis=fresh.redis,
            settings=fresh.settings(redis_prefix=f"{fresh.prefix}_{r}"),
        )
        for r in range(replicas)
    ]
    today = datetime.now(services[0].tz).date()
    request = HoldRequest(
        unit_id=UNIT,
        start=(today + timedelta(days=70)).isoformat(),
        end=(today + timedelta(days=73)).isoformat(),
    )
    try:
        holds = [await svc.create_hold(request) for svc in services]  # none sees the others

        async def confirm(svc: InventoryService, hold_id: str) -> str:
            try:
                await svc.confirm_hold(hold_id)
            except Unavailable:
                return "conflict"
            return "won"

        results = Counter(
            await asyncio.gather(
                *(confirm(s, h.hold_id) for s, h in zip(services, holds, strict=True))
            )
        )
    finally:
        async for key in fresh.redis.scan_iter(match=f"{fresh.prefix}_*", count=1000):
            await fresh.redis.delete(key)
    tally = f"[{fresh.kind}] split Redis, {replicas} confirms: {dict(results)} (feasible 1)"
    print("\n" + tally)
    assert results == {"won": 1, "conflict": replicas - 1}, tally
    assert await _bookings_and_overlaps(fresh.pool) == (1, 1, 0)
