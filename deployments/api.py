"""One function that builds every application's FastAPI app with the shared edge, and the
``Annotated`` aliases handlers share.

Each application module reads its service from ``app.state`` through an ``async def``
dependency: FastAPI runs a sync dependency in a thread pool, which cost about a third of the
FastAPI layer's time per hold when measured.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header
from fastapi.telemetry import TelemetryConfig

from deployments.edge import EdgeMiddleware, install_error_handlers, require_token
from deployments.metrics import Metrics
from services.settings import Settings

VERSION = "0.1.0"

_NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}

# Every mutating route lists WRITE in ``dependencies=``, every read that answers personal data
# (phone, email, name, plate, licence or policy number) PERSONAL; unit tests check none is
# missing. One dependency: the same bearer token opens both.
WRITE = Depends(require_token)
PERSONAL = Depends(require_token)


def new_api(
    *,
    service: str,
    title: str,
    settings: Settings,
    metrics: Metrics | None = None,
    state: dict[str, Any] | None = None,
    docs: bool = True,
) -> FastAPI:
    """A FastAPI app with the error mapping, the bearer token, the body limit and the request
    metric installed. ``state`` lands on ``app.state`` for the handlers' dependencies."""
    app = FastAPI(
        title=title,
        version=VERSION,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        telemetry=None if settings.otel_telemetry else _NO_TELEMETRY,
    )
    app.state.api_token = settings.api_token
    app.state.settings = settings
    for key, value in (state or {}).items():
        setattr(app.state, key, value)
    install_error_handlers(app)
    app.add_middleware(
        EdgeMiddleware,
        service=service,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
    )
    return app


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Repeat a write with the same key to get the first answer back.",
        max_length=128,
    ),
]
