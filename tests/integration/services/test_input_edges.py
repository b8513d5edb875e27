"""Inputs at the edges, through each application's FastAPI app in process over real stores:
dates at the ends of the calendar and text that cannot be stored answer 422 with a sentence
naming the field, never a 500 (issue 7, defects 1 and 2)."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.analytics import build_analytics_api
from deployments.calls import build_calls_api
from deployments.inventory import build_inventory_api
from deployments.scheduling import build_scheduling_api
from deployments.verification import build_verification_api
from services.analytics import AnalyticsService
from services.calls import CallsService
from services.inventory import InventoryService
from services.scheduling import SchedulingService
from services.verification import VerificationService, build_provider

pytestmark = pytest.mark.integration

PHONE = "+15552227000"


class _ByPrefix:
    """``/inventory/...`` to the inventory app and so on, as the Serve proxy routes."""

    def __init__(self, apps: Mapping[str, ASGIApp]) -> None:
        self.apps = dict(apps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        for prefix, app in self.apps.items():
            if path == prefix or path.startswith(prefix + "/"):
                await app({**scope, "root_path": prefix}, receive, send)
                return
        raise AssertionError(f"no application serves {path}")


@pytest.fixture
async def http(fresh) -> AsyncIterator[httpx.AsyncClient]:
    settings = fresh.settings()
    inventory = InventoryService(pool=fresh.pool, redis=fresh.redis, settings=settings)
    scheduling = SchedulingService(
        pool=fresh.pool, redis=fresh.redis, settings=settings, vehicles=inventory
    )
    provider = build_provider(settings, fresh.pool)
    verification = VerificationService(pool=fresh.pool, provider=provider, settings=settings)
    apps = {
        "/verification": build_verification_api(settings, service=verification),
        "/inventory": build_inventory_api(settings, service=inventory),
        "/scheduling": build_scheduling_api(settings, service=scheduling),
        "/calls": build_calls_api(
            settings, service=CallsService(pool=fresh.pool, settings=settings)
        ),
        "/analytics": build_analytics_api(
            settings, service=AnalyticsService(pool=fresh.pool, settings=settings)
        ),
    }
    transport = httpx.ASGITransport(app=_ByPrefix(apps))
    async with httpx.AsyncClient(transport=transport, base_url="http://mesh") as client:
        yield client
    await provider.aclose()


def _refused(r: httpx.Response, field: str) -> str:
    """The 422 message, after checking it names ``field`` (a service's refusal names it in
    ``details.field``, FastAPI's own in ``details.errors``)."""
    assert r.status_code == 422, (r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] == "invalid_input"
    details = error["details"]
    named = details.get("field") or details["errors"][0]["field"].rsplit(".", 1)[-1]
    assert named == field, error
    return str(error["message"])


async def _booked_appointment(http: httpx.AsyncClient, settings_tz) -> str:
    day = datetime.now(settings_tz).date() + timedelta(days=3)
    while day.weekday() > 4:
        day += timedelta(days=1)
    slots = await http.get(
        "/scheduling/slots", params={"date": day.isoformat(), "service_type": "oil_change"}
    )
    start = slots.json()["slots"][0]["start"]
    r = await http.post(
        "/scheduling/appointments",
        json={"phone": PHONE, "service_type": "oil_change", "start": start},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["appointment_id"])


async def _started_call(http: httpx.AsyncClient) -> str:
    call_id = f"edge-{secrets.token_hex(4)}"
    r = await http.post("/calls", json={"call_id": call_id, "flow": "appointment"})
    assert r.status_code == 201, r.text
    return call_id


# -- dates at the ends of the calendar ----------------------------------------------------------

FAR_TIMES = [
    "9999-12-31",
    "9999-12-31T23:30:00",
    "9999-12-31T23:59:59.999999-14:00",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01",
    "0001-01-01T00:00:00",
]


@pytest.mark.parametrize("start", FAR_TIMES)
@pytest.mark.parametrize("unit_id", ["PRJ-901", "VEH-CIVIC-01"])
async def test_a_hold_at_the_ends_of_the_calendar_is_refused(http, start, unit_id):
    r = await http.post("/inventory/holds", json={"unit_id": unit_id, "start": start})
    assert "start" in _refused(r, "start")


@pytest.mark.parametrize("end", FAR_TIMES)
async def test_a_hold_ending_at_the_ends_of_the_calendar_is_refused(http, end):
    start = (datetime.now() + timedelta(days=3)).date().isoformat()
    r = await http.post("/inventory/holds", json={"unit_id": "PRJ-901", "start": start, "end": end})
    _refused(r, "end")


@pytest.mark.parametrize("start", FAR_TIMES)
async def test_an_appointment_at_the_ends_of_the_calendar_is_refused(http, start):
    r = await http.post(
        "/scheduling/appointments",
        json={"phone": PHONE, "service_type": "oil_change", "start": start},
    )
    _refused(r, "start")


@pytest.mark.parametrize("start", FAR_TIMES)
async def test_a_test_drive_at_the_ends_of_the_calendar_is_refused(http, start):
    r = await http.post(
        "/scheduling/test-drives",
        json={"phone": PHONE, "vehicle_unit_id": "VEH-CIVIC-01", "start": start},
    )
    _refused(r, "start")


@pytest.mark.parametrize("start", FAR_TIMES)
async def test_a_reschedule_to_the_ends_of_the_calendar_is_refused(http, fresh, start):
    appointment_id = await _booked_appointment(http, fresh.settings().tz)
    r = await http.post(
        f"/scheduling/appointments/{appointment_id}/reschedule", json={"start": start}
    )
    _refused(r, "new_start")


@pytest.mark.parametrize("preferred", FAR_TIMES)
async def test_a_callback_at_the_ends_of_the_calendar_is_refused(http, preferred):
    r = await http.post(
        "/scheduling/callbacks",
        json={"phone": PHONE, "reason": "A question", "preferred_time": preferred},
    )
    _refused(r, "preferred_time")


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
async def test_callbacks_of_a_day_at_the_ends_of_the_calendar_are_refused(http, day):
    r = await http.get("/scheduling/callbacks", params={"date": day})
    _refused(r, "date")


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
async def test_slots_of_a_day_at_the_ends_of_the_calendar_are_refused(http, day):
    r = await http.get("/scheduling/slots", params={"date": day, "service_type": "oil_change"})
    _refused(r, "date")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "9999-12-31", "until": "9999-12-31"}, "until"),
        ({"since": "0001-01-01", "until": "0001-01-01"}, "until"),
        ({"since": "0001-01-01", "until": "2026-01-01"}, "since"),
        ({"until": "0001-01-03"}, "until"),
        # FastAPI's date reads a number as a Unix time: this one is 1970-01-01.
        ({"until": "2.0490088394941137e-307"}, "until"),
        ({"since": "0", "until": "0"}, "until"),
    ],
)
@pytest.mark.parametrize("route", ["summary", "catch-up"])
async def test_an_analytics_window_at_the_ends_of_the_calendar_is_refused(
    http, params, field, route
):
    if route == "summary":
        r = await http.get("/analytics/summary", params=params)
    else:
        r = await http.post("/analytics/catch-up", params=params)
    assert "between 2000-01-01 and 2099-12-31" in _refused(r, field)


@pytest.mark.parametrize("params", [{"until": "2000-01-03"}, {"until": "2099-12-31"}])
async def test_an_analytics_window_at_the_ends_of_what_it_reports_is_answered(http, params):
    r = await http.get("/analytics/summary", params=params)
    assert r.status_code == 200, r.text
    assert r.json()["until"] == params["until"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"flow": "appointment", "started_at": "0001-01-01T00:00:00+14:00"}, "started_at"),
        ({"flow": "appointment", "started_at": "9999-12-31T23:59:59-14:00"}, "started_at"),
    ],
)
async def test_a_call_starting_at_the_ends_of_the_calendar_is_refused(http, body, field):
    _refused(await http.post("/calls", json=body), field)


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_call_times_at_the_ends_of_the_calendar_are_refused(http, at):
    call_id = await _started_call(http)
    r = await http.post(
        f"/calls/{call_id}/events",
        json={"kind": "tool", "name": "list_slots", "latency_ms": 12, "at": at},
    )
    _refused(r, "event_time")
    r = await http.post(f"/calls/{call_id}/end", json={"outcome": "booked", "ended_at": at})
    _refused(r, "ended_at")


# JSON numbers where a time is expected: pydantic reads them as Unix times (0 is 1970-01-01).
NUMBER_TIMES = [0, -62135596800, 253402300799, 1e300, 2.0490088394941137e-307]


@pytest.mark.parametrize("number", NUMBER_TIMES)
async def test_a_number_as_a_time_is_refused(http, fresh, number):
    appointment_id = await _booked_appointment(http, fresh.settings().tz)
    call_id = await _started_call(http)
    answers = [
        await http.post("/inventory/holds", json={"unit_id": "PRJ-901", "start": number}),
        await http.post("/inventory/holds", json={"unit_id": "VEH-CIVIC-01", "start": number}),
        await http.post(
            "/scheduling/appointments",
            json={"phone": PHONE, "service_type": "oil_change", "start": number},
        ),
        await http.post(
            f"/scheduling/appointments/{appointment_id}/reschedule", json={"start": number}
        ),
        await http.post(
            "/scheduling/callbacks",
            json={"phone": PHONE, "reason": "A question", "preferred_time": number},
        ),
        await http.post("/calls", json={"flow": "appointment", "started_at": number}),
        await http.post(f"/calls/{call_id}/end", json={"outcome": "booked", "ended_at": number}),
    ]
    for r in answers:
        assert r.status_code == 422, (r.request.url, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid_input"


# -- text that cannot be stored -----------------------------------------------------------------

# A lone surrogate: valid in a JSON string escape, but no UTF-8 encodes it, so PostgreSQL (and
# any log line written as UTF-8) cannot take it.
LONE = "\ud800"


async def _post(http: httpx.AsyncClient, path: str, body: object) -> httpx.Response:
    # json.dumps escapes the surrogate as \ud800 (ASCII), as a client's JSON encoder would;
    # httpx's own json= refuses to encode it.
    return await http.post(
        path, content=json.dumps(body), headers={"Content-Type": "application/json"}
    )


def _appointment(**fields: object) -> dict[str, object]:
    return {"phone": PHONE, "service_type": "oil_change", "start": "2026-01-01T09:00", **fields}


TEXT_FIELDS = [
    ("/scheduling/appointments", _appointment(notes=f"gate code {LONE}"), "notes"),
    ("/scheduling/appointments", _appointment(name=f"Sam {LONE}"), "name"),
    ("/scheduling/appointments", _appointment(phone=f"+1555222{LONE}7000"), "phone"),
    ("/scheduling/appointments", _appointment(email=f"sam{LONE}@example.com"), "email"),
    ("/scheduling/appointments", _appointment(service_type=f"oil{LONE}"), "service_type"),
    ("/scheduling/appointments", _appointment(call_id=f"c{LONE}"), "call_id"),
    ("/scheduling/appointments", _appointment(start=f"2026-01-01T09:00{LONE}"), "start"),
    (
        "/scheduling/appointments",
        _appointment(vehicle={"make": f"Honda{LONE}", "model": "Civic"}),
        "vehicle_make",
    ),
    (
        "/scheduling/appointments",
        _appointment(vehicle={"make": "Honda", "model": "Civic", "plate": f"AB{LONE}"}),
        "licence_plate",
    ),
    (
        "/scheduling/test-drives",
        {
            "phone": PHONE,
            "vehicle_unit_id": "VEH-CIVIC-01",
            "start": "2026-01-01T09:00",
            "notes": f"{LONE}",
        },
        "notes",
    ),
    (
        "/scheduling/test-drives",
        {"phone": PHONE, "vehicle_unit_id": f"VEH{LONE}", "start": "2026-01-01T09:00"},
        "vehicle_unit_id",
    ),
    ("/scheduling/callbacks", {"phone": PHONE, "reason": f"about {LONE}"}, "reason"),
    ("/inventory/holds", {"unit_id": f"PRJ{LONE}", "start": "2026-01-01"}, "unit_id"),
    ("/inventory/holds", {"unit_id": "PRJ-901", "start": f"2026-01-01{LONE}"}, "start"),
    ("/calls", {"flow": "appointment", "call_id": f"c{LONE}"}, "call_id"),
    ("/calls", {"flow": f"appointment{LONE}"}, "flow"),
    ("/calls", {"flow": "appointment", "caller_phone": f"+1555{LONE}"}, "caller_phone"),
    (
        "/verification/business-licence",
        {"call_id": "c1", "licence_number": f"BL{LONE}"},
        "licence_number",
    ),
    (
        "/verification/business-licence",
        {"call_id": "c1", "licence_number": "BL-100234", "state": f"TX{LONE}"},
        "state",
    ),
    (
        "/verification/site-safety",
        {"call_id": "c1", "site_id": f"SITE{LONE}", "weight_class": "light"},
        "site_id",
    ),
    (
        "/verification/operator-certification",
        {"call_id": "c1", "operator_id": f"Sam {LONE}", "certification": "forklift"},
        "operator_id",
    ),
    (
        "/verification/insurance",
        {"call_id": f"c{LONE}", "policy_number": "POL-55001", "required_amount": 1000},
        "call_id",
    ),
    ("/verification/contact", {"email": f"sam at {LONE} dot com"}, "email"),
]


@pytest.mark.parametrize(("path", "body", "field"), TEXT_FIELDS)
async def test_a_lone_surrogate_in_a_field_is_refused(http, path, body, field):
    _refused(await _post(http, path, body), field)


EVENTS = [
    (
        {"kind": "shared", "category": "contact_details", "key": "note", "value": f"x{LONE}"},
        "value",
    ),
    ({"kind": "tool", "name": f"list{LONE}", "latency_ms": 1}, "tool_name"),
    ({"kind": "tool", "name": "list_slots", "latency_ms": 1, "outcome": LONE}, "tool_outcome"),
    ({"kind": "marker", "marker": "booked", "reference": f"R{LONE}"}, "reference"),
    ({"kind": "marker", "marker": f"booked{LONE}"}, "marker"),
]


@pytest.mark.parametrize(("event", "field"), EVENTS)
async def test_a_lone_surrogate_in_a_call_event_is_refused(http, event, field):
    call_id = await _started_call(http)
    _refused(await _post(http, f"/calls/{call_id}/events", event), field)
    _refused(await _post(http, f"/calls/{call_id}/events", [event]), field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"outcome": "booked", "summary": f"Booked {LONE}"}, "summary"),
        ({"outcome": LONE}, "outcome"),
    ],
)
async def test_a_lone_surrogate_in_the_end_of_a_call_is_refused(http, body, field):
    call_id = await _started_call(http)
    _refused(await _post(http, f"/calls/{call_id}/end", body), field)


async def test_a_lone_surrogate_in_a_cancel_reason_is_refused(http, fresh):
    appointment_id = await _booked_appointment(http, fresh.settings().tz)
    path = f"/scheduling/appointments/{appointment_id}"
    _refused(await _post(http, f"{path}/cancel", {"reason": f"moving {LONE}"}), "reason")
    _refused(await _post(http, f"{path}/reschedule", {"start": f"{LONE}"}), "new_start")


async def test_a_lone_surrogate_in_a_rental_cancel_reason_is_refused(http):
    start = (datetime.now() + timedelta(days=3)).date().isoformat()
    hold = await http.post("/inventory/holds", json={"unit_id": "PRJ-901", "start": start})
    assert hold.status_code == 201, hold.text
    booking = await http.post(f"/inventory/holds/{hold.json()['hold_id']}/confirm")
    assert booking.status_code == 201, booking.text
    path = f"/inventory/bookings/{booking.json()['booking_id']}/cancel"
    _refused(await _post(http, path, {"reason": f"rain {LONE}"}), "reason")


async def test_paired_surrogates_are_text_like_any_other(http, fresh):
    """An emoji escaped as a surrogate pair is one valid character, stored as sent."""
    appointment_id = await _booked_appointment(http, fresh.settings().tz)
    r = await _post(
        http, f"/scheduling/appointments/{appointment_id}/cancel", {"reason": "moving \U0001f69a"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["cancel_reason"] == "moving \U0001f69a"
