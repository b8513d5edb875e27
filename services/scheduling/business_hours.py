"""The business calendar: when the desks are open, on which grid, how far ahead.

Pure functions of the settings and a given "now"; nothing here reads a clock or a store, so the
rules can be tested for any day of the year. All times are aware datetimes; days and opening
hours are those of the business time zone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.errors import InvalidInput
from services.settings import WEEKDAYS, Settings, parse_hours

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, slots=True)
class Window:
    """An open stretch of one day, [start, end)."""

    start: datetime
    end: datetime


def _clock(t: time) -> str:
    return f"{t.hour}:{t.minute:02d}"


class BusinessCalendar:
    def __init__(self, settings: Settings) -> None:
        self.tz: ZoneInfo = settings.tz
        self.slot = timedelta(minutes=settings.slot_minutes)
        self.slot_minutes = settings.slot_minutes
        self.horizon_days = settings.booking_horizon_days
        self.closed_dates = frozenset(settings.closed_dates)
        self.hours: dict[int, tuple[time, time]] = {
            WEEKDAYS.index(day): parse_hours(text) for day, text in settings.business_hours.items()
        }
        self.lunch = parse_hours(settings.lunch_break) if settings.lunch_break else None

    # -- days ---------------------------------------------------------------------------------

    def today(self, now: datetime) -> date:
        return now.astimezone(self.tz).date()

    def last_bookable_day(self, now: datetime) -> date:
        return self.today(now) + timedelta(days=self.horizon_days)

    def is_open(self, day: date) -> bool:
        return day.weekday() in self.hours and day not in self.closed_dates

    def windows(self, day: date) -> list[Window]:
        """The day's opening hours less the lunch break; empty on a closed day."""
        if not self.is_open(day):
            return []
        opens, closes = self.hours[day.weekday()]
        spans = [(opens, closes)]
        if self.lunch is not None:
            l_start, l_end = self.lunch
            spans = [
                span
                for span in ((opens, min(closes, l_start)), (max(opens, l_end), closes))
                if span[0] < span[1]
            ]
        return [
            Window(datetime.combine(day, a, self.tz), datetime.combine(day, b, self.tz))
            for a, b in spans
        ]

    def occupied(self, minutes: int) -> timedelta:
        """How long a service holds its resource: its duration, rounded up to the grid."""
        cells = -(-minutes // self.slot_minutes)
        return self.slot * cells

    def slot_starts(self, day: date, minutes: int, now: datetime) -> list[datetime]:
        """Every grid start on ``day`` where a service of ``minutes`` fits inside one open
        window and begins after ``now``."""
        length = self.occupied(minutes)
        starts: list[datetime] = []
        for window in self.windows(day):
            start = self._ceil_to_grid(window.start)
            while start + length <= window.end:
                if start > now:
                    starts.append(start)
                start += self.slot
        return starts

    def _ceil_to_grid(self, moment: datetime) -> datetime:
        step = int(self.slot.total_seconds())
        cell = math.ceil(moment.timestamp() / step)
        return datetime.fromtimestamp(cell * step, tz=self.tz)

    # -- checks -------------------------------------------------------------------------------

    def check_day(self, day: date, now: datetime) -> None:
        """A day one may ask about: not past, not beyond the horizon."""
        if day < self.today(now):
            raise InvalidInput(
                "That date has already passed; please choose a date from today on.", field="date"
            )
        if day > self.last_bookable_day(now):
            raise InvalidInput(
                f"I can only book up to {self.horizon_days} days ahead; please choose an earlier "
                "date.",
                field="date",
            )

    def check_start(self, start: datetime, minutes: int, now: datetime, *, what: str) -> datetime:
        """Refuse a start that is past, beyond the horizon, off the grid or outside opening
        hours; returns the end of the time the service occupies."""
        local = start.astimezone(self.tz)
        if local <= now:
            raise InvalidInput(
                "That time has already passed; please choose a later time.", field="start"
            )
        self.check_day(local.date(), now)
        step = int(self.slot.total_seconds())
        if local.microsecond or int(local.timestamp()) % step:
            raise InvalidInput(
                f"Appointments start every {self.slot_minutes} minutes, like 9:00 or "
                f"9:{self.slot_minutes % 60:02d}; please choose one of those times.",
                field="start",
            )
        day = local.date()
        if day in self.closed_dates:
            raise InvalidInput(
                "We are closed that day; please choose another day.", field="start", date=str(day)
            )
        if day.weekday() not in self.hours:
            raise InvalidInput(
                f"We are closed on {WEEKDAY_NAMES[day.weekday()]}s; please choose another day.",
                field="start",
            )
        end = local + self.occupied(minutes)
        opens, closes = self.hours[day.weekday()]
        if self.lunch is not None:
            l_start, l_end = (datetime.combine(day, t, self.tz) for t in self.lunch)
            if local < l_end and end > l_start:
                raise InvalidInput(
                    f"We close for lunch from {_clock(self.lunch[0])} to {_clock(self.lunch[1])}"
                    f"; {what} takes {minutes} minutes, so please choose a time that finishes "
                    "before or starts after lunch.",
                    field="start",
                )
        if not any(w.start <= local and end <= w.end for w in self.windows(day)):
            raise InvalidInput(
                f"On {WEEKDAY_NAMES[day.weekday()]}s we are open from {_clock(opens)} to "
                f"{_clock(closes)}, and {what} takes {minutes} minutes; please choose a time "
                "inside those hours.",
                field="start",
            )
        return end

    def next_open_moment(self, at: datetime, now: datetime) -> datetime:
        """The first grid time at or after ``at`` (and after ``now``) inside opening hours.

        Raises :class:`InvalidInput` when there is none within the horizon.
        """
        earliest = self._ceil_to_grid(max(at, now))
        day = earliest.astimezone(self.tz).date()
        last = self.last_bookable_day(now)
        if day > last:
            raise InvalidInput(
                f"I can only schedule up to {self.horizon_days} days ahead; please choose an "
                "earlier time.",
                field="preferred_time",
            )
        while day <= last:
            for window in self.windows(day):
                if earliest < window.end:
                    moment = self._ceil_to_grid(max(window.start, earliest))
                    if moment < window.end:
                        return moment.astimezone(self.tz)
            day += timedelta(days=1)
        raise InvalidInput(
            f"We have no opening hours in the next {self.horizon_days} days after that time.",
            field="preferred_time",
        )
