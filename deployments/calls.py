"""The calls application at ``/calls``: start, events, end (summary and cost), read.

Thin: requests go to :class:`services.calls.CallsService` as they came; the deployment only
records the call metrics from what the service answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from ray import serve

from deployments.api import service_api
from deployments.composition import calls_service
from deployments.deps import PERSONAL, WRITE, AppMetrics, Calls, IdempotencyKey
from deployments.handles import RemoteDeployment
from deployments.metrics import Metrics
from deployments.replica import ServiceReplica, service_deployment
from services.calls import (
    Call,
    CallDetail,
    CallsService,
    CallSummary,
    EndCall,
    Event,
    EventsRecorded,
    StartCall,
)
from services.settings import Settings

log = logging.getLogger(__name__)

ACTIVE_CALLS_REFRESH_SECONDS = 5.0


# Hands an ended call to analytics; failures are logged, never shown to the caller.
CallEnded = Callable[[CallSummary], Awaitable[None]]


async def _on_ended(request: Request) -> CallEnded | None:
    on_ended: CallEnded | None = request.app.state.on_ended
    return on_ended


OnEnded = Annotated[CallEnded | None, Depends(_on_ended)]

router = APIRouter()


# "" and not "/": the application lives at /calls, and POST /calls starts a call (include_router
# refuses an empty path with no prefix; api.include copies it). POST /calls/ too (clients that
# add the slash, schemathesis among them, got a 404 before).
@router.post("", status_code=201, dependencies=[WRITE], tags=["calls"])
@router.post("/", status_code=201, dependencies=[WRITE], include_in_schema=False)
async def start_call(body: StartCall, calls: Calls, idempotency_key: IdempotencyKey = None) -> Call:
    """Record a call an agent picked up; repeating a call id returns that call."""
    return await calls.start_call(body, idempotency_key=idempotency_key)


@router.post("/{call_id}/events", status_code=201, dependencies=[WRITE], tags=["calls"])
async def record_events(
    call_id: str,
    body: Event | list[Event],
    calls: Calls,
    idempotency_key: IdempotencyKey = None,
) -> EventsRecorded:
    """Record one event or a batch (tool latency, shared information, usage, markers)."""
    return await calls.record_event(call_id, body, idempotency_key=idempotency_key)


@router.post("/{call_id}/end", dependencies=[WRITE], tags=["calls"])
async def end_call(
    call_id: str,
    body: EndCall,
    calls: Calls,
    metrics: AppMetrics,
    on_ended: OnEnded,
    idempotency_key: IdempotencyKey = None,
) -> CallSummary:
    """End the call; the answer is its summary and its priced cost."""
    summary = await calls.end_call(call_id, body, idempotency_key=idempotency_key)
    if metrics is not None and not summary.replayed:
        _record_call(metrics, summary)
    if on_ended is not None:
        await on_ended(summary)
    return summary


@router.get("/{call_id}", dependencies=[PERSONAL], tags=["calls"])
async def get_call(call_id: str, calls: Calls) -> CallDetail:
    """A call with its usage so far, its events, and its summary once ended."""
    return await calls.get_call(call_id)


def build_calls_api(
    settings: Settings,
    *,
    service: CallsService | None = None,
    metrics: Metrics | None = None,
    on_ended: CallEnded | None = None,
) -> FastAPI:
    return service_api(
        "calls", router, settings, metrics=metrics, service=service, on_ended=on_ended
    )


def _record_call(metrics: Metrics, summary: CallSummary) -> None:
    metrics.observe_call(
        flow=summary.flow,
        outcome=summary.outcome,
        seconds=summary.duration_seconds,
        cost_usd=float(summary.cost.total_usd),
    )
    for component, usd in summary.cost.components.model_dump().items():
        metrics.add_cost(component=component, usd=float(usd))


@service_deployment("Calls")
@serve.ingress()
class CallsDeployment(ServiceReplica):
    service: CallsService

    def open_service(self, analytics: RemoteDeployment | None) -> None:
        self.service = calls_service(self.context.settings, self.context.backends.pool)
        self.analytics = analytics
        self.in_background(self._refresh_active_calls())

    def build_api(self) -> FastAPI:
        return build_calls_api(
            self.context.settings,
            service=self.service,
            metrics=self.context.metrics,
            on_ended=self._feed_analytics if self.analytics is not None else None,
        )

    async def _feed_analytics(self, summary: CallSummary) -> None:
        # Awaited so the statistics are current when the end answers; a failure only logs,
        # and analytics' catch-up counts the call later.
        assert self.analytics is not None
        try:
            await self.analytics.call("record_call_ended", summary={"call_id": summary.call_id})
        except Exception:
            log.warning("could not feed an ended call to analytics", exc_info=True)

    async def _refresh_active_calls(self) -> None:
        # A count from PostgreSQL, so every replica reports the same mesh-wide number.
        while True:
            try:
                self.context.metrics.set_active_calls(await self.service.active_calls())
            except Exception:
                log.warning("could not count active calls", exc_info=True)
            await asyncio.sleep(ACTIVE_CALLS_REFRESH_SECONDS)


def calls_app(settings: Settings, analytics: RemoteDeployment | None = None) -> serve.Application:
    return CallsDeployment.bind(settings, analytics)  # type: ignore[attr-defined]
