"""The analytics application at ``/analytics``: the summary over ended calls; and
``record_call_ended`` for the calls application, called by DeploymentHandle after a call ends."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel
from ray import serve

from deployments.api import service_api
from deployments.composition import analytics_service
from deployments.deps import WRITE, Analytics, AppSettings
from deployments.handles import RemoteDeployment
from deployments.metrics import Metrics
from deployments.replica import ServiceReplica, service_deployment
from services.analytics import AnalyticsService, AnalyticsSummary, CallCounted
from services.settings import Settings
from services.validation import FIRST_DAY, parse_date

APP_NAME = "analytics"
DEPLOYMENT_NAME = "Analytics"
# With no window asked for, the summary covers the last week up to today.
DEFAULT_WINDOW_DAYS = 7


class CaughtUp(BaseModel):
    counted: int


def window(settings: Settings, since: date | None, until: date | None) -> tuple[date, date]:
    # Checked before the arithmetic below, which would overflow at year 1.
    last = parse_date(until, field="until") if until else datetime.now(settings.tz).date()
    if since is not None:
        return since, last
    return max(last - timedelta(days=DEFAULT_WINDOW_DAYS - 1), FIRST_DAY), last


router = APIRouter()


@router.get("/summary", tags=["analytics"])
async def summary(
    analytics: Analytics,
    settings: AppSettings,
    since: Annotated[date | None, Query(description="First day (business zone).")] = None,
    until: Annotated[date | None, Query(description="Last day, included.")] = None,
    flow: Annotated[str | None, Query(max_length=32)] = None,
) -> AnalyticsSummary:
    """Calls, outcomes, conversion, cost per call and tool latency, per flow and per day."""
    first, last = window(settings, since, until)
    return await analytics.summary(first, last, flow=flow)


@router.post("/catch-up", dependencies=[WRITE], tags=["analytics"])
async def catch_up(
    analytics: Analytics,
    settings: AppSettings,
    since: Annotated[date | None, Query()] = None,
    until: Annotated[date | None, Query()] = None,
) -> CaughtUp:
    """Count ended calls of the window that were never fed in (a lost handle call)."""
    first, last = window(settings, since, until)
    return CaughtUp(counted=await analytics.catch_up(first, last))


def build_analytics_api(
    settings: Settings,
    *,
    service: AnalyticsService | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    return service_api("analytics", router, settings, metrics=metrics, service=service)


@service_deployment(DEPLOYMENT_NAME)
@serve.ingress()
class AnalyticsDeployment(ServiceReplica):
    service: AnalyticsService
    api = staticmethod(build_analytics_api)

    def open_service(self, peer: RemoteDeployment | None) -> None:
        self.service = analytics_service(self.context.settings, self.context.backends.pool)

    async def record_call_ended(self, summary: dict[str, Any]) -> CallCounted:
        """Count an ended call once (the calls application sends its end_call answer)."""
        return await self.service.record_call_ended(summary)


def analytics_app(settings: Settings) -> serve.Application:
    return AnalyticsDeployment.bind(settings)  # type: ignore[attr-defined]


def analytics_remote() -> RemoteDeployment:
    return RemoteDeployment(deployment=DEPLOYMENT_NAME, app_name=APP_NAME, what="Call statistics")
