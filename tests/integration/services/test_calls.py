"""The calls service against real PostgreSQL (both kinds of backend)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services import idempotency
from services.calls import (
    CallAlreadyEnded,
    CallDetail,
    CallsService,
    EndCall,
    SharedInfo,
    StartCall,
)
from services.db import create_pool
from services.errors import (
    Conflict,
    DependencyUnavailable,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
)
from services.settings import Pricing

pytestmark = pytest.mark.integration

PRICES = Pricing(
    stt_per_minute=0.0043,
    llm_input_per_1k=0.0015,
    llm_cached_input_per_1k=0.00075,
    llm_output_per_1k=0.002,
    tts_per_character=0.00001,
    call_per_minute=0.01,
)


def _service(s, **kw) -> CallsService:
    return CallsService(pool=s.pool, settings=s.settings(pricing=PRICES), **kw)


async def _started(service: CallsService, call_id: str = "call-1", minutes_ago: int = 3):
    started_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)
    return await service.start_call(
        StartCall(
            call_id=call_id,
            flow="rental",
            caller_phone="+1 201 555 0142",
            started_at=started_at,
        )
    )


async def test_start_is_idempotent_by_call_id_and_by_key(fresh):
    service = _service(fresh)
    first = await _started(service)
    assert first.caller_phone == "+12015550142" and first.channel == "phone"
    again = await service.start_call({"call_id": "call-1", "flow": "rental"})
    assert again == first
    with pytest.raises(Conflict):
        await service.start_call({"call_id": "call-1", "flow": "intake"})

    made_up = await service.start_call({"flow": "intake"}, idempotency_key="start-7")
    replay = await service.start_call({"flow": "intake"}, idempotency_key="start-7")
    assert replay == made_up and made_up.call_id.startswith("call-")
    other = await service.start_call({"flow": "intake"})
    assert other.call_id != made_up.call_id
    with pytest.raises(IdempotencyKeyReused):  # 422, as the IETF draft has it
        await service.start_call({"flow": "dealership"}, idempotency_key="start-7")
    assert (
        await fresh.pool.fetchval(
            "SELECT count(*) FROM calls WHERE call_id = ANY($1)", ["call-1", made_up.call_id]
        )
        == 2
    )


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"flow": "pizza"}, "flow"),
        ({"flow": "rental", "channel": "fax"}, "channel"),
        ({"flow": "rental", "call_id": "'; DROP TABLE calls; --"}, "call_id"),
        ({"flow": "rental", "caller_phone": "call me maybe"}, "caller_phone"),
        ({"flow": "rental", "started_at": "2999-01-01T00:00:00+00:00"}, "started_at"),
        ({"flow": "rental", "started_at": "2001-01-01T00:00:00+00:00"}, "started_at"),
    ],
)
async def test_bad_starts_change_nothing(fresh, raw, field):
    before = await fresh.pool.fetchval("SELECT count(*) FROM calls")
    with pytest.raises(InvalidInput) as err:
        await _service(fresh).start_call(raw)
    assert err.value.details["field"] == field
    assert await fresh.pool.fetchval("SELECT count(*) FROM calls") == before


async def test_events_accumulate_usage_and_a_bad_batch_writes_nothing(fresh):
    service = _service(fresh)
    await _started(service)
    with pytest.raises(NotFound):
        await service.record_event("no-such-call", {"kind": "tool", "name": "x", "latency_ms": 1})
    first = await service.record_event(
        "call-1",
        [
            {"kind": "usage", "llm_prompt_tokens": 1000, "llm_cached_tokens": 400},
            {
                "kind": "shared",
                "category": "notes",
                "key": "note",
                "value": "'; DROP TABLE calls; --",
            },
        ],
    )
    assert first.recorded == 2 and first.usage.llm_prompt_tokens == 1000
    with pytest.raises(InvalidInput):
        await service.record_event(
            "call-1",
            [
                {"kind": "usage", "llm_prompt_tokens": 5000},
                {"kind": "tool", "name": "search_units", "latency_ms": -3},
            ],
        )
    second = await service.record_event(
        "call-1", {"kind": "usage", "llm_prompt_tokens": 500, "stt_audio_seconds": 12.5}
    )
    assert second.usage.llm_prompt_tokens == 1500
    assert second.usage.llm_cached_tokens == 400
    assert second.usage.stt_audio_seconds == 12.5
    detail = await service.get_call("call-1")
    assert [e.kind for e in detail.events] == ["usage", "shared", "usage"]
    stored = detail.events[1]
    assert isinstance(stored, SharedInfo) and stored.value == "'; DROP TABLE calls; --"
    assert detail.result is None and detail.ended_at is None


async def test_a_retried_batch_with_its_key_is_counted_once(fresh):
    service = _service(fresh)
    await _started(service)
    batch = [
        {"kind": "usage", "tts_characters": 300},
        {"kind": "tool", "name": "x", "latency_ms": 5},
    ]
    a = await service.record_event("call-1", batch, idempotency_key="ev-1")
    b = await service.record_event("call-1", batch, idempotency_key="ev-1")
    assert a == b and b.usage.tts_characters == 300
    assert len((await service.get_call("call-1")).events) == 2
    with pytest.raises(IdempotencyKeyReused):
        await service.record_event("call-1", batch[:1], idempotency_key="ev-1")


async def test_end_prices_summarises_and_answers_the_same_every_time(fresh):
    service = _service(fresh)
    call = await _started(service, minutes_ago=3)
    await service.record_event(
        "call-1",
        [
            {"kind": "shared", "category": "contact_details", "key": "name", "value": "Dana Ruiz"},
            {"kind": "shared", "category": "equipment", "key": "type", "value": "scissor lift"},
            {"kind": "tool", "name": "search_units", "latency_ms": 41.5},
            {"kind": "tool", "name": "place_hold", "latency_ms": 22, "outcome": "conflict"},
            {"kind": "tool", "name": "place_hold", "latency_ms": 18},
            {"kind": "marker", "marker": "booked", "reference": "KX7M3P"},
            {
                "kind": "usage",
                "stt_audio_seconds": 90,
                "llm_prompt_tokens": 12000,
                "llm_cached_tokens": 4000,
                "llm_completion_tokens": 800,
                "tts_characters": 1500,
            },
        ],
    )
    ended_at = call.started_at + timedelta(seconds=120)
    answer = await service.end_call("call-1", EndCall(outcome="booked", ended_at=ended_at))
    # stt 1.5 min * 0.0043 = 0.00645; llm_input 8 K * 0.0015 = 0.012; cached 4 K * 0.00075 =
    # 0.003; output 0.8 K * 0.002 = 0.0016; tts 1500 * 0.00001 = 0.015; 2 min * 0.01 = 0.02.
    assert answer.cost.total_usd == Decimal("0.05805")
    assert answer.cost.components.call_minutes == Decimal("0.02")
    assert answer.duration_seconds == 120 and answer.ended_at == ended_at
    assert answer.booked and answer.booking_references == ["KX7M3P"]
    assert answer.summary == (
        "A rental call by phone from Dana Ruiz (+12015550142), 2 min 0 s. "
        "Shared contact details (name: Dana Ruiz); equipment (type: scissor lift). "
        "Tools: search_units, place_hold ×2 (1 not ok). Outcome: booked, reference KX7M3P."
    )
    assert [t.name for t in answer.tools] == ["search_units", "place_hold"]
    assert answer.shared["equipment"] == {"type": "scissor lift"}
    body = answer.model_dump(mode="json")
    assert body["cost"]["total_usd"] == 0.05805
    assert datetime.fromisoformat(body["started_at"]) == call.started_at

    # Ending again, even with another outcome, returns the first answer; events are refused.
    again = await service.end_call("call-1", {"outcome": "abandoned"})
    assert again.replayed and not answer.replayed
    assert again.model_copy(update={"replayed": False}) == answer
    with pytest.raises(CallAlreadyEnded):
        await service.record_event("call-1", {"kind": "tool", "name": "late", "latency_ms": 1})

    # What analytics reads is what the caller was told.
    row = await fresh.pool.fetchrow(
        "SELECT outcome, booked, cost_usd, result FROM calls WHERE call_id = 'call-1'"
    )
    assert (row["outcome"], row["booked"], row["cost_usd"]) == ("booked", True, Decimal("0.05805"))
    assert row["result"] == body
    detail = await service.get_call("call-1")
    assert detail.result == answer and detail.outcome == "booked" and len(detail.events) == 7


async def test_end_with_a_key_replays_and_refuses_the_key_for_another_request(fresh):
    service = _service(fresh)
    await _started(service)
    first = await service.end_call("call-1", {"outcome": "transferred"}, idempotency_key="end-1")
    assert first.outcome == "transferred" and not first.booked
    again = await service.end_call("call-1", {"outcome": "transferred"}, idempotency_key="end-1")
    assert again.replayed and again.model_copy(update={"replayed": False}) == first
    with pytest.raises(IdempotencyKeyReused):
        await service.end_call("call-1", {"outcome": "booked"}, idempotency_key="end-1")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"outcome": "won"}, InvalidInput),
        ({"outcome": "booked", "summary": "x" * 4001}, InvalidInput),
        ({"outcome": "booked", "ended_at": "2999-01-01T00:00:00+00:00"}, InvalidInput),
        ({"outcome": "booked", "ended_at": "2001-01-01T00:00:00+00:00"}, InvalidInput),
        ({"outcome": "booked", "ended": "now"}, InvalidInput),
    ],
)
async def test_bad_ends_leave_the_call_open(fresh, raw, error):
    service = _service(fresh)
    await _started(service)
    with pytest.raises(error):
        await service.end_call("call-1", raw)
    assert (await service.get_call("call-1")).ended_at is None
    with pytest.raises(NotFound):
        await service.end_call("no-such-call", {"outcome": "booked"})


class _Writer:
    def __init__(self, text: str | None = None, fail: bool = False) -> None:
        self.text, self.fail = text, fail
        self.seen: list[tuple[str, str]] = []

    async def summarize(self, call: CallDetail, *, draft: str) -> str:
        self.seen.append((call.call_id, draft))
        if self.fail:
            raise RuntimeError("model overloaded")
        return self.text or ""


async def test_a_summarizer_replaces_the_text_and_a_failing_one_is_ignored(fresh):
    writer = _Writer("Dana booked a scissor lift.")
    service = _service(fresh, summarizer=writer)
    await _started(service, "call-a")
    answer = await service.end_call("call-a", {"outcome": "booked"})
    assert (answer.summary, answer.summary_source) == ("Dana booked a scissor lift.", "summarizer")
    assert writer.seen[0][1].startswith("A rental call by phone")

    failing = _service(fresh, summarizer=_Writer(fail=True))
    await _started(failing, "call-b")
    answer = await failing.end_call("call-b", {"outcome": "information_only"})
    assert answer.summary_source == "rules" and answer.summary.startswith("A rental call")

    await _started(service, "call-c")
    answer = await service.end_call("call-c", {"outcome": "booked", "summary": "Agent's own."})
    assert (answer.summary, answer.summary_source) == ("Agent's own.", "agent")


async def test_events_racing_the_end_are_either_counted_or_refused(fresh):
    service = _service(fresh)
    await _started(service)

    async def add(i: int) -> int:
        try:
            await service.record_event("call-1", {"kind": "usage", "tts_characters": 10})
        except CallAlreadyEnded:
            return 0
        return 10

    async def end():
        await asyncio.sleep(0)
        return await service.end_call("call-1", {"outcome": "information_only"})

    *added, answer = await asyncio.gather(*(add(i) for i in range(40)), end())
    assert answer.usage.tts_characters == sum(added)
    assert (await service.get_call("call-1")).usage.tts_characters == sum(added)


async def test_active_calls_counts_calls_not_ended(fresh):
    service = _service(fresh)
    before = await service.active_calls()
    await _started(service, "call-x")
    await _started(service, "call-y")
    await service.end_call("call-x", {"outcome": "abandoned"})
    assert await service.active_calls() == before + 1


async def test_an_unreachable_database_is_a_dependency_error(fresh):
    pool = await create_pool(fresh.database_url, min_size=1, max_size=1)
    await pool.close()
    service = CallsService(pool=pool, settings=fresh.settings())
    with pytest.raises(DependencyUnavailable):
        await service.start_call({"flow": "rental"})
    with pytest.raises(DependencyUnavailable):
        await service.get_call("call-1")


async def _twins(make, n: int = 16) -> list:
    """Race ``n`` requests sharing one key, then ask once more after they ended: each answer
    is the first's, and a twin may only otherwise be refused as in flight (409 with
    Retry-After) while the first ran, never fail on the key's record."""
    results = await asyncio.gather(*(make() for _ in range(n)), return_exceptions=True)
    answers = [r for r in results if not isinstance(r, IdempotencyKeyInFlight)]
    assert answers and not [r for r in answers if isinstance(r, BaseException)], results
    return [*answers, await make()]


async def test_twins_of_one_key_racing_each_get_the_first_answer(fresh):
    """Many first requests with one Idempotency-Key at once, to start, events and end: every
    one answers with the first's answer or is told it is in flight (none fails on the key's
    record), and the write happens once."""
    service = _service(fresh)

    starts = await _twins(lambda: service.start_call({"flow": "rental"}, idempotency_key="rs"))
    assert len({c.call_id for c in starts}) == 1
    call_id = starts[0].call_id

    batch = [{"kind": "usage", "llm_prompt_tokens": 100}]
    recorded = await _twins(lambda: service.record_event(call_id, batch, idempotency_key="re"))
    assert {r.model_dump_json() for r in recorded} == {recorded[0].model_dump_json()}
    detail = await service.get_call(call_id)
    assert detail.usage.llm_prompt_tokens == 100  # counted once

    ends = await _twins(
        lambda: service.end_call(call_id, {"outcome": "abandoned"}, idempotency_key="rend")
    )
    assert {e.cost.total_usd for e in ends} == {ends[0].cost.total_usd}
    assert {e.call_id for e in ends} == {call_id}


async def test_a_twin_that_arrives_while_the_first_runs_is_told_it_is_in_flight(fresh):
    """The first request with a key is still running (its transaction holds the key's mark):
    a twin is refused at once with 409 and Retry-After, not made to wait or given a 500; once
    the first ended, the twin gets its answer."""
    service = _service(fresh)
    await _started(service)
    batch = [{"kind": "usage", "tts_characters": 10}]
    async with fresh.pool.acquire() as conn, conn.transaction():
        await idempotency.claim(conn, scope="calls.events", key="slow-1")
        with pytest.raises(IdempotencyKeyInFlight) as refused:
            await service.record_event("call-1", batch, idempotency_key="slow-1")
    assert refused.value.retry_after > 0
    first = await service.record_event("call-1", batch, idempotency_key="slow-1")
    assert await service.record_event("call-1", batch, idempotency_key='"slow-1"') == first
