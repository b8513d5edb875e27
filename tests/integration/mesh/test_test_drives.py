"""A dealership test drive over real HTTP: the scheduling application books the sales desk
and holds and confirms the demo car through its handle to the inventory application, and
cancels or moves the car with the appointment."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

pytestmark = pytest.mark.integration

TZ = ZoneInfo("America/New_York")


def _weekday_at(hour: int) -> str:
    day: date = datetime.now(TZ).date() + timedelta(days=4)
    while day.weekday() > 4:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, 30, tzinfo=TZ).isoformat()


async def test_a_test_drive_books_desk_and_car_through_the_handle(client: httpx.AsyncClient):
    start = _weekday_at(15)
    body = {"phone": "+15553330101", "vehicle_unit_id": "VEH-CIVIC-01", "start": start}
    r = await client.post("/scheduling/test-drives", json=body, headers={"Idempotency-Key": "td-a"})
    assert r.status_code == 201, r.text
    drive = r.json()
    assert drive["appointment"]["service_type"] == "test_drive"
    car = await client.get(f"/inventory/bookings/{drive['vehicle_booking_id']}")
    assert car.status_code == 200 and car.json()["unit_id"] == "VEH-CIVIC-01"

    replay = await client.post(
        "/scheduling/test-drives", json=body, headers={"Idempotency-Key": "td-a"}
    )
    assert replay.status_code == 201 and replay.json() == drive

    # The same car at the same time for someone else: refused, and no appointment is made.
    other = {**body, "phone": "+15553330102"}
    taken = await client.post("/scheduling/test-drives", json=other)
    assert taken.status_code == 409, taken.text
    assert taken.json()["error"]["code"] == "unavailable"
    mine = await client.post("/scheduling/appointments/lookup", json={"phone": "+15553330102"})
    assert mine.status_code == 200 and mine.json() == []


async def test_an_unknown_car_is_404_and_books_nothing(client: httpx.AsyncClient):
    body = {"phone": "+15553330103", "vehicle_unit_id": "VEH-NOPE-99", "start": _weekday_at(16)}
    r = await client.post("/scheduling/test-drives", json=body)
    assert r.status_code == 404, r.text
    mine = await client.post("/scheduling/appointments/lookup", json={"phone": "+15553330103"})
    assert mine.json() == []


async def _car_hold(client: httpx.AsyncClient, car: str, start: str) -> int:
    """Try to hold the car at that time; let any hold go again. The status code."""
    r = await client.post("/inventory/holds", json={"unit_id": car, "start": start})
    if r.status_code == 201:
        gone = await client.delete(f"/inventory/holds/{r.json()['hold_id']}")
        assert gone.status_code == 204
    return r.status_code


async def test_cancelling_a_test_drive_over_http_frees_its_car(client: httpx.AsyncClient):
    start = _weekday_at(10)
    body = {"phone": "+15553330104", "vehicle_unit_id": "VEH-RAV4-01", "start": start}
    r = await client.post("/scheduling/test-drives", json=body)
    assert r.status_code == 201, r.text
    drive = r.json()
    assert await _car_hold(client, "VEH-RAV4-01", start) == 409  # the car is booked then

    aid = drive["appointment"]["appointment_id"]
    cancel = {"reason": "bought one elsewhere"}
    headers = {"Idempotency-Key": "td-cancel-a"}
    r = await client.post(f"/scheduling/appointments/{aid}/cancel", json=cancel, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    car = await client.get(f"/inventory/bookings/{drive['vehicle_booking_id']}")
    assert car.status_code == 200 and car.json()["status"] == "cancelled"
    assert await _car_hold(client, "VEH-RAV4-01", start) == 201  # free for someone else
    replay = await client.post(
        f"/scheduling/appointments/{aid}/cancel", json=cancel, headers=headers
    )
    assert replay.status_code == 200 and replay.json() == r.json()


async def test_moving_a_test_drive_over_http_moves_its_car(client: httpx.AsyncClient):
    old, new = _weekday_at(11), _weekday_at(13)
    body = {"phone": "+15553330105", "vehicle_unit_id": "VEH-F150-01", "start": old}
    r = await client.post("/scheduling/test-drives", json=body)
    assert r.status_code == 201, r.text
    drive = r.json()
    aid = drive["appointment"]["appointment_id"]

    r = await client.post(f"/scheduling/appointments/{aid}/reschedule", json={"start": new})
    assert r.status_code == 200, r.text
    assert r.json()["start"] == new and r.json()["status"] == "confirmed"
    first_car = await client.get(f"/inventory/bookings/{drive['vehicle_booking_id']}")
    assert first_car.json()["status"] == "cancelled"
    assert await _car_hold(client, "VEH-F150-01", new) == 409
    assert await _car_hold(client, "VEH-F150-01", old) == 201
