"""The end-of-call summary, built from the events by rules; an LLM may replace the text.

The rules-based summary is deterministic: the same events always give the same sentences, so
tests can pin it and a replayed ``end_call`` gives the same answer. When a :class:`Summarizer`
is configured, its text replaces the sentences (the structured parts, tools and shared
information, are always computed here).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from services.calls.cost import price_call
from services.calls.models import (
    Call,
    CallDetail,
    CallSummary,
    Event,
    Marker,
    SharedInfo,
    SummarySource,
    ToolEvent,
    ToolUse,
    Usage,
)
from services.settings import Pricing

# Keys under contact_details that name the caller, best first.
_NAME_KEYS = ("name", "full_name", "first_name")
_OUTCOME_WORDS = {
    "booked": "booked",
    "callback_scheduled": "callback scheduled",
    "transferred": "transferred to a person",
    "information_only": "information only, nothing booked",
    "abandoned": "caller hung up",
    "failed": "the call failed",
}


class Summarizer(Protocol):
    """Writes a call's summary, typically with an LLM. Not configured by default.

    ``draft`` is the rules-based summary, a good prompt ingredient. Return plain text; an
    exception or an empty answer makes the service keep the draft.
    """

    async def summarize(self, call: CallDetail, *, draft: str) -> str: ...


def tool_uses(events: Sequence[Event]) -> list[ToolUse]:
    """Each tool's calls, outcomes and latency, in order of first use."""
    by_name: dict[str, list[ToolEvent]] = {}
    for event in events:
        if isinstance(event, ToolEvent):
            by_name.setdefault(event.name, []).append(event)
    uses = []
    for name, calls in by_name.items():
        outcomes: dict[str, int] = {}
        for call in calls:
            outcomes[call.outcome] = outcomes.get(call.outcome, 0) + 1
        latencies = [c.latency_ms for c in calls]
        uses.append(
            ToolUse(
                name=name,
                calls=len(calls),
                outcomes=outcomes,
                mean_latency_ms=round(sum(latencies) / len(latencies), 3),
                max_latency_ms=max(latencies),
            )
        )
    return uses


def shared_by_category(events: Sequence[Event]) -> dict[str, dict[str, str]]:
    """What the caller shared; a key said twice keeps its latest value (callers correct)."""
    shared: dict[str, dict[str, str]] = {}
    for event in events:
        if isinstance(event, SharedInfo):
            shared.setdefault(event.category, {})[event.key] = event.value
    return shared


def booking_references(events: Sequence[Event]) -> list[str]:
    references: list[str] = []
    for event in events:
        if isinstance(event, Marker) and event.marker == "booked" and event.reference:
            if event.reference not in references:
                references.append(event.reference)
    return references


def markers(events: Sequence[Event]) -> set[str]:
    return {event.marker for event in events if isinstance(event, Marker)}


def _duration(seconds: float) -> str:
    whole = round(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _caller(phone: str | None, shared: dict[str, dict[str, str]]) -> str:
    contact = shared.get("contact_details", {})
    name = next((contact[k] for k in _NAME_KEYS if contact.get(k)), None)
    if name and phone:
        return f"{name} ({phone})"
    return name or phone or "an unidentified caller"


def describe(
    *,
    flow: str,
    channel: str,
    caller_phone: str | None,
    duration_seconds: float,
    outcome: str,
    events: Sequence[Event],
) -> str:
    """The rules-based summary: who called, what they shared, tools used, how it ended."""
    shared = shared_by_category(events)
    article = "An" if flow[0] in "aeiou" else "A"
    sentences = [
        f"{article} {flow} call by {channel} from {_caller(caller_phone, shared)}, "
        f"{_duration(duration_seconds)}."
    ]
    if shared:
        parts = [
            f"{category.replace('_', ' ')} ("
            + ", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in items.items())
            + ")"
            for category, items in shared.items()
        ]
        sentences.append("Shared " + "; ".join(parts) + ".")
    else:
        sentences.append("Shared nothing on record.")
    uses = tool_uses(events)
    if uses:
        described = []
        for use in uses:
            text = use.name + (f" ×{use.calls}" if use.calls > 1 else "")
            failures = use.calls - use.outcomes.get("ok", 0)
            if failures:
                text += f" ({failures} not ok)"
            described.append(text)
        sentences.append("Tools: " + ", ".join(described) + ".")
    seen = markers(events)
    if "callback_scheduled" in seen and outcome != "callback_scheduled":
        sentences.append("A callback was scheduled.")
    if "transferred" in seen and outcome != "transferred":
        sentences.append("The call was transferred to a person.")
    ending = f"Outcome: {_OUTCOME_WORDS.get(outcome, outcome)}"
    references = booking_references(events)
    if references:
        label = "reference" if len(references) == 1 else "references"
        ending += f", {label} " + ", ".join(references)
    sentences.append(ending + ".")
    return " ".join(sentences)


def build_summary(
    call: Call,
    usage: Usage,
    events: Sequence[Event],
    *,
    outcome: str,
    ended_at: datetime,
    pricing: Pricing,
    text: str | None = None,
    source: SummarySource = "rules",
) -> CallSummary:
    """The ``end_call`` answer of a call, priced and summarised (pure; inputs already checked).

    Without ``text`` the rules-based :func:`describe` writes it. The answer is passed through
    JSON once, exactly as a replay reads it back from the database, so the first answer and
    every replay are identical.
    """
    duration = max((ended_at - call.started_at).total_seconds(), 0.0)
    if text is None:
        text = describe(
            flow=call.flow,
            channel=call.channel,
            caller_phone=call.caller_phone,
            duration_seconds=duration,
            outcome=outcome,
            events=events,
        )
        source = "rules"
    answer = CallSummary(
        call_id=call.call_id,
        flow=call.flow,
        channel=call.channel,
        caller_phone=call.caller_phone,
        started_at=call.started_at,
        ended_at=ended_at,
        outcome=outcome,
        booked=outcome == "booked" or "booked" in markers(events),
        booking_references=booking_references(events),
        duration_seconds=round(duration, 3),
        cost=price_call(usage, duration_seconds=duration, pricing=pricing),
        usage=usage,
        summary=text,
        summary_source=source,
        tools=tool_uses(events),
        shared=shared_by_category(events),
    )
    return CallSummary.model_validate(answer.model_dump(mode="json"))
