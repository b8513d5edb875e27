from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from services.errors import InvalidInput
from services.validation import check_id, check_number, clean_text, parse_date, parse_datetime

pytestmark = pytest.mark.unit
TZ = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  hello  ", "hello"),
        ("Robert'); DROP TABLE bookings;--", "Robert'); DROP TABLE bookings;--"),
        ("caf\u0065\u0301", "caf\u00e9"),  # NFC
        ("", None),
        (None, None),
    ],
)
def test_clean_text_accepts(value: str | None, expected: str | None) -> None:
    assert clean_text(value, field="notes") == expected


@pytest.mark.parametrize("value", ["bad\x00byte", "bell\x07", "two\nlines", "x" * 501])
def test_clean_text_refuses_with_a_sentence(value: str) -> None:
    with pytest.raises(InvalidInput) as err:
        clean_text(value, field="notes")
    assert err.value.details["field"] == "notes"
    assert err.value.message.endswith(".")


def test_clean_text_required_and_multiline() -> None:
    with pytest.raises(InvalidInput, match="Please provide the notes"):
        clean_text("   ", field="notes", required=True)
    assert clean_text("a\nb", field="notes", multiline=True) == "a\nb"


@pytest.mark.parametrize("value", ["call-1", "abc.def:9_x", "A" * 128])
def test_check_id_accepts(value: str) -> None:
    assert check_id(value, field="call_id") == value


@pytest.mark.parametrize("value", [None, "", "-lead", "has space", "A" * 129, "x';--"])
def test_check_id_refuses(value: str | None) -> None:
    with pytest.raises(InvalidInput):
        check_id(value, field="call_id")


def test_parse_datetime_applies_the_business_zone_to_naive_times() -> None:
    assert parse_datetime("2026-03-14T09:30", field="start", tz=TZ) == datetime(
        2026, 3, 14, 9, 30, tzinfo=TZ
    )
    aware = parse_datetime("2026-03-14T09:30:00+00:00", field="start", tz=TZ)
    assert aware.utcoffset() is not None and aware.utcoffset().total_seconds() == 0
    with pytest.raises(InvalidInput, match="date and time like"):
        parse_datetime("next tuesday", field="start", tz=TZ)


def test_parse_date() -> None:
    assert parse_date("2026-03-14", field="date") == date(2026, 3, 14)
    with pytest.raises(InvalidInput):
        parse_date("2026-02-30", field="date")


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), 1e12, "abc", None])
def test_check_number_refuses_negative_and_absurd(value: object) -> None:
    with pytest.raises(InvalidInput):
        check_number(value, field="rate")  # type: ignore[arg-type]


def test_check_number_accepts_bounds() -> None:
    assert check_number(0, field="rate") == 0
    assert check_number("12.5", field="rate") == 12.5  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["lone \ud800", "\udfff", "pair \udc00\ud800 reversed"])
def test_clean_text_refuses_a_lone_surrogate(value: str) -> None:
    # json.loads('"\\ud800"') gives this string; no UTF-8 encodes it, so no store takes it.
    with pytest.raises(InvalidInput) as err:
        clean_text(value, field="notes", multiline=True)
    assert err.value.details["field"] == "notes"


def test_clean_text_keeps_a_character_outside_the_basic_plane() -> None:
    # A JSON surrogate pair ("\ud83d\ude9a") decodes to one character: text like any other.
    assert clean_text("moving \U0001f69a", field="notes") == "moving \U0001f69a"


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31",
        "9999-12-31T23:59:59.999999-14:00",
        "0001-01-01T00:00:00+14:00",
        "0001-01-01",
        "1999-12-31T23:59:59+00:00",
        "2100-01-01T00:00:00+00:00",
        datetime.max,
        datetime.min,
    ],
)
def test_parse_datetime_refuses_moments_outside_the_service_calendar(value: object) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_datetime(value, field="new_start", tz=TZ)  # type: ignore[arg-type]
    assert err.value.details["field"] == "new_start"
    assert "new start must be between 2000-01-01 and 2099-12-31" in err.value.message


@pytest.mark.parametrize(
    "value", ["2000-01-01T00:00:00+00:00", "2099-12-31T23:59:59.999999+00:00", "2099-12-31T18:00"]
)
def test_parse_datetime_accepts_the_ends_of_the_service_calendar(value: str) -> None:
    parse_datetime(value, field="start", tz=TZ)


@pytest.mark.parametrize(
    "value", ["9999-12-31", "0001-01-01", "1999-12-31", "2100-01-01", date.max, date.min]
)
def test_parse_date_refuses_days_outside_the_service_calendar(value: object) -> None:
    with pytest.raises(InvalidInput, match="between 2000-01-01 and 2099-12-31") as err:
        parse_date(value, field="date")  # type: ignore[arg-type]
    assert err.value.details["field"] == "date"


def test_parse_date_accepts_the_ends_of_the_service_calendar() -> None:
    assert parse_date("2000-01-01", field="date") == date(2000, 1, 1)
    assert parse_date(date(2099, 12, 31), field="date") == date(2099, 12, 31)
