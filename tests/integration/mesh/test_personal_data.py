"""Personal data over real HTTP: with CALLMESH_API_TOKEN set (the mesh fixture sets it), every
read that answers a phone number, email, name or licence needs the bearer token; aggregates
and the unit list stay open; lookups by phone are POST bodies."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, timedelta

import httpx
import pytest

pytestmark = pytest.mark.integration


@dataclass
class Booked:
    phone: str
    appointment_id: str
    call_id: str


@pytest.fixture(scope="module")
async def booked(client: httpx.AsyncClient) -> Booked:
    """A customer with an appointment, a callback, a call and a verification on record."""
    phone = f"+1617555{secrets.randbelow(10000):04d}"
    call_id = f"pii-{secrets.token_hex(6)}"
    day = (date.today() + timedelta(days=5)).isoformat()
    params = {"date": day, "service_type": "oil_change"}
    slots = await client.get("/scheduling/slots", params=params)
    body = slots.json()
    if not body["slots"]:
        slots = await client.get(
            "/scheduling/slots",
            params={"date": body["next_open_date"], "service_type": "oil_change"},
        )
        body = slots.json()
    appointment = await client.post(
        "/scheduling/appointments",
        json={
            "phone": phone,
            "service_type": "oil_change",
            "start": body["slots"][-1]["start"],
            "name": "Pat Privacy",
        },
    )
    assert appointment.status_code == 201, appointment.text
    started = await client.post("/calls", json={"call_id": call_id, "flow": "appointment"})
    assert started.status_code == 201, started.text
    callback = await client.post(
        "/scheduling/callbacks", json={"phone": phone, "reason": "privacy test", "call_id": call_id}
    )
    assert callback.status_code == 201, callback.text
    check = await client.post(
        "/verification/business-licence", json={"call_id": call_id, "licence_number": "BL-100234"}
    )
    assert check.status_code == 200, check.text
    return Booked(phone, appointment.json()["appointment_id"], call_id)


def _personal_reads(b: Booked) -> list[tuple[str, str, dict]]:
    return [
        ("POST", "/scheduling/customers/lookup", {"json": {"phone": b.phone}}),
        ("POST", "/scheduling/appointments/lookup", {"json": {"phone": b.phone}}),
        ("GET", "/scheduling/customers", {"params": {"phone": b.phone}}),
        ("GET", "/scheduling/appointments", {"params": {"phone": b.phone}}),
        ("GET", f"/scheduling/appointments/{b.appointment_id}", {}),
        ("GET", "/scheduling/callbacks", {}),
        ("GET", f"/calls/{b.call_id}", {}),
        ("GET", f"/verification/calls/{b.call_id}", {}),
    ]


async def test_personal_reads_are_401_without_the_token(
    anonymous: httpx.AsyncClient, booked: Booked
):
    for method, path, kwargs in _personal_reads(booked):
        r = await anonymous.request(method, path, **kwargs)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert booked.phone not in r.text


async def test_a_wrong_token_is_401_too(mesh, booked: Booked):
    async with httpx.AsyncClient(
        base_url=mesh.url, headers={"Authorization": "Bearer not-the-token"}, timeout=30
    ) as wrong:
        for method, path, kwargs in _personal_reads(booked):
            r = await wrong.request(method, path, **kwargs)
            assert r.status_code == 401, (method, path, r.text)


async def test_personal_reads_answer_with_the_token(client: httpx.AsyncClient, booked: Booked):
    for method, path, kwargs in _personal_reads(booked):
        r = await client.request(method, path, **kwargs)
        assert r.status_code == 200, (method, path, r.text)
    customer = await client.post("/scheduling/customers/lookup", json={"phone": booked.phone})
    assert customer.json()["name"] == "Pat Privacy"
    mine = await client.post("/scheduling/appointments/lookup", json={"phone": booked.phone})
    assert [a["appointment_id"] for a in mine.json()] == [booked.appointment_id]
    # The deprecated GET form answers the same.
    old = await client.get("/scheduling/appointments", params={"phone": booked.phone})
    assert old.json() == mine.json()


async def test_an_unknown_phone_is_404_with_the_token(client: httpx.AsyncClient):
    r = await client.post("/scheduling/customers/lookup", json={"phone": "+16175559999"})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "not_found"


async def test_aggregates_and_units_stay_open(anonymous: httpx.AsyncClient, booked: Booked):
    for path in ("/analytics/summary", "/inventory/units", "/scheduling/service-types"):
        r = await anonymous.get(path)
        assert r.status_code == 200, (path, r.text)
        assert booked.phone not in r.text
