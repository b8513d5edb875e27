"""Input checks shared by every service.

Each failure raises :class:`InvalidInput` with a sentence an agent can repeat to a caller, and
the name of the field at fault. Nothing is written before these checks pass.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from services.errors import InvalidInput

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A surrogate left in a Python string is a lone one (JSON's "\ud800"; a pair decodes to one
# character): no UTF-8 encodes it, so PostgreSQL, Redis and a log file cannot take it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

# The calendar every service works in: bookings, calls and reports all fall inside it. A date
# outside it is refused where it is parsed, so no arithmetic on it (a day after, a horizon
# ahead, a time zone) can reach Python's limits at years 1 and 9999 and overflow.
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2099, 12, 31)
_FIRST_MOMENT = datetime(FIRST_DAY.year, 1, 1, tzinfo=UTC)
_AFTER_LAST_MOMENT = datetime(LAST_DAY.year + 1, 1, 1, tzinfo=UTC)


def clean_text(
    value: str | None,
    *,
    field: str,
    max_length: int = 500,
    required: bool = False,
    multiline: bool = False,
) -> str | None:
    """Trimmed, NFC-normalised text; refuses control characters, text that is not valid
    Unicode (a lone surrogate) and over-long values.

    SQL-looking text is just text: every query is parameterised, so it is stored as said.
    """
    if value is None or not str(value).strip():
        if required:
            raise InvalidInput(f"Please provide the {field.replace('_', ' ')}.", field=field)
        return None
    text = unicodedata.normalize("NFC", str(value)).strip()
    if (
        _CONTROL.search(text)
        or _SURROGATE.search(text)
        or (not multiline and ("\n" in text or "\r" in text))
    ):
        raise InvalidInput(
            f"The {field.replace('_', ' ')} contains characters that are not allowed.",
            field=field,
        )
    if len(text) > max_length:
        raise InvalidInput(
            f"The {field.replace('_', ' ')} is too long; keep it under {max_length} characters.",
            field=field,
        )
    return text


def check_id(value: str | None, *, field: str) -> str:
    """An opaque identifier (call id, unit id...): letters, digits and ``_ . : -``."""
    if value is None or not _ID.match(str(value)):
        raise InvalidInput(f"The {field.replace('_', ' ')} is not a valid id.", field=field)
    return str(value)


def _outside_calendar(field: str) -> InvalidInput:
    return InvalidInput(
        f"The {field.replace('_', ' ')} must be between {FIRST_DAY.isoformat()} and "
        f"{LAST_DAY.isoformat()}.",
        field=field,
        earliest=FIRST_DAY.isoformat(),
        latest=LAST_DAY.isoformat(),
    )


def parse_datetime(value: str | datetime, *, field: str, tz: ZoneInfo) -> datetime:
    """An ISO 8601 timestamp inside the service calendar (:data:`FIRST_DAY` to
    :data:`LAST_DAY`, UTC); one without an offset is taken in the business time zone."""
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise InvalidInput(
                f"The {field.replace('_', ' ')} must be a date and time like 2026-03-14T09:30.",
                field=field,
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    try:
        # Comparing aware datetimes works even at year 1 with +14:00, where astimezone would
        # overflow; a tzinfo whose offset is out of bounds raises here too.
        inside = _FIRST_MOMENT <= parsed < _AFTER_LAST_MOMENT
    except (OverflowError, ValueError):
        inside = False
    if not inside:
        raise _outside_calendar(field)
    return parsed


def parse_date(value: str | date, *, field: str) -> date:
    """An ISO 8601 day inside the service calendar (:data:`FIRST_DAY` to :data:`LAST_DAY`)."""
    if isinstance(value, datetime):
        day = value.date()
    elif isinstance(value, date):
        day = value
    else:
        try:
            day = date.fromisoformat(str(value).strip())
        except ValueError:
            raise InvalidInput(
                f"The {field.replace('_', ' ')} must be a date like 2026-03-14.", field=field
            ) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise _outside_calendar(field)
    return day


def check_number(
    value: float | int, *, field: str, minimum: float = 0, maximum: float = 1e9
) -> float:
    """A finite number within bounds; refuses negative and absurd values."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"The {field.replace('_', ' ')} must be a number.", field=field
        ) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidInput(f"The {field.replace('_', ' ')} must be a number.", field=field)
    if number < minimum or number > maximum:
        raise InvalidInput(
            f"The {field.replace('_', ' ')} must be between {minimum:g} and {maximum:g}.",
            field=field,
        )
    return number
