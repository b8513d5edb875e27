"""Dealership test drives: the sales desk and a demo car, booked together or not at all.

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

from services.errors import DependencyUnavailable, InvalidInput, Unavailable
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


def _weekday_at(hour: int) -> datetime:
    day: date = datetime.now(TZ).date() + timedelta(days=3)
    while day.weekday() > 4:  # a weekday: the sales desk keeps business hours
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, tzinfo=TZ)


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
    first, second = await asyncio.gather(
        scheduling.book_test_drive(_request("VEH-CIVIC-01", start), idempotency_key="td-1"),
        scheduling.book_test_drive(_request("VEH-CIVIC-01", start), idempotency_key="td-1"),
    )
    assert first == second
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
