"""The OpenAPI contract: every route of every application documents each error status it can
answer, with the one error schema, and the error bodies the edge sends fit that schema."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import SecretStr

from deployments.api import PERSONAL, WRITE, Error, new_api
from deployments.edge import is_write
from deployments.gateway import build_gateway_api
from deployments.openapi import merge_openapi
from deployments.registry import schema_apps, service_apps
from services.errors import DependencyUnavailable, HoldExpired, NotFound, Unavailable
from services.settings import Settings

pytestmark = pytest.mark.unit

SETTINGS = Settings(environment="test")
ERROR_REF = "#/components/schemas/Error"


def _operations() -> list[tuple[str, APIRoute, str, dict[str, Any], dict[str, Any]]]:
    """(application, route, method, operation, components) of every documented route."""
    out = []
    for spec in service_apps():
        app = spec.schema(SETTINGS)
        doc = app.openapi()
        components = doc["components"]["schemas"]
        for route in app.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue  # an undocumented alias (POST /calls/) answers as its twin does
            for method in route.methods:
                operation = doc["paths"][route.path][method.lower()]
                out.append((spec.name, route, method, operation, components))
    return out


def _expected(route: APIRoute, method: str, operation: dict[str, Any]) -> set[str]:
    """What the contract promises, read from the document and the route independently of
    the helper that writes it."""
    params = operation.get("parameters", [])
    body = "requestBody" in operation
    path_ids = [p["name"] for p in params if p["in"] == "path"]
    token = any(d.dependency is WRITE.dependency for d in route.dependencies)
    write = is_write(method) and not any(d is PERSONAL for d in route.dependencies)
    keyed = any(p["name"] == "Idempotency-Key" for p in params)
    expected = {"503"}
    if params or body:
        expected.add("422")
    if body:
        expected.add("413")
    if token:
        expected.add("401")
    if is_write(method):
        expected.add("429")
    if path_ids or body or any(p["name"] == "phone" for p in params):
        expected.add("404")
    if write and (keyed or path_ids):
        expected.add("409")
    if "hold_id" in path_ids:
        expected.add("410")
    return expected


def test_every_route_documents_the_statuses_it_can_answer():
    operations = _operations()
    assert len(operations) > 30
    wrong = []
    for name, route, method, operation, components in operations:
        documented = {s for s in operation["responses"] if not s.startswith("2")}
        expected = _expected(route, method, operation)
        if documented != expected:
            wrong.append(
                f"{name} {method} {route.path}: {sorted(documented)} != {sorted(expected)}"
            )
        for status in documented:
            response = operation["responses"][status]
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, (name, route.path, status)
            assert response["description"]
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"]
        assert "Error" in components and "ErrorBody" in components
        # FastAPI's own 422 shape is not what the edge answers.
        assert "HTTPValidationError" not in components
    assert wrong == []


def test_the_statuses_of_the_design_contract_are_documented():
    by_route = {
        (f"/{name}{route.path}", method): set(operation["responses"])
        for name, route, method, operation, _ in _operations()
    }
    assert {"201", "401", "409", "413", "422", "429", "503"} <= by_route[
        ("/inventory/holds", "POST")
    ]
    assert {"201", "404", "409", "410", "401", "503"} <= by_route[
        ("/inventory/holds/{hold_id}/confirm", "POST")
    ]
    assert {"200", "401", "404", "422", "503"} <= by_route[("/calls/{call_id}", "GET")]
    assert {"200", "401", "404", "413", "422", "503"} <= by_route[
        ("/scheduling/customers/lookup", "POST")
    ]
    assert "401" not in by_route[("/analytics/summary", "GET")]
    assert "409" not in by_route[("/scheduling/customers/lookup", "POST")]
    assert "429" not in by_route[("/scheduling/appointments/{appointment_id}", "GET")]


def test_the_merged_document_carries_the_error_schema_and_the_health_503():
    async def nothing() -> dict:
        return {}

    gateway = build_gateway_api(
        settings=SETTINGS,
        store_health=nothing,
        deployment_states=nothing,
        applications=schema_apps(SETTINGS),
    )
    merged = merge_openapi(gateway, schema_apps(SETTINGS))
    schemas = merged["components"]["schemas"]
    assert schemas["Error"]["required"] == ["error"]
    assert set(schemas["ErrorBody"]["required"]) == {"code", "message"}
    refs = {
        response["content"]["application/json"]["schema"].get("$ref")
        for path, item in merged["paths"].items()
        if path != "/healthz"
        for operation in item.values()
        for status, response in operation["responses"].items()
        if not status.startswith("2")
    }
    assert refs == {ERROR_REF}
    # The health check's 503 is its own body (status degraded), not an error.
    health = merged["paths"]["/healthz"]["get"]["responses"]["503"]
    assert health["content"]["application/json"]["schema"] == {"type": "object"}


async def test_the_bodies_the_edge_answers_fit_the_error_schema():
    settings = Settings(environment="test", api_token=SecretStr("t0ken"), max_body_bytes=1024)
    app = new_api(service="things", title="things", settings=settings)
    errors = {
        "missing": NotFound("There is no such thing."),
        "taken": Unavailable("That time is already taken.", resource_id="u1"),
        "expired": HoldExpired("That hold lapsed."),
        "down": DependencyUnavailable("Holds are unavailable for a moment.", retry_after=7),
    }

    @app.post("/raise/{name}", dependencies=[WRITE])
    async def raise_it(name: str, body: dict[str, int]) -> None:
        raise errors[name]

    auth = {"Authorization": "Bearer t0ken"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        answers = [await c.post(f"/raise/{name}", json={"a": 1}, headers=auth) for name in errors]
        answers.append(await c.post("/raise/missing", json={"a": 1}))
        answers.append(await c.post("/raise/missing", json={"a": "x"}, headers=auth))
        answers.append(await c.post("/raise/missing", json={"a": "x" * 2000}, headers=auth))
    assert [a.status_code for a in answers] == [404, 409, 410, 503, 401, 422, 413]
    for answer in answers:
        Error.model_validate_json(answer.content, strict=True)
        assert answer.headers["content-type"] == "application/json"


def test_answers_link_to_the_routes_they_name():
    docs = {spec.name: spec.schema(SETTINGS).openapi() for spec in service_apps()}

    def links(app: str, path: str, method: str, status: str) -> dict[str, Any]:
        return docs[app]["paths"][path][method]["responses"][status]["links"]

    hold = links("inventory", "/holds", "post", "201")
    targets = {link["operationId"] for link in hold.values()}
    assert {
        docs["inventory"]["paths"]["/holds/{hold_id}/confirm"]["post"]["operationId"],
        docs["inventory"]["paths"]["/holds/{hold_id}/rate"]["post"]["operationId"],
        docs["inventory"]["paths"]["/holds/{hold_id}"]["delete"]["operationId"],
    } <= targets
    for link in hold.values():
        for parameter, value in link["parameters"].items():
            name = parameter.removeprefix("path.")
            assert value == f"$response.body#/{name}"
    appointment = links("scheduling", "/appointments", "post", "201")
    paths = docs["scheduling"]["paths"]
    assert {
        paths["/appointments/{appointment_id}/reschedule"]["post"]["operationId"],
        paths["/appointments/{appointment_id}/cancel"]["post"]["operationId"],
    } <= {link["operationId"] for link in appointment.values()}
    assert "links" in docs["calls"]["paths"][""]["post"]["responses"]["201"]
