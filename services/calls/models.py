"""Requests and answers of the calls service; the answers are the HTTP response bodies.

Requests forbid unknown fields, so a misspelt ``latency`` is refused rather than silently
dropped. Their fields are deliberately loose (plain ``str``) where the service checks the value
against a vocabulary, so the caller hears a sentence naming the allowed words instead of a
pydantic error. Money is a ``Decimal`` in Python and a JSON number on the wire.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

# Exact in Python, a plain number in JSON (dashboards and agents want numbers, not strings).
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
# Who wrote a call's summary text: the agent itself, a configured Summarizer, or the rules.
SummarySource = Literal["agent", "summarizer", "rules"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartCall(_Request):
    """A call an agent has picked up. Omit ``call_id`` to have one made up."""

    call_id: str | None = None
    flow: str
    caller_phone: str | None = None
    channel: str = "phone"
    started_at: datetime | None = None


class EndCall(_Request):
    """How a call ended. ``summary`` is the agent's own, if it wrote one."""

    outcome: str
    ended_at: datetime | None = None
    summary: str | None = None


class ToolEvent(_Request):
    """One function tool call, with its latency as the agent measured it."""

    kind: Literal["tool"] = "tool"
    name: str
    latency_ms: float
    outcome: str = "ok"
    at: datetime | None = None


class SharedInfo(_Request):
    """Something the caller told the agent, filed under a category."""

    kind: Literal["shared"] = "shared"
    category: str
    key: str
    value: str
    at: datetime | None = None


class UsageEvent(_Request):
    """Usage since the last usage event; the service adds these up."""

    kind: Literal["usage"] = "usage"
    stt_audio_seconds: float = 0.0
    llm_prompt_tokens: int = 0
    # Part of llm_prompt_tokens that the provider served from its prompt cache.
    llm_cached_tokens: int = 0
    llm_completion_tokens: int = 0
    tts_characters: int = 0
    at: datetime | None = None


class Marker(_Request):
    """A milestone: a booking made (with its reference), a transfer, a callback scheduled."""

    kind: Literal["marker"] = "marker"
    marker: str
    reference: str | None = None
    at: datetime | None = None


Event = Annotated[ToolEvent | SharedInfo | UsageEvent | Marker, Field(discriminator="kind")]


class Usage(BaseModel):
    """What a call consumed so far, summed over its usage events."""

    stt_audio_seconds: float = 0.0
    llm_prompt_tokens: int = 0
    llm_cached_tokens: int = 0
    llm_completion_tokens: int = 0
    tts_characters: int = 0


class CostComponents(BaseModel):
    stt: Money
    llm_input: Money
    llm_cached_input: Money
    llm_output: Money
    tts: Money
    call_minutes: Money


class Cost(BaseModel):
    components: CostComponents
    total_usd: Money


class ToolUse(BaseModel):
    """One tool's use during a call, in order of first use."""

    name: str
    calls: int
    outcomes: dict[str, int]
    mean_latency_ms: float
    max_latency_ms: float


class Call(BaseModel):
    call_id: str
    flow: str
    channel: str
    caller_phone: str | None
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str | None = None


class CallSummary(BaseModel):
    """The answer to ``end_call``: what happened and what it cost. Analytics reads this."""

    call_id: str
    flow: str
    channel: str
    caller_phone: str | None
    started_at: datetime
    ended_at: datetime
    outcome: str
    booked: bool
    booking_references: list[str]
    duration_seconds: float
    cost: Cost
    usage: Usage
    summary: str
    summary_source: SummarySource
    tools: list[ToolUse]
    shared: dict[str, dict[str, str]]
    # True when this answer repeats an earlier end of the same call: counters must not count
    # it twice.
    replayed: bool = False


class EventsRecorded(BaseModel):
    call_id: str
    recorded: int
    usage: Usage


class CallDetail(Call):
    """A call with everything recorded about it, oldest event first."""

    usage: Usage
    events: list[Event]
    result: CallSummary | None = None
