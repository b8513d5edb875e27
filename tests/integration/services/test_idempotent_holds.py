"""A hold's idempotency key answers a repeat of the same request, and only that (real
PostgreSQL and Redis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.errors import IdempotencyKeyReused
from services.reservations import ReservationStore

pytestmark = pytest.mark.integration

CELL = 1800


def _store(s) -> ReservationStore:
    return ReservationStore(
        pool=s.pool, redis=s.redis, tz=ZoneInfo("America/New_York"), prefix=s.prefix
    )


async def test_a_key_reused_for_another_request_is_refused_and_holds_nothing(fresh):
    store = _store(fresh)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=120)
    asked = dict(resource_id="bay-3", cell_seconds=CELL, kind="appointment", call_id="c-1")
    first = await store.reserve_cells(
        **asked, start=start, end=start + timedelta(hours=1), idempotency_key="k-7"
    )
    same = await store.reserve_cells(
        **asked, start=start, end=start + timedelta(hours=1), idempotency_key="k-7"
    )
    assert same.hold_id == first.hold_id and same.replayed
    later = start + timedelta(hours=2)
    for changed in (
        dict(asked, start=later, end=later + timedelta(hours=1)),  # other times
        dict(asked, start=start, end=start + timedelta(minutes=30)),  # a shorter range
        dict(asked, call_id="c-2", start=start, end=start + timedelta(hours=1)),  # another call
    ):
        with pytest.raises(IdempotencyKeyReused) as refused:  # 422, not 409
            await store.reserve_cells(**changed, idempotency_key="k-7")  # type: ignore[arg-type]
        assert "different hold" in refused.value.message
    # Nothing was held for the refused requests: the later time is free for anyone.
    free = await store.reserve_cells(**asked, start=later, end=later + timedelta(hours=1))
    assert free.hold_id != first.hold_id and not free.replayed


async def test_a_key_record_without_a_fingerprint_is_refused_not_replayed(fresh):
    """A record written before keys carried a fingerprint (just the token) cannot show that a
    request is the same one: it is refused like a key used for another request, and nothing is
    held, rather than answered as the hold it names."""
    store = _store(fresh)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=150)
    asked = dict(resource_id="bay-4", cell_seconds=CELL, kind="appointment", call_id="c-1")
    old = await store.reserve_cells(**asked, start=start, end=start + timedelta(hours=1))
    token = old.hold_id.split(".", 1)[1]
    await fresh.redis.set(f"{fresh.prefix}:{{r:bay-4}}:i:k-legacy", token, px=60_000)
    later = start + timedelta(hours=2)
    with pytest.raises(IdempotencyKeyReused):
        await store.reserve_cells(
            **asked, start=later, end=later + timedelta(hours=1), idempotency_key="k-legacy"
        )
    free = await store.reserve_cells(**asked, start=later, end=later + timedelta(hours=1))
    assert not free.replayed
