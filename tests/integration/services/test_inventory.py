"""The inventory service against real PostgreSQL and Redis (both kinds of backend)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from services.errors import (
    Conflict,
    HoldExpired,
    IdempotencyKeyReused,
    InvalidInput,
    NegotiationRefused,
    NotFound,
    Unavailable,
    VerificationRequired,
)
from services.inventory import (
    HoldRequest,
    InventoryService,
    RequirementsChecker,
    UnitInMaintenance,
)
from services.reservations import ReservationStore
from services.settings import Settings

pytestmark = pytest.mark.integration

TZ = Settings(environment="test").tz


@dataclass
class FakeChecker:
    """A test double of the verification service: the call ids and what each has verified."""

    verified: dict[str, set[str]] = field(default_factory=dict)
    insured: dict[str, Decimal] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def missing_requirements(
        self, *, call_id: str | None, certification: str | None, min_insurance: Decimal | None
    ) -> list[str]:
        self.calls.append(
            {"call_id": call_id, "certification": certification, "min_insurance": min_insurance}
        )
        missing = []
        if certification and certification not in self.verified.get(call_id or "", set()):
            missing.append(f"{certification} operator certification")
        if (
            min_insurance is not None
            and self.insured.get(call_id or "", Decimal(0)) < min_insurance
        ):
            missing.append(f"insurance of at least {min_insurance}")
        return missing


def _service(s, checker: RequirementsChecker | None = None, **settings: Any) -> InventoryService:
    return InventoryService(
        pool=s.pool, redis=s.redis, settings=s.settings(**settings), requirements=checker
    )


def _days(offset: int, length: int = 1) -> tuple[str, str]:
    """Local rental dates, ``offset`` days from today, as ISO strings."""
    first = datetime.now(TZ).date() + timedelta(days=offset)
    return first.isoformat(), (first + timedelta(days=length)).isoformat()


def _hold(unit_id: str, offset: int, length: int = 1, call_id: str | None = "call-1"):
    start, end = _days(offset, length)
    return HoldRequest(unit_id=unit_id, start=start, end=end, call_id=call_id)


async def _counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    return (
        await pool.fetchval("SELECT count(*) FROM bookings"),
        await pool.fetchval("SELECT count(*) FROM rentals"),
        await pool.fetchval("SELECT count(*) FROM idempotency_keys"),
    )


async def _redis_keys(s) -> int:
    return len([k async for k in s.redis.scan_iter(match=f"{s.prefix}:*", count=1000)])


async def _overlaps(pool: asyncpg.Pool) -> int:
    return await pool.fetchval(
        """SELECT count(*) FROM bookings a JOIN bookings b
             ON a.resource_id = b.resource_id AND a.booking_id < b.booking_id
            AND a.during && b.during
          WHERE a.status = 'confirmed' AND b.status = 'confirmed'"""
    )


# -- units and search -------------------------------------------------------------------------


async def test_demo_yard_has_units_of_each_kind(fresh):
    svc = _service(fresh)
    units = await svc.search_units(limit=100)
    assert len(units) >= 12
    free = [u for u in units if u.required_certification is None and u.min_insurance is None]
    gated = [u for u in units if u.required_certification or u.min_insurance]
    assert {"projector", "pa_system", "generator", "demo_vehicle"} <= {u.category for u in free}
    assert {"excavator", "boom_lift", "forklift"} <= {u.category for u in gated}
    assert {u.required_certification for u in gated} >= {"excavator", "aerial_lift", "forklift"}
    assert [u.unit_id for u in units if u.status == "MAINTENANCE"] == ["EXC-203"]
    assert all(u.max_rate >= u.daily_rate for u in units)
    civic = await svc.get_unit("VEH-CIVIC-01")
    assert (civic.cell_minutes, civic.booking_kind) == (30, "test_drive")


async def test_search_ranks_the_best_match_first(fresh):
    svc = _service(fresh)
    boom = [u.unit_id for u in await svc.search_units("boom lift")]
    # Both words match the boom lifts; the scissor lift matches only "lift".
    assert boom[:2] == ["BML-401", "BML-402"]
    assert "SCL-501" in boom[2:]
    mini = await svc.search_units("mini excavator")
    assert mini[0].unit_id == "EXC-201"
    # A typo still finds excavators (trigrams), and plural words find the singular.
    assert {u.unit_id for u in await svc.search_units("excavater")} >= {"EXC-201", "EXC-202"}
    assert [u.unit_id for u in await svc.search_units("projectors")] == ["PRJ-901"]
    # Words from the description count too, below the name.
    assert "PAS-951" in [u.unit_id for u in await svc.search_units("wireless microphones")]


async def test_search_filters_by_category_and_price(fresh):
    svc = _service(fresh)
    lifts = await svc.search_units(category="Boom lifts")
    assert [u.unit_id for u in lifts] == ["BML-401", "BML-402"]  # cheapest first
    cheap = await svc.search_units(max_daily_rate="100")
    assert cheap and all(u.daily_rate <= 100 for u in cheap)
    assert [u.unit_id for u in await svc.search_units("generator", max_daily_rate=60)] == [
        "GEN-702"
    ]
    assert await svc.search_units(category="spaceship") == []
    assert await svc.search_units("the") == []  # only a stop word: nothing to match
    assert len(await svc.search_units(limit=3)) == 3


async def test_unknown_unit_is_not_found(fresh):
    svc = _service(fresh)
    with pytest.raises(NotFound):
        await svc.get_unit("NOPE-1")
    with pytest.raises(NotFound):
        await svc.create_hold(_hold("NOPE-1", 5))


# -- holds and confirm ------------------------------------------------------------------------


async def test_rental_hold_confirm_writes_booking_and_rental_in_one_go(fresh):
    svc = _service(fresh)
    hold = await svc.create_hold(_hold("PRJ-901", 10, 3))
    assert hold.hold_id.startswith("PRJ-901.")
    assert (hold.kind, hold.days, hold.minutes) == ("rental", 3, None)
    assert hold.daily_rate == Decimal("85.00") and hold.quoted_total == Decimal("255.00")
    assert hold.requires.certification is None and hold.requires.min_insurance is None
    assert hold.start.date().isoformat() == _days(10)[0]
    with pytest.raises(Unavailable) as taken:
        await svc.create_hold(_hold("PRJ-901", 12, 2))
    assert "already booked" in taken.value.message
    booking = await svc.confirm_hold(hold.hold_id)
    assert (booking.unit_id, booking.days, booking.total) == ("PRJ-901", 3, Decimal("255.00"))
    assert not booking.negotiated and booking.status == "confirmed"
    row = await fresh.pool.fetchrow(
        "SELECT r.total, r.call_id, b.kind, b.reference FROM rentals r "
        "JOIN bookings b USING (booking_id) WHERE booking_id = $1",
        uuid.UUID(booking.booking_id),
    )
    assert (row["total"], row["call_id"], row["kind"]) == (Decimal("255.00"), "call-1", "rental")
    assert row["reference"] == booking.reference
    assert await svc.get_booking(booking.booking_id) == booking
    # Confirming again returns the same booking and writes nothing new.
    again = await svc.confirm_hold(hold.hold_id)
    assert again.booking_id == booking.booking_id and again.replayed
    assert (await _counts(fresh.pool))[:2] == (1, 1)


async def test_a_one_day_rental_defaults_its_return_date(fresh):
    svc = _service(fresh)
    start, _ = _days(4)
    hold = await svc.create_hold(HoldRequest(unit_id="GEN-702", start=start))
    assert hold.days == 1 and hold.quoted_total == Decimal("55.00")
    # A date and time is taken as its local day.
    other = await svc.create_hold(
        HoldRequest(unit_id="GEN-701", start=f"{start}T09:30", end=_days(6)[0] + "T17:00")
    )
    assert other.days == 2


async def test_test_drive_holds_use_the_half_hour_grid(fresh):
    svc = _service(fresh)
    tz = TZ
    day = datetime.now(tz).date() + timedelta(days=3)
    start = datetime.combine(day, datetime.min.time(), tz).replace(hour=10, minute=30)
    hold = await svc.create_hold(HoldRequest(unit_id="VEH-CIVIC-01", start=start.isoformat()))
    assert (hold.kind, hold.minutes, hold.days) == ("test_drive", 30, None)
    assert hold.end - hold.start == timedelta(minutes=30)
    assert hold.quoted_total == Decimal("0.00")
    with pytest.raises(Unavailable):
        await svc.create_hold(HoldRequest(unit_id="VEH-CIVIC-01", start=start.isoformat()))
    # The next half hour is free.
    nxt = await svc.create_hold(
        HoldRequest(unit_id="VEH-CIVIC-01", start=(start + timedelta(minutes=30)).isoformat())
    )
    booking = await svc.confirm_hold(nxt.hold_id)
    assert (booking.kind, booking.minutes) == ("test_drive", 30)
    kind = await fresh.pool.fetchval(
        "SELECT kind FROM bookings WHERE reference = $1", booking.reference
    )
    assert kind == "test_drive"
    with pytest.raises(InvalidInput) as bare_date:
        await svc.create_hold(HoldRequest(unit_id="VEH-RAV4-01", start=day.isoformat()))
    assert "needs a start time" in bare_date.value.message
    with pytest.raises(InvalidInput) as off_grid:
        await svc.create_hold(
            HoldRequest(unit_id="VEH-RAV4-01", start=(start + timedelta(minutes=10)).isoformat())
        )
    assert "30-minute grid" in off_grid.value.message


async def test_a_unit_in_maintenance_cannot_be_held(fresh):
    svc = _service(fresh)
    with pytest.raises(UnitInMaintenance) as err:
        await svc.create_hold(_hold("EXC-203", 5))
    assert "in maintenance" in err.value.message
    assert isinstance(err.value, Unavailable)
    # Back from the shop: holdable at once on this replica.
    await svc.set_unit_status("EXC-203", "AVAILABLE")
    await svc.create_hold(_hold("EXC-203", 5))
    await svc.set_unit_status("GEN-701", "MAINTENANCE")
    with pytest.raises(UnitInMaintenance):
        await svc.create_hold(_hold("GEN-701", 5))
    with pytest.raises(InvalidInput):
        await svc.set_unit_status("GEN-701", "BROKEN")


async def test_release_frees_the_unit(fresh):
    svc = _service(fresh)
    hold = await svc.create_hold(_hold("CMP-801", 8, 2))
    assert (await svc.release_hold(hold.hold_id)).released
    assert not (await svc.release_hold(hold.hold_id)).released
    with pytest.raises(HoldExpired):
        await svc.confirm_hold(hold.hold_id)
    again = await svc.create_hold(_hold("CMP-801", 8, 2))
    await svc.confirm_hold(again.hold_id)


async def test_hold_expiry_frees_the_unit(fresh):
    settings = fresh.settings()
    store = ReservationStore(
        pool=fresh.pool, redis=fresh.redis, tz=settings.tz, prefix=fresh.prefix, hold_ttl_seconds=1
    )
    svc = InventoryService(
        pool=fresh.pool, redis=fresh.redis, settings=settings, reservations=store
    )
    hold = await svc.create_hold(_hold("GEN-701", 9, 2))
    with pytest.raises(Unavailable):
        await svc.create_hold(_hold("GEN-701", 10, 1))
    await asyncio.sleep(1.3)
    with pytest.raises(HoldExpired):
        await svc.confirm_hold(hold.hold_id)
    with pytest.raises(HoldExpired):
        await svc.propose_rate(hold.hold_id, 130)
    second = await svc.create_hold(_hold("GEN-701", 10, 1))
    await svc.confirm_hold(second.hold_id)
    assert (await _counts(fresh.pool))[:2] == (1, 1)


async def test_cancel_keeps_the_row_and_frees_the_unit(fresh):
    svc = _service(fresh)
    booking = await svc.confirm_hold((await svc.create_hold(_hold("PAS-951", 6, 2))).hold_id)
    with pytest.raises(Unavailable):
        await svc.create_hold(_hold("PAS-951", 6, 1))
    cancelled = await svc.cancel_rental(booking.booking_id, "Event was moved")
    assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "Event was moved")
    assert (await svc.cancel_rental(booking.booking_id, "again")).status == "cancelled"
    assert (await _counts(fresh.pool))[:2] == (1, 1)
    await svc.confirm_hold((await svc.create_hold(_hold("PAS-951", 6, 1))).hold_id)
    with pytest.raises(NotFound):
        await svc.get_booking("6d1f0000-0000-4000-8000-000000000000")
    with pytest.raises(NotFound):
        await svc.cancel_rental("not-a-uuid", "x")


# -- Redis losing state -----------------------------------------------------------------------


async def test_redis_flushed_between_hold_and_confirm(fresh):
    svc = _service(fresh)
    lost = await svc.create_hold(_hold("GEN-702", 20, 2))
    await fresh.flush_redis()
    with pytest.raises(HoldExpired) as err:
        await svc.confirm_hold(lost.hold_id)
    assert "place a new hold" in err.value.message
    assert (await _counts(fresh.pool))[:2] == (0, 0)

    # A confirmed rental survives a flush: PostgreSQL refuses the second booking.
    first = await svc.confirm_hold((await svc.create_hold(_hold("GEN-702", 20, 2))).hold_id)
    await fresh.flush_redis()
    second = await svc.create_hold(_hold("GEN-702", 21, 2))  # Redis no longer knows
    with pytest.raises(Unavailable) as taken:
        await svc.confirm_hold(second.hold_id)
    assert "booked by someone else" in taken.value.message
    assert (await _counts(fresh.pool))[:2] == (1, 1)
    assert await _overlaps(fresh.pool) == 0
    assert (await svc.get_booking(first.booking_id)).status == "confirmed"


# -- idempotency ------------------------------------------------------------------------------


async def test_idempotent_hold_and_confirm_write_nothing_new(fresh):
    svc = _service(fresh)
    request = _hold("GEN-701", 15, 2)
    first = await svc.create_hold(request, idempotency_key="hold-key-1")
    keys_after_first = await _redis_keys(fresh)
    replay = await svc.create_hold(request, idempotency_key="hold-key-1")
    assert replay.hold_id == first.hold_id and replay.replayed
    assert await _redis_keys(fresh) == keys_after_first

    booking = await svc.confirm_hold(first.hold_id, idempotency_key="confirm-key-1")
    counts = await _counts(fresh.pool)
    assert counts == (1, 1, 1)
    again = await svc.confirm_hold(first.hold_id, idempotency_key="confirm-key-1")
    assert again.replayed and again.booking_id == booking.booking_id
    assert again.model_dump(exclude={"replayed"}) == booking.model_dump(exclude={"replayed"})
    assert await _counts(fresh.pool) == counts
    # The hold key replayed after its hold was confirmed says where the booking is.
    with pytest.raises(Conflict) as confirmed:
        await svc.create_hold(request, idempotency_key="hold-key-1")
    assert booking.reference in confirmed.value.message
    # A confirm key reused for another hold is refused, and writes nothing.
    other = await svc.create_hold(_hold("GEN-701", 30))
    with pytest.raises(IdempotencyKeyReused) as reused:  # 422, as the IETF draft has it
        await svc.confirm_hold(other.hold_id, idempotency_key="confirm-key-1")
    assert "different request" in reused.value.message
    assert await _counts(fresh.pool) == counts


async def test_concurrent_repeats_of_one_confirm_give_one_booking(fresh):
    svc = _service(fresh)
    hold = await svc.create_hold(_hold("PRJ-901", 25, 2))
    results = await asyncio.gather(
        *(svc.confirm_hold(hold.hold_id, idempotency_key="dup-confirm") for _ in range(20))
    )
    assert len({r.booking_id for r in results}) == 1
    assert await _counts(fresh.pool) == (1, 1, 1)


# -- negotiation ------------------------------------------------------------------------------


async def test_negotiation_bounds_lock_and_charge(fresh):
    svc = _service(fresh, negotiation_max_attempts=3)
    hold = await svc.create_hold(_hold("GEN-701", 11, 3))  # 120.00 a day, at most 150.00
    with pytest.raises(NegotiationRefused) as low:
        await svc.propose_rate(hold.hold_id, "100")
    assert "$120" in low.value.message and low.value.details["lowest_rate"] == "120.00"
    assert low.value.details["attempts_left"] == 2
    with pytest.raises(NegotiationRefused) as high:
        await svc.propose_rate(hold.hold_id, 151)
    assert "$150" in high.value.message
    deal = await svc.propose_rate(hold.hold_id, "135.50")
    assert (deal.agreed_rate, deal.days, deal.quoted_total) == (
        Decimal("135.50"),
        3,
        Decimal("406.50"),
    )
    assert (deal.attempts_used, deal.attempts_left) == (3, 0)
    # Locked: the same rate again is the same answer; another rate is refused.
    assert (await svc.propose_rate(hold.hold_id, "135.5")).agreed_rate == Decimal("135.50")
    with pytest.raises(NegotiationRefused) as locked:
        await svc.propose_rate(hold.hold_id, 121)
    assert "already agreed" in locked.value.message
    assert (await svc.get_hold(hold.hold_id)).daily_rate == Decimal("135.50")
    booking = await svc.confirm_hold(hold.hold_id)
    assert (booking.daily_rate, booking.list_rate, booking.total, booking.negotiated) == (
        Decimal("135.50"),
        Decimal("120.00"),
        Decimal("406.50"),
        True,
    )
    stored = await fresh.pool.fetchrow("SELECT agreed_daily_rate, total FROM rentals")
    assert tuple(stored) == (Decimal("135.50"), Decimal("406.50"))
    with pytest.raises(NegotiationRefused) as after:
        await svc.propose_rate(hold.hold_id, 140)
    assert "already confirmed" in after.value.message


async def test_negotiation_attempts_are_bounded(fresh):
    svc = _service(fresh, negotiation_max_attempts=2)
    hold = await svc.create_hold(_hold("BML-401", 11, 1))
    for offer in (300, 310):
        with pytest.raises(NegotiationRefused):
            await svc.propose_rate(hold.hold_id, offer)
    with pytest.raises(NegotiationRefused) as spent:
        await svc.propose_rate(hold.hold_id, 400)  # within bounds, but no attempts left
    assert "limit of 2 offers" in spent.value.message
    assert "$375" in spent.value.message
    assert await fresh.redis.hget(svc.store.hold_key(hold.hold_id), "attempts") == "2"


async def test_concurrent_offers_lock_exactly_one_rate(fresh):
    svc = _service(fresh, negotiation_max_attempts=5)
    hold = await svc.create_hold(_hold("CMP-801", 11, 2))  # 135.00 .. 165.00

    async def offer(rate: int) -> str:
        try:
            return str((await svc.propose_rate(hold.hold_id, rate)).agreed_rate)
        except NegotiationRefused as e:
            return "locked" if "already agreed" in e.message else e.message

    # 30 callers offer different acceptable rates at once: one is locked, the rest are told.
    outcomes = await asyncio.gather(*(offer(135 + i) for i in range(30)))
    accepted = [o for o in outcomes if o != "locked"]
    assert len(accepted) == 1 and outcomes.count("locked") == 29
    booking = await svc.confirm_hold(hold.hold_id)
    assert str(booking.daily_rate) == accepted[0]


async def test_concurrent_offers_never_exceed_the_attempt_limit(fresh):
    svc = _service(fresh, negotiation_max_attempts=5)
    hold = await svc.create_hold(_hold("FRK-602", 11, 2))  # 340.00 .. 410.00

    async def offer(rate: int) -> str:
        try:
            await svc.propose_rate(hold.hold_id, rate)
        except NegotiationRefused as e:
            return "limit" if "limit of 5 offers" in e.message else "too low"
        return "accepted"

    outcomes = await asyncio.gather(*(offer(300) for _ in range(50)))
    assert (outcomes.count("too low"), outcomes.count("limit")) == (5, 45)
    assert await fresh.redis.hget(svc.store.hold_key(hold.hold_id), "attempts") == "5"
    with pytest.raises(NegotiationRefused):
        await svc.propose_rate(hold.hold_id, 350)  # even a fair rate: no attempts left


async def test_negotiation_is_refused_while_the_hold_is_being_confirmed(fresh):
    svc = _service(fresh)
    hold = await svc.create_hold(_hold("GEN-701", 12))
    await fresh.redis.hset(svc.store.hold_key(hold.hold_id), "state", "confirming")
    with pytest.raises(NegotiationRefused) as err:
        await svc.propose_rate(hold.hold_id, 130)
    assert "being confirmed" in err.value.message
    assert await fresh.redis.hget(svc.store.hold_key(hold.hold_id), "attempts") == "0"


# -- verification requirements ----------------------------------------------------------------


async def test_confirm_names_what_is_missing(fresh):
    checker = FakeChecker()
    svc = _service(fresh, checker=checker)
    hold = await svc.create_hold(_hold("EXC-201", 14, 2, call_id="call-7"))
    assert hold.requires.certification == "excavator"
    assert hold.requires.min_insurance == Decimal("1000000.00")
    with pytest.raises(VerificationRequired) as err:
        await svc.confirm_hold(hold.hold_id)
    assert "excavator operator certification" in err.value.message
    assert "insurance of at least 1000000" in err.value.message
    assert checker.calls[-1] == {
        "call_id": "call-7",
        "certification": "excavator",
        "min_insurance": Decimal("1000000.00"),
    }
    checker.verified["call-7"] = {"excavator"}
    with pytest.raises(VerificationRequired) as still:
        await svc.confirm_hold(hold.hold_id)
    assert err.value.details["missing"] != still.value.details["missing"]
    assert still.value.details["missing"] == ["insurance of at least 1000000.00"]
    assert (await _counts(fresh.pool))[:2] == (0, 0)
    # The hold survives a refusal; once verified, the confirm goes through.
    checker.insured["call-7"] = Decimal("2000000")
    booking = await svc.confirm_hold(hold.hold_id)
    assert booking.unit_id == "EXC-201" and booking.total == Decimal("650.00")


async def test_units_that_require_nothing_never_ask_the_checker(fresh):
    checker = FakeChecker()
    svc = _service(fresh, checker=checker)
    for unit in ("PRJ-901", "PAS-951", "GEN-702"):
        await svc.confirm_hold((await svc.create_hold(_hold(unit, 16))).hold_id)
    assert checker.calls == []


async def test_without_a_checker_gated_units_are_refused(fresh):
    svc = _service(fresh, checker=None)
    hold = await svc.create_hold(_hold("SCL-501", 17))  # aerial_lift, no insurance minimum
    with pytest.raises(VerificationRequired) as err:
        await svc.confirm_hold(hold.hold_id)
    assert err.value.details["missing"] == ["an operator certification for aerial lift"]
    hold = await svc.create_hold(_hold("SKS-301", 17))  # insurance only
    with pytest.raises(VerificationRequired) as ins:
        await svc.confirm_hold(hold.hold_id)
    assert "insurance coverage of at least $500,000" in ins.value.message


# -- bad input --------------------------------------------------------------------------------

BAD_HOLDS: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("past start", {"unit_id": "GEN-701", "start": _days(-2)[0], "end": _days(1)[0]}, InvalidInput),
    ("end before start", {"unit_id": "GEN-701", "start": _days(5)[0], "end": _days(3)[0]},
     InvalidInput),
    ("zero days", {"unit_id": "GEN-701", "start": _days(5)[0], "end": _days(5)[0]}, InvalidInput),
    ("beyond horizon", {"unit_id": "GEN-701", "start": _days(400)[0]}, InvalidInput),
    ("too long", {"unit_id": "GEN-701", "start": _days(1)[0], "end": _days(370)[0]},
     InvalidInput),
    ("malformed date", {"unit_id": "GEN-701", "start": "next tuesday"}, InvalidInput),
    ("impossible date", {"unit_id": "GEN-701", "start": "2027-02-30"}, InvalidInput),
    ("control chars", {"unit_id": "GEN-701", "start": "2027-01-01\x00"}, InvalidInput),
    ("over-long date", {"unit_id": "GEN-701", "start": "2" * 5000}, InvalidInput),
    ("sql unit id", {"unit_id": "GEN-701'; DROP TABLE units; --", "start": _days(3)[0]},
     InvalidInput),
    ("unknown unit", {"unit_id": "XYZ-999", "start": _days(3)[0]}, NotFound),
    ("bad call id", {"unit_id": "GEN-701", "start": _days(3)[0], "call_id": "a b\nc"},
     InvalidInput),
    ("past test drive", {"unit_id": "VEH-F150-01", "start": "2020-01-01T10:00"}, InvalidInput),
    ("long test drive", {"unit_id": "VEH-F150-01", "start": _days(2)[0] + "T10:00",
                         "end": _days(2)[0] + "T18:00"}, InvalidInput),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "error"), BAD_HOLDS, ids=[c[0] for c in BAD_HOLDS])
async def test_bad_hold_requests_change_nothing(fresh, case, body, error):
    svc = _service(fresh)
    with pytest.raises(error) as err:
        await svc.create_hold(HoldRequest(**body))
    assert err.value.message.endswith(".")  # a sentence an agent can say
    assert await _counts(fresh.pool) == (0, 0, 0)
    assert await _redis_keys(fresh) == 0


@pytest.mark.parametrize(
    "rate", ["-5", "NaN", "Infinity", "1e12", "ten dollars", "12\x07", "9" * 50, True]
)
async def test_absurd_rates_are_refused_without_spending_an_attempt(fresh, rate):
    svc = _service(fresh)
    hold = await svc.create_hold(_hold("GEN-701", 13))
    with pytest.raises(InvalidInput):
        await svc.propose_rate(hold.hold_id, rate)
    assert await fresh.redis.hget(svc.store.hold_key(hold.hold_id), "attempts") == "0"


async def test_bad_ids_and_search_text_are_refused_or_harmless(fresh):
    svc = _service(fresh)
    for bad in ("'; DROP TABLE bookings; --", "GEN-701", "", "x" * 500):
        with pytest.raises(NotFound):
            await svc.confirm_hold(bad)
        with pytest.raises(NotFound):
            await svc.propose_rate(bad, 130)
        with pytest.raises(NotFound):
            await svc.release_hold(bad)
    # A hold id of another service's resource is not an inventory hold.
    with pytest.raises(NotFound):
        await svc.confirm_hold("bay-1.0123456789abcdef01234567")
    # SQL-looking search text is just words.
    assert await svc.search_units("'; DROP TABLE units; --") == []
    assert await fresh.pool.fetchval("SELECT count(*) FROM units") >= 12
    for kwargs in (
        {"query": "x" * 201},
        {"query": "boom\x00lift"},
        {"category": "boom lift; --"},
        {"max_daily_rate": -1},
        {"max_daily_rate": "lots"},
        {"limit": 0},
        {"limit": 10_000},
    ):
        with pytest.raises(InvalidInput):
            await svc.search_units(**kwargs)
    with pytest.raises(InvalidInput):
        await svc.cancel_rental("6d1f0000-0000-4000-8000-000000000000", "x" * 400)
    assert await _counts(fresh.pool) == (0, 0, 0)


class _Counting:
    """The real client, with a count of the calls made through it (not a mock)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if callable(attr):
            self.calls[name] += 1
        return attr


async def test_a_hold_is_one_cached_lookup_and_one_lua_call(fresh):
    pool, redis = _Counting(fresh.pool), _Counting(fresh.redis)
    # The reservation's own cost; the call's hold quota adds one script (the test below).
    settings = fresh.settings(max_holds_per_call=0)
    svc = InventoryService(pool=pool, redis=redis, settings=settings)  # type: ignore[arg-type]
    await svc.create_hold(_hold("GEN-702", 30))
    assert pool.calls == {"fetchrow": 1}  # the unit, read once and cached
    pool.calls.clear()
    redis.calls.clear()
    for offset in (31, 32, 33):
        await svc.create_hold(_hold("GEN-702", offset))
    assert pool.calls == {}
    assert redis.calls == {"evalsha": 3}
    # A unit that requires nothing confirms with no verification and no extra unit read.
    hold = await svc.create_hold(_hold("GEN-702", 34))
    pool.calls.clear()
    await svc.confirm_hold(hold.hold_id)
    # One statement, one round trip: the booking and its rental row, no BEGIN/COMMIT.
    assert pool.calls == {"fetchrow": 1}


async def test_the_hold_quota_costs_one_lua_call_and_only_for_a_call(fresh):
    redis = _Counting(fresh.redis)
    svc = InventoryService(pool=fresh.pool, redis=redis, settings=fresh.settings())  # type: ignore[arg-type]
    await svc.create_hold(_hold("GEN-702", 30))
    redis.calls.clear()
    await svc.create_hold(_hold("GEN-702", 31))
    assert redis.calls == {"evalsha": 2}  # the quota, then the reservation
    redis.calls.clear()
    await svc.create_hold(_hold("GEN-702", 32, call_id=None))
    assert redis.calls == {"evalsha": 1}
