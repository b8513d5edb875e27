"""Answers of the analytics service; they are the JSON bodies of ``GET /analytics/summary``."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel


class CostPerCall(BaseModel):
    """USD per ended call: the mean, and the median and 95th percentile (interpolated)."""

    mean: float
    p50: float
    p95: float


class ToolLatency(BaseModel):
    """Latency of one tool as agents measured it, in milliseconds (interpolated percentiles)."""

    calls: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


class SharedCount(BaseModel):
    """Items shared in a category, and how many calls shared at least one."""

    items: int
    calls: int


class Stats(BaseModel):
    """Ended calls of one slice (a day, a flow, both, or the whole window)."""

    calls: int = 0
    outcomes: dict[str, int] = {}
    booked: int = 0
    # Calls that booked over all calls, 0..1; 0 when there were no calls.
    conversion: float = 0.0
    cost_total_usd: float = 0.0
    cost_per_call: CostPerCall | None = None
    tool_latency_ms: dict[str, ToolLatency] = {}
    shared: dict[str, SharedCount] = {}


class DayStats(BaseModel):
    day: date
    total: Stats
    flows: dict[str, Stats]


class AnalyticsSummary(BaseModel):
    """Calls that started from ``since`` to ``until`` (both included, business-zone days)."""

    since: date
    until: date
    timezone: str
    flow: str | None
    total: Stats
    flows: dict[str, Stats]
    days: list[DayStats]


class CallCounted(BaseModel):
    """What ``record_call_ended`` did: ``counted`` is false when the call was already in."""

    call_id: str
    counted: bool
