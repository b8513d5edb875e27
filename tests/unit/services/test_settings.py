from __future__ import annotations

from datetime import time

import pytest
from pydantic import ValidationError

from services.settings import Settings, parse_hours

pytestmark = pytest.mark.unit


def test_defaults_describe_the_documented_calendar(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "CALLMESH_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.uses_embedded_storage
    assert "sun" not in s.business_hours
    assert s.business_hours["sat"] == "09:00-16:00"
    assert s.lunch_break == "12:00-13:00"
    assert (s.slot_minutes, s.booking_horizon_days) == (30, 30)
    assert s.pricing.stt_per_minute == 0.0043
    assert (s.pricing.llm_input_per_1k, s.pricing.llm_output_per_1k) == (0.0015, 0.002)
    assert s.pricing.tts_per_character == 0.00001


def test_storage_urls_use_their_conventional_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/x")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.database_url, s.redis_url) == ("postgresql://u@db/x", "redis://cache:6379/0")
    assert not s.uses_embedded_storage


def test_parse_hours() -> None:
    assert parse_hours("09:00-17:30") == (time(9), time(17, 30))
    for bad in ("9-5", "17:00-09:00", "09:00-09:00"):
        with pytest.raises(ValueError):
            parse_hours(bad)


@pytest.mark.parametrize(
    "overrides",
    [
        {"timezone": "Mars/Olympus"},
        {"business_hours": {"funday": "09:00-17:00"}},
        {"business_hours": {"mon": "17:00-09:00"}},
        {"redis_prefix": "Bad Prefix"},
        {"pg_pool_min": 20, "pg_pool_max": 5},
        {"environment": "production", "api_token": "changeme"},
        {"environment": "production"},
        {"environment": "production", "api_token": None},
        # Shorter than the test-drive saga's 14-day sweep would purge records it still reads.
        {"idempotency_retention_days": 14},
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **overrides)  # type: ignore[arg-type, call-arg]


def test_production_without_a_token_says_what_to_set() -> None:
    with pytest.raises(ValidationError, match="production needs CALLMESH_API_TOKEN"):
        Settings(_env_file=None, environment="production")  # type: ignore[call-arg]
    token = "a-long-random-secret-0123456789"
    ok = Settings(_env_file=None, environment="production", api_token=token)  # type: ignore[call-arg, arg-type]
    assert ok.api_token is not None
