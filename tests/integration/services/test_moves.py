"""What Redis shows after a booking moves: every cell of the new time booked by the booking
until it ends, the cells it left free, no hold left behind (real PostgreSQL and Redis)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.errors import Conflict, Unavailable
from services.reservations import Booking, ReservationStore

pytestmark = pytest.mark.integration

TZ = ZoneInfo("America/New_York")
CELL = 1800
HOLD_TTL = 300


def _store(s) -> ReservationStore:
    return ReservationStore(
        pool=s.pool, redis=s.redis, tz=TZ, prefix=s.prefix, hold_ttl_seconds=HOLD_TTL
    )


def _at(hours_from_now: int) -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(
        hours=hours_from_now
    )


async def _book(store: ReservationStore, resource: str, start: datetime, cells: int) -> Booking:
    hold = await store.reserve_cells(
        resource_id=resource,
        start=start,
        end=start + timedelta(seconds=CELL * cells),
        cell_seconds=CELL,
        kind="appointment",
    )
    return await store.confirm_hold(hold.hold_id)


async def _cells(store: ReservationStore, resource: str, start: datetime, end: datetime):
    keys = store.cell_keys(resource, store.cells(start, end, CELL))
    return [(await store.redis.get(k), await store.redis.pttl(k)) for k in keys]


async def _holds_left(store: ReservationStore, resource: str) -> list[str]:
    return [k async for k in store.redis.scan_iter(match=f"{store._tag(resource)}:h:*")]


async def test_a_move_books_every_new_cell_until_the_booking_ends_and_frees_the_rest(fresh):
    store = _store(fresh)
    start = _at(100)
    booking = await _book(store, "bay-7", start, 2)  # 100:00-101:00
    shifted = start + timedelta(seconds=CELL)  # 100:30-101:30: one cell kept, one fresh
    moved = await store.move_booking(
        booking.booking_id,
        resource_id="bay-7",
        start=shifted,
        end=shifted + timedelta(hours=1),
        cell_seconds=CELL,
    )
    marker = f"B:{booking.booking_id}"
    for value, ttl in await _cells(store, "bay-7", moved.start, moved.end):
        # Booked until the booking ends (days away), not held for the hold's few minutes.
        assert value == marker
        assert ttl > HOLD_TTL * 1000
    assert await _cells(store, "bay-7", start, shifted) == [(None, -2)]
    assert await _holds_left(store, "bay-7") == []
    # So Redis refuses a hold on the new time at once, long after the move's hold would lapse.
    with pytest.raises(Unavailable):
        await store.reserve_cells(
            resource_id="bay-7",
            start=moved.end - timedelta(seconds=CELL),
            end=moved.end,
            cell_seconds=CELL,
            kind="appointment",
        )


async def test_a_move_to_another_resource_books_there_and_frees_every_old_cell(fresh):
    store = _store(fresh)
    start = _at(110)
    booking = await _book(store, "bay-8", start, 2)
    moved = await store.move_booking(
        booking.booking_id,
        resource_id="bay-9",
        start=start,
        end=start + timedelta(hours=1),
        cell_seconds=CELL,
    )
    assert moved.resource_id == "bay-9"
    marker = f"B:{booking.booking_id}"
    assert [v for v, _ in await _cells(store, "bay-9", moved.start, moved.end)] == [marker] * 2
    assert [v for v, _ in await _cells(store, "bay-8", start, moved.end)] == [None, None]
    assert await _holds_left(store, "bay-8") == [] and await _holds_left(store, "bay-9") == []


class _BothReadFirst(ReservationStore):
    """Each move reads the booking, then waits until the other has read it too: the race
    where both start from the same time, forced instead of hoped for."""

    barrier = asyncio.Barrier(2)

    async def get_booking(self, booking_id):  # type: ignore[no-untyped-def]
        booking = await super().get_booking(booking_id)
        await self.barrier.wait()
        return booking


async def test_two_moves_of_one_booking_at_once_move_it_once(fresh):
    start = _at(120)
    booking = await _book(_store(fresh), "bay-10", start, 1)
    store = _BothReadFirst(
        pool=fresh.pool, redis=fresh.redis, tz=TZ, prefix=fresh.prefix, hold_ttl_seconds=HOLD_TTL
    )
    store.barrier = asyncio.Barrier(2)
    targets = [start + timedelta(hours=h) for h in (2, 4)]
    results = await asyncio.gather(
        *(
            store.move_booking(
                booking.booking_id,
                resource_id="bay-10",
                start=t,
                end=t + timedelta(seconds=CELL),
                cell_seconds=CELL,
            )
            for t in targets
        ),
        return_exceptions=True,
    )
    moved = [r for r in results if isinstance(r, Booking)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert (len(moved), len(refused)) == (1, 1), results
    now = await _store(fresh).get_booking(booking.booking_id)
    assert now.start == moved[0].start
    # Redis agrees: the winner's cell is booked, the loser's and the original one are free.
    loser = next(t for t in targets if t != now.start)
    assert [v for v, _ in await _cells(store, "bay-10", now.start, now.end)] == [
        f"B:{booking.booking_id}"
    ]
    for free in (start, loser):
        assert await _cells(store, "bay-10", free, free + timedelta(seconds=CELL)) == [(None, -2)]
