"""Callers in several OS processes racing for the service bays through SchedulingService.

Oil changes, tyre rotations, brake inspections and full services (30, 30, 60 and 120 minutes)
share one pool of three bays. The requested times form blocks: every request of a block covers
the block's pivot half-hour, so any two requests of a block overlap, and no request of one block
overlaps a request of another (both checked below). A bay therefore holds at most one request
per block. A caller is refused only when their time overlaps a booking on every bay, and nothing
is given back during the race, so a bay left without a booking in some block would mean that no
caller of that block was refused, i.e. all of them won, which more callers than bays cannot.
However the race is ordered, exactly one request per block and bay wins: the feasible number of
winners is bays x blocks, and it must be exactly the number who win.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import sys
from collections import Counter
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.errors import Unavailable
from services.scheduling import BookRequest, SchedulingService
from services.settings import Settings

pytestmark = pytest.mark.integration

BAYS = ("svc-bay-1", "svc-bay-2", "svc-bay-3")
MINUTES = {"oil_change": 30, "tire_rotation": 30, "brake_inspection": 60, "full_service": 120}
# (service type, start) per block; every request of a block covers its pivot half-hour.
BLOCKS_OF_A_DAY: list[list[tuple[str, time]]] = [
    [  # pivot 10:00-10:30; the block spans 9:00-12:00
        ("full_service", time(9)),
        ("full_service", time(9, 30)),
        ("full_service", time(10)),
        ("brake_inspection", time(9, 30)),
        ("brake_inspection", time(10)),
        ("oil_change", time(10)),
        ("tire_rotation", time(10)),
    ],
    [  # pivot 14:00-14:30; 13:00-16:00
        ("full_service", time(13)),
        ("full_service", time(13, 30)),
        ("full_service", time(14)),
        ("brake_inspection", time(13, 30)),
        ("brake_inspection", time(14)),
        ("oil_change", time(14)),
        ("tire_rotation", time(14)),
    ],
    [  # pivot 16:30-17:00; 16:00-17:00
        ("brake_inspection", time(16)),
        ("oil_change", time(16, 30)),
        ("tire_rotation", time(16, 30)),
    ],
]

Request = tuple[str, datetime, datetime]  # service type, start, end


def race_requests(settings: Settings) -> list[Request]:
    """The distinct requests: the blocks of a day on the next Monday and Tuesday at least two
    days away (open all day, inside the booking horizon)."""
    first = datetime.now(settings.tz).date() + timedelta(days=2)
    monday = first + timedelta(days=(0 - first.weekday()) % 7)
    requests: list[Request] = []
    for day in (monday, monday + timedelta(days=1)):
        for block in BLOCKS_OF_A_DAY:
            for service_type, at in block:
                start = datetime.combine(day, at, settings.tz)
                requests.append(
                    (service_type, start, start + timedelta(minutes=MINUTES[service_type]))
                )
    return requests


def _overlap(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def blocks(requests: list[Request]) -> list[set[int]]:
    """The connected groups of overlapping requests (by index), each checked to be a group in
    which every two requests overlap."""
    groups: list[set[int]] = []
    for i, (_, start, end) in enumerate(requests):
        touching = [g for g in groups if any(_overlap((start, end), requests[j][1:]) for j in g)]
        merged = {i}.union(*touching)
        groups = [g for g in groups if g not in touching] + [merged]
    for group in groups:
        for a, b in itertools.combinations(sorted(group), 2):
            assert _overlap(requests[a][1:], requests[b][1:]), (requests[a], requests[b])
    return groups


async def attempt(svc: SchedulingService, i: int, request: Request) -> dict[str, Any]:
    service_type, start, _ = request
    try:
        appointment = await svc.book_appointment(
            BookRequest(
                phone=f"+1555{400 + i // 10000:03d}{i % 10000:04d}",
                service_type=service_type,
                start=start,
                call_id=f"race-{i}",
            )
        )
    except Unavailable:
        return {"i": i, "outcome": "conflict"}
    return {
        "i": i,
        "outcome": "won",
        "appointment_id": appointment.appointment_id,
        "resource_id": appointment.resource_id,
        "start": appointment.start,
        "end": appointment.end,
    }


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
) -> list[dict[str, Any]]:
    from services.db import create_pool
    from services.kv import create_redis

    settings = Settings(
        database_url=database_url, redis_url=redis_url, redis_prefix=prefix, environment="test"
    )
    # A race of many callers, not a bound on waiting (tested in test_store_down.py).
    pool = await create_pool(database_url, min_size=2, max_size=8, acquire_timeout=60)
    redis = create_redis(redis_url)
    try:
        svc = SchedulingService(pool=pool, redis=redis, settings=settings)
        requests = race_requests(settings)
        await svc.list_service_types()  # warm the connections before the start
        await redis.ping()
        await asyncio.to_thread(barrier.wait, 60)
        outcomes = await asyncio.gather(
            *(attempt(svc, i, requests[i % len(requests)]) for i in indexes),
            return_exceptions=True,
        )
        return [
            o if isinstance(o, dict) else {"i": -1, "outcome": f"{type(o).__name__}: {o}"}
            for o in outcomes
        ]
    finally:
        await redis.aclose()
        await pool.close()


def _importable_from_a_spawned_process() -> None:
    # A spawned child unpickles the target by module name; put the folder that makes this
    # module's name importable on sys.path, which the child inherits.
    root = Path(__file__).resolve().parents[len(__name__.split(".")) - 1]
    if str(root) not in sys.path:
        sys.path.append(str(root))


async def test_4_processes_race_for_overlapping_slots_of_the_bays(fresh):
    _importable_from_a_spawned_process()
    settings = fresh.settings()
    requests = race_requests(settings)
    groups = blocks(requests)
    block_of = {i: b for b, group in enumerate(groups) for i in group}
    feasible = len(BAYS) * len(groups)
    assert (len(requests), len(groups), feasible) == (34, 6, 18)

    processes, per_process = 4, 60
    n = processes * per_process
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
                # 60 consecutive callers ask for all 34 requests, so processes compete in each.
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
        per_worker = [await asyncio.to_thread(queue.get, True, 300) for _ in workers]
    finally:
        for w in workers:
            await asyncio.to_thread(w.join, 30)
    outcomes = [o for worker in per_worker for o in worker]
    counts = [dict(Counter(o["outcome"] for o in worker)) for worker in per_worker]
    total = Counter(o["outcome"] for o in outcomes)
    tally = (
        f"[{fresh.kind}] {processes}x{per_process} callers: {counts} -> {dict(total)} "
        f"(feasible {feasible})"
    )
    print("\n" + tally)

    assert all(w.exitcode == 0 for w in workers), tally
    assert total == {"won": feasible, "conflict": n - feasible}, tally

    won = [o for o in outcomes if o["outcome"] == "won"]
    lost = [requests[o["i"] % len(requests)] for o in outcomes if o["outcome"] == "conflict"]
    # Exactly one booking per block and bay, each for the time its caller asked.
    for o in won:
        assert requests[o["i"] % len(requests)][1:] == (o["start"], o["end"]), o
    per_block_and_bay = Counter((block_of[o["i"] % len(requests)], o["resource_id"]) for o in won)
    assert set(per_block_and_bay) == set(itertools.product(range(len(groups)), BAYS))
    assert set(per_block_and_bay.values()) == {1}
    # Every refused caller's time really was taken on every bay.
    for bay in BAYS:
        held = [(o["start"], o["end"]) for o in won if o["resource_id"] == bay]
        assert all(any(_overlap(r[1:], h) for h in held) for r in lost), bay

    # PostgreSQL: every answer given is a row and every row an answer given; no two
    # non-cancelled bookings of one resource overlap.
    rows = await fresh.pool.fetch(
        """SELECT a.appointment_id::text AS appointment_id, b.resource_id, b.during
             FROM appointments a JOIN bookings b USING (booking_id)
            WHERE b.status <> 'cancelled'"""
    )
    assert {(r["appointment_id"], r["resource_id"], r["during"].lower) for r in rows} == {
        (o["appointment_id"], o["resource_id"], o["start"]) for o in won
    }
    overlapping = await fresh.pool.fetch(
        """SELECT a.resource_id, a.booking_id, b.booking_id AS other
             FROM bookings a JOIN bookings b
               ON a.resource_id = b.resource_id AND a.booking_id < b.booking_id
              AND a.during && b.during
            WHERE a.status <> 'cancelled' AND b.status <> 'cancelled'"""
    )
    assert overlapping == []
