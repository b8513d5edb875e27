"""What a customer's bookings say about when they like to come in."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from services.settings import WEEKDAYS

TimeOfDay = Literal["morning", "afternoon"]


def learn_preferences(
    starts: Iterable[datetime], tz: ZoneInfo
) -> tuple[TimeOfDay | None, list[str]]:
    """(time of day, weekdays) from the start times of a customer's confirmed appointments.

    The time of day is the one most of them fall in (noon divides them; a tie says nothing).
    The weekdays are those booked most often, in calendar order ("mon", "tue", ...).
    """
    local = [s.astimezone(tz) for s in starts]
    if not local:
        return None, []
    mornings = sum(1 for s in local if s.hour < 12)
    afternoons = len(local) - mornings
    time_of_day: TimeOfDay | None = None
    if mornings > afternoons:
        time_of_day = "morning"
    elif afternoons > mornings:
        time_of_day = "afternoon"
    days = Counter(s.weekday() for s in local)
    top = max(days.values())
    weekdays = [WEEKDAYS[d] for d in sorted(days) if days[d] == top]
    return time_of_day, weekdays
