"""The mesh's Prometheus metrics, with the names fixed in docs/design.md.

Replicas record through :mod:`ray.serve.metrics`; Ray's metrics agent exports them on the
metrics port with a ``ray_`` prefix (``ray_callmesh_service_request_seconds``) and adds the
deployment, replica and application tags. The edge and the deployments depend on the small
:class:`Metrics` protocol so unit tests can record without Ray.
"""

from __future__ import annotations

from typing import Protocol

# Seconds: a tool call should answer well under 100 ms inside the mesh.
LATENCY_BUCKETS = [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
CALL_SECONDS_BUCKETS = [15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0]
CALL_COST_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


class Metrics(Protocol):
    def observe_request(
        self, *, service: str, operation: str, outcome: str, seconds: float
    ) -> None: ...

    def count_reservation(self, *, kind: str, result: str) -> None: ...

    def set_active_calls(self, count: int) -> None: ...

    def observe_call(self, *, flow: str, outcome: str, seconds: float, cost_usd: float) -> None: ...

    def add_cost(self, *, component: str, usd: float) -> None: ...


class RayMetrics:
    """The metrics of one replica. Build it inside the replica (its constructor), where Serve's
    context adds the deployment and replica tags."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Gauge, Histogram

        self.request_seconds = Histogram(
            "callmesh_service_request_seconds",
            description="Time a mesh service took to answer one HTTP request.",
            boundaries=LATENCY_BUCKETS,
            tag_keys=("service", "operation", "outcome"),  # type: ignore[arg-type]
        )
        self.reservations = Counter(
            "callmesh_reservations_total",
            description="Holds, confirms and releases, by kind of booking and result.",
            tag_keys=("kind", "result"),  # type: ignore[arg-type]
        )
        self.active_calls = Gauge(
            "callmesh_active_calls",
            description="Calls started and not yet ended.",
        )
        self.call_seconds = Histogram(
            "callmesh_call_duration_seconds",
            description="Length of ended calls.",
            boundaries=CALL_SECONDS_BUCKETS,
            tag_keys=("flow", "outcome"),  # type: ignore[arg-type]
        )
        self.call_cost = Histogram(
            "callmesh_call_cost_usd",
            description="Total cost of one ended call in USD.",
            boundaries=CALL_COST_BUCKETS,
            tag_keys=("flow",),
        )
        self.cost_total = Counter(
            "callmesh_cost_usd_total",
            description="Money spent on calls in USD, by cost component.",
            tag_keys=("component",),
        )

    def observe_request(
        self, *, service: str, operation: str, outcome: str, seconds: float
    ) -> None:
        self.request_seconds.observe(
            seconds, tags={"service": service, "operation": operation, "outcome": outcome}
        )

    def count_reservation(self, *, kind: str, result: str) -> None:
        self.reservations.inc(1, tags={"kind": kind, "result": result})

    def set_active_calls(self, count: int) -> None:
        self.active_calls.set(count)

    def observe_call(self, *, flow: str, outcome: str, seconds: float, cost_usd: float) -> None:
        self.call_seconds.observe(seconds, tags={"flow": flow, "outcome": outcome})
        self.call_cost.observe(cost_usd, tags={"flow": flow})

    def add_cost(self, *, component: str, usd: float) -> None:
        if usd > 0:
            self.cost_total.inc(usd, tags={"component": component})


class RecordedMetrics:
    """Keeps what was recorded, for tests and for running an app outside Ray."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        self.reservations: list[tuple[str, str]] = []
        self.active_calls: int | None = None
        self.calls: list[tuple[str, str, float, float]] = []
        self.costs: dict[str, float] = {}

    def observe_request(
        self, *, service: str, operation: str, outcome: str, seconds: float
    ) -> None:
        self.requests.append((service, operation, outcome))

    def count_reservation(self, *, kind: str, result: str) -> None:
        self.reservations.append((kind, result))

    def set_active_calls(self, count: int) -> None:
        self.active_calls = count

    def observe_call(self, *, flow: str, outcome: str, seconds: float, cost_usd: float) -> None:
        self.calls.append((flow, outcome, seconds, cost_usd))

    def add_cost(self, *, component: str, usd: float) -> None:
        self.costs[component] = self.costs.get(component, 0.0) + usd
