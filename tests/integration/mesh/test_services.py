"""Scheduling, verification and analytics over real HTTP, and the handles between services:
inventory asks verification at confirm, calls feed analytics when a call ends."""

from __future__ import annotations

import secrets
from datetime import date, timedelta

import httpx
import pytest

pytestmark = pytest.mark.integration


async def _first_open_slot(client: httpx.AsyncClient, service_type: str) -> str:
    day = (date.today() + timedelta(days=3)).isoformat()
    r = await client.get("/scheduling/slots", params={"date": day, "service_type": service_type})
    assert r.status_code == 200, r.text
    body = r.json()
    if not body["slots"]:
        r = await client.get(
            "/scheduling/slots",
            params={"date": body["next_open_date"], "service_type": service_type},
        )
        body = r.json()
    return str(body["slots"][0]["start"])


async def test_service_types_and_slots(client: httpx.AsyncClient):
    types = await client.get("/scheduling/service-types")
    assert types.status_code == 200
    assert "oil_change" in {t["service_type"] for t in types.json()}
    assert await _first_open_slot(client, "oil_change")


async def test_appointments_fill_the_pool_then_refuse(client: httpx.AsyncClient):
    """Oil changes use a pool of three bays: three bookings of one start fit, a fourth is 409."""
    start = await _first_open_slot(client, "oil_change")
    answers = []
    for i in range(4):
        answers.append(
            await client.post(
                "/scheduling/appointments",
                json={"phone": f"+161755521{i:02d}", "service_type": "oil_change", "start": start},
            )
        )
    assert [a.status_code for a in answers] == [201, 201, 201, 409], [a.text for a in answers]
    assert len({a.json()["resource_id"] for a in answers[:3]}) == 3
    assert answers[3].json()["error"]["code"] == "unavailable"
    appointment = answers[0].json()
    read = await client.get(f"/scheduling/appointments/{appointment['appointment_id']}")
    assert read.status_code == 200
    assert read.json()["reference"] == appointment["reference"]


async def test_bad_appointment_is_422(client: httpx.AsyncClient):
    r = await client.post(
        "/scheduling/appointments",
        json={"phone": "not a phone", "service_type": "oil_change", "start": "2020-01-01T09:00"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"


async def test_confirm_asks_verification_and_passes_once_the_call_is_verified(
    client: httpx.AsyncClient, mesh
):
    suffix = secrets.token_hex(3).upper()
    operator, policy = f"OP-{suffix}", f"POL-{suffix}"
    next_year = date.today() + timedelta(days=365)
    async with mesh.db.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO registry_operators (operator_id, name) VALUES ($1, $2)",
            operator,
            f"Test Operator {suffix}",
        )
        await conn.execute(
            """INSERT INTO registry_operator_certifications
                   (operator_id, certification, level, expires_on)
               VALUES ($1, 'excavator', 'full', $2)""",
            operator,
            next_year,
        )
        await conn.execute(
            """INSERT INTO registry_insurance_policies
                   (policy_number, insurer, holder_name, coverage_amount, expires_on)
               VALUES ($1, 'Test Mutual', 'Test Holder', 2000000, $2)""",
            policy,
            next_year,
        )
    call_id = f"verify-{suffix.lower()}"
    day = (date.today() + timedelta(days=90)).isoformat()
    hold = await client.post(
        "/inventory/holds", json={"unit_id": "EXC-201", "start": day, "call_id": call_id}
    )
    assert hold.status_code == 201, hold.text
    hold_id = hold.json()["hold_id"]

    refused = await client.post(f"/inventory/holds/{hold_id}/confirm")
    assert refused.status_code == 409
    assert len(refused.json()["error"]["details"]["missing"]) == 2

    cert = await client.post(
        "/verification/operator-certification",
        json={"call_id": call_id, "operator_id": operator, "certification": "excavator"},
    )
    assert cert.status_code == 200, cert.text
    assert cert.json()["status"] == "verified"
    insurance = await client.post(
        "/verification/insurance",
        json={"call_id": call_id, "policy_number": policy, "required_amount": "1000000"},
    )
    assert insurance.json()["status"] == "verified", insurance.text

    confirmed = await client.post(f"/inventory/holds/{hold_id}/confirm")
    assert confirmed.status_code == 201, confirmed.text
    audit = await client.get(f"/verification/calls/{call_id}")
    assert [v["check"] for v in audit.json()] == ["operator_certification", "insurance"]


async def test_unknown_operator_is_a_failed_check_not_an_error(client: httpx.AsyncClient):
    r = await client.post(
        "/verification/operator-certification",
        json={"call_id": "verify-unknown", "operator_id": "OP-NOBODY", "certification": "forklift"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "failed"


async def test_spoken_contact_details_are_normalised(client: httpx.AsyncClient):
    r = await client.post("/verification/contact", json={"email": "john at gmail dot com"})
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "john@gmail.com"


async def test_an_ended_call_is_counted_by_analytics(client: httpx.AsyncClient):
    async def booked_rentals() -> int:
        r = await client.get("/analytics/summary", params={"flow": "rental"})
        assert r.status_code == 200, r.text
        return int(r.json()["total"]["booked"])

    before = await booked_rentals()
    call_id = f"an-{secrets.token_hex(5)}"
    assert (await client.post("/calls", json={"call_id": call_id, "flow": "rental"})).is_success
    ended = await client.post(f"/calls/{call_id}/end", json={"outcome": "booked"})
    assert ended.status_code == 200, ended.text
    assert await booked_rentals() == before + 1
    # Ending again answers the same summary and is not counted twice.
    await client.post(f"/calls/{call_id}/end", json={"outcome": "booked"})
    assert await booked_rentals() == before + 1


async def test_analytics_refuses_a_bad_window(client: httpx.AsyncClient):
    r = await client.get("/analytics/summary", params={"since": "2026-02-30"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_input"
