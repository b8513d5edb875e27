"""A confirm cut off after its claim (reply lost, replica gone) is finished by the next one.

claim.lua marks a hold's cells pending before PostgreSQL writes the row. A confirm that dies
after the claim used to strand the hold for the pending TTL, and a retry waited that long and
then answered 410 though nothing was booked. Here the claim is run by hand, as a confirm that
never came back, and the retry must book (or answer the row already written).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.inventory import HoldRequest, InventoryService
from services.reservations import Hold, ReservationStore, _claim

pytestmark = pytest.mark.integration

TZ = ZoneInfo("America/New_York")
CELL = 1800
# Short, so that the unfixed code (which waited out the claim) fails in seconds, not 30.
PENDING_TTL = 3


def _store(s) -> ReservationStore:
    return ReservationStore(
        pool=s.pool, redis=s.redis, tz=TZ, prefix=s.prefix, pending_ttl_seconds=PENDING_TTL
    )


async def _hold(store: ReservationStore, hours: int = 50) -> Hold:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=hours)
    return await store.reserve_cells(
        resource_id="bay-7",
        start=start,
        end=start + timedelta(seconds=2 * CELL),
        cell_seconds=CELL,
        kind="appointment",
        call_id="call-7",
    )


async def _claim_and_vanish(store: ReservationStore, hold: Hold) -> uuid.UUID:
    """What a confirm does before it writes the row, and nothing after: lost reply, dead replica."""
    booking_id = uuid.uuid4()
    _, token = store.parse_hold_id(hold.hold_id)
    cells = store.cell_keys(hold.resource_id, store.cells(hold.start, hold.end, CELL))
    reply = await _claim(
        store.redis,
        [store.hold_key(hold.hold_id), *cells],
        [token, f"P:{booking_id}", PENDING_TTL * 1000],
    )
    assert int(reply[0]) == 1
    return booking_id


async def _cells(store: ReservationStore, hold: Hold) -> list[str | None]:
    keys = store.cell_keys(hold.resource_id, store.cells(hold.start, hold.end, CELL))
    return await store.redis.mget(keys)


async def test_a_retry_finishes_a_confirm_whose_claim_reply_was_lost(fresh):
    store = _store(fresh)
    hold = await _hold(store)
    claimed_as = await _claim_and_vanish(store, hold)

    booking = await store.confirm_hold(hold.hold_id)

    assert booking.booking_id == claimed_as and booking.status == "confirmed"
    assert await _cells(store, hold) == [f"B:{claimed_as}"] * 2
    assert await fresh.pool.fetchval("SELECT count(*) FROM bookings") == 1


async def test_a_retry_after_the_row_was_written_marks_the_cells_booked(fresh):
    # The replica died between PostgreSQL's commit and the finalize: the row exists, the
    # cells are still pending and would have gone free when the claim lapsed.
    store = _store(fresh)
    hold = await _hold(store)
    claimed_as = await _claim_and_vanish(store, hold)
    written = await store._insert_booking(claimed_as, hold, None, None)

    again = await store.confirm_hold(hold.hold_id)

    assert again.booking_id == written.booking_id
    assert await _cells(store, hold) == [f"B:{claimed_as}"] * 2
    assert not await fresh.redis.exists(store.hold_key(hold.hold_id))


async def test_many_retries_of_a_cut_off_confirm_book_once(fresh):
    store = _store(fresh)
    hold = await _hold(store)
    claimed_as = await _claim_and_vanish(store, hold)

    answers = await asyncio.gather(*(store.confirm_hold(hold.hold_id) for _ in range(40)))

    assert {a.booking_id for a in answers} == {claimed_as}
    assert await fresh.pool.fetchval("SELECT count(*) FROM bookings") == 1
    assert await _cells(store, hold) == [f"B:{claimed_as}"] * 2


async def test_concurrent_first_confirms_of_one_hold_book_once(fresh):
    store = _store(fresh)
    hold = await _hold(store)

    answers = await asyncio.gather(*(store.confirm_hold(hold.hold_id) for _ in range(40)))

    booking_ids = {a.booking_id for a in answers}
    assert len(booking_ids) == 1
    assert await fresh.pool.fetchval("SELECT count(*) FROM bookings") == 1
    assert await _cells(store, hold) == [f"B:{booking_ids.pop()}"] * 2


async def test_an_inventory_confirm_retried_after_a_lost_claim_writes_the_rental(fresh):
    settings = fresh.settings()
    store = ReservationStore.from_settings(pool=fresh.pool, redis=fresh.redis, settings=settings)
    store.pending_ttl_seconds = PENDING_TTL
    svc = InventoryService(
        pool=fresh.pool, redis=fresh.redis, settings=settings, reservations=store
    )
    first = date.today() + timedelta(days=30)
    held = await svc.create_hold(
        HoldRequest(
            unit_id="GEN-701",
            start=first.isoformat(),
            end=(first + timedelta(days=2)).isoformat(),
            call_id="call-7",
        )
    )
    hold = await store.get_hold(held.hold_id)
    booking_id = uuid.uuid4()
    _, token = store.parse_hold_id(hold.hold_id)
    cells = store.cell_keys(hold.resource_id, store.cells(hold.start, hold.end, hold.cell_seconds))
    await _claim(
        fresh.redis, [store.hold_key(hold.hold_id), *cells], [token, f"P:{booking_id}", 3000]
    )

    rental = await svc.confirm_hold(held.hold_id, idempotency_key="retry-after-lost-claim")

    assert rental.booking_id == str(booking_id) and rental.days == 2
    assert (await svc.get_booking(booking_id)).status == "confirmed"
    replay = await svc.confirm_hold(held.hold_id, idempotency_key="retry-after-lost-claim")
    assert replay.booking_id == str(booking_id)
