"""The business calendar and learned preferences, for fixed days (no clock, no stores)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.errors import InvalidInput
from services.scheduling.business_hours import BusinessCalendar
from services.scheduling.preferences import learn_preferences
from services.settings import Settings

pytestmark = pytest.mark.unit

TZ = ZoneInfo("America/New_York")
MONDAY = date(2030, 1, 7)
NOW = datetime(2030, 1, 7, 8, 0, tzinfo=TZ)  # Monday 8:00, before opening


def _calendar(**overrides: object) -> BusinessCalendar:
    return BusinessCalendar(Settings(environment="test", **overrides))  # type: ignore[arg-type]


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


def test_weekday_windows_skip_lunch_and_sunday_is_closed() -> None:
    cal = _calendar()
    monday = cal.windows(MONDAY)
    assert [(w.start.hour, w.end.hour) for w in monday] == [(9, 12), (13, 17)]
    saturday = cal.windows(MONDAY + timedelta(days=5))
    assert [(w.start.hour, w.end.hour) for w in saturday] == [(9, 12), (13, 16)]
    assert cal.windows(MONDAY + timedelta(days=6)) == []


def test_closed_dates_have_no_windows() -> None:
    cal = _calendar(closed_dates=[MONDAY + timedelta(days=1)])
    assert cal.windows(MONDAY + timedelta(days=1)) == []
    assert not cal.is_open(MONDAY + timedelta(days=1))


@pytest.mark.parametrize(
    ("minutes", "count", "first", "last"),
    [(30, 14, (9, 0), (16, 30)), (60, 12, (9, 0), (16, 0)), (120, 8, (9, 0), (15, 0))],
)
def test_slot_starts_fit_inside_one_window(
    minutes: int, count: int, first: tuple[int, int], last: tuple[int, int]
) -> None:
    starts = _calendar().slot_starts(MONDAY, minutes, NOW)
    assert len(starts) == count
    assert (starts[0].hour, starts[0].minute) == first
    assert (starts[-1].hour, starts[-1].minute) == last
    # Nothing straddles lunch.
    lunch_start, lunch_end = _at(MONDAY, 12), _at(MONDAY, 13)
    length = timedelta(minutes=minutes)
    assert not [s for s in starts if s < lunch_end and s + length > lunch_start]


def test_slot_starts_leave_out_the_past() -> None:
    starts = _calendar().slot_starts(MONDAY, 30, _at(MONDAY, 14, 10))
    assert [(s.hour, s.minute) for s in starts][:2] == [(14, 30), (15, 0)]
    assert len(starts) == 5


def test_a_service_off_the_grid_occupies_whole_cells() -> None:
    assert _calendar().occupied(45) == timedelta(minutes=60)


@pytest.mark.parametrize(
    ("start", "minutes", "hint"),
    [
        (_at(MONDAY, 7, 30), 30, "already passed"),
        (_at(MONDAY + timedelta(days=40), 10), 30, "30 days ahead"),
        (_at(MONDAY, 10, 15), 30, "every 30 minutes"),
        (_at(MONDAY + timedelta(days=6), 10), 30, "closed on Sundays"),
        (_at(MONDAY, 11, 30), 60, "lunch"),
        (_at(MONDAY, 12, 0), 30, "lunch"),
        (_at(MONDAY, 16, 30), 60, "open from 9:00 to 17:00"),
        (_at(MONDAY, 8, 30), 30, "open from 9:00 to 17:00"),
        (_at(MONDAY + timedelta(days=5), 16, 0), 30, "open from 9:00 to 16:00"),
    ],
)
def test_check_start_refuses_with_a_sentence(start: datetime, minutes: int, hint: str) -> None:
    with pytest.raises(InvalidInput) as err:
        _calendar().check_start(start, minutes, NOW, what="a brake inspection")
    assert hint in err.value.message


def test_check_start_refuses_a_closed_date() -> None:
    cal = _calendar(closed_dates=[MONDAY + timedelta(days=1)])
    with pytest.raises(InvalidInput) as err:
        cal.check_start(_at(MONDAY + timedelta(days=1), 10), 30, NOW, what="an oil change")
    assert "closed that day" in err.value.message


def test_check_start_accepts_the_last_slot_and_returns_its_end() -> None:
    end = _calendar().check_start(_at(MONDAY, 16), 60, NOW, what="a brake inspection")
    assert end == _at(MONDAY, 17)
    horizon = _at(MONDAY + timedelta(days=30), 9)
    assert _calendar().check_start(horizon, 30, NOW, what="x") == horizon + timedelta(minutes=30)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (_at(MONDAY, 10, 7), _at(MONDAY, 10, 30)),  # rounded up to the grid
        (_at(MONDAY, 12, 10), _at(MONDAY, 13)),  # lunch
        (_at(MONDAY + timedelta(days=4), 17, 30), _at(MONDAY + timedelta(days=5), 9)),  # Fri eve
        (_at(MONDAY + timedelta(days=5), 16, 0), _at(MONDAY + timedelta(days=7), 9)),  # Sat close
        (_at(MONDAY + timedelta(days=6), 11), _at(MONDAY + timedelta(days=7), 9)),  # Sunday
        (_at(MONDAY, 6), _at(MONDAY, 9)),  # before opening
        (_at(MONDAY - timedelta(days=3), 10), _at(MONDAY, 9)),  # the past means now
    ],
)
def test_next_open_moment(at: datetime, expected: datetime) -> None:
    assert _calendar().next_open_moment(at, NOW) == expected


def test_next_open_moment_beyond_the_horizon_is_refused() -> None:
    with pytest.raises(InvalidInput):
        _calendar().next_open_moment(_at(MONDAY + timedelta(days=45), 10), NOW)


def test_preferences_follow_the_majority() -> None:
    tuesday_morning = _at(MONDAY + timedelta(days=1), 9)
    thursday_afternoon = _at(MONDAY + timedelta(days=3), 14)
    assert learn_preferences([], TZ) == (None, [])
    assert learn_preferences([tuesday_morning], TZ) == ("morning", ["tue"])
    assert learn_preferences(
        [tuesday_morning, tuesday_morning + timedelta(days=7), thursday_afternoon], TZ
    ) == ("morning", ["tue"])
    assert learn_preferences([tuesday_morning, thursday_afternoon], TZ) == (None, ["tue", "thu"])
    # Times are read in the business zone, whatever zone they arrive in.
    utc_afternoon = thursday_afternoon.astimezone(ZoneInfo("UTC"))
    assert learn_preferences([utc_afternoon], TZ) == ("afternoon", ["thu"])
