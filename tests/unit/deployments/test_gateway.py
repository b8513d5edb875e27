"""The gateway's /healthz in process: 200 when the stores answer, 503 with Retry-After when one
does not, and the deployments' state reported either way."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from deployments.gateway import HEALTH_RETRY_AFTER_SECONDS, build_gateway_api
from services.settings import Settings

pytestmark = pytest.mark.unit

DEPLOYMENTS = {
    "gateway": {
        "status": "RUNNING",
        "deployments": {"Gateway": {"status": "HEALTHY", "replicas": {"RUNNING": 1}}},
    }
}


async def _healthz(stores: dict[str, str], *, controller_answers: bool = True) -> httpx.Response:
    async def store_health() -> dict[str, str]:
        return stores

    async def deployment_states() -> dict[str, Any]:
        if not controller_answers:
            raise TimeoutError("serve.status() took too long")
        return DEPLOYMENTS

    app = build_gateway_api(
        settings=Settings(environment="test"),
        store_health=store_health,
        deployment_states=deployment_states,
        applications={},
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/healthz")


async def test_healthy_stores_answer_200_without_retry_after():
    r = await _healthz({"postgres": "ok", "redis": "ok"})
    assert r.status_code == 200
    assert "retry-after" not in r.headers
    assert r.json() == {
        "status": "ok",
        "postgres": "ok",
        "redis": "ok",
        "deployments": DEPLOYMENTS,
    }


@pytest.mark.parametrize(
    "stores",
    [
        {"postgres": "down", "redis": "ok"},
        {"postgres": "ok", "redis": "down"},
        {"postgres": "down", "redis": "down"},
    ],
)
async def test_a_store_down_is_503_with_retry_after(stores: dict[str, str]):
    r = await _healthz(stores)
    assert r.status_code == 503
    assert r.headers["retry-after"] == str(HEALTH_RETRY_AFTER_SECONDS)
    body = r.json()
    assert body["status"] == "degraded"
    assert {k: body[k] for k in stores} == stores


async def test_a_slow_controller_does_not_hide_the_stores():
    r = await _healthz({"postgres": "ok", "redis": "ok"}, controller_answers=False)
    assert r.status_code == 200
    assert r.json()["deployments"] == "unknown"
