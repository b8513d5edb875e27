"""The shared HTTP edge, in process: error mapping, bearer token, body limit, request metric."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field, SecretStr

from deployments.api import WRITE, new_api
from deployments.edge import outcome_for, status_for, token_matches
from deployments.metrics import RecordedMetrics
from services.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    HoldExpired,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidInput,
    NegotiationRefused,
    NotFound,
    RateLimited,
    Unavailable,
    VerificationRequired,
)
from services.settings import Settings

pytestmark = pytest.mark.unit

TOKEN = "s3cret-token-for-tests"


class Thing(BaseModel):
    name: str = Field(min_length=1)
    count: int


def _app(
    *, token: str | None = TOKEN, max_body_bytes: int = 2048
) -> tuple[FastAPI, RecordedMetrics]:
    settings = Settings(
        environment="test",
        api_token=SecretStr(token) if token else None,
        max_body_bytes=max_body_bytes,
    )
    metrics = RecordedMetrics()
    app = new_api(service="things", title="things", settings=settings, metrics=metrics)
    errors: dict[str, Exception] = {
        "invalid": InvalidInput("The date is not valid.", field="date"),
        "missing": NotFound("There is no such thing."),
        "conflict": Conflict("That changed."),
        "unavailable": Unavailable("That time is already taken.", resource_id="u1"),
        "verification": VerificationRequired("An operator certification is needed."),
        "negotiation": NegotiationRefused("That rate is below what we can offer."),
        "expired": HoldExpired("That hold lapsed."),
        "down": DependencyUnavailable("Holds are unavailable for a moment.", retry_after=7),
        "reused": IdempotencyKeyReused("That idempotency key was already used."),
        "in_flight": IdempotencyKeyInFlight("That request is still running.", retry_after=3),
        "limited": RateLimited("You are holding 3 units already; confirm or release one first."),
        "slow_down": RateLimited("Too many changes; please wait 42 seconds.", retry_after=42),
        "bare": DomainError("Something about the request."),
        "boom": RuntimeError("secret internal detail"),
    }

    @app.get("/raise/{name}")
    async def raise_it(name: str) -> None:
        raise errors[name]

    @app.post("/things", status_code=201, dependencies=[WRITE])
    async def create_thing(thing: Thing) -> Thing:
        return thing

    return app, metrics


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("invalid", 422, "invalid_input"),
        ("missing", 404, "not_found"),
        ("conflict", 409, "conflict"),
        ("unavailable", 409, "unavailable"),
        ("verification", 409, "verification_required"),
        ("negotiation", 409, "negotiation_refused"),
        ("expired", 410, "hold_expired"),
        ("down", 503, "dependency_unavailable"),
        ("reused", 422, "idempotency_key_reused"),
        ("in_flight", 409, "idempotency_key_in_flight"),
        ("limited", 429, "rate_limited"),
        ("bare", 400, "error"),
    ],
)
async def test_domain_errors_map_to_status_and_shape(name: str, status: int, code: str):
    app, _ = _app()
    async with _client(app) as c:
        r = await c.get(f"/raise/{name}")
    assert r.status_code == status
    error = r.json()["error"]
    assert error["code"] == code
    assert error["message"].endswith(".")


async def test_dependency_unavailable_says_when_to_retry():
    app, _ = _app()
    async with _client(app) as c:
        r = await c.get("/raise/down")
    assert r.headers["retry-after"] == "7"


async def test_a_twin_in_flight_says_when_to_retry():
    app, _ = _app()
    async with _client(app) as c:
        r = await c.get("/raise/in_flight")
    assert (r.status_code, r.headers["retry-after"]) == (409, "3")


async def test_rate_limited_is_429_and_says_when_to_retry():
    app, metrics = _app()
    async with _client(app) as c:
        r = await c.get("/raise/slow_down")
        default = await c.get("/raise/limited")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "42"
    assert default.headers["retry-after"] == "1"
    assert r.json()["error"] == {
        "code": "rate_limited",
        "message": "Too many changes; please wait 42 seconds.",
    }
    assert {outcome for _, _, outcome in metrics.requests} == {"rate_limited"}


async def test_details_travel_with_the_error():
    app, _ = _app()
    async with _client(app) as c:
        r = await c.get("/raise/unavailable")
    assert r.json()["error"]["details"] == {"resource_id": "u1"}


async def test_unexpected_error_is_a_generic_500_without_internals(caplog):
    app, metrics = _app()
    with caplog.at_level(logging.ERROR):
        async with _client(app) as c:
            r = await c.get("/raise/boom")
    assert r.status_code == 500
    assert r.json() == {
        "error": {
            "code": "internal",
            "message": "Something went wrong on our side; please try again.",
        }
    }
    assert "secret internal detail" not in r.text
    assert "Traceback" not in r.text
    # ...but the server side keeps the traceback.
    assert any(rec.exc_info for rec in caplog.records)
    assert metrics.requests[-1] == ("things", "raise_it", "error")


async def test_validation_errors_are_422_in_the_same_shape_without_echoing_input():
    app, _ = _app()
    async with _client(app) as c:
        r = await c.post("/things", json={"name": "", "count": "many-555-123-4567"}, headers=AUTH)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_input"
    fields = {e["field"] for e in error["details"]["errors"]}
    assert fields == {"name", "count"}
    assert "555-123-4567" not in r.text


async def test_malformed_json_is_422_not_500():
    app, _ = _app()
    async with _client(app) as c:
        r = await c.post(
            "/things", content=b"{not json", headers={**AUTH, "content-type": "application/json"}
        )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_input"


async def test_a_body_that_is_not_utf8_is_422_not_400():
    app, _ = _app()
    async with _client(app) as c:
        r = await c.post(
            "/things", content=b"\xff\xfe\x02", headers={**AUTH, "content-type": "application/json"}
        )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "not-bearer"],
)
async def test_writes_need_the_bearer_token(headers: dict[str, str]):
    app, _ = _app()
    async with _client(app) as c:
        r = await c.post("/things", json={"name": "a", "count": 1}, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


async def test_right_token_passes_and_reads_need_none():
    app, _ = _app()
    async with _client(app) as c:
        ok = await c.post("/things", json={"name": "a", "count": 1}, headers=AUTH)
        read = await c.get("/raise/missing")
    assert ok.status_code == 201
    assert read.status_code == 404


async def test_without_a_configured_token_writes_are_open():
    app, _ = _app(token=None)
    async with _client(app) as c:
        r = await c.post("/things", json={"name": "a", "count": 1})
    assert r.status_code == 201


async def test_body_over_the_limit_is_413_by_content_length():
    app, _ = _app(max_body_bytes=1024)
    async with _client(app) as c:
        r = await c.post("/things", json={"name": "x" * 5000, "count": 1}, headers=AUTH)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"


async def test_body_over_the_limit_is_413_when_streamed_without_length():
    app, _ = _app(max_body_bytes=1024)

    async def chunks():
        yield b'{"name": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'", "count": 1}'

    async with _client(app) as c:
        r = await c.post(
            "/things", content=chunks(), headers={**AUTH, "content-type": "application/json"}
        )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"


async def test_unknown_route_and_method_keep_the_shape():
    app, metrics = _app()
    async with _client(app) as c:
        missing = await c.get("/nowhere")
        wrong = await c.delete("/things")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert ("things", "unmatched", "not_found") in metrics.requests


async def test_every_request_is_timed_by_route_name():
    app, metrics = _app()
    async with _client(app) as c:
        await c.post("/things", json={"name": "a", "count": 1}, headers=AUTH)
        await c.get("/raise/unavailable")
    assert metrics.requests == [
        ("things", "create_thing", "ok"),
        ("things", "raise_it", "conflict"),
    ]


def test_token_compare():
    assert token_matches(None, None)
    assert token_matches(SecretStr("abc"), "abc")
    assert not token_matches(SecretStr("abc"), "abd")
    assert not token_matches(SecretStr("abc"), None)
    assert not token_matches(SecretStr("abc"), "")


def test_status_and_outcome_tables():
    assert status_for(Unavailable("x")) == 409
    assert status_for(HoldExpired("x")) == 410
    assert outcome_for(201) == "ok"
    assert outcome_for(422) == "invalid"
    assert outcome_for(503) == "unavailable"
    assert status_for(RateLimited("x")) == 429
    assert outcome_for(429) == "rate_limited"
    assert outcome_for(500) == "error"
