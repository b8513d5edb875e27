"""One OpenAPI document for the whole mesh, merged from each application's own.

Each application serves its schema under its prefix (``/inventory/openapi.json``); the gateway
serves the merged one at ``/openapi.json``. The apps are built here without a service behind
them: a schema needs routes, not connections.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI

from deployments.api import VERSION


def merge_openapi(
    gateway: FastAPI, applications: Mapping[str, Callable[[], FastAPI]]
) -> dict[str, Any]:
    """The gateway's schema plus every application's paths under its route prefix."""
    merged = dict(gateway.openapi())
    merged["info"] = {
        "title": "callmesh",
        "version": VERSION,
        "description": "The mesh's HTTP API: inventory, scheduling, verification, calls, "
        'analytics. Errors are {"error": {"code", "message"}}.',
    }
    paths: dict[str, Any] = dict(merged.get("paths", {}))
    schemas: dict[str, Any] = dict(merged.get("components", {}).get("schemas", {}))
    security: dict[str, Any] = {}
    for prefix, build in sorted(applications.items()):
        spec = build().openapi()
        for path, item in spec.get("paths", {}).items():
            paths[prefix.rstrip("/") + path] = item
        components = spec.get("components", {})
        # Component names are model class names; the same name means the same shared model.
        schemas.update(components.get("schemas", {}))
        security.update(components.get("securitySchemes", {}))
    merged["paths"] = dict(sorted(paths.items()))
    components_out: dict[str, Any] = {}
    if schemas:
        components_out["schemas"] = dict(sorted(schemas.items()))
    if security:
        components_out["securitySchemes"] = security
    if components_out:
        merged["components"] = components_out
    return merged
