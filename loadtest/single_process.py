"""The mesh's service code in ONE uvicorn process, no Ray: the baseline the benchmark compares
the mesh against.

Every application is built by the same ``build_<service>_api`` builder the Serve deployments
use, with its service constructed in-process, and mounted at the route prefix it has in the
mesh (``/inventory``, ``/scheduling``, ...; the gateway's ``/healthz`` at ``/``). What Serve
does across processes is done here by direct calls: inventory asks the verification service
itself what a hold's call is missing, and an ended call is fed straight to analytics. Request
metrics are recorded into a local Prometheus registry with the mesh's names, so both sides pay
for the same observations.

    DATABASE_URL=... REDIS_URL=... CALLMESH_REDIS_PREFIX=... \
        uvicorn loadtest.single_process:app --port 8001

Storage comes from the environment exactly as for ``callmesh up`` (the embedded default when
the URLs are unset); the database is migrated on startup, demo data is not loaded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.analytics import build_analytics_api
from deployments.calls import build_calls_api
from deployments.composition import build_services
from deployments.gateway import build_gateway_api
from deployments.gc_tuning import settle_heap
from deployments.inventory import build_inventory_api
from deployments.metrics import CALL_COST_BUCKETS, CALL_SECONDS_BUCKETS, LATENCY_BUCKETS
from deployments.registry import schema_apps
from deployments.replica_stores import Backends
from deployments.scheduling import build_scheduling_api
from deployments.store_setup import prepare_database, resolve_storage
from deployments.verification import build_verification_api
from services.analytics import AnalyticsService
from services.calls import CallSummary
from services.settings import Settings

__all__ = ["PrometheusMetrics", "create_app"]  # and `app`, built on first access

# Route prefix -> the service's FastAPI app, in the mesh's order (gateway last, at "/").
_PREFIXES = ("/verification", "/inventory", "/scheduling", "/analytics", "/calls")


class PrometheusMetrics:
    """``deployments.metrics.Metrics`` into a private prometheus_client registry: the same
    observations a replica makes through ``ray.serve.metrics``, without Ray."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.request_seconds = PromHistogram(
            "callmesh_service_request_seconds",
            "Time a mesh service took to answer one HTTP request.",
            ("service", "operation", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reservations = PromCounter(
            "callmesh_reservations_total",
            "Holds, confirms and releases, by kind of booking and result.",
            ("kind", "result"),
            registry=r,
        )
        self.active_calls = PromGauge(
            "callmesh_active_calls", "Calls started and not yet ended.", registry=r
        )
        self.call_seconds = PromHistogram(
            "callmesh_call_duration_seconds",
            "Length of ended calls.",
            ("flow", "outcome"),
            buckets=CALL_SECONDS_BUCKETS,
            registry=r,
        )
        self.call_cost = PromHistogram(
            "callmesh_call_cost_usd",
            "Total cost of one ended call in USD.",
            ("flow",),
            buckets=CALL_COST_BUCKETS,
            registry=r,
        )
        self.cost_total = PromCounter(
            "callmesh_cost_usd_total",
            "Money spent on calls in USD, by cost component.",
            ("component",),
            registry=r,
        )

    def observe_request(
        self, *, service: str, operation: str, outcome: str, seconds: float
    ) -> None:
        self.request_seconds.labels(service, operation, outcome).observe(seconds)

    def count_reservation(self, *, kind: str, result: str) -> None:
        self.reservations.labels(kind, result).inc()

    def set_active_calls(self, count: int) -> None:
        self.active_calls.set(count)

    def observe_call(self, *, flow: str, outcome: str, seconds: float, cost_usd: float) -> None:
        self.call_seconds.labels(flow, outcome).observe(seconds)
        self.call_cost.labels(flow).observe(cost_usd)

    def add_cost(self, *, component: str, usd: float) -> None:
        if usd > 0:
            self.cost_total.labels(component).inc(usd)


async def _single_process_states() -> dict[str, Any]:
    # What /healthz reports in place of Serve's applications: one process serves them all.
    return {
        prefix.strip("/"): {"status": "RUNNING", "deployments": {"single_process": {}}}
        for prefix in _PREFIXES
    }


class _ByPrefix:
    """Routes a request to the app of its route prefix the way Serve's proxy does: the path
    stays whole and the prefix is appended to ``root_path`` (so ``POST /calls`` reaches the
    calls app's ``""`` route, which a Starlette ``Mount`` would not match)."""

    def __init__(
        self,
        apps: list[tuple[str, ASGIApp]],
        default: ASGIApp,
        lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]],
    ) -> None:
        self.apps = apps
        self.default = default
        self.lifespan = Starlette(lifespan=lifespan)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        path: str = scope["path"]
        for prefix, app in self.apps:
            if path == prefix or path.startswith(prefix + "/"):
                root = scope.get("root_path", "") + prefix
                await app({**scope, "root_path": root}, receive, send)
                return
        await self.default(scope, receive, send)


def create_app(settings: Settings | None = None) -> ASGIApp:
    """Each service's app at its mesh route prefix, the gateway at ``/``. The stores open in
    the lifespan and the services land on each app's ``state``, where its handlers'
    dependencies read them."""
    settings = resolve_storage(settings or Settings())
    metrics = PrometheusMetrics()
    apps: dict[str, FastAPI] = {
        "/verification": build_verification_api(settings, metrics=metrics),
        "/inventory": build_inventory_api(settings, metrics=metrics),
        "/scheduling": build_scheduling_api(settings, metrics=metrics),
        "/analytics": build_analytics_api(settings, metrics=metrics),
    }
    analytics_box: list[AnalyticsService] = []

    async def feed_analytics(summary: CallSummary) -> None:
        # The mesh sends this over a DeploymentHandle; here it is a call.
        if analytics_box:
            await analytics_box[0].record_call_ended({"call_id": summary.call_id})

    apps["/calls"] = build_calls_api(settings, metrics=metrics, on_ended=feed_analytics)
    backends_box: list[Backends] = []

    async def store_health() -> dict[str, str]:
        return await backends_box[0].health()

    gateway = build_gateway_api(
        settings=settings,
        store_health=store_health,
        deployment_states=_single_process_states,
        applications=schema_apps(settings),
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await prepare_database(settings, load_demo=False)
        backends = await Backends.open(settings)
        backends_box.append(backends)
        pool, redis = backends.pool, backends.redis
        built = build_services(settings, pool, redis)
        analytics_box.append(built.analytics)
        services: dict[str, Any] = {
            "/verification": built.verification,
            "/inventory": built.inventory,
            "/scheduling": built.scheduling,
            "/analytics": built.analytics,
            "/calls": built.calls,
        }
        for prefix, service in services.items():
            apps[prefix].state.service = service
        settle_heap()  # as every mesh replica does once it has started
        try:
            yield
        finally:
            await built.aclose()
            await backends.close()

    return _ByPrefix([(prefix, apps[prefix]) for prefix in _PREFIXES], gateway, lifespan)


def __getattr__(name: str) -> Any:
    # ``uvicorn loadtest.single_process:app`` builds the app on first access, so importing
    # this module (tests, the runner) reads no settings and starts nothing.
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)
