"""Load shedding through the real mesh: a copy of the inventory application with a tiny
admission limit (a settings override), flooded with concurrent requests over real HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

pytestmark = pytest.mark.integration

APP = "inventory-shed"
PREFIX = "/inventory-shed"
FLOOD = 150


@pytest.fixture(scope="module")
def tiny_inventory(mesh) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The inventory application again, at its own prefix, admitting one request at a time."""
    from ray import serve

    from deployments.registry import service_apps

    spec = next(s for s in service_apps() if s.name == "inventory")
    settings = mesh.settings.model_copy(update={"admission_max_in_flight": 1})
    serve.run(spec.build(settings), name=APP, route_prefix=PREFIX)
    try:
        yield f"{mesh.url}{PREFIX}"
    finally:
        serve.delete(APP)


async def test_past_its_limit_a_replica_sheds_503_with_retry_after_and_stays_healthy(
    tiny_inventory: str, mesh
):  # type: ignore[no-untyped-def]
    limits = httpx.Limits(max_connections=FLOOD, max_keepalive_connections=FLOOD)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        # Searches read PostgreSQL, so they overlap in the replica; one at a time is admitted.
        flood = await asyncio.gather(
            *(c.get(f"{tiny_inventory}/units", params={"query": "lift"}) for _ in range(FLOOD))
        )
        statuses = Counter(r.status_code for r in flood)
        shed = [r for r in flood if r.status_code == 503]
        after = await c.get(f"{tiny_inventory}/units", params={"query": "lift"})
        health = await c.get(f"{mesh.url}/healthz")
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] >= 1 and statuses[503] >= 1, statuses
    for r in shed:
        assert r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {
            "error": {
                "code": "overloaded",
                "message": "The service is at capacity right now; please try again in 1 second.",
            }
        }
    assert after.status_code == 200
    assert health.status_code == 200
