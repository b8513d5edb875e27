"""The scheduling service against real PostgreSQL and Redis (both kinds of backend)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from services.errors import (
    Conflict,
    DependencyUnavailable,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
    Unavailable,
)
from services.kv import create_redis
from services.reservations import ReservationStore
from services.scheduling import Appointment, BookRequest, SchedulingService, VehicleIn

pytestmark = pytest.mark.integration

TZ = ZoneInfo("America/New_York")
PHONE = "+15552220001"


def _service(s, **settings: object) -> SchedulingService:
    return SchedulingService(pool=s.pool, redis=s.redis, settings=s.settings(**settings))


def _day(weekday: int, *, at_least: int = 2) -> date:
    """The first given weekday (0 = Monday) at least ``at_least`` days from today."""
    day = datetime.now(TZ).date() + timedelta(days=at_least)
    return day + timedelta(days=(weekday - day.weekday()) % 7)


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


def _phone(i: int) -> str:
    return f"+1555{300 + i // 10000:03d}{i % 10000:04d}"


async def _book(
    svc: SchedulingService, service_type: str, start: datetime | str, **kw
) -> Appointment:
    key = kw.pop("idempotency_key", None)
    req = BookRequest(phone=kw.pop("phone", PHONE), service_type=service_type, start=start, **kw)
    return await svc.book_appointment(req, idempotency_key=key)


async def _twins(*requests):
    """Race requests that share one idempotency key: the answers, each a twin that ran after
    the first (or the first), and the twins refused as in flight while it ran (409 with
    Retry-After, as the IETF draft has it). Nothing else may come back."""
    results = await asyncio.gather(*requests, return_exceptions=True)
    in_flight = [r for r in results if isinstance(r, IdempotencyKeyInFlight)]
    answers = [r for r in results if not isinstance(r, IdempotencyKeyInFlight)]
    assert not [r for r in answers if isinstance(r, BaseException)], results
    assert answers and all(r.retry_after > 0 for r in in_flight)
    return answers, in_flight


async def _count(pool: asyncpg.Pool, table: str) -> int:
    queries = {
        "bookings": "SELECT count(*) FROM bookings",
        "confirmed": "SELECT count(*) FROM bookings WHERE status = 'confirmed'",
        "appointments": "SELECT count(*) FROM appointments",
        "customers": "SELECT count(*) FROM customers",
        "callbacks": "SELECT count(*) FROM callbacks",
        "idempotency_keys": "SELECT count(*) FROM idempotency_keys",
    }
    return await pool.fetchval(queries[table])


async def _overlaps(pool: asyncpg.Pool) -> int:
    return await pool.fetchval(
        """SELECT count(*) FROM bookings a JOIN bookings b
             ON a.resource_id = b.resource_id AND a.booking_id < b.booking_id
            AND a.during && b.during
          WHERE a.status = 'confirmed' AND b.status = 'confirmed'"""
    )


def _starts(slots) -> list[tuple[int, int]]:
    return [(s.start.hour, s.start.minute) for s in slots.slots]


# -- service types and slots --------------------------------------------------------------------


async def test_service_types_name_duration_price_and_pool(fresh):
    types = {t.service_type: t for t in await _service(fresh).list_service_types()}
    assert {"oil_change", "brake_inspection", "tire_rotation", "full_service", "test_drive"} <= set(
        types
    )
    assert (types["full_service"].duration_minutes, types["full_service"].resources) == (120, 3)
    assert types["test_drive"].resources == 1
    assert all(t.price_min_usd <= t.price_max_usd for t in types.values())


async def test_an_open_day_offers_the_grid_around_lunch(fresh):
    svc = _service(fresh)
    monday = _day(0)
    oil = await svc.list_slots(monday.isoformat(), "oil_change")
    assert len(oil.slots) == 14 and oil.next_open_date is None
    assert (9, 0) in _starts(oil) and (16, 30) in _starts(oil)
    assert (12, 0) not in _starts(oil) and (12, 30) not in _starts(oil)
    assert oil.slots[0].end - oil.slots[0].start == timedelta(minutes=30)
    full = await svc.list_slots(monday, "Full service")  # a spoken name is understood
    assert _starts(full) == [
        (9, 0),
        (9, 30),
        (10, 0),
        (13, 0),
        (13, 30),
        (14, 0),
        (14, 30),
        (15, 0),
    ]
    saturday = await svc.list_slots(_day(5), "oil_change")
    assert _starts(saturday)[-1] == (15, 30)


async def test_a_closed_day_points_to_the_next_open_date(fresh):
    sunday = _day(6)
    slots = await _service(fresh).list_slots(sunday, "oil_change")
    assert slots.slots == [] and slots.next_open_date == sunday + timedelta(days=1)
    holiday = _service(fresh, closed_dates=[sunday + timedelta(days=1)])
    slots = await holiday.list_slots(sunday, "oil_change")
    assert slots.next_open_date == sunday + timedelta(days=2)
    with pytest.raises(InvalidInput, match="closed that day"):
        await _book(holiday, "oil_change", _at(sunday + timedelta(days=1), 10))


async def test_a_full_day_points_to_the_next_day_with_room(fresh):
    svc = _service(fresh)
    tuesday = _day(1)
    for start in (await svc.list_slots(tuesday, "test_drive")).slots:
        await _book(svc, "test_drive", start.start)
    full = await svc.list_slots(tuesday, "test_drive")
    assert full.slots == [] and full.next_open_date == tuesday + timedelta(days=1)
    # The bays are a different pool and still free that day.
    assert len((await svc.list_slots(tuesday, "oil_change")).slots) == 14
    assert await _count(fresh.pool, "appointments") == 14


async def test_slots_hide_held_cells_and_bookings_redis_forgot(fresh):
    svc = _service(fresh)
    wednesday = _day(2)
    # A hold in Redis (another caller deciding) hides the slot.
    await svc.reservations.reserve_cells(
        resource_id="sales-desk-1",
        start=_at(wednesday, 10),
        end=_at(wednesday, 10, 30),
        cell_seconds=1800,
        kind="appointment",
    )
    assert (10, 0) not in _starts(await svc.list_slots(wednesday, "test_drive"))
    # A booking PostgreSQL knows of hides the slot even when Redis lost every key.
    await _book(svc, "test_drive", _at(wednesday, 11))
    await fresh.flush_redis()
    starts = _starts(await svc.list_slots(wednesday, "test_drive"))
    assert (11, 0) not in starts and (10, 0) in starts
    with pytest.raises(Unavailable, match="taken"):
        await _book(svc, "test_drive", _at(wednesday, 11), phone=_phone(1))
    assert await _overlaps(fresh.pool) == 0


@pytest.mark.parametrize(
    ("day", "error"),
    [
        ("yesterday", InvalidInput),
        ("far", InvalidInput),
        ("2026-13-45", InvalidInput),
        ("'; DROP TABLE bookings; --", InvalidInput),
    ],
)
async def test_slots_of_bad_dates_are_refused(fresh, day, error):
    today = datetime.now(TZ).date()
    value = {"yesterday": today - timedelta(days=1), "far": today + timedelta(days=31)}.get(
        day, day
    )
    with pytest.raises(error):
        await _service(fresh).list_slots(value, "oil_change")


# -- booking ------------------------------------------------------------------------------------


async def test_booking_writes_the_appointment_and_the_customer(fresh):
    svc = _service(fresh)
    thursday = _day(3)
    appt = await _book(
        svc,
        "brake_inspection",
        _at(thursday, 10).isoformat(),
        phone="(555) 222-0001",
        name="Ana Ruiz",
        email="ana dot ruiz at example dot com",
        notes="Squeaks when braking; '; DROP TABLE appointments; --",
        call_id="call-42",
        vehicle=VehicleIn(year=2019, make="Toyota", model="Corolla", plate="abc 123"),
    )
    assert (appt.start, appt.end) == (_at(thursday, 10), _at(thursday, 11))
    assert appt.status == "confirmed" and len(appt.reference) == 6
    assert appt.resource_id.startswith("svc-bay-") and appt.phone == PHONE
    assert appt.notes and appt.notes.endswith("DROP TABLE appointments; --")  # stored as said
    assert appt == await svc.get_appointment(appt.appointment_id)
    customer = await svc.get_customer("555 222 0001")
    assert (customer.name, customer.email) == ("Ana Ruiz", "ana.ruiz@example.com")
    assert [(v.make, v.plate) for v in customer.vehicles] == [("Toyota", "ABC 123")]
    # The same car said again is the same vehicle.
    await _book(
        svc,
        "oil_change",
        _at(thursday, 14),
        vehicle=VehicleIn(year=2019, make="toyota", model="corolla", plate="ABC 123"),
    )
    assert len((await svc.get_customer(PHONE)).vehicles) == 1
    row = await fresh.pool.fetchrow(
        "SELECT kind, call_id FROM bookings WHERE booking_id = $1::uuid", appt.booking_id
    )
    assert (row["kind"], row["call_id"]) == ("appointment", "call-42")


@pytest.mark.parametrize(
    ("field", "value", "hint"),
    [
        ("start", "past", "already passed"),
        ("start", "far", "days ahead"),
        ("start", "off_grid", "every 30 minutes"),
        ("start", "evening", "open from 9:00 to 17:00"),
        ("start", "lunch", "lunch"),
        ("start", "sunday", "closed on Sundays"),
        ("start", "not a date", "date and time"),
        ("service_type", "car wash", "do not offer"),
        ("service_type", "oil_change'; --", "which service"),
        ("phone", "555 1234", "ten-digit"),
        ("email", "ana at gmail", "ending"),
        ("notes", "line\x00break", "not allowed"),
        ("name", "x" * 500, "too long"),
        ("call_id", "call 1; drop", "not a valid id"),
    ],
)
async def test_bad_bookings_are_refused_and_change_nothing(fresh, field, value, hint):
    svc = _service(fresh)
    friday = _day(4)
    starts = {
        "past": datetime.now(TZ) - timedelta(days=1),
        "far": _at(friday + timedelta(days=35), 10),
        "off_grid": _at(friday, 10, 10),
        "evening": _at(friday, 16, 30),  # a 60-minute brake inspection would end at 17:30
        "lunch": _at(friday, 11, 30),
        "sunday": _at(_day(6), 10),
    }
    request = {"phone": PHONE, "service_type": "brake_inspection", "start": _at(friday, 10)}
    request[field] = starts.get(value, value)
    with pytest.raises(InvalidInput) as err:
        await svc.book_appointment(BookRequest.model_validate(request))
    assert hint in err.value.message
    assert [await _count(fresh.pool, t) for t in ("bookings", "appointments", "customers")] == [
        0,
        0,
        0,
    ]


async def test_unknown_appointments_are_not_found(fresh):
    svc = _service(fresh)
    for bad in ("5d1c4c1e-0000-4000-8000-000000000000", "nope", "'; --"):
        with pytest.raises(NotFound):
            await svc.get_appointment(bad)
        with pytest.raises(NotFound):
            await svc.cancel_appointment(bad, "changed my mind")
    with pytest.raises(NotFound):
        await svc.get_customer("555 999 0000")
    assert await svc.list_customer_appointments("555 999 0000") == []


async def test_an_unreachable_redis_is_a_dependency_error(fresh):
    dead = create_redis("redis://127.0.0.1:1/0")
    try:
        svc = SchedulingService(pool=fresh.pool, redis=dead, settings=fresh.settings())
        with pytest.raises(DependencyUnavailable):
            await svc.list_slots(_day(0), "oil_change")
        with pytest.raises(DependencyUnavailable):
            await _book(svc, "oil_change", _at(_day(0), 10))
    finally:
        await dead.aclose()
    assert await _count(fresh.pool, "bookings") == 0


# -- races --------------------------------------------------------------------------------------


async def test_200_callers_race_for_four_slots_and_each_bay_is_given_once(fresh):
    svc = _service(fresh)
    monday = _day(0)
    slots = [_at(monday, 9), _at(monday, 9, 30), _at(monday, 10), _at(monday, 10, 30)]

    async def attempt(i: int) -> tuple[datetime, str]:
        start = slots[i % 4]
        try:
            await _book(svc, "oil_change", start, phone=_phone(i))
        except Unavailable:
            return start, "conflict"
        return start, "won"

    results = await asyncio.gather(*(attempt(i) for i in range(200)))
    outcomes = [r for _, r in results]
    tally = (
        f"[{fresh.kind}] 200 callers: {outcomes.count('won')} won, "
        f"{outcomes.count('conflict')} conflicts (feasible 12)"
    )
    assert (outcomes.count("won"), outcomes.count("conflict")) == (12, 188), tally
    for start in slots:
        per_start = [r for s, r in results if s == start]
        # The pool has three bays.
        assert (per_start.count("won"), per_start.count("conflict")) == (3, 47), (start, tally)
    assert await _count(fresh.pool, "appointments") == 12
    assert await _count(fresh.pool, "confirmed") == 12
    assert await _overlaps(fresh.pool) == 0
    assert (await svc.list_slots(monday, "oil_change")).slots[0].start == _at(monday, 11)


def _overlap(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _maximal_disjoint_sets(
    ranges: list[tuple[datetime, datetime]],
) -> list[tuple[tuple[datetime, datetime], ...]]:
    """Every set of pairwise-disjoint ranges to which no other range could be added: what one
    bay can end up holding when each caller takes the first bay free for their time."""
    found = []
    for size in range(1, len(ranges) + 1):
        for chosen in itertools.combinations(ranges, size):
            disjoint = not any(_overlap(a, b) for a, b in itertools.combinations(chosen, 2))
            if disjoint and all(
                any(_overlap(r, c) for c in chosen) for r in ranges if r not in chosen
            ):
                found.append(chosen)
    return found


async def test_200_callers_race_for_overlapping_hours_and_nothing_overlaps(fresh):
    """200 callers want a 60-minute brake inspection at 9:00, 9:30, 10:00 or 10:30 on one of
    three bays. A caller is refused only when their hour overlaps a booking on every bay, and
    nothing is given back during the race, so each bay ends holding a maximal set of disjoint
    hours: {9:00, 10:00}, {9:00, 10:30} or {9:30, 10:30}, two every time. However the race is
    ordered, exactly six win: fewer means a feasible booking was refused, more an overlap."""
    svc = _service(fresh)
    tuesday = _day(1)
    starts = [_at(tuesday, 9), _at(tuesday, 9, 30), _at(tuesday, 10), _at(tuesday, 10, 30)]
    hour = timedelta(minutes=60)
    ranges = [(s, s + hour) for s in starts]
    bays = [f"svc-bay-{n}" for n in (1, 2, 3)]
    maximal = _maximal_disjoint_sets(ranges)
    assert {len(m) for m in maximal} == {2}  # every maximal choice per bay is a maximum one
    feasible = len(bays) * 2
    n = 200

    async def attempt(i: int) -> Appointment | None:
        try:
            return await _book(svc, "brake_inspection", starts[i % 4], phone=_phone(i))
        except Unavailable:
            return None

    results = await asyncio.gather(*(attempt(i) for i in range(n)))
    won = [a for a in results if a is not None]
    lost = [ranges[i % 4] for i, a in enumerate(results) if a is None]
    tally = f"[{fresh.kind}] {n} callers: {len(won)} won, {len(lost)} conflicts"
    tally += f" (feasible {feasible})"
    print("\n" + tally)
    assert (len(won), len(lost)) == (feasible, n - feasible), tally

    by_bay = {bay: [(a.start, a.end) for a in won if a.resource_id == bay] for bay in bays}
    assert sorted(len(held) for held in by_bay.values()) == [2, 2, 2], by_bay
    for bay, held in by_bay.items():
        assert not any(_overlap(a, b) for a, b in itertools.combinations(held, 2)), bay
        # Every refused caller's hour really was taken on this bay.
        assert all(any(_overlap(r, h) for h in held) for r in lost), bay
    assert await _count(fresh.pool, "appointments") == feasible
    assert await _overlaps(fresh.pool) == 0
    rows = await fresh.pool.fetch(
        """SELECT a.appointment_id::text AS appointment_id, b.resource_id, b.during
             FROM appointments a JOIN bookings b USING (booking_id)
            WHERE b.status <> 'cancelled'"""
    )
    # Every answer given is a row, and every row an answer given.
    assert {(r["appointment_id"], r["resource_id"], r["during"].lower) for r in rows} == {
        (a.appointment_id, a.resource_id, a.start) for a in won
    }


async def test_20_retries_with_one_key_book_once(fresh):
    svc = _service(fresh)
    start = _at(_day(2), 15)
    answers, _ = await _twins(
        *(_book(svc, "oil_change", start, idempotency_key="book-race-1") for _ in range(20))
    )
    answers.append(await _book(svc, "oil_change", start, idempotency_key="book-race-1"))
    assert len({a.appointment_id for a in answers}) == 1
    assert await _count(fresh.pool, "appointments") == 1
    assert await _count(fresh.pool, "confirmed") == 1
    # The bays the losing twins held for a moment were let go again.
    assert len([s for s in (await svc.list_slots(start.date(), "oil_change")).slots
                if s.start == start]) == 1  # fmt: skip


# -- reschedule and cancel ----------------------------------------------------------------------


async def test_moving_onto_a_taken_time_keeps_the_old_one(fresh):
    svc = _service(fresh)
    wednesday = _day(2)
    mine = await _book(svc, "test_drive", _at(wednesday, 10))
    await _book(svc, "test_drive", _at(wednesday, 11), phone=_phone(7))
    with pytest.raises(Unavailable):
        await svc.reschedule_appointment(mine.appointment_id, _at(wednesday, 11))
    assert (await svc.get_appointment(mine.appointment_id)).start == _at(wednesday, 10)
    starts = _starts(await svc.list_slots(wednesday, "test_drive"))
    assert (10, 0) not in starts and (11, 0) not in starts
    moved = await svc.reschedule_appointment(mine.appointment_id, _at(wednesday, 14).isoformat())
    assert (moved.start, moved.reference) == (_at(wednesday, 14), mine.reference)
    starts = _starts(await svc.list_slots(wednesday, "test_drive"))
    assert (10, 0) in starts and (14, 0) not in starts
    with pytest.raises(InvalidInput, match="lunch"):
        await svc.reschedule_appointment(mine.appointment_id, _at(wednesday, 12))
    assert await _overlaps(fresh.pool) == 0


async def test_a_move_takes_another_bay_when_its_own_is_busy(fresh):
    svc = _service(fresh)
    thursday = _day(3)
    mine = await _book(svc, "oil_change", _at(thursday, 9))
    other = await _book(svc, "oil_change", _at(thursday, 14), phone=_phone(8))
    assert other.resource_id == mine.resource_id  # both took the first bay
    moved = await svc.reschedule_appointment(mine.appointment_id, _at(thursday, 14))
    assert moved.resource_id != mine.resource_id and moved.start == _at(thursday, 14)
    assert await _overlaps(fresh.pool) == 0
    assert await _count(fresh.pool, "bookings") == 2


async def test_cancel_keeps_the_row_and_offers_the_time_again(fresh):
    svc = _service(fresh)
    friday = _day(4)
    appt = await _book(svc, "test_drive", _at(friday, 13))
    assert (13, 0) not in _starts(await svc.list_slots(friday, "test_drive"))
    cancelled = await svc.cancel_appointment(appt.appointment_id, "Bought the car elsewhere")
    assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "Bought the car elsewhere")
    assert (13, 0) in _starts(await svc.list_slots(friday, "test_drive"))
    assert await _count(fresh.pool, "appointments") == 1  # a status, never a delete
    assert await svc.list_customer_appointments(PHONE) == []
    again = await svc.cancel_appointment(appt.appointment_id, "again")
    assert again.cancel_reason == "Bought the car elsewhere"
    with pytest.raises(Conflict, match="cancelled"):
        await svc.reschedule_appointment(appt.appointment_id, _at(friday, 14))
    rebooked = await _book(svc, "test_drive", _at(friday, 13), phone=_phone(9))
    assert rebooked.status == "confirmed"


async def test_idempotent_book_reschedule_cancel_write_nothing_new(fresh):
    svc = _service(fresh)
    monday = _day(0)
    first = await _book(svc, "oil_change", _at(monday, 10), idempotency_key="b-1")
    counts = [await _count(fresh.pool, t) for t in ("bookings", "appointments", "idempotency_keys")]
    assert await _book(svc, "oil_change", _at(monday, 10), idempotency_key="b-1") == first
    assert counts == [
        await _count(fresh.pool, t) for t in ("bookings", "appointments", "idempotency_keys")
    ]
    with pytest.raises(IdempotencyKeyReused, match="idempotency key"):
        await _book(svc, "oil_change", _at(monday, 11), idempotency_key="b-1")

    moved = await svc.reschedule_appointment(first.appointment_id, _at(monday, 15), "r-1")
    assert await svc.reschedule_appointment(first.appointment_id, _at(monday, 15), "r-1") == moved
    # A replay after the appointment moved on still answers what the first request was told.
    await svc.reschedule_appointment(first.appointment_id, _at(monday, 16))
    assert await svc.reschedule_appointment(first.appointment_id, _at(monday, 15), "r-1") == moved
    assert (await svc.get_appointment(first.appointment_id)).start == _at(monday, 16)

    cancelled = await svc.cancel_appointment(first.appointment_id, "sick", "c-1")
    replays = await asyncio.gather(
        *(svc.cancel_appointment(first.appointment_id, "sick", "c-1") for _ in range(10))
    )
    assert all(r == cancelled for r in replays)
    assert await _count(fresh.pool, "idempotency_keys") == 3
    assert await _count(fresh.pool, "bookings") == 1


async def test_concurrent_reschedules_with_one_key_move_once(fresh):
    svc = _service(fresh)
    tuesday = _day(1)
    appt = await _book(svc, "oil_change", _at(tuesday, 9))
    answers, _ = await _twins(
        *(
            svc.reschedule_appointment(appt.appointment_id, _at(tuesday, 15), "mv")
            for _ in range(10)
        )
    )
    answers.append(await svc.reschedule_appointment(appt.appointment_id, _at(tuesday, 15), "mv"))
    assert len({(a.start, a.resource_id) for a in answers}) == 1
    assert await _count(fresh.pool, "confirmed") == 1
    assert await _overlaps(fresh.pool) == 0


# -- customers, preferences, callbacks ----------------------------------------------------------


async def test_preferences_are_learned_from_bookings(fresh):
    svc = _service(fresh)
    tuesday = _day(1)
    first = await _book(svc, "oil_change", _at(tuesday, 9, 30))
    customer = await svc.get_customer(PHONE)
    assert (customer.preferred_time_of_day, customer.preferred_weekdays) == ("morning", ["tue"])
    await _book(svc, "oil_change", _at(tuesday + timedelta(days=2), 14))
    await _book(svc, "oil_change", _at(tuesday + timedelta(days=2), 15))
    customer = await svc.get_customer(PHONE)
    assert (customer.preferred_time_of_day, customer.preferred_weekdays) == ("afternoon", ["thu"])
    await svc.cancel_appointment(first.appointment_id, "no longer needed")
    upcoming = await svc.list_customer_appointments("five five five two two two oh oh oh one")
    assert [a.start for a in upcoming] == [
        _at(tuesday + timedelta(days=2), 14),
        _at(tuesday + timedelta(days=2), 15),
    ]


async def test_callbacks_land_inside_business_hours(fresh):
    svc = _service(fresh)
    now = datetime.now(UTC)
    soon = await svc.schedule_callback("555 222 0001", "Wants a quote for tyres", call_id="c-9")
    assert soon.scheduled_for >= now
    local = soon.scheduled_for.astimezone(TZ)
    assert local.weekday() != 6 and 9 <= local.hour < 17 and local.hour != 12
    assert local.minute in (0, 30)

    sunday = _day(6)
    monday_call = await svc.schedule_callback(PHONE, "Recall notice", _at(sunday, 11))
    assert monday_call.scheduled_for == _at(sunday + timedelta(days=1), 9)
    lunch_call = await svc.schedule_callback(PHONE, "Billing", _at(_day(2), 12, 10))
    assert lunch_call.scheduled_for == _at(_day(2), 13)
    past_call = await svc.schedule_callback(PHONE, "Anything", now - timedelta(days=3))
    assert past_call.scheduled_for >= now

    listed = await svc.list_callbacks(sunday + timedelta(days=1))
    assert [c.callback_id for c in listed] == [monday_call.callback_id]
    assert {c.callback_id for c in await svc.list_callbacks()} >= {
        soon.callback_id,
        monday_call.callback_id,
        lunch_call.callback_id,
    }
    key_call = await svc.schedule_callback(PHONE, "Once", idempotency_key="cb-1")
    assert await svc.schedule_callback(PHONE, "Once", idempotency_key="cb-1") == key_call
    assert await _count(fresh.pool, "callbacks") == 5
    assert await _count(fresh.pool, "customers") == 1
    with pytest.raises(InvalidInput):
        await svc.schedule_callback(PHONE, "")
    with pytest.raises(InvalidInput):
        await svc.schedule_callback(PHONE, "Later", _at(_day(0) + timedelta(days=40), 10))


# -- the twins' lock -----------------------------------------------------------------------------


@pytest.mark.parametrize("lost", ["expired", "deleted"])
async def test_a_committed_booking_answers_though_its_twins_lock_was_lost(fresh, lost):
    """The lock that orders twins of one key lapses (a write slower than its TTL) or Redis loses
    it (a flush, a failover) before the write ends: the committed booking is still the answer,
    not a 503 that a caller would book again on."""
    svc = _service(fresh)
    start = _at(_day(3), 11)
    key = f"lock-{lost}"
    request = BookRequest(phone=PHONE, service_type="oil_change", start=start)
    lock_key = f"{fresh.prefix}:idem:scheduling.book:{key}"
    # book_appointment's own steps, with the lock lost between the commit and the release.
    async with svc.writing("scheduling.book", key):
        wanted = svc.check_booking(request)
        st, end = await svc.check_slot(request.service_type, wanted.start)
        booked = await svc.book_slot(st, wanted, end, key)
        assert await fresh.redis.exists(lock_key)
        if lost == "expired":
            await fresh.redis.pexpire(lock_key, 1)
            await asyncio.sleep(0.01)  # past the 1 ms: Redis expires it on the next access
            assert not await fresh.redis.exists(lock_key)
        else:
            await fresh.redis.delete(lock_key)
    again = await svc.book_appointment(request, idempotency_key=key)
    assert again.appointment_id == booked.appointment_id
    assert await _count(fresh.pool, "confirmed") == 1


# -- cancel against reschedule, and a cancel that fails -------------------------------------------


class _CancelBetweenMoveAndMark(ReservationStore):
    """A move whose cancel lands between its commit and its marking the new cells booked: the
    order the race takes when the cancel's UPDATE waits for the move's row lock."""

    committed: asyncio.Event
    cancelled: asyncio.Event

    async def _mark_moved(self, moved, cell_seconds, hold):
        self.committed.set()
        await self.cancelled.wait()
        await super()._mark_moved(moved, cell_seconds, hold)


async def _free_in_redis(svc: SchedulingService, resource_id: str, start, end) -> bool:
    cells = svc.reservations.cells(start, end, svc.cell_seconds)
    values = await svc.redis.mget(svc.reservations.cell_keys(resource_id, cells))
    return not any(values)


async def test_a_cancel_racing_a_reschedule_leaves_the_new_time_free(fresh):
    settings = fresh.settings()
    store = _CancelBetweenMoveAndMark.from_settings(
        pool=fresh.pool, redis=fresh.redis, settings=settings
    )
    store.committed, store.cancelled = asyncio.Event(), asyncio.Event()
    svc = SchedulingService(
        pool=fresh.pool, redis=fresh.redis, settings=settings, reservations=store
    )
    day = _day(1)
    appt = await _book(svc, "oil_change", _at(day, 9))

    async def cancel_once_the_move_committed() -> Appointment:
        await store.committed.wait()
        try:
            return await svc.cancel_appointment(appt.appointment_id, "Changed my mind")
        finally:
            store.cancelled.set()

    moved, cancelled = await asyncio.gather(
        svc.reschedule_appointment(appt.appointment_id, _at(day, 14)),
        cancel_once_the_move_committed(),
    )
    assert cancelled.status == "cancelled" and cancelled.start == moved.start
    # Neither the old time nor the new one stays taken in Redis by a cancelled booking.
    assert await _free_in_redis(svc, moved.resource_id, moved.start, moved.end)
    assert await _free_in_redis(svc, appt.resource_id, appt.start, appt.end)
    again = await _book(svc, "oil_change", _at(day, 14), phone=_phone(5))
    assert again.resource_id == moved.resource_id  # its own bay again: the time was free


async def test_a_cancel_that_fails_in_its_transaction_keeps_the_time_booked(fresh):
    svc = _service(fresh)
    day = _day(2)
    appt = await _book(svc, "oil_change", _at(day, 10))

    async def refuse(conn: asyncpg.Connection) -> None:
        raise Conflict("refused after the booking was cancelled in the transaction")

    with pytest.raises(Conflict):
        await svc.cancel_desk(appt, "no", None, None, also=refuse)
    assert (await svc.get_appointment(appt.appointment_id)).status == "confirmed"
    # Redis agrees with PostgreSQL: the time is still booked, not offered to another caller.
    assert not await _free_in_redis(svc, appt.resource_id, appt.start, appt.end)


async def test_a_twin_arriving_while_the_first_runs_is_told_it_is_in_flight(fresh):
    """As the IETF draft has it: 409 with Retry-After at once while the first request with
    the key runs (here: its mark is held), the first answer once it ended, and 422 for the
    key with another request."""
    svc = _service(fresh)
    start = _at(_day(3), 15)
    mark = fresh.redis.lock(f"{fresh.prefix}:idem:scheduling.book:k-in-flight", timeout=30)
    assert await mark.acquire(blocking=False)
    with pytest.raises(IdempotencyKeyInFlight) as refused:
        await _book(svc, "oil_change", start, idempotency_key="k-in-flight")
    assert refused.value.retry_after > 0
    assert await _count(fresh.pool, "appointments") == 0
    await mark.release()
    first = await _book(svc, "oil_change", start, idempotency_key='"k-in-flight"')  # quoted
    assert await _book(svc, "oil_change", start, idempotency_key="k-in-flight") == first
    with pytest.raises(IdempotencyKeyReused):
        await _book(svc, "oil_change", start + timedelta(hours=1), idempotency_key="k-in-flight")


async def test_a_reschedule_that_postgres_aborts_as_a_deadlock_victim_is_run_again(fresh):
    """Two moves into one time of one bay that Redis no longer guards, each waiting for the
    other (one for the other's exclusion check, the other for a row the first holds):
    PostgreSQL aborts one as a deadlock victim. The reschedule runs again, as a confirm
    does, and lands on another bay instead of failing with a 500 or a 503."""
    svc = _service(fresh)
    day = _day(2)
    a = await _book(svc, "oil_change", _at(day, 9))
    b = await _book(svc, "oil_change", _at(day, 11), phone=_phone(7))
    assert a.resource_id == b.resource_id  # the first free bay, both times
    target = _at(day, 14)
    st, end = await svc.check_slot("oil_change", target)

    a_moved = asyncio.Event()

    async def wait_for_b_then_take_its_row(conn: asyncpg.Connection) -> None:
        # a's UPDATE is done (uncommitted). Redis loses a's hold on the new time (a flush), so
        # only PostgreSQL stands between b's move and it. Until b's move waits on a's new
        # range, then wait on b's row: a cycle.
        await fresh.flush_redis()
        a_moved.set()
        for _ in range(600):  # a bound to fail on, not a measure
            if await fresh.pool.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock'"""
            ):
                break
            await asyncio.sleep(0.02)
        await conn.execute(
            "SELECT 1 FROM bookings WHERE booking_id = $1 FOR UPDATE", uuid.UUID(b.booking_id)
        )

    move_a = asyncio.ensure_future(
        svc.move_desk(a, st, target, end, None, {}, also=wait_for_b_then_take_its_row)
    )
    await a_moved.wait()  # a's UPDATE first, so b's waits on it
    moved_b = await svc.reschedule_appointment(b.appointment_id, target)
    moved_a = await move_a
    assert moved_a.start == moved_b.start == target
    assert moved_a.resource_id != moved_b.resource_id
    assert await _overlaps(fresh.pool) == 0
