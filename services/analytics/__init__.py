"""Analytics: calls, outcomes, conversion, cost per call and tool latency, per flow and day."""

from services.analytics.models import (
    AnalyticsSummary,
    CallCounted,
    CostPerCall,
    DayStats,
    SharedCount,
    Stats,
    ToolLatency,
)
from services.analytics.service import MAX_WINDOW_DAYS, AnalyticsService, count_ended_calls

__all__ = [
    "MAX_WINDOW_DAYS",
    "AnalyticsService",
    "AnalyticsSummary",
    "CallCounted",
    "CostPerCall",
    "DayStats",
    "SharedCount",
    "Stats",
    "ToolLatency",
    "count_ended_calls",
]
