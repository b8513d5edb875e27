"""Dealership test drives: the sales desk and a demo car, booked, moved and cancelled together
or not at all.

Scheduling and inventory run in-process over the real PostgreSQL and Redis (both backends);
in the mesh the same composition goes through a DeploymentHandle (tests/integration/mesh).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from asyncpg.types import Range

from services.errors import (
    Conflict,
    DependencyUnavailable,
    IdempotencyKeyInFlight,
    InvalidInput,
    NotFound,
    Unavailable,
)
from services.inventory import HoldRequest, InventoryService
from services.scheduling import SchedulingService, TestDriveRequest

pytestmark = pytest.mark.integration

TZ = ZoneInfo("America/New_York")
PHONE = "+15552220077"


def _services(s) -> tuple[SchedulingService, InventoryService]:
    settings = s.settings()
    inventory = InventoryService(pool=s.pool, redis=s.redis, settings=settings)
    scheduling = SchedulingService(
        pool=s.pool, redis=s.redis, settings=settings, vehicles=inventory
    )
    return scheduling, inventory


def _weekday_at(hour: int, minute: int = 0) -> datetime:
    day: date = datetime.now(TZ).date() + timedelta(days=3)
    while day.weekday() > 4:  # a weekday: the sales desk keeps business hours
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


async def _counts(pool) -> tuple[int, int, int]:
    return (
        await pool.fetchval(
            "SELECT count(*) FROM appointments a JOIN bookings b USING "
            "(booking_id) WHERE b.status = 'confirmed'"
        ),
        await pool.fetchval(
            "SELECT count(*) FROM bookings WHERE kind = 'test_drive' AND status = 'confirmed'"
        ),
        await pool.fetchval("SELECT count(*) FROM bookings WHERE status = 'confirmed'"),
    )


def _request(car: str, start: datetime, phone: str = PHONE) -> TestDriveRequest:
    return TestDriveRequest(phone=phone, vehicle_unit_id=car, start=start, name="Sam Lee")


async def test_a_test_drive_books_the_desk_and_the_car(fresh):
    scheduling, inventory = _services(fresh)
    start = _weekday_at(10)
    drive = await scheduling.book_test_drive(_request("VEH-CIVIC-01", start))
    assert drive.appointment.service_type == "test_drive"
    assert drive.appointment.start == start
    assert drive.vehicle_unit_id == "VEH-CIVIC-01"
    car = await inventory.get_booking(drive.vehicle_booking_id)
    assert car.status == "confirmed" and car.start == start
    assert await _counts(fresh.pool) == (1, 1, 2)


async def test_a_taken_car_books_nothing(fresh):
    scheduling, _ = _services(fresh)
    start = _weekday_at(11)
    await scheduling.book_test_drive(_request("VEH-RAV4-01", start))
    before = await _counts(fresh.pool)
    # The desk would be free at 11:30, but the car is out until then: 11:00 is refused.
    with pytest.raises(Unavailable):
        await scheduling.book_test_drive(_request("VEH-RAV4-01", start, phone="+15552220078"))
    assert await _counts(fresh.pool) == before


async def test_a_full_desk_lets_the_car_go(fresh):
    scheduling, inventory = _services(fresh)
    start = _weekday_at(14)
    desks = await fresh.pool.fetchval(
        "SELECT count(*) FROM scheduling_resources WHERE pool = 'sales_desk'"
    )
    cars = ["VEH-CIVIC-01", "VEH-F150-01", "VEH-RAV4-01"]
    for i in range(desks):  # fill every sales desk at 14:00
        await scheduling.book_test_drive(_request(cars[i], start, phone=f"+1555222{i:04d}"))
    spare = cars[desks]
    with pytest.raises(Unavailable):
        await scheduling.book_test_drive(_request(spare, start, phone="+15552229999"))
    # The spare car's hold was released: it can be held for that time at once.
    again = await inventory.create_hold(HoldRequest(unit_id=spare, start=start))
    assert again.unit_id == spare


async def test_a_car_lost_between_hold_and_confirm_cancels_the_appointment(fresh):
    """Redis let the car be held, but PostgreSQL already has it booked (Redis lost state):
    the car's confirm is refused, so the appointment booked a moment before is cancelled."""
    scheduling, _ = _services(fresh)
    start = _weekday_at(15)
    await fresh.pool.execute(
        """INSERT INTO bookings (booking_id, resource_id, during, kind, reference)
           VALUES ($1, 'VEH-F150-01', $2, 'test_drive', 'LOST01')""",
        uuid.uuid4(),
        Range(start, start + timedelta(minutes=30)),
    )
    appointments_before, _, _ = await _counts(fresh.pool)
    with pytest.raises(Unavailable):
        await scheduling.book_test_drive(_request("VEH-F150-01", start))
    appointments_after, drives, _ = await _counts(fresh.pool)
    assert appointments_after == appointments_before
    assert drives == 1  # only the row that was already there
    cancelled = await fresh.pool.fetchval(
        """SELECT b.cancel_reason FROM appointments a JOIN bookings b USING (booking_id)
            WHERE b.status = 'cancelled'"""
    )
    assert cancelled == "the test-drive car could not be booked"


async def test_a_repeated_request_replays_the_first_answer(fresh):
    scheduling, _ = _services(fresh)
    start = _weekday_at(9)
    results = await asyncio.gather(
        scheduling.book_test_drive(_request("VEH-CIVIC-01", start), idempotency_key="td-1"),
        scheduling.book_test_drive(_request("VEH-CIVIC-01", start), idempotency_key="td-1"),
        return_exceptions=True,
    )
    # A twin that arrives while the first runs is told so (409 with Retry-After); asked
    # again once it ended, it gets the first answer.
    answers = [r for r in results if not isinstance(r, IdempotencyKeyInFlight)]
    assert answers and not [r for r in answers if isinstance(r, BaseException)], results
    first = answers[0]
    second = await scheduling.book_test_drive(
        _request("VEH-CIVIC-01", start), idempotency_key="td-1"
    )
    assert all(a == first for a in answers) and first == second
    assert await _counts(fresh.pool) == (1, 1, 2)


async def test_bad_requests_hold_nothing(fresh):
    scheduling, _ = _services(fresh)
    before = await _counts(fresh.pool)
    with pytest.raises(InvalidInput):
        await scheduling.book_test_drive(_request("VEH-CIVIC-01", _weekday_at(10), phone="12"))
    with pytest.raises(InvalidInput):  # the desk is closed at 7:00
        await scheduling.book_test_drive(_request("VEH-CIVIC-01", _weekday_at(7)))
    assert await _counts(fresh.pool) == before
    keys = [k async for k in fresh.redis.scan_iter(match=f"{fresh.prefix}:*VEH-CIVIC-01*")]
    assert keys == []


async def test_without_the_vehicle_desk_it_says_so(fresh):
    scheduling = SchedulingService(pool=fresh.pool, redis=fresh.redis, settings=fresh.settings())
    with pytest.raises(DependencyUnavailable):
        await scheduling.book_test_drive(_request("VEH-CIVIC-01", _weekday_at(10)))


# -- cancelling and moving a test drive -------------------------------------------------------


async def _car_starts(pool, car: str) -> list[datetime]:
    """When the car is booked (confirmed), in order."""
    rows = await pool.fetch(
        """SELECT lower(during) AS starts FROM bookings
            WHERE resource_id = $1 AND status = 'confirmed' ORDER BY lower(during)""",
        car,
    )
    return [r["starts"] for r in rows]


async def _car_is_free(inventory: InventoryService, car: str, start: datetime) -> bool:
    try:
        hold = await inventory.create_hold(HoldRequest(unit_id=car, start=start))
    except Unavailable:
        return False
    await inventory.release_hold(hold.hold_id)
    return True


async def test_cancelling_a_test_drive_cancels_its_car(fresh):
    scheduling, inventory = _services(fresh)
    start = _weekday_at(10)
    drive = await scheduling.book_test_drive(_request("VEH-CIVIC-01", start))
    assert not await _car_is_free(inventory, "VEH-CIVIC-01", start)

    cancelled = await scheduling.cancel_appointment(
        drive.appointment.appointment_id, "bought one elsewhere"
    )
    assert cancelled.status == "cancelled" and cancelled.cancel_reason == "bought one elsewhere"
    car = await inventory.get_booking(drive.vehicle_booking_id)
    assert car.status == "cancelled" and car.cancel_reason == "bought one elsewhere"
    assert await _counts(fresh.pool) == (0, 0, 0)
    assert await _car_is_free(inventory, "VEH-CIVIC-01", start)
    # The desk's time is offered again too.
    slots = await scheduling.list_slots(start.date(), "test_drive")
    assert start in [slot.start for slot in slots.slots]


async def test_a_repeated_cancel_answers_the_same_and_cancels_once(fresh):
    scheduling, inventory = _services(fresh)
    drive = await scheduling.book_test_drive(_request("VEH-RAV4-01", _weekday_at(11)))
    aid = drive.appointment.appointment_id
    first = await scheduling.cancel_appointment(aid, "changed my mind", idempotency_key="c-1")
    again = await scheduling.cancel_appointment(aid, "changed my mind", idempotency_key="c-1")
    assert again == first
    # Without a key, or with another reason: still the one cancelled test drive.
    later = await scheduling.cancel_appointment(aid, "asked twice")
    assert later.status == "cancelled" and later.cancel_reason == "changed my mind"
    car = await inventory.get_booking(drive.vehicle_booking_id)
    assert car.status == "cancelled" and car.cancel_reason == "changed my mind"
    assert await _counts(fresh.pool) == (0, 0, 0)


async def test_moving_a_test_drive_moves_its_car(fresh):
    scheduling, inventory = _services(fresh)
    old, new = _weekday_at(10), _weekday_at(15)
    drive = await scheduling.book_test_drive(_request("VEH-F150-01", old))
    aid = drive.appointment.appointment_id

    moved = await scheduling.reschedule_appointment(aid, new, idempotency_key="mv-1")
    assert moved.start == new and moved.status == "confirmed"
    assert await _car_starts(fresh.pool, "VEH-F150-01") == [new]
    assert await _car_is_free(inventory, "VEH-F150-01", old)
    first_car = await inventory.get_booking(drive.vehicle_booking_id)
    assert first_car.status == "cancelled"
    assert first_car.cancel_reason == "the test drive moved to another time"
    # Asked again with the key: the same answer, nothing moves twice.
    assert await scheduling.reschedule_appointment(aid, new, idempotency_key="mv-1") == moved
    assert await _counts(fresh.pool) == (1, 1, 2)

    # The appointment follows its new car: moving again, then cancelling, frees it.
    back = await scheduling.reschedule_appointment(aid, _weekday_at(9, 30))
    assert await _car_starts(fresh.pool, "VEH-F150-01") == [back.start]
    await scheduling.cancel_appointment(aid, "not this week")
    assert await _counts(fresh.pool) == (0, 0, 0)


async def test_moving_to_a_time_the_car_is_taken_changes_nothing(fresh):
    scheduling, inventory = _services(fresh)
    old, new = _weekday_at(10), _weekday_at(14)
    drive = await scheduling.book_test_drive(_request("VEH-CIVIC-01", old))
    # Someone else has the car at 14:00 (the desk is free then).
    other = await inventory.create_hold(HoldRequest(unit_id="VEH-CIVIC-01", start=new))
    await inventory.confirm_hold(other.hold_id)
    before = await _counts(fresh.pool)

    with pytest.raises(Unavailable) as refused:
        await scheduling.reschedule_appointment(drive.appointment.appointment_id, new)
    assert "Honda Civic" in refused.value.message and "stays where it is" in refused.value.message
    assert await _counts(fresh.pool) == before
    kept = await scheduling.get_appointment(drive.appointment.appointment_id)
    assert kept.start == old and kept.status == "confirmed"
    assert await _car_starts(fresh.pool, "VEH-CIVIC-01") == [old, new]


async def test_moving_to_a_time_the_desk_is_taken_lets_the_new_car_go(fresh):
    scheduling, inventory = _services(fresh)
    old, new = _weekday_at(10), _weekday_at(13)
    drive = await scheduling.book_test_drive(_request("VEH-RAV4-01", old))
    desks = await fresh.pool.fetchval(
        "SELECT count(*) FROM scheduling_resources WHERE pool = 'sales_desk'"
    )
    cars = ["VEH-CIVIC-01", "VEH-F150-01"]
    for i in range(desks):  # every sales desk is busy at 13:00, with other cars
        await scheduling.book_test_drive(_request(cars[i], new, phone=f"+1555333{i:04d}"))
    before = await _counts(fresh.pool)

    with pytest.raises(Unavailable) as refused:
        await scheduling.reschedule_appointment(drive.appointment.appointment_id, new)
    assert "taken for a test drive" in refused.value.message
    assert await _counts(fresh.pool) == before
    kept = await scheduling.get_appointment(drive.appointment.appointment_id)
    assert kept.start == old
    assert await _car_starts(fresh.pool, "VEH-RAV4-01") == [old]
    # The car's booking at the new time was made, then cancelled: the car is free then.
    assert await _car_is_free(inventory, "VEH-RAV4-01", new)


async def test_a_rental_is_found_and_cancelled_by_the_hold_it_was_booked_from(fresh):
    _, inventory = _services(fresh)
    start = _weekday_at(16)
    hold = await inventory.create_hold(HoldRequest(unit_id="VEH-CIVIC-01", start=start))
    assert await inventory.booking_for_hold(hold.hold_id) is None
    with pytest.raises(NotFound):  # still only a hold: no booking to cancel
        await inventory.cancel_rental_for_hold(hold.hold_id, "no")
    booked = await inventory.confirm_hold(hold.hold_id)
    found = await inventory.booking_for_hold(hold.hold_id)
    assert found is not None and found.booking_id == booked.booking_id
    first = await inventory.cancel_rental_for_hold(hold.hold_id, "plans changed")
    second = await inventory.cancel_rental_for_hold(hold.hold_id, "again")
    assert first.status == second.status == "cancelled"
    assert second.cancel_reason == "plans changed"
    assert await _car_is_free(inventory, "VEH-CIVIC-01", start)


async def test_cancelling_a_test_drives_car_directly_is_refused_and_names_the_way(fresh):
    # Issue 7, defect 9: POST /inventory/bookings/{id}/cancel on the car cancelled the car and
    # left the test drive's appointment standing, with no car.
    scheduling, inventory = _services(fresh)
    drive = await scheduling.book_test_drive(_request("VEH-CIVIC-01", _weekday_at(13)))

    with pytest.raises(Conflict) as refused:
        await inventory.cancel_rental(drive.vehicle_booking_id, "no longer needed")

    assert refused.value.code == "part_of_test_drive"
    assert "cancel the test drive through scheduling" in str(refused.value)
    assert refused.value.details["appointment_id"] == drive.appointment.appointment_id
    assert (await inventory.get_booking(drive.vehicle_booking_id)).status == "confirmed"
    assert await _counts(fresh.pool) == (1, 1, 2)
    # Through scheduling both go; the car's own cancel then answers the cancelled booking.
    await scheduling.cancel_appointment(drive.appointment.appointment_id, "no longer needed")
    car = await inventory.cancel_rental(drive.vehicle_booking_id)
    assert car.status == "cancelled"
    assert await _counts(fresh.pool) == (0, 0, 0)
