"""The inventory service's pure parts: amounts, categories, date ranges, sentences, models, and
the contract between negotiate.lua and its caller."""

from __future__ import annotations

import ast
import inspect
import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from importlib import resources

import pytest

from services.errors import InvalidInput
from services.inventory import HORIZON_DAYS, HoldRequest, InventoryService, RentalBooking
from services.inventory import service as inventory_service
from services.inventory._terms import UnitTerms
from services.inventory.requirements import describe_requirements, spoken_list
from services.inventory.service import _category_candidates, _parse_amount
from services.kv import NegotiateReply
from services.reservations import HoldHash
from services.settings import Settings

pytestmark = pytest.mark.unit


def _service() -> InventoryService:
    # No storage is touched by the range checks; a real pool or client is never needed here.
    return InventoryService(
        pool=None,  # type: ignore[arg-type]
        redis=None,  # type: ignore[arg-type]
        settings=Settings(environment="test", database_url="x", redis_url="y"),
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("325", "325.00"),
        ("$1,050.5", "1050.50"),
        (99.999, "100.00"),
        (0, "0.00"),
        ("0.004", "0.00"),
    ],
)
def test_amounts_are_rounded_to_cents(given, expected) -> None:
    assert _parse_amount(given, field="rate") == Decimal(expected)


@pytest.mark.parametrize(
    "given", ["-1", "nan", "inf", "1e7", "", "abc", "1\x00", "9" * 30, True, float("nan")]
)
def test_absurd_amounts_are_refused(given) -> None:
    with pytest.raises(InvalidInput) as err:
        _parse_amount(given, field="rate")
    assert err.value.details["field"] == "rate"


def test_category_words_are_normalised() -> None:
    assert _category_candidates(None) is None
    assert _category_candidates("Boom lifts") == ["boom_lifts", "boom_lift"]
    assert _category_candidates("skid-steer") == ["skid_steer"]
    for bad in ("boom; --", "x" * 41, "lift\x01"):
        with pytest.raises(InvalidInput):
            _category_candidates(bad)


def test_missing_requirements_read_as_a_sentence() -> None:
    assert spoken_list([]) == ""
    assert spoken_list(["a"]) == "a"
    assert spoken_list(["a", "b", "c"]) == "a, b and c"
    assert describe_requirements(certification=None, min_insurance=None) == []
    assert describe_requirements(certification="aerial_lift", min_insurance=Decimal("1000000")) == [
        "an operator certification for aerial lift",
        "insurance coverage of at least $1,000,000",
    ]


def test_rental_ranges_are_local_days() -> None:
    svc = _service()
    today = datetime.now(svc.tz).date()
    start, end = svc._rental_range((today + timedelta(days=2)).isoformat(), None)
    assert (start.date(), end.date()) == (today + timedelta(days=2), today + timedelta(days=3))
    assert start.tzinfo == svc.tz and start.hour == 0
    # A date and time counts as its local day; the return date is the end of the range.
    start, end = svc._rental_range(
        f"{today + timedelta(days=2)}T15:45", f"{today + timedelta(days=5)}T09:00"
    )
    assert (end.date() - start.date()).days == 3
    svc._rental_range(today, today + timedelta(days=HORIZON_DAYS))  # the edge is allowed


@pytest.mark.parametrize(
    ("start_days", "end_days", "words"),
    [
        (-1, 1, "in the past"),
        (3, 3, "at least one day"),
        (3, 2, "at least one day"),
        (1, HORIZON_DAYS + 1, "365 days ahead"),
    ],
)
def test_bad_rental_ranges_say_why(start_days, end_days, words) -> None:
    svc = _service()
    today = datetime.now(svc.tz).date()
    with pytest.raises(InvalidInput) as err:
        svc._rental_range(today + timedelta(days=start_days), today + timedelta(days=end_days))
    assert words in err.value.message


@pytest.mark.parametrize("text", ["tomorrow", "2026-13-01", "2026-02-30", "14/03/2026", " "])
def test_malformed_dates_are_refused(text) -> None:
    with pytest.raises(InvalidInput):
        _service()._as_day(text, field="start")


@pytest.mark.parametrize("text", ["tomorrow", "2026-03-14T25:00", "14/03/2026 10:00"])
def test_a_malformed_rental_day_asks_for_a_date(text) -> None:
    with pytest.raises(InvalidInput, match="must be a date like 2026-03-14"):
        _service()._as_day(text, field="start")


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31",
        "9999-12-31T23:30:00",
        "0001-01-01T00:00:00+14:00",
        date.max,
        datetime.max,
        datetime.min,
    ],
)
def test_rental_days_outside_the_calendar_are_refused_not_overflowed(value) -> None:
    with pytest.raises(InvalidInput, match="between 2000-01-01 and 2099-12-31") as err:
        _service()._rental_range(value, None)
    assert err.value.details["field"] == "start"


def test_a_naive_date_and_time_is_a_day_of_the_business_zone() -> None:
    # Not of the machine's zone: read as UTC, 02:30 would be the evening before in New York.
    svc = _service()
    assert svc._as_day("2026-03-15T02:30", field="start") == date(2026, 3, 15)


def test_test_drive_ranges_need_a_time_and_a_short_length() -> None:
    svc = _service()
    tomorrow = datetime.now(svc.tz).date() + timedelta(days=1)
    ten = datetime.combine(tomorrow, datetime.min.time(), svc.tz).replace(hour=10)
    start, end = svc._test_drive_range(ten.isoformat(), None, 30)
    assert end - start == timedelta(minutes=30)
    with pytest.raises(InvalidInput, match="needs a start time"):
        svc._test_drive_range(tomorrow.isoformat(), None, 30)
    with pytest.raises(InvalidInput, match="needs a start time"):
        svc._test_drive_range(tomorrow, None, 30)
    with pytest.raises(InvalidInput, match="at most 4 hours"):
        svc._test_drive_range(ten, ten + timedelta(hours=5), 30)
    with pytest.raises(InvalidInput, match="in the past"):
        svc._test_drive_range(ten - timedelta(days=3), None, 30)


def test_models_serialise_to_json_friendly_values() -> None:
    booking = RentalBooking(
        booking_id="b1",
        reference="ACD346",
        unit_id="PRJ-901",
        unit_name="Projector",
        kind="rental",
        status="confirmed",
        start=datetime(2026, 3, 14, tzinfo=Settings(environment="test").tz),
        end=datetime(2026, 3, 16, tzinfo=Settings(environment="test").tz),
        days=2,
        minutes=None,
        call_id=None,
        daily_rate=Decimal("85.00"),
        list_rate=Decimal("85.00"),
        negotiated=False,
        total=Decimal("170.00"),
        created_at=datetime(2026, 3, 1, tzinfo=Settings(environment="test").tz),
    )
    body = booking.model_dump(mode="json")
    assert body["start"] == "2026-03-14T00:00:00-04:00"
    assert body["total"] == "170.00"
    assert RentalBooking.model_validate(body) == booking
    with pytest.raises(ValueError):
        HoldRequest.model_validate({"unit_id": "X-1", "start": "2026-03-14", "surprise": 1})
    assert HoldRequest(unit_id="X-1", start="2026-03-14").start == "2026-03-14"
    assert HoldRequest(unit_id="X-1", start=date(2026, 3, 14)).start == date(2026, 3, 14)


def test_negotiate_codes_agree_between_the_script_and_propose_rate() -> None:
    """negotiate.lua answers with a code; propose_rate turns each one into an answer. The codes
    the script returns, the ones its header documents and the ones the caller handles (every
    one but 1, accepted, which falls through to the agreement) must be the same set, and every
    reply must have the eight fields propose_rate reads."""
    source = (resources.files("services") / "lua" / "negotiate.lua").read_text("utf-8")
    lines = source.splitlines()
    header_end = next(i for i, line in enumerate(lines) if not line.startswith("--"))
    header, body = "\n".join(lines[:header_end]), "\n".join(lines[header_end:])

    replies = re.findall(r"return \{([^}]*)\}", body)
    returned = {int(reply.split(",")[0]) for reply in replies}
    assert all(len(reply.split(",")) == 8 for reply in replies), replies
    code_table = header.split("where code is", 1)[1].split("Only codes", 1)[0]
    documented = {int(code) for code in re.findall(r"\b(\d)\s+[a-z]", code_table)}

    module = ast.parse(inspect.getsource(inventory_service))
    propose = next(
        node
        for node in ast.walk(module)
        if isinstance(node, ast.AsyncFunctionDef) and node.name == "propose_rate"
    )
    handled = {
        NegotiateReply[node.comparators[0].attr].value
        for node in ast.walk(propose)
        if isinstance(node, ast.Compare)
        and isinstance(node.left, ast.Name)
        and node.left.id == "code"
        and isinstance(node.ops[0], ast.Eq)
        and isinstance(node.comparators[0], ast.Attribute)
        and isinstance(node.comparators[0].value, ast.Name)
        and node.comparators[0].value.id == "NegotiateReply"
    }
    assert returned == documented == {0, 1, 3, 4, 5, 6, 7}
    assert handled | {1} == returned and 1 not in handled


def test_unit_terms_round_trip_through_the_hold_hash_and_name_what_negotiate_reads() -> None:
    """One schema for an inventory hold's fields: what create_hold stores is what confirm and
    negotiation read back, the hash says whose hold it is, and every field negotiate.lua reads
    is one the schema (HoldHash's own or UnitTerms') writes or claim.lua adds."""
    terms = UnitTerms(
        unit_name="Mini excavator",
        floor_cents=0,
        max_cents=45_000,
        certification="excavator",
        min_insurance=Decimal("1000000.00"),
        agreed_cents=0,
        quota_slot="s1",
    )
    fields = terms.to_fields()
    assert fields["holder"] == "inventory"
    assert UnitTerms.from_fields(fields) == terms
    assert UnitTerms.from_fields({"note": "x"}) is None  # a hold inventory did not place
    assert UnitTerms.from_fields({**fields, "holder": "x"}) == terms  # placed before `holder`
    source = (resources.files("services") / "lua" / "negotiate.lua").read_text("utf-8")
    hmget = re.search(r"HMGET', KEYS\[1\],([^)]*)\)", source, re.DOTALL)
    assert hmget is not None
    read = set(re.findall(r"'(\w+)'", hmget.group(1))) | {"agreed_cents", "attempts"}
    assert read <= HoldHash.OWN | set(fields)
