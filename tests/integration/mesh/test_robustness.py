"""Nothing a client sends gets a 500: every documented route, with odd ids and odd bodies."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.integration

ODD_IDS = ["x" * 300, "..%2F..%2Fetc", "%00", "0", "PRJ-901.ffffffffffffffffffffffff"]
ODD_BODIES: list[object] = [{}, [], "text", {"unit_id": None, "start": 12, "flow": []}, 1e308]


async def test_no_route_answers_500_to_odd_input(client: httpx.AsyncClient):
    spec = (await client.get("/openapi.json")).json()
    assert len(spec["paths"]) > 20  # every application's routes, not just the gateway's
    failures: list[str] = []
    statuses: set[int] = set()
    for path, item in spec["paths"].items():
        for method in item:
            for odd in ODD_IDS:
                url = re.sub(r"\{[^}]+\}", odd, path)
                bodies = ODD_BODIES if method in ("post", "put") else [None]
                for body in bodies:
                    r = await client.request(
                        method.upper(),
                        url,
                        json=body,
                        params={"date": "31-31-31", "since": "x", "limit": "-1"},
                    )
                    statuses.add(r.status_code)
                    if r.status_code >= 500 and r.status_code != 503:
                        failures.append(f"{method.upper()} {url} {body!r}: {r.status_code}")
                    elif r.status_code >= 400:
                        assert "error" in r.json(), f"{method} {url}: {r.text[:200]}"
    assert failures == []
    assert {404, 422} <= statuses
