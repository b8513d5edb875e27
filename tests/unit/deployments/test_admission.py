"""Load shedding at a replica's edge: the gate's arithmetic, and the 503 the middleware sends
past it, in process (no server)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from deployments.admission import AdmissionGate, shed_response
from deployments.api import new_api
from deployments.metrics import RecordedMetrics
from services.settings import Settings

pytestmark = pytest.mark.unit


def test_the_gate_admits_up_to_its_limit_and_refuses_the_next():
    gate = AdmissionGate(3)
    assert [gate.enter() for _ in range(4)] == [True, True, True, False]
    assert (gate.in_flight, gate.shed) == (3, 1)


def test_a_request_that_leaves_makes_room_for_one_more():
    gate = AdmissionGate(2)
    assert gate.enter() and gate.enter()
    assert not gate.enter()
    gate.leave()
    assert gate.enter()
    assert not gate.enter()
    assert gate.shed == 2


def test_limit_zero_admits_everything():
    gate = AdmissionGate(0)
    assert all(gate.enter() for _ in range(10_000))
    assert gate.shed == 0


def test_a_negative_limit_is_refused():
    with pytest.raises(ValueError):
        AdmissionGate(-1)


def test_the_shed_answer_is_the_error_shape_with_retry_after():
    headers, body = shed_response(2)
    assert dict(headers)[b"retry-after"] == b"2"
    assert dict(headers)[b"content-length"] == str(len(body)).encode()
    assert body.startswith(b'{"error": {"code": "overloaded", "message": "The service is at')
    assert b"try again in 2 seconds." in body


def _app(limit: int) -> tuple[FastAPI, asyncio.Event, RecordedMetrics]:
    settings = Settings(environment="test", admission_max_in_flight=limit)
    metrics = RecordedMetrics()
    app = new_api(service="things", title="things", settings=settings, metrics=metrics)
    release = asyncio.Event()

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await release.wait()
        return {"ok": True}

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    return app, release, metrics


async def _until(predicate, *, rounds: int = 1000) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the requests never got in flight")


async def test_past_the_limit_the_edge_answers_503_at_once_and_recovers():
    app, release, metrics = _app(limit=4)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        running = [asyncio.create_task(c.get("/slow")) for _ in range(4)]
        # The gate sits in the outermost middleware of the stack: wait for all four in it.
        gate = next(m for m in _middlewares(app) if hasattr(m, "gate")).gate
        await _until(lambda: gate.in_flight == 4)
        refused = await c.get("/slow")
        health = await c.get("/healthz")
        release.set()
        answered = await asyncio.gather(*running)
        after = await c.get("/slow")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"
    assert refused.json()["error"]["message"].endswith("second.")
    assert health.status_code == 200  # never shed
    assert [r.status_code for r in answered] == [200] * 4
    assert after.status_code == 200
    assert gate.in_flight == 0
    assert ("things", "shed", "shed") in metrics.requests


def _middlewares(app: FastAPI):  # type: ignore[no-untyped-def]
    """The built middleware stack, outermost first."""
    stack = app.middleware_stack or app.build_middleware_stack()
    app.middleware_stack = stack
    node = stack
    while node is not None:
        yield node
        node = getattr(node, "app", None)
