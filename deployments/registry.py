"""Which applications the mesh runs, at which route prefix, and the API of each.

Every service is its own Serve application whose ingress deployment *is* the service, so
the proxy routes a request straight to the replica that handles it (one hop; see
docs/architecture.md). The gateway at ``/`` only serves health and documentation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI
from ray.serve import Application

from services.settings import Settings


@dataclass(frozen=True)
class ServiceApp:
    """One service application: its Serve name, route prefix and ingress deployment name."""

    name: str
    route_prefix: str
    deployment: str
    # Binds the ingress deployment (and what it calls) into a Serve application.
    build: Callable[[Settings], Application]
    # Builds the FastAPI app with no service behind it: enough for its OpenAPI schema.
    schema: Callable[[Settings], FastAPI]


GATEWAY_APP = "gateway"
GATEWAY_DEPLOYMENT = "Gateway"


def service_apps() -> list[ServiceApp]:
    """Every service application, in the order they are deployed; the handles between them
    (inventory -> verification, scheduling -> inventory for test drives, calls -> analytics)
    are wired here and nowhere else."""
    # Imported here: each module defines Serve deployments, and the gateway imports this one.
    from deployments.analytics import analytics_app, analytics_remote, build_analytics_api
    from deployments.calls import build_calls_api, calls_app
    from deployments.inventory import build_inventory_api, inventory_app, inventory_remote
    from deployments.scheduling import build_scheduling_api, scheduling_app
    from deployments.verification import (
        build_verification_api,
        verification_app,
        verification_remote,
    )

    return [
        ServiceApp(
            name="verification",
            route_prefix="/verification",
            deployment="Verification",
            build=verification_app,
            schema=build_verification_api,
        ),
        ServiceApp(
            name="inventory",
            route_prefix="/inventory",
            deployment="Inventory",
            build=lambda settings: inventory_app(settings, verification_remote()),
            schema=build_inventory_api,
        ),
        ServiceApp(
            name="scheduling",
            route_prefix="/scheduling",
            deployment="Scheduling",
            build=lambda settings: scheduling_app(settings, inventory_remote()),
            schema=build_scheduling_api,
        ),
        ServiceApp(
            name="analytics",
            route_prefix="/analytics",
            deployment="Analytics",
            build=analytics_app,
            schema=build_analytics_api,
        ),
        ServiceApp(
            name="calls",
            route_prefix="/calls",
            deployment="Calls",
            build=lambda settings: calls_app(settings, analytics_remote()),
            schema=build_calls_api,
        ),
    ]


def schema_apps(settings: Settings) -> dict[str, Callable[[], FastAPI]]:
    return {app.route_prefix: _bound(app.schema, settings) for app in service_apps()}


def _bound(schema: Callable[[Settings], FastAPI], settings: Settings) -> Callable[[], FastAPI]:
    return lambda: schema(settings)
