"""The one place the mesh is wired: application builders for ``serve_config.yaml`` and for
code (``callmesh up``, the integration tests).

``serve run serve_config.yaml`` / ``serve deploy serve_config.yaml`` call the ``build_*``
functions with the application's ``args``; code calls :func:`mesh_applications` with a
:class:`Settings`. Deployment options in the config file override the defaults set here.
"""

# No ``from __future__ import annotations`` here: Serve inspects the builders' parameter
# annotation at run time to validate ``args`` into :class:`AppArgs`.

import asyncio
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from ray.serve import Application

from deployments.gateway import Gateway
from deployments.registry import GATEWAY_APP, service_apps
from deployments.store_setup import prepare_database, resolve_storage
from services.settings import Settings


class AppArgs(BaseModel):
    """``args:`` of an application in serve_config.yaml."""

    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides on top of the CALLMESH_* environment (same names, lower case).",
    )

    def resolved_settings(self) -> Settings:
        """Settings naming running stores, migrated: ``serve run``/``serve deploy`` work on
        their own (demo data is ``callmesh up``'s job)."""
        settings = resolve_storage(Settings(**self.settings))
        # Builders run in a plain Ray task, outside any event loop.
        asyncio.run(prepare_database(settings, load_demo=False))
        return settings


@dataclass(frozen=True)
class MeshApplication:
    name: str
    route_prefix: str
    app: Application


def gateway_app(settings: Settings) -> Application:
    return Gateway.bind(settings)  # type: ignore[attr-defined]


def build_gateway(args: AppArgs) -> Application:
    return gateway_app(args.resolved_settings())


def _build(name: str, args: AppArgs) -> Application:
    settings = args.resolved_settings()
    for spec in service_apps():
        if spec.name == name:
            return spec.build(settings)
    raise LookupError(f"no service application named {name!r}")


def build_verification(args: AppArgs) -> Application:
    return _build("verification", args)


def build_inventory(args: AppArgs) -> Application:
    return _build("inventory", args)


def build_scheduling(args: AppArgs) -> Application:
    return _build("scheduling", args)


def build_analytics(args: AppArgs) -> Application:
    return _build("analytics", args)


def build_calls(args: AppArgs) -> Application:
    return _build("calls", args)


def mesh_applications(settings: Settings) -> list[MeshApplication]:
    """Every application, services first so the gateway's health sees them deployed."""
    settings = resolve_storage(settings)
    apps = [MeshApplication(s.name, s.route_prefix, s.build(settings)) for s in service_apps()]
    apps.append(MeshApplication(GATEWAY_APP, "/", gateway_app(settings)))
    return apps
