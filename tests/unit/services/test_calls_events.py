"""Event and request checks, and the rules-based summary (pure, no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.calls import Call, Marker, SharedInfo, StartCall, ToolEvent, Usage, UsageEvent
from services.calls.events import check_event, check_phone, parse_events, parse_model
from services.calls.summary import build_summary, describe
from services.errors import InvalidInput
from services.settings import Pricing

pytestmark = pytest.mark.unit

TZ = ZoneInfo("America/New_York")
NOW = datetime(2026, 3, 14, 15, 0, tzinfo=UTC)
STARTED = NOW - timedelta(minutes=5)


def _check(raw):
    return [check_event(e, tz=TZ, now=NOW, started_at=STARTED) for e in parse_events(raw)]


def _tool(**kw):
    return {"kind": "tool", "name": "list_slots", "latency_ms": 12, **kw}


def _shared(**kw):
    return {"kind": "shared", "category": "vehicle", "key": "model", "value": "pickup", **kw}


def _usage(**kw):
    return {"kind": "usage", **kw}


BAD_EVENTS = [
    ("tool name with spaces", _tool(name="Book Appointment"), "tool_name"),
    ("negative latency", _tool(latency_ms=-1), "latency_ms"),
    ("absurd latency", _tool(latency_ms=1e9), "latency_ms"),
    ("latency not a number", _tool(latency_ms="fast"), "latency_ms"),
    ("NaN latency", _tool(latency_ms=float("nan")), "latency_ms"),
    ("unknown tool outcome", _tool(outcome="maybe"), "tool_outcome"),
    ("unknown category", _shared(category="favourite_food"), "category"),
    ("key not a word", _shared(key="Model Name!"), "key"),
    ("over-long value", _shared(value="x" * 501), "value"),
    ("control character", _shared(value="pick\x00up"), "value"),
    ("newline in value", _shared(value="pick\nup"), "value"),
    ("empty value", _shared(value="   "), "value"),
    ("negative tokens", _usage(llm_prompt_tokens=-5), "llm_prompt_tokens"),
    ("absurd tokens", _usage(llm_prompt_tokens=10**12), "llm_prompt_tokens"),
    ("fractional tokens", _usage(llm_completion_tokens=1.5), "llm_completion_tokens"),
    ("cached over prompt", _usage(llm_prompt_tokens=10, llm_cached_tokens=11), "llm_cached_tokens"),
    ("absurd audio", _usage(stt_audio_seconds=1e6), "stt_audio_seconds"),
    ("negative characters", _usage(tts_characters=-1), "tts_characters"),
    ("unknown marker", {"kind": "marker", "marker": "won_lottery"}, "marker"),
    (
        "over-long reference",
        {"kind": "marker", "marker": "booked", "reference": "R" * 65},
        "reference",
    ),
    ("unknown kind", {"kind": "dance"}, "kind"),
    ("missing kind", {"name": "list_slots", "latency_ms": 1}, "kind"),
    ("misspelt field", _tool(latency=3), "latency"),
    ("event in the future", _tool(at=(NOW + timedelta(hours=1)).isoformat()), "event_time"),
    ("event before the call", _tool(at=(STARTED - timedelta(hours=1)).isoformat()), "event_time"),
    ("malformed time", _tool(at="yesterday-ish"), "at"),
    ("empty batch", [], "events"),
    ("batch too large", [_tool()] * 201, "events"),
    ("not an object", "list_slots took 12ms", "events"),
]


@pytest.mark.parametrize(
    ("raw", "field"), [c[1:] for c in BAD_EVENTS], ids=[c[0] for c in BAD_EVENTS]
)
def test_bad_events_are_refused_with_the_field_named(raw, field):
    with pytest.raises(InvalidInput) as err:
        _check(raw)
    assert err.value.details["field"] == field
    assert err.value.message.endswith(".")


def test_good_events_are_cleaned_and_timed():
    naive = (STARTED + timedelta(minutes=1)).astimezone(TZ).replace(tzinfo=None).isoformat()
    events = _check(
        [
            _tool(outcome="conflict", at=naive),
            _shared(value="  pickup  "),
            _usage(llm_prompt_tokens=100, llm_cached_tokens=100, stt_audio_seconds=4.5),
            {"kind": "marker", "marker": "booked", "reference": "KX7M3P"},
            _shared(value="'; DROP TABLE calls; --"),
        ]
    )
    tool, shared, usage, marker, sql = events
    assert isinstance(tool, ToolEvent) and tool.at == STARTED + timedelta(minutes=1)
    assert isinstance(shared, SharedInfo) and shared.value == "pickup" and shared.at == NOW
    assert isinstance(usage, UsageEvent) and usage.llm_cached_tokens == 100
    assert isinstance(marker, Marker) and marker.reference == "KX7M3P"
    assert isinstance(sql, SharedInfo) and sql.value == "'; DROP TABLE calls; --"


def test_one_event_or_a_model_is_a_batch_of_one():
    assert len(parse_events(_tool())) == 1
    (only,) = parse_events(ToolEvent(name="x", latency_ms=1))
    assert isinstance(only, ToolEvent) and only.name == "x"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"flow": "appointment", "extra": 1}, "extra"),
        ({"channel": "phone"}, "flow"),
        ({"flow": "appointment", "started_at": "soon"}, "started_at"),
    ],
)
def test_bad_start_requests_name_the_field(raw, field):
    with pytest.raises(InvalidInput) as err:
        parse_model(StartCall, raw, what="call")
    assert err.value.details["field"] == field


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [("+1 (201) 555-0142", "+12015550142"), ("201.555.0142", "2015550142"), (None, None)],
)
def test_phone_numbers_are_normalised(raw, normalised):
    assert check_phone(raw) == normalised


@pytest.mark.parametrize("raw", ["call me", "+", "555\x00", "1" * 40, "12; DROP TABLE calls"])
def test_bad_phone_numbers_are_refused(raw):
    with pytest.raises(InvalidInput):
        check_phone(raw)


def _rental_events():
    at = STARTED + timedelta(seconds=30)
    return [
        SharedInfo(category="contact_details", key="name", value="Dana Ruiz", at=at),
        SharedInfo(category="equipment", key="type", value="scissor lift", at=at),
        SharedInfo(category="contact_details", key="name", value="Dana Ruiz-Ortega", at=at),
        ToolEvent(name="search_units", latency_ms=40, at=at),
        ToolEvent(name="place_hold", latency_ms=20, outcome="conflict", at=at),
        ToolEvent(name="place_hold", latency_ms=30, at=at),
        Marker(marker="booked", reference="KX7M3P", at=at),
        Marker(marker="transferred", at=at),
    ]


def test_rules_summary_says_who_what_which_tools_and_how_it_ended():
    text = describe(
        flow="rental",
        channel="phone",
        caller_phone="+12015550142",
        duration_seconds=252,
        outcome="booked",
        events=_rental_events(),
    )
    assert text == (
        "A rental call by phone from Dana Ruiz-Ortega (+12015550142), 4 min 12 s. "
        "Shared contact details (name: Dana Ruiz-Ortega); equipment (type: scissor lift). "
        "Tools: search_units, place_hold ×2 (1 not ok). "
        "The call was transferred to a person. "
        "Outcome: booked, reference KX7M3P."
    )


def test_rules_summary_of_an_empty_call():
    text = describe(
        flow="intake",
        channel="web",
        caller_phone=None,
        duration_seconds=9.6,
        outcome="abandoned",
        events=[],
    )
    assert text == (
        "An intake call by web from an unidentified caller, 10 s. Shared nothing on record. "
        "Outcome: caller hung up."
    )


def test_built_summary_counts_a_booked_marker_as_a_booking():
    call = Call(
        call_id="c-1", flow="rental", channel="phone", caller_phone=None, started_at=STARTED
    )
    answer = build_summary(
        call,
        Usage(tts_characters=1000),
        _rental_events(),
        outcome="transferred",
        ended_at=STARTED + timedelta(minutes=4),
        pricing=Pricing(tts_per_character=0.00001, call_per_minute=0),
    )
    assert answer.booked and answer.booking_references == ["KX7M3P"]
    assert answer.duration_seconds == 240
    assert [(t.name, t.calls, t.outcomes) for t in answer.tools] == [
        ("search_units", 1, {"ok": 1}),
        ("place_hold", 2, {"conflict": 1, "ok": 1}),
    ]
    assert answer.tools[1].mean_latency_ms == 25
    assert answer.shared == {
        "contact_details": {"name": "Dana Ruiz-Ortega"},
        "equipment": {"type": "scissor lift"},
    }
    assert answer.summary_source == "rules"
    assert "Outcome: transferred to a person, reference KX7M3P." in answer.summary
