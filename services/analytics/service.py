"""Analytics over ended calls: counts, outcomes, conversion, cost and tool latency.

Ending a call feeds analytics: the Serve layer hands the ``end_call`` answer to
:meth:`AnalyticsService.record_call_ended`, which counts the call once, whatever the number of
retries. Only the call id is taken from that answer; what is counted is the call as stored by
the calls service (its outcome, booked flag and cost), so a stale or tampered dict cannot skew
the numbers. :meth:`catch_up` counts ended calls that were never fed in (a handle call lost on
the way), with the same once-only guarantee.

Two tables hold what was fed in, written by one statement so they always agree:
``analytics_calls`` (one row per call: its day, flow, outcome, booked flag and cost) and the
``analytics_daily`` rollup per (day, flow, outcome). :meth:`summary` reads counts and money
from the rollup and computes percentiles in SQL (``percentile_cont``, linear interpolation)
from ``analytics_calls`` and the calls' tool and shared-information events. A call belongs to
the business-zone day on which it started.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from services.analytics.models import (
    AnalyticsSummary,
    CallCounted,
    CostPerCall,
    DayStats,
    SharedCount,
    Stats,
    ToolLatency,
)
from services.calls.events import one_of
from services.calls.vocabulary import FLOWS
from services.errors import Conflict, InvalidInput, NotFound
from services.settings import Settings
from services.storage import store_errors
from services.validation import check_id, parse_date

MAX_WINDOW_DAYS = 366
_USD = Decimal("0.000001")

# Count one ended call (or none, if it was already counted) into both analytics tables.
_COUNT_CALL = """
WITH counted AS (
    INSERT INTO analytics_calls (call_id, day, flow, outcome, booked, cost_usd)
    SELECT call_id, (started_at AT TIME ZONE $2)::date, flow, outcome, booked, cost_usd
      FROM calls
     WHERE call_id = $1 AND ended_at IS NOT NULL
    ON CONFLICT (call_id) DO NOTHING
    RETURNING day, flow, outcome, booked, cost_usd
), rolled_up AS (
    INSERT INTO analytics_daily AS d (day, flow, outcome, calls, booked, cost_usd)
    SELECT day, flow, outcome, count(*), count(*) FILTER (WHERE booked), sum(cost_usd)
      FROM counted
     GROUP BY day, flow, outcome
    ON CONFLICT (day, flow, outcome) DO UPDATE
       SET calls = d.calls + EXCLUDED.calls,
           booked = d.booked + EXCLUDED.booked,
           cost_usd = d.cost_usd + EXCLUDED.cost_usd
)
SELECT count(*) FROM counted"""

# The same for every ended call that started in [$2, $3) and was not counted yet.
_CATCH_UP = """
WITH counted AS (
    INSERT INTO analytics_calls (call_id, day, flow, outcome, booked, cost_usd)
    SELECT c.call_id, (c.started_at AT TIME ZONE $1)::date, c.flow, c.outcome, c.booked,
           c.cost_usd
      FROM calls c
     WHERE c.ended_at IS NOT NULL AND c.started_at >= $2 AND c.started_at < $3
       AND NOT EXISTS (SELECT 1 FROM analytics_calls a WHERE a.call_id = c.call_id)
    ON CONFLICT (call_id) DO NOTHING
    RETURNING day, flow, outcome, booked, cost_usd
), rolled_up AS (
    INSERT INTO analytics_daily AS d (day, flow, outcome, calls, booked, cost_usd)
    SELECT day, flow, outcome, count(*), count(*) FILTER (WHERE booked), sum(cost_usd)
      FROM counted
     GROUP BY day, flow, outcome
    ON CONFLICT (day, flow, outcome) DO UPDATE
       SET calls = d.calls + EXCLUDED.calls,
           booked = d.booked + EXCLUDED.booked,
           cost_usd = d.cost_usd + EXCLUDED.cost_usd
)
SELECT count(*) FROM counted"""

_CALL_STATE = """
SELECT c.ended_at IS NOT NULL AS ended,
       EXISTS (SELECT 1 FROM analytics_calls a WHERE a.call_id = c.call_id) AS counted
  FROM calls c WHERE c.call_id = $1"""

# In every query below $1..$2 is the window of days (both included) and $3 the flow or NULL.
# A NULL day or flow in a result row marks a total over that dimension (grouping sets); the
# columns themselves are NOT NULL, so there is no ambiguity.
_DAILY_ROLLUP = """
SELECT day, flow, outcome, calls, booked, cost_usd
  FROM analytics_daily
 WHERE day BETWEEN $1 AND $2 AND ($3::text IS NULL OR flow = $3)"""

_COST_PERCENTILES = """
SELECT day, flow,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY cost_usd::float8) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY cost_usd::float8) AS p95
  FROM analytics_calls
 WHERE day BETWEEN $1 AND $2 AND ($3::text IS NULL OR flow = $3)
 GROUP BY GROUPING SETS ((day, flow), (day), (flow), ())
-- The empty grouping set makes one row even when no call is in the window: not a slice.
HAVING count(*) > 0"""

_TOOL_LATENCY = """
SELECT a.day, a.flow, e.tool, count(*) AS calls,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY e.latency_ms) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY e.latency_ms) AS p95,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY e.latency_ms) AS p99
  FROM analytics_calls a
  JOIN call_events e ON e.call_id = a.call_id AND e.kind = 'tool'
 WHERE a.day BETWEEN $1 AND $2 AND ($3::text IS NULL OR a.flow = $3)
 GROUP BY GROUPING SETS ((a.day, a.flow, e.tool), (a.day, e.tool), (a.flow, e.tool), (e.tool))"""

_SHARED_COUNTS = """
SELECT a.day, a.flow, e.category, count(*) AS items, count(DISTINCT e.call_id) AS calls
  FROM analytics_calls a
  JOIN call_events e ON e.call_id = a.call_id AND e.kind = 'shared'
 WHERE a.day BETWEEN $1 AND $2 AND ($3::text IS NULL OR a.flow = $3)
 GROUP BY GROUPING SETS ((a.day, a.flow, e.category), (a.day, e.category),
                         (a.flow, e.category), (e.category))"""

_Slice = tuple[date | None, str | None]  # (day, flow); None means "all"


@contextmanager
def _storage() -> Iterator[None]:
    with store_errors("Analytics cannot be reached for a moment; please try again shortly."):
        yield


async def count_ended_calls(
    conn: asyncpg.Connection, *, tz: ZoneInfo, start: datetime, end: datetime
) -> int:
    """Count into analytics every ended call started in [start, end) not counted yet."""
    counted: int = await conn.fetchval(_CATCH_UP, tz.key, start, end)
    return counted


def _usd(value: Decimal | float) -> float:
    return float(Decimal(str(value)).quantize(_USD, rounding=ROUND_HALF_UP))


class _Totals:
    """Counts and money of one slice, summed from rollup rows."""

    def __init__(self) -> None:
        self.calls = 0
        self.booked = 0
        self.cost = Decimal(0)
        self.outcomes: dict[str, int] = {}

    def add(self, row: asyncpg.Record) -> None:
        self.calls += row["calls"]
        self.booked += row["booked"]
        self.cost += row["cost_usd"]
        self.outcomes[row["outcome"]] = self.outcomes.get(row["outcome"], 0) + row["calls"]


class AnalyticsService:
    """Per-flow, per-day numbers over ended calls.

    ``settings`` gives the business time zone that decides a call's day; without settings,
    days are UTC days.
    """

    def __init__(self, *, pool: asyncpg.Pool, settings: Settings | None = None) -> None:
        self.pool = pool
        self.tz = settings.tz if settings is not None else ZoneInfo("UTC")

    # -- feeding ----------------------------------------------------------------------------

    async def record_call_ended(self, summary: Mapping[str, Any] | Any) -> CallCounted:
        """Count an ended call once: the ``end_call`` answer (a dict or the model) goes in.

        Repeating it is harmless (``counted`` comes back false). A call that is unknown or not
        ended yet is refused, so a premature feed cannot count half a call.
        """
        raw_id = summary.get("call_id") if isinstance(summary, Mapping) else None
        if raw_id is None:
            raw_id = getattr(summary, "call_id", None)
        call_id = check_id(raw_id, field="call_id")
        with _storage():
            async with self.pool.acquire() as conn:
                counted = await conn.fetchval(_COUNT_CALL, call_id, self.tz.key)
                if counted:
                    return CallCounted(call_id=call_id, counted=True)
                state = await conn.fetchrow(_CALL_STATE, call_id)
        if state is None:
            raise NotFound("There is no call with that id.", call_id=call_id)
        if not state["ended"]:
            raise Conflict("That call has not ended yet; end it first.", call_id=call_id)
        return CallCounted(call_id=call_id, counted=False)

    async def catch_up(self, since: date | str, until: date | str) -> int:
        """Count the ended calls of the window that were never fed in; returns how many."""
        first, last = self._window(since, until)
        start, end = self._bounds(first, last)
        with _storage():
            async with self.pool.acquire() as conn:
                return await count_ended_calls(conn, tz=self.tz, start=start, end=end)

    # -- reading ----------------------------------------------------------------------------

    async def summary(
        self, since: date | str, until: date | str, flow: str | None = None
    ) -> AnalyticsSummary:
        """Calls, outcomes, conversion, cost per call and tool latency, per flow and per day.

        ``since`` and ``until`` are business-zone days, both included, at most a year apart.
        """
        first, last = self._window(since, until)
        if flow is not None:
            flow = one_of(flow, FLOWS, field="flow")
        with _storage():
            async with self.pool.acquire() as conn:
                rollup = await conn.fetch(_DAILY_ROLLUP, first, last, flow)
                costs = await conn.fetch(_COST_PERCENTILES, first, last, flow)
                tools = await conn.fetch(_TOOL_LATENCY, first, last, flow)
                shared = await conn.fetch(_SHARED_COUNTS, first, last, flow)

        totals: dict[_Slice, _Totals] = {}
        for row in rollup:
            for key in ((row["day"], row["flow"]), (row["day"], None), (None, row["flow"])):
                totals.setdefault(key, _Totals()).add(row)
            totals.setdefault((None, None), _Totals()).add(row)

        stats: dict[_Slice, Stats] = {}
        for key, t in totals.items():
            stats[key] = Stats(
                calls=t.calls,
                outcomes=dict(sorted(t.outcomes.items())),
                booked=t.booked,
                conversion=round(t.booked / t.calls, 4) if t.calls else 0.0,
                cost_total_usd=_usd(t.cost),
            )
        for row in costs:
            key = (row["day"], row["flow"])
            if key not in totals:
                continue  # the empty grouping set's row of a window with no calls
            t = totals[key]
            stats[key].cost_per_call = CostPerCall(
                mean=_usd(t.cost / t.calls), p50=_usd(row["p50"]), p95=_usd(row["p95"])
            )
        for row in tools:
            stats[(row["day"], row["flow"])].tool_latency_ms[row["tool"]] = ToolLatency(
                calls=row["calls"],
                p50_ms=round(row["p50"], 3),
                p95_ms=round(row["p95"], 3),
                p99_ms=round(row["p99"], 3),
            )
        for row in shared:
            stats[(row["day"], row["flow"])].shared[row["category"]] = SharedCount(
                items=row["items"], calls=row["calls"]
            )

        flows = sorted({f for (d, f) in stats if d is None and f is not None})
        days = []
        day = first
        while day <= last:
            day_flows = sorted(f for (d, f) in stats if d == day and f is not None)
            days.append(
                DayStats(
                    day=day,
                    total=stats.get((day, None), Stats()),
                    flows={f: stats[(day, f)] for f in day_flows},
                )
            )
            day += timedelta(days=1)
        return AnalyticsSummary(
            since=first,
            until=last,
            timezone=self.tz.key,
            flow=flow,
            total=stats.get((None, None), Stats()),
            flows={f: stats[(None, f)] for f in flows},
            days=days,
        )

    # -- windows ----------------------------------------------------------------------------

    @staticmethod
    def _window(since: date | str, until: date | str) -> tuple[date, date]:
        first = parse_date(since, field="since")
        last = parse_date(until, field="until")
        if last < first:
            raise InvalidInput("The until date must not be before the since date.", field="until")
        if (last - first).days + 1 > MAX_WINDOW_DAYS:
            raise InvalidInput(f"Ask for at most {MAX_WINDOW_DAYS} days at a time.", field="until")
        return first, last

    def _bounds(self, first: date, last: date) -> tuple[datetime, datetime]:
        """[start of the first day, start of the day after the last) in the business zone."""
        start = datetime.combine(first, time(0), self.tz).astimezone(UTC)
        end = datetime.combine(last + timedelta(days=1), time(0), self.tz).astimezone(UTC)
        return start, end
