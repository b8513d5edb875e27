"""The calls application over real HTTP: start, events, end with summary and cost, errors."""

from __future__ import annotations

import secrets

import httpx
import pytest

pytestmark = pytest.mark.integration


def _call_id() -> str:
    return f"mesh-{secrets.token_hex(6)}"


async def test_call_start_events_end_gives_summary_and_cost(client: httpx.AsyncClient):
    call_id = _call_id()
    started = await client.post(
        "/calls", json={"call_id": call_id, "flow": "rental", "caller_phone": "+15555550123"}
    )
    assert started.status_code == 201, started.text
    assert started.json()["call_id"] == call_id

    events = await client.post(
        f"/calls/{call_id}/events",
        json=[
            {"kind": "tool", "name": "search_units", "latency_ms": 42.0},
            {
                "kind": "usage",
                "stt_audio_seconds": 60,
                "llm_prompt_tokens": 2000,
                "llm_completion_tokens": 300,
                "tts_characters": 900,
            },
        ],
        headers={"Idempotency-Key": f"ev-{call_id}"},
    )
    assert events.status_code == 201, events.text
    assert events.json()["recorded"] == 2

    ended = await client.post(f"/calls/{call_id}/end", json={"outcome": "information_only"})
    assert ended.status_code == 200, ended.text
    summary = ended.json()
    assert summary["call_id"] == call_id
    assert summary["summary"]
    assert summary["cost"]["total_usd"] > 0
    assert summary["tools"][0]["name"] == "search_units"

    detail = await client.get(f"/calls/{call_id}")
    assert detail.status_code == 200
    assert detail.json()["result"]["cost"] == summary["cost"]


async def test_a_call_starts_with_or_without_the_trailing_slash(client: httpx.AsyncClient):
    """POST /calls/ answered 404 (the route is "", the application lives at /calls)."""
    for path in ("/calls", "/calls/"):
        call_id = _call_id()
        started = await client.post(path, json={"call_id": call_id, "flow": "intake"})
        assert (started.status_code, started.json()["call_id"]) == (201, call_id), path


async def test_events_replayed_with_the_same_key_are_recorded_once(client: httpx.AsyncClient):
    call_id = _call_id()
    await client.post("/calls", json={"call_id": call_id, "flow": "appointment"})
    body = {"kind": "usage", "llm_prompt_tokens": 100}
    headers = {"Idempotency-Key": f"usage-{call_id}"}
    first = await client.post(f"/calls/{call_id}/events", json=body, headers=headers)
    again = await client.post(f"/calls/{call_id}/events", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    detail = (await client.get(f"/calls/{call_id}")).json()
    assert detail["usage"]["llm_prompt_tokens"] == 100


async def test_unknown_call_is_404(client: httpx.AsyncClient):
    r = await client.get(f"/calls/{_call_id()}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


async def test_events_after_the_end_are_409(client: httpx.AsyncClient):
    call_id = _call_id()
    await client.post("/calls", json={"call_id": call_id, "flow": "intake"})
    await client.post(f"/calls/{call_id}/end", json={"outcome": "abandoned"})
    late = await client.post(
        f"/calls/{call_id}/events", json={"kind": "tool", "name": "x", "latency_ms": 1}
    )
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "call_ended"


@pytest.mark.parametrize(
    "body",
    [
        {"flow": 3},  # wrong type
        {"call_id": "c1"},  # flow missing
        {"flow": "no-such-flow"},  # a service-side check
    ],
)
async def test_bad_start_bodies_are_422_in_the_error_shape(client: httpx.AsyncClient, body):
    r = await client.post("/calls", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["message"]


async def test_writes_without_the_token_are_401(anonymous: httpx.AsyncClient):
    r = await anonymous.post("/calls", json={"flow": "rental"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    wrong = await anonymous.post(
        "/calls", json={"flow": "rental"}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401


async def test_a_huge_body_is_413(client: httpx.AsyncClient):
    r = await client.post("/calls", json={"flow": "rental", "call_id": "x" * 200_000})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"


async def test_the_calls_api_is_in_the_merged_openapi(anonymous: httpx.AsyncClient):
    spec = (await anonymous.get("/openapi.json")).json()
    assert {"/calls", "/calls/{call_id}/events", "/calls/{call_id}/end"} <= set(spec["paths"])
    own = await anonymous.get("/calls/openapi.json")
    assert own.status_code == 200
