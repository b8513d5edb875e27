"""The gateway over real HTTP: health, the merged OpenAPI document, docs, unknown routes."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration


async def test_healthz_reports_stores_and_every_deployment(anonymous: httpx.AsyncClient):
    r = await anonymous.get("/healthz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert body["postgres"] == "ok"
    assert body["redis"] == "ok"
    apps = body["deployments"]
    assert apps["gateway"]["deployments"]["Gateway"]["replicas"].get("RUNNING", 0) >= 1
    for app in apps.values():
        assert app["status"] == "RUNNING"


async def test_openapi_is_merged_and_docs_are_served(anonymous: httpx.AsyncClient):
    r = await anonymous.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["info"]["title"] == "callmesh"
    assert "/healthz" in spec["paths"]
    docs = await anonymous.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


async def test_unknown_route_is_404_in_the_error_shape(anonymous: httpx.AsyncClient):
    r = await anonymous.get("/no-such-thing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
