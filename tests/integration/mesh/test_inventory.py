"""The inventory application over real HTTP: search, hold, confirm, release, and a race of
concurrent callers for one unit checked against PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from datetime import date, timedelta

import httpx
import pytest

pytestmark = pytest.mark.integration


def _day(offset: int) -> str:
    return (date.today() + timedelta(days=offset)).isoformat()


async def test_search_finds_units(client: httpx.AsyncClient):
    r = await client.get("/inventory/units", params={"query": "projector"})
    assert r.status_code == 200, r.text
    units = r.json()
    assert units and units[0]["unit_id"] == "PRJ-901"
    assert {"unit_id", "name", "category", "daily_rate", "max_rate", "status"} <= set(units[0])


async def test_hold_confirm_then_read_the_booking(client: httpx.AsyncClient, mesh):
    hold = await client.post(
        "/inventory/holds",
        json={"unit_id": "PRJ-901", "start": _day(10), "end": _day(12), "call_id": "call-hc"},
    )
    assert hold.status_code == 201, hold.text
    hold_id = hold.json()["hold_id"]
    assert hold.json()["expires_at"]

    taken = await client.post(
        "/inventory/holds", json={"unit_id": "PRJ-901", "start": _day(11), "end": _day(13)}
    )
    assert taken.status_code == 409
    assert taken.json()["error"]["code"] == "unavailable"

    confirmed = await client.post(f"/inventory/holds/{hold_id}/confirm")
    assert confirmed.status_code == 201, confirmed.text
    booking = confirmed.json()
    assert booking["reference"] and booking["days"] == 2

    again = await client.post(f"/inventory/holds/{hold_id}/confirm")
    assert again.json()["booking_id"] == booking["booking_id"]

    read = await client.get(f"/inventory/bookings/{booking['booking_id']}")
    assert read.status_code == 200
    assert read.json()["reference"] == booking["reference"]
    row = await mesh.db.pool.fetchrow(
        "SELECT status FROM bookings WHERE booking_id = $1::uuid", booking["booking_id"]
    )
    assert row["status"] == "confirmed"


async def test_release_frees_the_unit_and_a_released_hold_cannot_confirm(
    client: httpx.AsyncClient,
):
    body = {"unit_id": "PAS-951", "start": _day(20), "end": _day(21)}
    hold = await client.post("/inventory/holds", json=body)
    assert hold.status_code == 201, hold.text
    hold_id = hold.json()["hold_id"]
    released = await client.delete(f"/inventory/holds/{hold_id}")
    assert released.status_code == 204
    assert (await client.delete(f"/inventory/holds/{hold_id}")).status_code == 204
    gone = await client.post(f"/inventory/holds/{hold_id}/confirm")
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "hold_expired"
    # The unit is free again for the same dates.
    assert (await client.post("/inventory/holds", json=body)).status_code == 201


async def test_a_unit_that_requires_verification_is_refused_with_what_is_missing(
    client: httpx.AsyncClient,
):
    hold = await client.post(
        "/inventory/holds",
        json={"unit_id": "EXC-201", "start": _day(30), "call_id": f"c-{secrets.token_hex(4)}"},
    )
    assert hold.status_code == 201, hold.text
    refused = await client.post(f"/inventory/holds/{hold.json()['hold_id']}/confirm")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "verification_required"
    assert "certification" in error["message"]


async def test_hold_idempotency_key_returns_the_first_hold(client: httpx.AsyncClient):
    body = {"unit_id": "GEN-701", "start": _day(15)}
    headers = {"Idempotency-Key": f"hold-{secrets.token_hex(6)}"}
    first = await client.post("/inventory/holds", json=body, headers=headers)
    again = await client.post("/inventory/holds", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert again.json()["hold_id"] == first.json()["hold_id"]
    assert again.json()["replayed"] is True


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/inventory/holds", {"unit_id": "PRJ-901"}),  # start missing
        ("/inventory/holds", {"unit_id": "PRJ-901", "start": "tomorrow-ish"}),
        ("/inventory/holds", {"unit_id": "PRJ-901", "start": "2020-01-01"}),  # in the past
        ("/inventory/holds", {"unit_id": "PRJ-901", "start": _day(3), "color": "red"}),
    ],
)
async def test_bad_hold_bodies_are_422(client: httpx.AsyncClient, path: str, body: dict):
    r = await client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"


async def test_unknown_things_are_404(client: httpx.AsyncClient):
    assert (await client.get("/inventory/units/NOPE-1")).status_code == 404
    r = await client.get("/inventory/bookings/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


async def test_inventory_writes_need_the_token(anonymous: httpx.AsyncClient):
    r = await anonymous.post("/inventory/holds", json={"unit_id": "PRJ-901", "start": _day(5)})
    assert r.status_code == 401
    assert (await anonymous.get("/inventory/units")).status_code == 200


async def test_a_race_of_concurrent_callers_gives_each_day_exactly_once(mesh):
    """120 HTTP clients, each its own connection, hold and confirm one day of the same unit:
    12 days, 10 callers per day. Exactly one caller per day wins, every confirmed answer is a
    row in PostgreSQL, and no two confirmed bookings of the unit overlap."""
    unit, days, per_day = "GEN-702", 12, 10
    token = mesh.settings.api_token.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"}
    start = asyncio.Event()

    async def caller(i: int) -> dict | None:
        day = _day(60 + i % days)
        async with httpx.AsyncClient(base_url=mesh.url, headers=headers, timeout=60) as c:
            await start.wait()
            hold = await c.post(
                "/inventory/holds",
                json={"unit_id": unit, "start": day, "call_id": f"race-{i}"},
            )
            if hold.status_code == 409:
                return None
            assert hold.status_code == 201, hold.text
            confirmed = await c.post(f"/inventory/holds/{hold.json()['hold_id']}/confirm")
            assert confirmed.status_code == 201, confirmed.text
            return confirmed.json()

    tasks = [asyncio.create_task(caller(i)) for i in range(days * per_day)]
    await asyncio.sleep(0.2)
    start.set()
    results = await asyncio.gather(*tasks)
    winners = [r for r in results if r is not None]

    assert len(winners) == days
    assert len({w["start"] for w in winners}) == days
    rows = await mesh.db.pool.fetch(
        """SELECT booking_id::text AS booking_id, reference FROM bookings
            WHERE resource_id = $1 AND status = 'confirmed'""",
        unit,
    )
    assert {(w["booking_id"], w["reference"]) for w in winners} == {
        (r["booking_id"], r["reference"]) for r in rows
    }
    overlaps = await mesh.db.pool.fetchval(
        """SELECT count(*) FROM bookings a JOIN bookings b
             ON a.resource_id = b.resource_id AND a.booking_id < b.booking_id
            AND a.during && b.during
          WHERE a.status = 'confirmed' AND b.status = 'confirmed'"""
    )
    assert overlaps == 0
