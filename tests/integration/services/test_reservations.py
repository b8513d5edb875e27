"""The reservation primitive against real PostgreSQL and Redis (both kinds of backend)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from services.errors import HoldExpired, InvalidInput, NotFound, Unavailable
from services.reservations import DAY, ReservationStore

pytestmark = pytest.mark.integration

TZ = ZoneInfo("America/New_York")
CELL = 1800


def _store(s, **kw) -> ReservationStore:
    return ReservationStore(pool=s.pool, redis=s.redis, tz=TZ, prefix=s.prefix, **kw)


def _slot(hours_from_now: int, cells: int = 1) -> tuple[datetime, datetime]:
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = base + timedelta(hours=hours_from_now)
    return start, start + timedelta(seconds=CELL * cells)


async def _overlaps(pool: asyncpg.Pool) -> int:
    return await pool.fetchval(
        """SELECT count(*) FROM bookings a JOIN bookings b
             ON a.resource_id = b.resource_id AND a.booking_id < b.booking_id
            AND a.during && b.during
          WHERE a.status = 'confirmed' AND b.status = 'confirmed'"""
    )


async def test_hold_confirm_release_roundtrip(fresh):
    store = _store(fresh)
    start, end = _slot(48, 2)
    hold = await store.reserve_cells(
        resource_id="bay-1",
        start=start,
        end=end,
        cell_seconds=CELL,
        kind="appointment",
        call_id="call-1",
        fields={"note": "x"},
    )
    assert hold.hold_id.startswith("bay-1.")
    assert (await store.get_hold(hold.hold_id)).fields == {"note": "x"}
    with pytest.raises(Unavailable):
        await store.reserve_cells(
            resource_id="bay-1",
            start=start + timedelta(seconds=CELL),
            end=end + timedelta(seconds=CELL),
            cell_seconds=CELL,
            kind="appointment",
        )
    booking = await store.confirm_hold(hold.hold_id)
    assert (booking.start, booking.end, booking.status) == (start, end, "confirmed")
    assert len(booking.reference) == 6
    again = await store.confirm_hold(hold.hold_id)
    assert again.booking_id == booking.booking_id and again.replayed
    # Booked cells refuse new holds until the booking is cancelled.
    with pytest.raises(Unavailable):
        await store.reserve_cells(
            resource_id="bay-1", start=start, end=end, cell_seconds=CELL, kind="appointment"
        )
    cancelled = await store.cancel_booking(booking.booking_id, reason="test", cell_seconds=CELL)
    assert cancelled.status == "cancelled"
    h2 = await store.reserve_cells(
        resource_id="bay-1", start=start, end=end, cell_seconds=CELL, kind="appointment"
    )
    assert await store.release_hold(h2.hold_id)
    assert not await store.release_hold(h2.hold_id)


async def test_hold_expires_and_frees_the_cells(fresh):
    store = _store(fresh)
    start, end = _slot(50)
    hold = await store.reserve_cells(
        resource_id="bay-1",
        start=start,
        end=end,
        cell_seconds=CELL,
        kind="appointment",
        ttl_seconds=1,
    )
    await asyncio.sleep(1.2)
    with pytest.raises(HoldExpired):
        await store.confirm_hold(hold.hold_id)
    await store.reserve_cells(
        resource_id="bay-1", start=start, end=end, cell_seconds=CELL, kind="appointment"
    )


async def test_idempotent_hold_replays_the_first_answer(fresh):
    store = _store(fresh)
    start, end = _slot(52)
    kw = dict(resource_id="bay-2", start=start, end=end, cell_seconds=CELL, kind="appointment")
    first = await store.reserve_cells(**kw, idempotency_key="k-1")
    second = await store.reserve_cells(**kw, idempotency_key="k-1")
    assert second.hold_id == first.hold_id and second.replayed


async def test_bad_ranges_are_refused(fresh):
    store = _store(fresh)
    start, _ = _slot(54)
    with pytest.raises(InvalidInput):
        store.cells(start, start, CELL)
    with pytest.raises(InvalidInput):
        store.cells(start + timedelta(minutes=7), start + timedelta(hours=1), CELL)
    with pytest.raises(InvalidInput):
        store.cells(start.replace(tzinfo=None), start + timedelta(hours=1), CELL)
    with pytest.raises(InvalidInput):
        store.cells(start, start + timedelta(days=30), CELL)
    with pytest.raises(NotFound):
        await store.confirm_hold("'; DROP TABLE bookings; --")


async def test_day_cells_follow_the_business_calendar(fresh):
    store = _store(fresh)
    day = (datetime.now(TZ) + timedelta(days=10)).date()
    start = datetime.combine(day, datetime.min.time(), TZ)
    end = datetime.combine(day + timedelta(days=3), datetime.min.time(), TZ)
    assert len(store.cells(start, end, DAY)) == 3
    with pytest.raises(InvalidInput):
        store.cells(start + timedelta(hours=1), end, DAY)


async def test_200_coroutines_race_for_one_slot(fresh):
    store = _store(fresh)
    start, end = _slot(60, 2)

    async def attempt(i: int) -> str:
        # Overlapping ranges: half ask for the 2-cell slot, half for its second half.
        s = start if i % 2 else start + timedelta(seconds=CELL)
        try:
            hold = await store.reserve_cells(
                resource_id="bay-3", start=s, end=end, cell_seconds=CELL, kind="appointment"
            )
        except Unavailable:
            return "conflict"
        await store.confirm_hold(hold.hold_id)
        return "won"

    results = await asyncio.gather(*(attempt(i) for i in range(200)))
    tally = (
        f"[{fresh.kind}] 200 coroutines: {results.count('won')} won, "
        f"{results.count('conflict')} conflicts (feasible 1)"
    )
    assert (results.count("won"), results.count("conflict")) == (1, 199), tally
    assert await _overlaps(fresh.pool) == 0


async def test_redis_flushed_between_hold_and_confirm_still_no_double_booking(fresh):
    store = _store(fresh)
    start, end = _slot(70, 2)
    first = await store.reserve_cells(
        resource_id="bay-4", start=start, end=end, cell_seconds=CELL, kind="appointment"
    )
    await store.confirm_hold(first.hold_id)
    await fresh.flush_redis()  # Redis forgets the booked cells
    second = await store.reserve_cells(
        resource_id="bay-4", start=start, end=end, cell_seconds=CELL, kind="appointment"
    )
    with pytest.raises(Unavailable) as err:
        await store.confirm_hold(second.hold_id)
    assert "booked by someone else" in err.value.message
    assert await _overlaps(fresh.pool) == 0
    # And a hold lost with the flush answers clearly.
    third = await store.reserve_cells(
        resource_id="bay-4",
        start=end,
        end=end + timedelta(seconds=CELL),
        cell_seconds=CELL,
        kind="appointment",
    )
    await fresh.flush_redis()
    with pytest.raises(HoldExpired):
        await store.confirm_hold(third.hold_id)


async def test_scripts_reload_after_script_flush(fresh):
    """Redis forgets every script (SCRIPT FLUSH, as after a restart or failover) before each
    step: each script is loaded again and still answers correctly. (Whether a script is loaded
    is not asserted: other test sessions may share this Redis and load or flush scripts.)"""
    store = _store(fresh)
    start, end = _slot(80, 2)
    kw = dict(resource_id="bay-5", cell_seconds=CELL, kind="appointment")

    await fresh.redis.script_flush()
    hold = await store.reserve_cells(start=start, end=end, **kw)
    with pytest.raises(Unavailable):  # the reloaded reserve still refuses a held cell
        await store.reserve_cells(start=start + timedelta(seconds=CELL), end=end, **kw)

    await fresh.redis.script_flush()  # claim and finalize must reload inside the confirm
    booking = await store.confirm_hold(hold.hold_id)
    assert (booking.start, booking.end, booking.status) == (start, end, "confirmed")
    cells = store.cell_keys("bay-5", store.cells(start, end, CELL))
    assert await fresh.redis.mget(cells) == [f"B:{booking.booking_id}"] * 2
    assert (
        await fresh.pool.fetchval(
            "SELECT count(*) FROM bookings WHERE booking_id = $1 AND status = 'confirmed'",
            booking.booking_id,
        )
        == 1
    )

    later = await store.reserve_cells(start=end, end=end + timedelta(seconds=CELL), **kw)
    await fresh.redis.script_flush()
    assert await store.release_hold(later.hold_id)  # release reloads and frees the cell
    again = await store.reserve_cells(start=end, end=end + timedelta(seconds=CELL), **kw)
    assert again.hold_id != later.hold_id


async def test_move_keeps_the_old_time_when_the_new_one_is_taken(fresh):
    store = _store(fresh)
    a_start, a_end = _slot(90, 2)
    b_start, b_end = _slot(94, 2)
    a = await store.confirm_hold(
        (
            await store.reserve_cells(
                resource_id="bay-6", start=a_start, end=a_end, cell_seconds=CELL, kind="appointment"
            )
        ).hold_id
    )
    await store.confirm_hold(
        (
            await store.reserve_cells(
                resource_id="bay-6", start=b_start, end=b_end, cell_seconds=CELL, kind="appointment"
            )
        ).hold_id
    )
    with pytest.raises(Unavailable):
        await store.move_booking(
            a.booking_id, resource_id="bay-6", start=b_start, end=b_end, cell_seconds=CELL
        )
    assert (await store.get_booking(a.booking_id)).start == a_start
    # Moving by one cell overlaps its own old time: allowed.
    shifted = a_start + timedelta(seconds=CELL)
    moved = await store.move_booking(
        a.booking_id,
        resource_id="bay-6",
        start=shifted,
        end=shifted + timedelta(hours=1),
        cell_seconds=CELL,
    )
    assert moved.start == shifted
    # The freed first cell is holdable again; the moved cells are not.
    await store.reserve_cells(
        resource_id="bay-6", start=a_start, end=shifted, cell_seconds=CELL, kind="appointment"
    )
    with pytest.raises(Unavailable):
        await store.reserve_cells(
            resource_id="bay-6",
            start=shifted,
            end=shifted + timedelta(seconds=CELL),
            cell_seconds=CELL,
            kind="appointment",
        )
    assert await _overlaps(fresh.pool) == 0


async def test_an_unreachable_database_is_a_dependency_error_not_a_crash(fresh):
    from services.db import create_pool
    from services.errors import DependencyUnavailable

    dead = await create_pool("postgresql://postgres@127.0.0.1:1/none", min_size=0, max_size=1)
    try:
        store = ReservationStore(pool=dead, redis=fresh.redis, tz=TZ, prefix=fresh.prefix)
        with pytest.raises(DependencyUnavailable):
            await store.get_booking("00000000-0000-0000-0000-000000000000")
        with pytest.raises(DependencyUnavailable):
            await store.cancel_booking(
                "00000000-0000-0000-0000-000000000000", reason="x", cell_seconds=CELL
            )
        start, end = _slot(100)
        hold = await store.reserve_cells(
            resource_id="bay-7", start=start, end=end, cell_seconds=CELL, kind="appointment"
        )
        with pytest.raises(DependencyUnavailable):
            await store.confirm_hold(hold.hold_id)
        # The hold survived the failed confirm: with the database back, it confirms.
        booking = await _store(fresh).confirm_hold(hold.hold_id)
        assert booking.hold_id == hold.hold_id
    finally:
        await dead.close()
