"""The calls service: a call's start, what happened during it, and its priced summary at the end.

Agents call it from function tools and from session hooks, which retry, so every write is safe
to repeat: a start with a known call id returns that call, events take an idempotency key, and
ending a call twice returns the first answer. A call's row is locked while events are added or
the call is ended, so an event racing the end is either counted or refused, never lost.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services import idempotency
from services.calls import vocabulary as v
from services.calls.events import (
    check_event,
    check_phone,
    check_time,
    one_of,
    parse_events,
    parse_model,
)
from services.calls.models import (
    Call,
    CallDetail,
    CallSummary,
    EndCall,
    Event,
    EventsRecorded,
    Marker,
    SharedInfo,
    StartCall,
    SummarySource,
    ToolEvent,
    Usage,
    UsageEvent,
)
from services.calls.summary import Summarizer, build_summary, describe
from services.errors import Conflict, InvalidInput, NotFound
from services.settings import Settings
from services.storage import store_errors
from services.validation import check_id, clean_text

log = logging.getLogger(__name__)


class CallAlreadyEnded(Conflict):
    """Events and ends arrive after the call was ended (a late tool, a retried hook)."""

    code = "call_ended"


_SELECT_CALL = """
SELECT call_id, flow, channel, caller_phone, started_at, ended_at, outcome, result,
       stt_audio_seconds, llm_prompt_tokens, llm_cached_tokens, llm_completion_tokens,
       tts_characters
  FROM calls WHERE call_id = $1"""

_LOCK_CALL = """
SELECT call_id, flow, channel, caller_phone, started_at, ended_at, outcome, result,
       stt_audio_seconds, llm_prompt_tokens, llm_cached_tokens, llm_completion_tokens,
       tts_characters
  FROM calls WHERE call_id = $1 FOR UPDATE"""

_INSERT_CALL = """
INSERT INTO calls (call_id, flow, channel, caller_phone, started_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (call_id) DO NOTHING
RETURNING call_id, flow, channel, caller_phone, started_at, ended_at, outcome"""

_SELECT_EVENTS = """
SELECT event_id, kind, at, tool, latency_ms, tool_outcome, category, info_key, info_value,
       usage, marker, reference
  FROM call_events WHERE call_id = $1 ORDER BY event_id"""

_INSERT_EVENT = """
INSERT INTO call_events (call_id, kind, at, tool, latency_ms, tool_outcome, category, info_key,
                         info_value, usage, marker, reference)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"""

_ADD_USAGE = """
UPDATE calls
   SET stt_audio_seconds = stt_audio_seconds + $2,
       llm_prompt_tokens = llm_prompt_tokens + $3,
       llm_cached_tokens = llm_cached_tokens + $4,
       llm_completion_tokens = llm_completion_tokens + $5,
       tts_characters = tts_characters + $6
 WHERE call_id = $1
RETURNING stt_audio_seconds, llm_prompt_tokens, llm_cached_tokens, llm_completion_tokens,
          tts_characters"""

_END_CALL = """
UPDATE calls SET ended_at = $2, outcome = $3, booked = $4, cost_usd = $5, result = $6
 WHERE call_id = $1 AND ended_at IS NULL"""

_COUNT_ACTIVE = "SELECT count(*) FROM calls WHERE ended_at IS NULL"

_INSERT_ENDED_CALL = """
INSERT INTO calls (call_id, flow, channel, caller_phone, started_at, ended_at, outcome, booked,
                   stt_audio_seconds, llm_prompt_tokens, llm_cached_tokens,
                   llm_completion_tokens, tts_characters, cost_usd, result)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"""


@contextmanager
def _storage() -> Iterator[None]:
    """A store out of reach becomes a retryable DependencyUnavailable, never a 500."""
    with store_errors("Call records cannot be reached for a moment; please try again shortly."):
        yield


def _call(row: asyncpg.Record) -> Call:
    return Call(
        call_id=row["call_id"],
        flow=row["flow"],
        channel=row["channel"],
        caller_phone=row["caller_phone"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        outcome=row["outcome"],
    )


def _usage(row: asyncpg.Record) -> Usage:
    return Usage(
        stt_audio_seconds=float(row["stt_audio_seconds"]),
        llm_prompt_tokens=row["llm_prompt_tokens"],
        llm_cached_tokens=row["llm_cached_tokens"],
        llm_completion_tokens=row["llm_completion_tokens"],
        tts_characters=row["tts_characters"],
    )


def _event(row: asyncpg.Record) -> Event:
    kind = row["kind"]
    if kind == "tool":
        return ToolEvent(
            name=row["tool"],
            latency_ms=row["latency_ms"],
            outcome=row["tool_outcome"],
            at=row["at"],
        )
    if kind == "shared":
        return SharedInfo(
            category=row["category"], key=row["info_key"], value=row["info_value"], at=row["at"]
        )
    if kind == "usage":
        return UsageEvent(**row["usage"], at=row["at"])
    return Marker(marker=row["marker"], reference=row["reference"], at=row["at"])


def _event_args(call_id: str, event: Event) -> tuple[Any, ...]:
    """The _INSERT_EVENT parameters of one checked event."""
    tool = latency = tool_outcome = category = key = value = usage = marker = reference = None
    if isinstance(event, ToolEvent):
        tool, latency, tool_outcome = event.name, event.latency_ms, event.outcome
    elif isinstance(event, SharedInfo):
        category, key, value = event.category, event.key, event.value
    elif isinstance(event, UsageEvent):
        usage = event.model_dump(exclude={"kind", "at"})
    else:
        marker, reference = event.marker, event.reference
    return (
        call_id,
        event.kind,
        event.at,
        tool,
        latency,
        tool_outcome,
        category,
        key,
        value,
        usage,
        marker,
        reference,
    )


async def insert_events(conn: asyncpg.Connection, *, call_id: str, events: Sequence[Event]) -> None:
    """Write checked events of one call (usage totals are the caller's business)."""
    await conn.executemany(_INSERT_EVENT, [_event_args(call_id, e) for e in events])


async def insert_ended_calls(
    conn: asyncpg.Connection, *, calls: Sequence[tuple[CallSummary, Sequence[Event]]]
) -> None:
    """Write finished calls with their events in one go (demo data, imports)."""
    await conn.executemany(
        _INSERT_ENDED_CALL,
        [
            (
                s.call_id,
                s.flow,
                s.channel,
                s.caller_phone,
                s.started_at,
                s.ended_at,
                s.outcome,
                s.booked,
                s.usage.stt_audio_seconds,
                s.usage.llm_prompt_tokens,
                s.usage.llm_cached_tokens,
                s.usage.llm_completion_tokens,
                s.usage.tts_characters,
                s.cost.total_usd,
                s.model_dump(mode="json"),
            )
            for s, _ in calls
        ],
    )
    await conn.executemany(
        _INSERT_EVENT, [_event_args(s.call_id, e) for s, events in calls for e in events]
    )


class CallsService:
    """Start, record, end and read calls.

    ``summarizer`` (optional) writes the end-of-call text, typically with an LLM; it runs
    outside any transaction and gets ``summarizer_timeout_seconds``, after which the
    rules-based summary is kept.
    """

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        settings: Settings,
        summarizer: Summarizer | None = None,
        summarizer_timeout_seconds: float = 8.0,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.summarizer = summarizer
        self.summarizer_timeout_seconds = summarizer_timeout_seconds

    async def _twin_answer(
        self, error: asyncpg.UniqueViolationError, *, scope: str, key: str | None, payload: Any
    ) -> dict[str, Any] | None:
        """The first answer when ``error`` is a concurrent twin's idempotency record; None
        for any other unique violation."""
        if key is None or not idempotency.is_twin(error):
            return None
        with _storage():
            return await idempotency.replay(self.pool, scope=scope, key=key, payload=payload)

    # -- start ------------------------------------------------------------------------------

    async def start_call(
        self, request: StartCall | Mapping[str, Any], idempotency_key: str | None = None
    ) -> Call:
        """Record a call an agent picked up; a repeat with the same call id returns that call."""
        request = parse_model(StartCall, request, what="call")
        key = idempotency.check_key(idempotency_key)
        now = datetime.now(UTC)
        call_id = (
            check_id(request.call_id, field="call_id")
            if request.call_id is not None
            else f"call-{uuid.uuid4().hex}"
        )
        flow = one_of(request.flow, v.FLOWS, field="flow")
        channel = one_of(request.channel, v.CHANNELS, field="channel")
        phone = check_phone(request.caller_phone)
        started_at = check_time(
            request.started_at,
            field="started_at",
            tz=self.settings.tz,
            now=now,
            earliest=now - timedelta(days=v.MAX_START_AGE_DAYS),
        )
        payload = {"op": "start", **request.model_dump(mode="json")}
        try:
            with _storage():
                async with self.pool.acquire() as conn, conn.transaction():
                    if key:
                        await idempotency.claim(conn, scope="calls.start", key=key)
                    if key and (
                        first := await idempotency.replay(
                            conn, scope="calls.start", key=key, payload=payload
                        )
                    ):
                        return Call.model_validate(first)
                    row = await conn.fetchrow(
                        _INSERT_CALL, call_id, flow, channel, phone, started_at
                    )
                    if row is None:
                        row = await conn.fetchrow(_SELECT_CALL, call_id)
                        assert row is not None  # rows are never deleted while a call is live
                        if row["flow"] != flow:
                            raise Conflict(
                                f"That call id is already in use for a {row['flow']} call.",
                                call_id=call_id,
                            )
                    call = _call(row)
                    if key:
                        await idempotency.remember(
                            conn,
                            scope="calls.start",
                            key=key,
                            payload=payload,
                            response=call.model_dump(mode="json"),
                        )
                    return call
        except asyncpg.UniqueViolationError as error:
            # A twin with the same key committed first: its answer is this one's.
            first = await self._twin_answer(error, scope="calls.start", key=key, payload=payload)
            if first is None:
                raise
            return Call.model_validate(first)

    # -- events -----------------------------------------------------------------------------

    async def record_event(
        self,
        call_id: str,
        events: Event | Mapping[str, Any] | Sequence[Event | Mapping[str, Any]],
        idempotency_key: str | None = None,
    ) -> EventsRecorded:
        """Record one event or a batch; a batch is recorded entirely or not at all.

        Usage events add to the call's totals. Unknown call: NotFound; ended call:
        CallAlreadyEnded; anything out of bounds: InvalidInput, and nothing is written.
        """
        call_id = check_id(call_id, field="call_id")
        parsed = parse_events(events)
        key = idempotency.check_key(idempotency_key)
        payload = {
            "op": "events",
            "call_id": call_id,
            "events": [e.model_dump(mode="json") for e in parsed],
        }
        try:
            with _storage():
                async with self.pool.acquire() as conn, conn.transaction():
                    if key:
                        await idempotency.claim(conn, scope="calls.events", key=key)
                    if key and (
                        first := await idempotency.replay(
                            conn, scope="calls.events", key=key, payload=payload
                        )
                    ):
                        return EventsRecorded.model_validate(first)
                    row = await self._locked_open_call(conn, call_id)
                    now = datetime.now(UTC)
                    checked = [
                        check_event(e, tz=self.settings.tz, now=now, started_at=row["started_at"])
                        for e in parsed
                    ]
                    await insert_events(conn, call_id=call_id, events=checked)
                    usage_events = [e for e in checked if isinstance(e, UsageEvent)]
                    if usage_events:
                        row = await conn.fetchrow(
                            _ADD_USAGE,
                            call_id,
                            sum(e.stt_audio_seconds for e in usage_events),
                            sum(e.llm_prompt_tokens for e in usage_events),
                            sum(e.llm_cached_tokens for e in usage_events),
                            sum(e.llm_completion_tokens for e in usage_events),
                            sum(e.tts_characters for e in usage_events),
                        )
                    answer = EventsRecorded(
                        call_id=call_id, recorded=len(checked), usage=_usage(row)
                    )
                    if key:
                        await idempotency.remember(
                            conn,
                            scope="calls.events",
                            key=key,
                            payload=payload,
                            response=answer.model_dump(mode="json"),
                        )
                    return answer
        except asyncpg.UniqueViolationError as error:
            # A twin with the same key committed first: its answer is this one's.
            first = await self._twin_answer(error, scope="calls.events", key=key, payload=payload)
            if first is None:
                raise
            return EventsRecorded.model_validate(first)

    async def _locked_open_call(self, conn: asyncpg.Connection, call_id: str) -> asyncpg.Record:
        row = await conn.fetchrow(_LOCK_CALL, call_id)
        if row is None:
            raise NotFound("There is no call with that id; start the call first.", call_id=call_id)
        if row["ended_at"] is not None:
            raise CallAlreadyEnded("That call has already ended.", call_id=call_id)
        return row

    # -- end --------------------------------------------------------------------------------

    async def end_call(
        self,
        call_id: str,
        request: EndCall | Mapping[str, Any],
        idempotency_key: str | None = None,
    ) -> CallSummary:
        """End the call: price its usage, summarise its events, and store both.

        Ending an ended call returns the stored answer unchanged, whatever this request says;
        with an idempotency key, a key reused for a different request is refused.
        """
        call_id = check_id(call_id, field="call_id")
        request = parse_model(EndCall, request, what="end of call")
        key = idempotency.check_key(idempotency_key)
        outcome = one_of(request.outcome, v.OUTCOMES, field="outcome")
        agent_summary = clean_text(
            request.summary, field="summary", max_length=v.MAX_SUMMARY, multiline=True
        )
        payload = {"op": "end", "call_id": call_id, **request.model_dump(mode="json")}

        # An LLM summary takes seconds: write it from a snapshot, outside any lock.
        written: tuple[int, str] | None = None
        if self.summarizer is not None and agent_summary is None:
            detail = await self.get_call(call_id)
            if detail.result is None:
                written = await self._summarize(detail, outcome=outcome, ended_at=request.ended_at)

        try:
            with _storage():
                async with self.pool.acquire() as conn, conn.transaction():
                    if key:
                        await idempotency.claim(conn, scope="calls.end", key=key)
                    if key and (
                        first := await idempotency.replay(
                            conn, scope="calls.end", key=key, payload=payload
                        )
                    ):
                        return CallSummary.model_validate({**first, "replayed": True})
                    row = await conn.fetchrow(_LOCK_CALL, call_id)
                    if row is None:
                        raise NotFound("There is no call with that id.", call_id=call_id)
                    if row["result"] is not None:
                        answer = CallSummary.model_validate({**row["result"], "replayed": True})
                    else:
                        events = [_event(r) for r in await conn.fetch(_SELECT_EVENTS, call_id)]
                        answer = self._summary(
                            row,
                            events,
                            outcome=outcome,
                            ended_at=request.ended_at,
                            agent_summary=agent_summary,
                            written=written,
                        )
                        await conn.execute(
                            _END_CALL,
                            call_id,
                            answer.ended_at,
                            answer.outcome,
                            answer.booked,
                            answer.cost.total_usd,
                            answer.model_dump(mode="json"),
                        )
                    if key:
                        await idempotency.remember(
                            conn,
                            scope="calls.end",
                            key=key,
                            payload=payload,
                            response=answer.model_dump(mode="json"),
                        )
                    return answer
        except asyncpg.UniqueViolationError as error:
            # A twin with the same key committed first: its answer is this one's.
            first = await self._twin_answer(error, scope="calls.end", key=key, payload=payload)
            if first is None:
                raise
            return CallSummary.model_validate({**first, "replayed": True})

    def _summary(
        self,
        row: asyncpg.Record,
        events: list[Event],
        *,
        outcome: str,
        ended_at: datetime | None,
        agent_summary: str | None,
        written: tuple[int, str] | None,
    ) -> CallSummary:
        """The end_call answer from the locked row and its events (no I/O)."""
        now = datetime.now(UTC)
        started_at: datetime = row["started_at"]
        ended = check_time(
            ended_at, field="ended_at", tz=self.settings.tz, now=now, earliest=started_at
        )
        ended = max(ended, started_at)  # within clock skew before the start: a zero-length call
        duration = (ended - started_at).total_seconds()
        if duration > v.MAX_CALL_SECONDS:
            raise InvalidInput(
                "The call cannot have lasted more than a day; check the end time.",
                field="ended_at",
            )
        text: str | None
        source: SummarySource
        if agent_summary is not None:
            text, source = agent_summary, "agent"
        elif written is not None and written[0] == len(events):
            text, source = written[1], "summarizer"
        else:
            # No summarizer, or events arrived after its snapshot: the rules see them all.
            text, source = None, "rules"
        return build_summary(
            _call(row),
            _usage(row),
            events,
            outcome=outcome,
            ended_at=ended,
            pricing=self.settings.pricing,
            text=text,
            source=source,
        )

    async def _summarize(
        self, detail: CallDetail, *, outcome: str, ended_at: datetime | None
    ) -> tuple[int, str] | None:
        """(events seen, text) from the summarizer, or None if it fails or says nothing."""
        assert self.summarizer is not None
        now = datetime.now(UTC)
        end = ended_at or now
        if end.tzinfo is None:
            end = end.replace(tzinfo=self.settings.tz)
        draft = describe(
            flow=detail.flow,
            channel=detail.channel,
            caller_phone=detail.caller_phone,
            duration_seconds=max((end - detail.started_at).total_seconds(), 0.0),
            outcome=outcome,
            events=detail.events,
        )
        try:
            async with asyncio.timeout(self.summarizer_timeout_seconds):
                text = await self.summarizer.summarize(detail, draft=draft)
        except Exception:
            log.warning("summarizer failed; keeping the rules-based summary", exc_info=True)
            return None
        cleaned = (text or "").strip()[: v.MAX_SUMMARY]
        return (len(detail.events), cleaned) if cleaned else None

    # -- read -------------------------------------------------------------------------------

    async def get_call(self, call_id: str) -> CallDetail:
        """A call with its usage so far, its events in order, and its summary once ended."""
        call_id = check_id(call_id, field="call_id")
        with _storage():
            async with self.pool.acquire() as conn:
                row = await conn.fetchrow(_SELECT_CALL, call_id)
                if row is None:
                    raise NotFound("There is no call with that id.", call_id=call_id)
                events = [_event(r) for r in await conn.fetch(_SELECT_EVENTS, call_id)]
        result = row["result"]
        return CallDetail(
            **_call(row).model_dump(),
            usage=_usage(row),
            events=events,
            result=CallSummary.model_validate(result) if result is not None else None,
        )

    async def active_calls(self) -> int:
        """Calls started and not yet ended (the ``callmesh_active_calls`` gauge)."""
        with _storage():
            count: int = await self.pool.fetchval(_COUNT_ACTIVE)
        return count
