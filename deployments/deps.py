"""The ``Annotated`` dependency aliases every application's routes share: the token guards,
the Idempotency-Key header, the service behind the app, its metrics and its settings.

Each reads from ``app.state`` (set by :func:`deployments.api.new_api`) through an
``async def`` dependency: FastAPI runs a sync dependency in a thread pool, which cost about a
third of the FastAPI layer's time per hold when measured.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from deployments.edge import require_token
from deployments.metrics import Metrics
from services.analytics import AnalyticsService
from services.calls import CallsService
from services.inventory import InventoryService
from services.scheduling import SchedulingService
from services.settings import Settings
from services.verification import VerificationService

# Every mutating route lists WRITE in ``dependencies=``, every read that answers personal data
# (phone, email, name, plate, licence or policy number) PERSONAL; unit tests check none is
# missing. One dependency: the same bearer token opens both.
WRITE = Depends(require_token)
PERSONAL = Depends(require_token)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description=(
            "Repeat a write with the same key to get the first answer back; 1 to 128 letters, "
            'digits, dots, dashes, colons or underscores, bare or quoted ("abc").'
        ),
        max_length=130,  # 128 and a pair of quotes
    ),
]


async def _service(request: Request) -> Any:
    return request.app.state.service


async def _metrics(request: Request) -> Metrics | None:
    metrics: Metrics | None = request.app.state.metrics
    return metrics


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# The service an application serves: ``new_api(state={"service": ...})``.
Scheduling = Annotated[SchedulingService, Depends(_service)]
Inventory = Annotated[InventoryService, Depends(_service)]
Verification = Annotated[VerificationService, Depends(_service)]
Calls = Annotated[CallsService, Depends(_service)]
Analytics = Annotated[AnalyticsService, Depends(_service)]
# The replica's metrics (None in tests and tools that record nothing).
AppMetrics = Annotated[Metrics | None, Depends(_metrics)]
AppSettings = Annotated[Settings, Depends(_settings)]
