"""Analytics against real PostgreSQL, on a crafted history whose numbers are known exactly."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from services.analytics import AnalyticsService
from services.calls import CallsService, StartCall
from services.errors import Conflict, InvalidInput, NotFound
from services.settings import Pricing

pytestmark = pytest.mark.integration

# Only call minutes cost money here: a call of N minutes costs N cents, exactly.
CENT_A_MINUTE = Pricing(
    stt_per_minute=0,
    llm_input_per_1k=0,
    llm_cached_input_per_1k=0,
    llm_output_per_1k=0,
    tts_per_character=0,
    call_per_minute=0.01,
)


@pytest.fixture
async def history(fresh):
    """No calls at all (the demo history dropped), and the two services sharing settings."""
    await fresh.pool.execute("TRUNCATE calls, call_events, analytics_calls, analytics_daily")
    settings = fresh.settings(pricing=CENT_A_MINUTE)
    return (
        CallsService(pool=fresh.pool, settings=settings),
        AnalyticsService(pool=fresh.pool, settings=settings),
        settings.tz,
    )


async def _call(calls, tz, call_id, *, flow, day, minutes, outcome, events=(), feed=None):
    started_at = datetime.combine(day, time(10, 0), tz)
    await calls.start_call(StartCall(call_id=call_id, flow=flow, started_at=started_at))
    if events:
        await calls.record_event(call_id, list(events))
    answer = await calls.end_call(
        call_id, {"outcome": outcome, "ended_at": started_at + timedelta(minutes=minutes)}
    )
    if feed is not None:
        assert (await feed.record_call_ended(answer.model_dump(mode="json"))).counted
    return answer


def _days(tz):
    today = datetime.now(tz).date()
    return today - timedelta(days=3), today - timedelta(days=2)


async def _crafted(calls, analytics, tz):
    """Day A: five appointment calls; day B: two rental calls. See the numbers in the test."""
    day_a, day_b = _days(tz)
    latencies = [
        {"kind": "tool", "name": "list_slots", "latency_ms": ms, "at": None} for ms in range(1, 101)
    ]
    shared = [
        {"kind": "shared", "category": "contact_details", "key": "name", "value": "Dana"},
        {"kind": "shared", "category": "notes", "key": "reason", "value": "oil change"},
    ]
    appointment = [
        ("a1", 1, "booked", [*latencies, *shared]),
        (
            "a2",
            2,
            "booked",
            [
                {"kind": "shared", "category": "contact_details", "key": "name", "value": "Sam"},
                {
                    "kind": "shared",
                    "category": "contact_details",
                    "key": "email",
                    "value": "s@x.io",
                },
            ],
        ),
        ("a3", 3, "information_only", []),
        ("a4", 4, "transferred", []),
        ("a5", 10, "booked", []),
    ]
    for call_id, minutes, outcome, events in appointment:
        await _call(
            calls,
            tz,
            call_id,
            flow="appointment",
            day=day_a,
            minutes=minutes,
            outcome=outcome,
            events=events,
            feed=analytics,
        )
    await _call(
        calls,
        tz,
        "r1",
        flow="rental",
        day=day_b,
        minutes=5,
        outcome="information_only",
        events=[
            *(
                {"kind": "tool", "name": "search_units", "latency_ms": ms}
                for ms in (10, 20, 30, 40)
            ),
            {"kind": "marker", "marker": "booked", "reference": "KX7M3P"},
            {"kind": "shared", "category": "site", "key": "city", "value": "Newark"},
        ],
        feed=analytics,
    )
    await _call(
        calls, tz, "r2", flow="rental", day=day_b, minutes=5, outcome="abandoned", feed=analytics
    )
    return day_a, day_b


async def test_summary_numbers_on_a_crafted_history(history):
    calls, analytics, tz = history
    day_a, day_b = await _crafted(calls, analytics, tz)
    result = await analytics.summary(day_a - timedelta(days=1), day_b)

    # Appointment, day A: costs 0.01, 0.02, 0.03, 0.04, 0.10; 3 of 5 booked.
    # p50 = 0.03; p95 at position 0.95 * 4 = 3.8: 0.04 + 0.8 * (0.10 - 0.04) = 0.088.
    appointment = result.flows["appointment"]
    assert appointment.calls == 5 and appointment.booked == 3 and appointment.conversion == 0.6
    assert appointment.outcomes == {"booked": 3, "information_only": 1, "transferred": 1}
    assert appointment.cost_total_usd == 0.2
    assert appointment.cost_per_call.model_dump() == {"mean": 0.04, "p50": 0.03, "p95": 0.088}
    # list_slots took 1..100 ms: p50 at 49.5 -> 50.5; p95 at 94.05 -> 95.05; p99 at 98.01 -> 99.01.
    slots = appointment.tool_latency_ms["list_slots"]
    assert (slots.calls, slots.p50_ms, slots.p95_ms, slots.p99_ms) == (100, 50.5, 95.05, 99.01)
    assert appointment.shared["contact_details"].model_dump() == {"items": 3, "calls": 2}
    assert appointment.shared["notes"].model_dump() == {"items": 1, "calls": 1}

    # Rental, day B: two calls at 0.05; one booked by marker though it ended information_only.
    # search_units 10, 20, 30, 40: p50 = 25; p95 at 2.85 -> 38.5; p99 at 2.97 -> 39.7.
    rental = result.flows["rental"]
    assert (rental.calls, rental.booked, rental.conversion) == (2, 1, 0.5)
    assert rental.outcomes == {"abandoned": 1, "information_only": 1}
    assert rental.cost_per_call.model_dump() == {"mean": 0.05, "p50": 0.05, "p95": 0.05}
    units = rental.tool_latency_ms["search_units"]
    assert (units.calls, units.p50_ms, units.p95_ms, units.p99_ms) == (4, 25.0, 38.5, 39.7)
    assert {k: v.model_dump() for k, v in rental.shared.items()} == {
        "site": {"items": 1, "calls": 1}
    }

    # All seven: costs 0.01 0.02 0.03 0.04 0.05 0.05 0.10 (sum 0.30); 4 of 7 booked.
    # mean 0.30 / 7 = 0.0428571... -> 0.042857; p50 = 0.04; p95 at 5.7: 0.05 + 0.7 * 0.05 = 0.085.
    total = result.total
    assert (total.calls, total.booked, total.conversion) == (7, 4, 0.5714)
    assert total.cost_per_call.model_dump() == {"mean": 0.042857, "p50": 0.04, "p95": 0.085}
    assert set(total.tool_latency_ms) == {"list_slots", "search_units"}
    assert total.shared["contact_details"].items == 3

    # Per day: the day before A is empty, A is all appointment, B all rental.
    assert [d.day for d in result.days] == [day_a - timedelta(days=1), day_a, day_b]
    empty, a, b = result.days
    assert empty.total.calls == 0 and empty.flows == {} and empty.total.cost_per_call is None
    assert a.total == appointment and list(a.flows) == ["appointment"]
    assert b.total == rental and b.flows["rental"] == rental
    assert result.timezone == tz.key and result.since == day_a - timedelta(days=1)


async def test_summary_of_one_flow(history):
    calls, analytics, tz = history
    day_a, day_b = await _crafted(calls, analytics, tz)
    result = await analytics.summary(day_a.isoformat(), day_b.isoformat(), flow="rental")
    assert result.flow == "rental" and list(result.flows) == ["rental"]
    assert result.total.calls == 2 and set(result.total.tool_latency_ms) == {"search_units"}
    assert result.days[0].total.calls == 0


async def test_feeding_a_call_twice_counts_it_once(history):
    calls, analytics, tz = history
    day_a, _ = _days(tz)
    answer = await _call(calls, tz, "c1", flow="intake", day=day_a, minutes=3, outcome="booked")
    assert (await analytics.record_call_ended(answer.model_dump(mode="json"))).counted
    # Retries, and a tampered dict: the stored call is what counts, and only once.
    again = await analytics.record_call_ended({**answer.model_dump(mode="json"), "cost": 99})
    assert not again.counted
    assert not (await analytics.record_call_ended(answer)).counted
    row = await calls.pool.fetchrow(
        "SELECT calls, booked, cost_usd FROM analytics_daily WHERE flow = 'intake'"
    )
    assert (row["calls"], row["booked"], float(row["cost_usd"])) == (1, 1, 0.03)
    assert (await analytics.summary(day_a, day_a)).total.calls == 1


async def test_feeding_refuses_unknown_and_open_calls(history):
    calls, analytics, _ = history
    with pytest.raises(NotFound):
        await analytics.record_call_ended({"call_id": "nobody"})
    with pytest.raises(InvalidInput):
        await analytics.record_call_ended({"call_id": "'; DROP TABLE calls; --"})
    with pytest.raises(InvalidInput):
        await analytics.record_call_ended({"outcome": "booked"})
    await calls.start_call({"call_id": "open-1", "flow": "rental"})
    with pytest.raises(Conflict):
        await analytics.record_call_ended({"call_id": "open-1"})
    assert await calls.pool.fetchval("SELECT count(*) FROM analytics_daily") == 0


async def test_catch_up_counts_calls_that_were_never_fed(history):
    calls, analytics, tz = history
    day_a, day_b = _days(tz)
    await _call(
        calls, tz, "fed", flow="rental", day=day_a, minutes=2, outcome="booked", feed=analytics
    )
    await _call(calls, tz, "lost-1", flow="rental", day=day_a, minutes=4, outcome="abandoned")
    await _call(calls, tz, "lost-2", flow="dealership", day=day_b, minutes=6, outcome="booked")
    await calls.start_call({"call_id": "still-open", "flow": "rental"})
    assert await analytics.catch_up(day_a, day_b) == 2
    assert await analytics.catch_up(day_a, day_b) == 0
    result = await analytics.summary(day_a, day_b)
    assert (result.total.calls, result.total.booked, result.total.cost_total_usd) == (3, 2, 0.12)
    assert result.flows["rental"].outcomes == {"abandoned": 1, "booked": 1}


@pytest.mark.parametrize(
    ("since", "until", "flow"),
    [
        ("2026-03-14", "2026-03-01", None),
        ("2025-01-01", "2026-03-01", None),
        ("2026-02-30", "2026-03-01", None),
        ("2026-03-01", "2026-03-02", "spaceship"),
    ],
)
async def test_bad_windows_are_refused(history, since, until, flow):
    _, analytics, _ = history
    with pytest.raises(InvalidInput):
        await analytics.summary(since, until, flow)


async def test_the_demo_history_has_something_to_show(fresh):
    analytics = AnalyticsService(pool=fresh.pool)
    today = datetime.now(UTC).date()
    result = await analytics.summary(today - timedelta(days=7), today)
    assert result.total.calls > 20 and 0 < result.total.conversion < 1
    assert set(result.flows) == {"appointment", "rental", "dealership", "intake"}
    assert result.total.cost_per_call is not None and result.total.cost_per_call.p95 > 0
    assert result.total.tool_latency_ms and result.total.shared
    # The demo calls were all counted already: nothing to catch up on.
    assert await analytics.catch_up(today - timedelta(days=7), today) == 0


async def test_a_window_without_calls_is_all_zero_not_an_error(history):
    # Found by schemathesis: GET /analytics/summary?until=2000-01-01 answered 500 (KeyError).
    _, analytics, _ = history
    result = await analytics.summary("2001-01-01", "2001-01-07")
    assert result.total.calls == 0 and result.total.cost_per_call is None
    assert result.flows == {} and len(result.days) == 7
