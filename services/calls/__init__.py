"""Calls (summary and cost): a call's start, its events and usage, and its priced summary."""

from services.calls.cost import USD_QUANTUM, price_call
from services.calls.models import (
    Call,
    CallDetail,
    CallSummary,
    Cost,
    CostComponents,
    EndCall,
    Event,
    EventsRecorded,
    Marker,
    SharedInfo,
    StartCall,
    ToolEvent,
    ToolUse,
    Usage,
    UsageEvent,
)
from services.calls.service import CallAlreadyEnded, CallsService
from services.calls.summary import Summarizer
from services.calls.vocabulary import CATEGORIES, CHANNELS, FLOWS, MARKERS, OUTCOMES, TOOL_OUTCOMES

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "FLOWS",
    "MARKERS",
    "OUTCOMES",
    "TOOL_OUTCOMES",
    "USD_QUANTUM",
    "Call",
    "CallAlreadyEnded",
    "CallDetail",
    "CallSummary",
    "CallsService",
    "Cost",
    "CostComponents",
    "EndCall",
    "Event",
    "EventsRecorded",
    "Marker",
    "SharedInfo",
    "StartCall",
    "Summarizer",
    "ToolEvent",
    "ToolUse",
    "Usage",
    "UsageEvent",
    "price_call",
]
