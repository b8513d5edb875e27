"""Rows a service writes in the booking's own statement (the confirm's one round trip): all
of them with the booking, or none of them and no booking (real PostgreSQL and Redis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from services.db import Statement
from services.reservations import Booking, Hold, ReservationStore

pytestmark = pytest.mark.integration

CELL = 1800
# Each statement numbers its own parameters from $1; the store renumbers them.
REMEMBER = (
    "INSERT INTO idempotency_keys (scope, key, request_hash, response) VALUES ($1, $2, $3, $4)"
)


def _store(s) -> ReservationStore:
    return ReservationStore(
        pool=s.pool, redis=s.redis, tz=ZoneInfo("America/New_York"), prefix=s.prefix
    )


async def _hold(store: ReservationStore, hours: int) -> Hold:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=hours)
    return await store.reserve_cells(
        resource_id="bay-11",
        start=start,
        end=start + timedelta(seconds=CELL),
        cell_seconds=CELL,
        kind="appointment",
        call_id="call-9",
    )


def _records(scope: str, *keys: str):
    def rows(booking: Booking, hold: Hold) -> list[Statement]:
        return [
            Statement(REMEMBER, (scope, key, str(booking.booking_id), {"hold": hold.hold_id}))
            for key in keys
        ]

    return rows


async def test_every_row_is_written_with_the_booking_in_one_statement(fresh):
    store = _store(fresh)
    hold = await _hold(store, 130)
    booking = await store.confirm_hold(hold.hold_id, detail_rows=_records("t.rows", "a", "b"))
    rows = await fresh.pool.fetch(
        "SELECT key, request_hash, response FROM idempotency_keys WHERE scope = 't.rows' "
        "ORDER BY key"
    )
    assert [(r["key"], r["request_hash"], r["response"]) for r in rows] == [
        ("a", str(booking.booking_id), {"hold": hold.hold_id}),
        ("b", str(booking.booking_id), {"hold": hold.hold_id}),
    ]
    stored = await store.get_booking(booking.booking_id)
    assert stored.reference == booking.reference and stored.created_at == booking.created_at


async def test_a_row_that_fails_writes_no_booking_and_keeps_the_hold(fresh):
    store = _store(fresh)
    await fresh.pool.execute(
        "INSERT INTO idempotency_keys (scope, key, request_hash, response) "
        "VALUES ('t.rows', 'taken', 'h', '{}'::jsonb)"
    )
    hold = await _hold(store, 132)
    with pytest.raises(asyncpg.UniqueViolationError):
        await store.confirm_hold(hold.hold_id, detail_rows=_records("t.rows", "new", "taken"))
    assert (
        await fresh.pool.fetchval("SELECT count(*) FROM bookings WHERE hold_id = $1", hold.hold_id)
        == 0
    )
    assert await fresh.pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = 'new'") == 0
    # The hold is kept for another try, which writes both.
    assert (await store.get_hold(hold.hold_id)).hold_id == hold.hold_id
    booking = await store.confirm_hold(hold.hold_id, detail_rows=_records("t.rows", "new"))
    assert (await store.get_booking(booking.booking_id)).status == "confirmed"
