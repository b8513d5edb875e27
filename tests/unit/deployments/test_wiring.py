"""The mesh's wiring without Ray: routes, the OpenAPI merge, serve_config.yaml."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml
from fastapi.routing import APIRoute
from ray.serve.schema import ServeDeploySchema

from deployments.api import PERSONAL, WRITE
from deployments.edge import is_write
from deployments.gateway import build_gateway_api
from deployments.openapi import merge_openapi
from deployments.registry import GATEWAY_APP, GATEWAY_DEPLOYMENT, schema_apps, service_apps
from services.settings import Settings

pytestmark = pytest.mark.unit

CONFIG = Path(__file__).resolve().parents[3] / "serve_config.yaml"
SETTINGS = Settings(environment="test")


def _routes():
    for spec in service_apps():
        for route in spec.schema(SETTINGS).routes:
            if isinstance(route, APIRoute):
                yield spec.name, route


def test_every_mutating_route_requires_the_token():
    missing = [
        f"{name} {sorted(route.methods)} {route.path}"
        for name, route in _routes()
        if any(is_write(m) for m in route.methods)
        and not any(d.dependency is WRITE.dependency for d in route.dependencies)
    ]
    assert missing == []


# Response fields that carry personal data (DESIGN.md: phone, email, name, plate, licence or
# policy number). A verification's subject is the licence, operator or policy as said.
PERSONAL_FIELDS = frozenset(
    {"phone", "caller_phone", "email", "customer_name", "plate", "subject", "licence_number"}
    | {"policy_number", "operator_id"}
)
# "name" is a person's only in these models (elsewhere a unit's, a tool's, a service's).
PERSONAL_NAME_MODELS = frozenset({"Customer"})


def _response_fields(schema: object, components: dict) -> set[str]:
    """Every property name a response schema can carry, "name" only where it is a person's."""
    found: set[str] = set()
    seen: set[str] = set()

    def walk(node: object, model: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, model)
            return
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                walk(components[name], name)
            return
        for field, sub in node.get("properties", {}).items():
            if field != "name" or model in PERSONAL_NAME_MODELS:
                found.add(field)
            walk(sub, model)
        for key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
            walk(node.get(key), model)

    walk(schema, "")
    return found


def _personal_routes() -> list[tuple[str, str, str, set[str]]]:
    """(application, method, path, personal fields) of every route whose success answer
    carries personal data, found from each application's OpenAPI document."""
    out = []
    for spec in service_apps():
        doc = spec.schema(SETTINGS).openapi()
        components = doc.get("components", {}).get("schemas", {})
        for path, item in doc["paths"].items():
            for method, operation in item.items():
                for status, response in operation["responses"].items():
                    if not status.startswith("2"):
                        continue
                    for media in response.get("content", {}).values():
                        personal = _response_fields(media.get("schema"), components)
                        personal &= PERSONAL_FIELDS
                        if personal:
                            out.append((spec.name, method.upper(), path, personal))
    return out


def test_every_route_answering_personal_data_requires_the_token():
    routes = {(name, m, route.path): route for name, route in _routes() for m in route.methods}
    personal = _personal_routes()
    # The walk finds what it must: the lookups, the audit, a call's detail.
    found = {(name, method, path) for name, method, path, _ in personal}
    assert {
        ("scheduling", "POST", "/customers/lookup"),
        ("scheduling", "POST", "/appointments/lookup"),
        ("scheduling", "GET", "/customers"),
        ("scheduling", "GET", "/appointments"),
        ("scheduling", "GET", "/appointments/{appointment_id}"),
        ("scheduling", "GET", "/callbacks"),
        ("calls", "GET", "/{call_id}"),
        ("verification", "GET", "/calls/{call_id}"),
    } <= found
    open_routes = [
        f"{name} {method} {path} answers {sorted(fields)}"
        for name, method, path, fields in personal
        if not any(
            d.dependency is PERSONAL.dependency for d in routes[(name, method, path)].dependencies
        )
    ]
    assert open_routes == []


def test_phone_lookups_by_query_string_are_deprecated_aliases():
    docs = {spec.name: spec.schema(SETTINGS).openapi() for spec in service_apps()}
    paths = docs["scheduling"]["paths"]
    for path in ("/customers", "/appointments"):
        assert paths[path]["get"].get("deprecated") is True
        assert "deprecated" not in paths[f"{path}/lookup"]["post"]
    # No other route takes a phone number in its URL.
    in_urls = [
        f"{method} {path}"
        for doc in docs.values()
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        for parameter in operation.get("parameters", [])
        if parameter["in"] in ("query", "path")
        and "phone" in parameter["name"]
        and not operation.get("deprecated")
    ]
    assert in_urls == []


def test_the_design_contract_paths_exist():
    paths = {(m, f"/{name}{route.path}") for name, route in _routes() for m in route.methods}
    for expected in [
        ("GET", "/inventory/units"),
        ("POST", "/inventory/holds"),
        ("POST", "/inventory/holds/{hold_id}/confirm"),
        ("DELETE", "/inventory/holds/{hold_id}"),
        ("GET", "/inventory/bookings/{booking_id}"),
        ("GET", "/scheduling/service-types"),
        ("GET", "/scheduling/slots"),
        ("POST", "/scheduling/appointments"),
        ("POST", "/calls"),
        ("POST", "/calls/{call_id}/events"),
        ("POST", "/calls/{call_id}/end"),
        ("GET", "/analytics/summary"),
    ]:
        assert expected in paths


def test_merged_openapi_has_every_application_and_no_clashing_models():
    specs = {prefix: build().openapi() for prefix, build in schema_apps(SETTINGS).items()}
    seen: dict[str, object] = {}
    for spec in specs.values():
        for name, schema in spec.get("components", {}).get("schemas", {}).items():
            assert seen.setdefault(name, schema) == schema, f"two different models named {name}"

    async def nothing() -> dict:
        return {}

    gateway = build_gateway_api(
        settings=SETTINGS,
        store_health=nothing,
        deployment_states=nothing,
        applications=schema_apps(SETTINGS),
    )
    merged = merge_openapi(gateway, schema_apps(SETTINGS))
    assert "/healthz" in merged["paths"]
    assert {"/inventory/holds", "/scheduling/slots", "/calls", "/analytics/summary"} <= set(
        merged["paths"]
    )
    assert merged["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_serve_config_is_valid_and_names_every_application():
    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    expected = {spec.name: spec for spec in service_apps()}
    names = {app.name for app in config.applications}
    assert names == {*expected, GATEWAY_APP}
    total_cpus = 0.0
    for app in config.applications:
        module, _, function = app.import_path.partition(":")
        builder = getattr(importlib.import_module(module), function)
        assert inspect.isfunction(builder)
        assert len(inspect.signature(builder).parameters) == 1
        deployment = expected[app.name].deployment if app.name in expected else GATEWAY_DEPLOYMENT
        assert [d.name for d in app.deployments] == [deployment]
        assert app.route_prefix == (
            expected[app.name].route_prefix if app.name in expected else "/"
        )
        for d in app.deployments:
            scaling = d.autoscaling_config
            assert scaling["min_replicas"] >= 1
            assert scaling["max_replicas"] >= scaling["min_replicas"]
            assert scaling["target_ongoing_requests"] <= d.max_ongoing_requests
            cpus = d.ray_actor_options.num_cpus
            assert 0 < cpus < 1
            total_cpus += cpus * scaling["max_replicas"]
    # Every replica at its maximum still fits on two cores.
    assert total_cpus <= 2.0
