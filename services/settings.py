"""The one settings class. Every knob of callmesh is read here and nowhere else.

Environment variables use the ``CALLMESH_`` prefix, except the two storage URLs, which keep
their conventional names (``DATABASE_URL``, ``REDIS_URL``) so that platforms which inject
them just work.
"""

from __future__ import annotations

import re
from datetime import date, time
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PLACEHOLDER_SECRETS = {"changeme", "changethis", "secret", "token", "password"}


def parse_hours(text: str) -> tuple[time, time]:
    """Parse ``"09:00-17:00"`` into (open, close)."""
    m = _HOURS.match(text.strip())
    if not m:
        raise ValueError(f"hours must look like 09:00-17:00, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    opens, closes = time(h1, m1), time(h2, m2)
    if opens >= closes:
        raise ValueError(f"opening time must be before closing time in {text!r}")
    return opens, closes


class Pricing(BaseSettings):
    """USD prices for each cost component of a call."""

    model_config = SettingsConfigDict(env_prefix="CALLMESH_PRICE_", extra="ignore")

    stt_per_minute: float = Field(0.0043, ge=0)
    llm_input_per_1k: float = Field(0.0015, ge=0)
    # Providers bill cached prompt tokens at a discount (OpenAI: half or less).
    llm_cached_input_per_1k: float = Field(0.00075, ge=0)
    llm_output_per_1k: float = Field(0.002, ge=0)
    tts_per_character: float = Field(0.00001, ge=0)
    # Agent-session / telephony minutes; zero unless the deployment pays per minute.
    call_per_minute: float = Field(0.0, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLMESH_", env_file=".env", extra="ignore", populate_by_name=True
    )

    environment: Literal["development", "test", "production"] = "development"

    # Storage. Unset URLs mean: start the embedded PostgreSQL and Redis under data_dir.
    database_url: str | None = Field(
        None, validation_alias=AliasChoices("DATABASE_URL", "CALLMESH_DATABASE_URL")
    )
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "CALLMESH_REDIS_URL")
    )
    data_dir: Path = Path(".callmesh")
    redis_prefix: str = Field("cm", pattern=r"^[a-z][a-z0-9_]{0,15}$")
    pg_pool_min: int = Field(2, ge=1)
    # Per replica. Every replica of serve_config.yaml at its max_replicas (11) x 7 = 77
    # connections, inside PostgreSQL's default max_connections (100) less 3 reserved for
    # superusers and 20 for migrations, the embedded tools and operators; a unit test
    # (tests/unit/test_pool_budget.py) keeps serve_config.yaml inside that budget.
    pg_pool_max: int = Field(7, ge=1)
    # How long a request waits for a pooled connection before it answers 503: well inside the
    # proxy's 30 s request timeout, so a stalled PostgreSQL sheds instead of piling up.
    pg_acquire_timeout_seconds: float = Field(5.0, gt=0, le=25)

    # Holds and negotiation.
    hold_ttl_seconds: int = Field(300, ge=5, le=3600)
    negotiation_max_attempts: int = Field(3, ge=1, le=20)
    # First answers kept for replay (idempotency keys). Retries come within minutes; the
    # test-drive saga reads its own records for up to 14 days (its sweep's horizon).
    idempotency_retention_days: int = Field(30, ge=15, le=3650)

    # The business calendar, in its own time zone.
    timezone: str = "America/New_York"
    business_hours: dict[str, str] = Field(
        default_factory=lambda: {
            "mon": "09:00-17:00",
            "tue": "09:00-17:00",
            "wed": "09:00-17:00",
            "thu": "09:00-17:00",
            "fri": "09:00-17:00",
            "sat": "09:00-16:00",
        }
    )
    lunch_break: str | None = "12:00-13:00"
    closed_dates: list[date] = Field(default_factory=list)
    slot_minutes: int = Field(30, ge=5, le=240)
    booking_horizon_days: int = Field(30, ge=1, le=365)

    pricing: Pricing = Field(default_factory=Pricing)

    # Verification provider: the registry tables in PostgreSQL, or a remote HTTP service.
    verification_provider: Literal["registry", "http"] = "registry"
    verification_http_url: str | None = None
    verification_http_timeout_seconds: float = Field(2.0, gt=0, le=30)
    verification_http_retries: int = Field(2, ge=0, le=10)
    verification_breaker_failures: int = Field(5, ge=1)
    verification_breaker_reset_seconds: float = Field(30.0, gt=0)

    # The edge.
    api_token: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    metrics_port: int = 8080
    dashboard_port: int = 8265
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    # FastAPI's native OpenTelemetry instrumentation. Off by default: the mesh exports its own
    # Prometheus metrics, and with no OpenTelemetry provider configured the per-request
    # provider lookups alone cost about 3% of a hold's CPU (profiled).
    otel_telemetry: bool = False

    # Overload and abuse (issue 7). Each limit is off at 0.
    # Requests one replica runs at once before it answers 503 at once instead of queueing;
    # far below Serve's max_ongoing_requests (1024), which queues without bound past it. 64:
    # what the benchmarks' 64 connections can reach, never more (docs/reliability.md).
    admission_max_in_flight: int = Field(64, ge=0)
    admission_retry_after_seconds: int = Field(1, ge=1, le=60)
    # Writes per bearer token (or per client address without one), and per call where the
    # route names the call, in a fixed window. One token is usually shared by every agent
    # worker, so the per-token limit is the mesh's whole write budget: sized far above the
    # measured capacity (docs/benchmarks.md), it only stops a runaway client.
    rate_window_seconds: int = Field(60, ge=1, le=3600)
    rate_writes_per_token: int = Field(600_000, ge=0)
    rate_writes_per_call: int = Field(300, ge=0)
    # Live holds one call may have at once: one caller must not hold every unit.
    max_holds_per_call: int = Field(5, ge=0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r}") from e
        return v

    @field_validator("business_hours")
    @classmethod
    def _valid_hours(cls, v: dict[str, str]) -> dict[str, str]:
        for day, hours in v.items():
            if day not in WEEKDAYS:
                raise ValueError(f"business_hours keys are {WEEKDAYS}, got {day!r}")
            parse_hours(hours)
        return v

    @field_validator("lunch_break")
    @classmethod
    def _valid_lunch(cls, v: str | None) -> str | None:
        if v:
            parse_hours(v)
        return v or None

    @model_validator(mode="after")
    def _no_placeholder_secret_in_production(self) -> Settings:
        # Without a token every write and every read of personal data is open to anyone who
        # reaches the port: fine on a laptop, never in production.
        if self.environment == "production" and self.api_token is None:
            raise ValueError(
                "CALLMESH_ENVIRONMENT=production needs CALLMESH_API_TOKEN: without it every "
                "write and every read of personal data is open; set a long random secret"
            )
        if self.environment == "production" and self.api_token is not None:
            if self.api_token.get_secret_value().lower() in _PLACEHOLDER_SECRETS:
                raise ValueError("CALLMESH_API_TOKEN is a placeholder; set a real secret")
        if self.pg_pool_min > self.pg_pool_max:
            raise ValueError("pg_pool_min must not exceed pg_pool_max")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def uses_embedded_storage(self) -> bool:
        return self.database_url is None or self.redis_url is None


@lru_cache
def get_settings() -> Settings:
    return Settings()
