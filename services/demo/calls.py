"""Demo rows for the calls service: five past days of ended calls across the four flows.

The content is the same on every load (a seeded generator); only the dates move, so the last
few days always have something to show on the analytics dashboard. Each call is priced and
summarised by the same code as ``end_call`` and then counted into analytics. Phone numbers are
in the fictional 555-01xx range; booked calls carry no booking reference, because these calls
booked nothing that exists in ``bookings``.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from services.analytics import count_ended_calls
from services.calls.models import (
    Call,
    CallSummary,
    Event,
    Marker,
    SharedInfo,
    ToolEvent,
    Usage,
    UsageEvent,
)
from services.calls.service import insert_ended_calls
from services.calls.summary import build_summary
from services.settings import Pricing

DAYS = 5
CALLS_PER_DAY = (9, 14)
_SEED = 20260314
# Demo calls happen 14:00-21:00 UTC, the same calendar day in UTC and in US time zones.
_FIRST_HOUR, _LAST_HOUR = 14, 20
_UTC = ZoneInfo("UTC")

_NAMES = (
    "Dana Ruiz",
    "Sam Okafor",
    "Priya Natarajan",
    "Lee Chen",
    "Maria Rossi",
    "Tom Becker",
    "Aisha Bello",
    "Jonas Berg",
)
_FLOW_WEIGHTS = {"appointment": 4, "rental": 3, "dealership": 2, "intake": 2}

# Per flow: the tools an agent runs, in order, with a typical latency in ms, and how calls end.
_TOOLS = {
    "appointment": (("list_slots", 38), ("book_appointment", 55)),
    "rental": (("search_units", 42), ("place_hold", 24), ("confirm_hold", 61)),
    "dealership": (("search_units", 40), ("book_test_drive", 58)),
    "intake": (("lookup_customer", 18), ("schedule_callback", 33)),
}
_OUTCOMES = {
    "appointment": (("booked", 6), ("information_only", 2), ("callback_scheduled", 1)),
    "rental": (("booked", 4), ("transferred", 2), ("abandoned", 1)),
    "dealership": (("booked", 3), ("callback_scheduled", 2), ("information_only", 1)),
    "intake": (("information_only", 3), ("transferred", 2), ("callback_scheduled", 2)),
}
# What callers of each flow share, beyond their name: (category, key, possible values).
_SHARED = {
    "appointment": (
        ("schedule", "preferred_day", ("Monday", "Thursday", "Saturday morning")),
        ("notes", "reason", ("oil change", "brake noise", "annual check-up")),
    ),
    "rental": (
        ("equipment", "type", ("scissor lift", "mini excavator", "projector", "generator")),
        ("site", "city", ("Newark", "Hoboken", "Jersey City")),
        ("qualification", "certification", ("aerial lift operator", "none")),
    ),
    "dealership": (
        ("vehicle", "model", ("compact SUV", "hybrid sedan", "pickup")),
        ("preference", "colour", ("blue", "grey", "no preference")),
    ),
    "intake": (
        ("qualification", "budget", ("under 5k", "5-10k", "over 10k")),
        ("feedback", "heard_from", ("a friend", "the radio", "a web search")),
        ("notes", "request", ("quote for a fence", "warranty question", "billing question")),
    ),
}


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([w[0] for w in weighted], weights=[w[1] for w in weighted])[0]


def _events(
    rng: random.Random, flow: str, outcome: str, name: str, started_at: datetime, seconds: int
) -> list[Event]:
    def at(fraction: float) -> datetime:
        return started_at + timedelta(seconds=int(seconds * fraction))

    events: list[Event] = [
        SharedInfo(category="contact_details", key="name", value=name, at=at(0.1))
    ]
    for i, (category, key, values) in enumerate(_SHARED[flow]):
        events.append(
            SharedInfo(category=category, key=key, value=rng.choice(values), at=at(0.2 + 0.1 * i))
        )
    for i, (tool, typical_ms) in enumerate(_TOOLS[flow]):
        # A long tail: most tool calls near the typical latency, a few several times slower.
        latency = round(rng.lognormvariate(0, 0.35) * typical_ms, 1)
        tool_outcome = "ok"
        if outcome == "abandoned" and i == len(_TOOLS[flow]) - 1:
            continue
        if rng.random() < 0.08:
            tool_outcome = rng.choice(("conflict", "timeout"))
        events.append(
            ToolEvent(name=tool, latency_ms=latency, outcome=tool_outcome, at=at(0.5 + 0.1 * i))
        )
    turns = max(seconds // 15, 2)
    events.append(
        UsageEvent(
            stt_audio_seconds=round(seconds * rng.uniform(0.45, 0.6), 1),
            llm_prompt_tokens=turns * rng.randint(1400, 2200),
            llm_cached_tokens=turns * rng.randint(600, 1200),
            llm_completion_tokens=turns * rng.randint(50, 110),
            tts_characters=turns * rng.randint(90, 160),
            at=at(0.95),
        )
    )
    if outcome in ("booked", "transferred", "callback_scheduled"):
        events.append(Marker(marker=outcome, at=at(0.9)))
    return events


async def load(conn: asyncpg.Connection) -> None:
    rng = random.Random(_SEED)
    pricing = Pricing()
    today = datetime.now(UTC).date()
    flows = tuple(_FLOW_WEIGHTS.items())
    finished: list[tuple[CallSummary, list[Event]]] = []
    for days_ago in range(DAYS, 0, -1):
        day = today - timedelta(days=days_ago)
        for n in range(rng.randint(*CALLS_PER_DAY)):
            flow = _pick(rng, flows)
            outcome = _pick(rng, _OUTCOMES[flow])
            clock = time(rng.randint(_FIRST_HOUR, _LAST_HOUR), rng.randrange(0, 60, 5))
            started_at = datetime.combine(day, clock, UTC)
            seconds = rng.randint(70, 420) if outcome != "abandoned" else rng.randint(20, 60)
            ended_at = started_at + timedelta(seconds=seconds)
            call = Call(
                call_id=f"demo-{day.isoformat()}-{n:02d}",
                flow=flow,
                channel=rng.choice(("phone", "phone", "phone", "web")),
                caller_phone=f"+1201555{rng.randint(100, 199):04d}",
                started_at=started_at,
            )
            said = _events(rng, flow, outcome, rng.choice(_NAMES), started_at, seconds)
            spent = next(e for e in said if isinstance(e, UsageEvent))
            usage = Usage(**spent.model_dump(exclude={"kind", "at"}))
            result = build_summary(
                call, usage, said, outcome=outcome, ended_at=ended_at, pricing=pricing
            )
            finished.append((result, said))
    await insert_ended_calls(conn, calls=finished)
    first = datetime.combine(today - timedelta(days=DAYS), time(0), UTC)
    await count_ended_calls(conn, tz=_UTC, start=first, end=datetime.combine(today, time(0), UTC))
