"""The small application at ``/``: ``/healthz``, the merged ``/openapi.json`` and ``/docs``.

It is off the hot path: holds and confirms go from the proxy straight to the inventory
application. Health reports the stores as this replica sees them and every Serve deployment
as the controller sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve

from deployments.api import new_api
from deployments.metrics import Metrics
from deployments.openapi import merge_openapi
from deployments.registry import GATEWAY_DEPLOYMENT, schema_apps
from deployments.replica import ACTOR_OPTIONS, ReplicaContext, autoscaling
from services import idempotency
from services.settings import Settings

log = logging.getLogger(__name__)

DeploymentStates = Callable[[], Awaitable[dict[str, Any]]]
StoreHealth = Callable[[], Awaitable[dict[str, str]]]
SERVE_STATUS_TIMEOUT_SECONDS = 3.0
# A store that is down is rarely back within a second; a prober may ask again after this.
HEALTH_RETRY_AFTER_SECONDS = 5
# How often the gateway deletes idempotency records past their retention.
PURGE_EVERY_SECONDS = 3600.0


async def serve_deployment_states() -> dict[str, Any]:
    """Each application's status, and each deployment's status and replicas by state."""
    # serve.status() blocks on the controller; keep it off the replica's event loop.
    status = await asyncio.wait_for(
        asyncio.to_thread(serve.status), timeout=SERVE_STATUS_TIMEOUT_SECONDS
    )
    return {
        name: {
            "status": _text(app.status),
            "deployments": {
                dep_name: {
                    "status": _text(dep.status),
                    "replicas": {_text(state): n for state, n in dep.replica_states.items()},
                }
                for dep_name, dep in app.deployments.items()
            },
        }
        for name, app in status.applications.items()
    }


def _text(state: object) -> str:
    # Serve's status enums print as "ApplicationStatus.RUNNING"; their value is "RUNNING".
    return str(getattr(state, "value", state))


def build_gateway_api(
    *,
    settings: Settings,
    store_health: StoreHealth,
    deployment_states: DeploymentStates,
    applications: Mapping[str, Callable[[], FastAPI]],
    metrics: Metrics | None = None,
) -> FastAPI:
    app = new_api(
        service="gateway", title="callmesh", settings=settings, metrics=metrics, docs=False
    )
    merged: dict[str, Any] = {}

    @app.get(
        "/healthz",
        tags=["health"],
        summary="State of the stores and every deployment",
        responses={
            503: {
                "description": "A store is down: the same body, status degraded.",
                "content": {"application/json": {"schema": {"type": "object"}}},
                "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}},
            }
        },
    )
    async def healthz() -> JSONResponse:
        stores = await store_health()
        try:
            deployments: dict[str, Any] | str = await deployment_states()
        except Exception:  # the controller being slow must not hide the stores' state
            log.warning("could not read serve status", exc_info=True)
            deployments = "unknown"
        healthy = all(state == "ok" for state in stores.values())
        body = {"status": "ok" if healthy else "degraded", **stores, "deployments": deployments}
        if healthy:
            return JSONResponse(body)
        # 503 because a dependency is down, with Retry-After like every 503 of the API.
        return JSONResponse(
            body, status_code=503, headers={"Retry-After": str(HEALTH_RETRY_AFTER_SECONDS)}
        )

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        if not merged:
            merged.update(merge_openapi(app, applications))
        return JSONResponse(merged)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="callmesh API")

    return app


@serve.deployment(
    name=GATEWAY_DEPLOYMENT,
    max_ongoing_requests=64,
    autoscaling_config=autoscaling(max_replicas=1),
    ray_actor_options=ACTOR_OPTIONS,
)
@serve.ingress()
class Gateway:
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]  # Serve awaits it
        self.context = await ReplicaContext.open(settings)
        # Housekeeping off the hot path: the gateway has one replica, so one purger.
        self._purger = asyncio.create_task(self._purge_idempotency_records())

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_gateway_api(
            settings=self.context.settings,
            store_health=self.context.backends.health,
            deployment_states=serve_deployment_states,
            applications=schema_apps(self.context.settings),
            metrics=self.context.metrics,
        )

    async def _purge_idempotency_records(self) -> None:
        while True:
            try:
                purged = await idempotency.purge(
                    self.context.backends.pool,
                    older_than_days=self.context.settings.idempotency_retention_days,
                )
            except Exception:
                log.warning("could not purge old idempotency records", exc_info=True)
            else:
                if purged:
                    log.info("purged old idempotency records", extra={"purged": purged})
            await asyncio.sleep(PURGE_EVERY_SECONDS)

    async def __del__(self) -> None:
        self._purger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._purger
        await self.context.close()
