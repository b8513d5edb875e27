"""Analytics windows: which day ranges are accepted (pure, no servers)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from services.analytics import MAX_WINDOW_DAYS, AnalyticsService
from services.errors import InvalidInput

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("since", "until", "field"),
    [
        ("2026-03-14", "2026-03-13", "until"),
        ("2025-03-14", "2026-03-15", "until"),  # 367 days
        ("2026-13-01", "2026-12-31", "since"),
        ("2026-03-01", "next week", "until"),
        ("2026-03-01T00:00", "2026-03-02", "since"),
        ("'; DROP TABLE calls; --", "2026-03-02", "since"),
        (None, "2026-03-02", "since"),
    ],
)
def test_bad_windows_are_refused(since, until, field):
    with pytest.raises(InvalidInput) as err:
        AnalyticsService._window(since, until)
    assert err.value.details["field"] == field


def test_a_single_day_and_a_full_year_are_fine():
    assert AnalyticsService._window("2026-03-14", "2026-03-14") == (
        date(2026, 3, 14),
        date(2026, 3, 14),
    )
    first, last = AnalyticsService._window(date(2025, 3, 15), date(2026, 3, 15))
    assert (last - first).days + 1 == MAX_WINDOW_DAYS


def test_days_are_business_zone_days():
    service = AnalyticsService(pool=None)  # type: ignore[arg-type]
    service.tz = ZoneInfo("America/New_York")
    start, end = service._bounds(date(2026, 3, 7), date(2026, 3, 8))
    # 7 March is EST (UTC-5); the day after 8 March starts in EDT (UTC-4).
    assert start == datetime(2026, 3, 7, 5, 0, tzinfo=UTC)
    assert end == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)
