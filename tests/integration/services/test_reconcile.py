"""Redis rebuilt from PostgreSQL after it lost data (``flush_redis`` stands in for FLUSHALL).

Before reconciliation, a hold after a flush was granted over a confirmed booking and only the
confirm refused it. After it, the booked range is refused at hold time, free cells stay free,
and cancelled, ended or moved bookings are left as they are; a hold granted over a booked
time loses it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from asyncpg.types import Range

from services.errors import Unavailable
from services.inventory import HoldRequest, InventoryService
from services.reconcile import Rebuild, Reconciler, epoch_key, reconcile, watch
from services.reservations import Booking, ReservationStore

pytestmark = pytest.mark.integration

UNIT = "GEN-701"  # a day-grid unit that requires nothing
BAY = "svc-bay-1"  # a scheduling resource on the 30-minute grid
CELL = 1800


def _store(fresh) -> ReservationStore:
    return ReservationStore.from_settings(
        pool=fresh.pool, redis=fresh.redis, settings=fresh.settings()
    )


def _days(first: int, last: int) -> HoldRequest:
    today = date.today()
    return HoldRequest(
        unit_id=UNIT,
        start=(today + timedelta(days=first)).isoformat(),
        end=(today + timedelta(days=last)).isoformat(),
        call_id="call-r",
    )


def _slot(hours: int, cells: int = 2) -> tuple[datetime, datetime]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=hours)
    return start, start + timedelta(seconds=CELL * cells)


async def _appointment(store: ReservationStore, hours: int) -> Booking:
    start, end = _slot(hours)
    hold = await store.reserve_cells(
        resource_id=BAY, start=start, end=end, cell_seconds=CELL, kind="appointment"
    )
    return await store.confirm_hold(hold.hold_id)


async def _booked_world(fresh):
    """A rental days 30-32 and an appointment in 50 h, both confirmed; then Redis loses all."""
    svc = InventoryService(pool=fresh.pool, redis=fresh.redis, settings=fresh.settings())
    held = await svc.create_hold(_days(30, 32))
    rental = await svc.confirm_hold(held.hold_id)
    appointment = await _appointment(_store(fresh), 50)
    await fresh.flush_redis()
    return svc, rental, appointment


async def _refused_at_hold_time(fresh, svc: InventoryService) -> None:
    with pytest.raises(Unavailable):
        await svc.create_hold(_days(31, 32))
    start, end = _slot(50)
    with pytest.raises(Unavailable):
        await _store(fresh).reserve_cells(
            resource_id=BAY, start=start + timedelta(seconds=CELL), end=end,
            cell_seconds=CELL, kind="appointment",
        )  # fmt: skip


async def test_after_a_loss_booked_ranges_are_refused_at_hold_time_and_free_ones_stay_free(fresh):
    svc, _, _ = await _booked_world(fresh)

    done = await reconcile(pool=fresh.pool, redis=fresh.redis, settings=fresh.settings())

    assert done == Rebuild(bookings=2, cells_marked=2 + 2, cells_freed=0)
    await _refused_at_hold_time(fresh, svc)
    assert (await svc.create_hold(_days(32, 34))).unit_id == UNIT  # the day it is returned
    start, end = _slot(51)
    await _store(fresh).reserve_cells(
        resource_id=BAY, start=start, end=end, cell_seconds=CELL, kind="appointment"
    )
    # Nothing lost since: the next call is one GET and no rebuild.
    assert await reconcile(pool=fresh.pool, redis=fresh.redis, settings=fresh.settings()) is None


async def test_many_concurrent_reconcilers_rebuild_once_with_the_same_result(fresh):
    svc, rental, appointment = await _booked_world(fresh)
    settings = fresh.settings()

    results = await asyncio.gather(
        *(reconcile(pool=fresh.pool, redis=fresh.redis, settings=settings) for _ in range(25))
    )

    assert [r for r in results if r is not None] == [Rebuild(2, 4, 0)]
    store = _store(fresh)
    rental_cells = store.cell_keys(UNIT, store.cells(rental.start, rental.end, 86_400))
    appointment_cells = store.cell_keys(BAY, store.cells(appointment.start, appointment.end, CELL))
    assert await fresh.redis.mget(rental_cells) == [f"B:{rental.booking_id}"] * 2
    assert await fresh.redis.mget(appointment_cells) == [f"B:{appointment.booking_id}"] * 2
    await _refused_at_hold_time(fresh, svc)


async def test_ended_or_cancelled_stay_free_and_a_hold_over_booked_time_loses_it(fresh):
    store = _store(fresh)
    cancelled = await _appointment(store, 60)
    await store.cancel_booking(cancelled.booking_id, reason="test", cell_seconds=CELL)
    ended_start, ended_end = _slot(-5)
    await fresh.pool.execute(
        """INSERT INTO bookings (booking_id, resource_id, during, kind, reference)
           VALUES ($1, $2, $3, 'appointment', 'PASTXX')""",
        uuid.uuid4(), BAY, Range(ended_start, ended_end, lower_inc=True, upper_inc=False),
    )  # fmt: skip
    booked = await _appointment(store, 70)
    await fresh.flush_redis()
    # A hold granted over the booking while Redis had lost it loses that cell (its confirm
    # could only be refused, and left in place it would free the time when it lapsed).
    start, _ = _slot(70)
    live = await store.reserve_cells(
        resource_id=BAY, start=start, end=start + timedelta(seconds=CELL),
        cell_seconds=CELL, kind="appointment",
    )  # fmt: skip

    done = await reconcile(pool=fresh.pool, redis=fresh.redis, settings=fresh.settings())

    assert done is not None and done.bookings == 1
    cells = store.cell_keys(BAY, store.cells(booked.start, booked.end, CELL))
    assert await fresh.redis.mget(cells) == [f"B:{booked.booking_id}"] * 2
    # Released or lapsed, that hold gives nothing back: the time stays refused.
    await store.release_hold(live.hold_id)
    assert await fresh.redis.mget(cells) == [f"B:{booked.booking_id}"] * 2
    for gone in (_slot(60), (ended_start, ended_end)):
        keys = store.cell_keys(BAY, store.cells(gone[0], gone[1], CELL))
        assert await fresh.redis.mget(keys) == [None, None]


class _CancelsWhileMarking(Reconciler):
    """A cancel and a move that commit after the rebuild read PostgreSQL, and free their cells
    in Redis before the rebuild writes them."""

    def __init__(self, *args, cancel: Booking, move: Booking, to: datetime, **kw) -> None:
        super().__init__(*args, **kw)
        self.pending = [cancel, move]
        self.to = to

    async def _mark(self, live, token):
        if self.pending:
            cancel, move = self.pending
            self.pending = []
            await self.store.cancel_booking(cancel.booking_id, reason="race", cell_seconds=CELL)
            await self.store.move_booking(
                move.booking_id, resource_id=BAY, start=self.to,
                end=self.to + timedelta(seconds=2 * CELL), cell_seconds=CELL,
            )  # fmt: skip
        return await super()._mark(live, token)


async def test_a_cancel_or_move_committed_during_the_rebuild_is_not_undone(fresh):
    store = _store(fresh)
    cancel = await _appointment(store, 80)
    move = await _appointment(store, 90)
    await fresh.flush_redis()
    to, _ = _slot(100)
    reconciler = _CancelsWhileMarking(
        pool=fresh.pool, redis=fresh.redis, settings=fresh.settings(), cancel=cancel, move=move,
        to=to,
    )  # fmt: skip

    done = await reconciler.ensure()

    assert done is not None and done.cells_freed == 2
    for start, end in ((cancel.start, cancel.end), (move.start, move.end)):
        keys = store.cell_keys(BAY, store.cells(start, end, CELL))
        assert await fresh.redis.mget(keys) == [None, None]
    moved = store.cell_keys(BAY, store.cells(to, to + timedelta(seconds=2 * CELL), CELL))
    assert await fresh.redis.mget(moved) == [f"B:{move.booking_id}"] * 2


async def test_the_watcher_rebuilds_after_a_flush(fresh):
    svc, _, _ = await _booked_world(fresh)
    watcher = watch(pool=fresh.pool, redis=fresh.redis, settings=fresh.settings(), interval=0.05)
    try:
        for _ in range(400):  # a bound, not a timing claim: the rebuild takes milliseconds
            if await fresh.redis.get(epoch_key(fresh.prefix)) is not None:
                break
            await asyncio.sleep(0.05)
        await _refused_at_hold_time(fresh, svc)
        await fresh.flush_redis()
        for _ in range(400):
            if await fresh.redis.get(epoch_key(fresh.prefix)) is not None:
                break
            await asyncio.sleep(0.05)
        await _refused_at_hold_time(fresh, svc)
    finally:
        await watcher.stop()


async def test_a_confirm_refused_over_a_lost_booking_marks_it_for_the_next_hold(fresh):
    # No rebuild yet: a hold lands on a booking Redis lost; PostgreSQL refuses its confirm, and
    # that confirm marks the booking's cells, so the next hold there is refused at hold time.
    svc, _, _ = await _booked_world(fresh)
    held = await svc.create_hold(_days(31, 32))
    with pytest.raises(Unavailable):
        await svc.confirm_hold(held.hold_id)
    with pytest.raises(Unavailable):
        await svc.create_hold(_days(30, 31))
