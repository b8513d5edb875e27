"""The words the calls service understands, each set in one place.

Flows, categories, outcomes and limits are checked in Python only (the tables store plain text),
so adding a flow or a category is a one-line change here and needs no migration. Analytics and
the agent import these sets rather than spelling them again.
"""

from __future__ import annotations

from typing import Final

# The conversation flows an agent runs; every call belongs to exactly one.
FLOWS: Final = ("appointment", "rental", "dealership", "intake")
CHANNELS: Final = ("phone", "web", "sip")

# What a caller may share, by category; intake dashboards count these.
CATEGORIES: Final = (
    "contact_details",
    "qualification",
    "vehicle",
    "equipment",
    "site",
    "schedule",
    "preference",
    "feedback",
    "notes",
)

# How one tool call ended, as the agent saw it.
TOOL_OUTCOMES: Final = (
    "ok",
    "error",
    "conflict",
    "not_found",
    "invalid",
    "timeout",
    "unavailable",
)

# Things that happened during a call that the outcome and the summary report.
MARKERS: Final = ("booked", "transferred", "callback_scheduled")

# How a call ended. "booked" counts towards conversion; so does any call with a booked marker.
OUTCOMES: Final = (
    "booked",
    "callback_scheduled",
    "transferred",
    "information_only",
    "abandoned",
    "failed",
)

# Per-event bounds: anything beyond these is a bug or an attack, not a phone call.
MAX_EVENTS_PER_BATCH: Final = 200
MAX_LATENCY_MS: Final = 600_000.0  # ten minutes
MAX_STT_SECONDS: Final = 4 * 3600.0
MAX_TOKENS: Final = 5_000_000
MAX_TTS_CHARACTERS: Final = 1_000_000
MAX_CALL_SECONDS: Final = 24 * 3600
MAX_TEXT: Final = 500  # a shared value, a reference
MAX_SUMMARY: Final = 4000
# A call record can be written a while after the fact (a worker that reconnects), not months.
MAX_START_AGE_DAYS: Final = 30
CLOCK_SKEW_SECONDS: Final = 300
