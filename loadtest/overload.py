"""The overload run of :mod:`loadtest.bench` (issue 7): far more connections than the mesh can
serve, each sending holds back to back, once with load shedding off and once with it on, in one
run, against the same stores.

    python -m loadtest.bench --overload --connections 1000 --seconds 20

For each side: p50/p99 of every answered request and of the holds answered 201, how many were
shed and with which status (503 past a replica's admission limit, 429 past a rate limit), the
socket errors (a request that got no HTTP answer), and ``/healthz`` and one hold right after
the load stops. Two kinds of client: one that comes straight back after a 503 or 429 (a closed loop
with no pause, the worst case a shedding edge has to survive), and one that honours
``Retry-After`` as a well-behaved agent does (the wait is not counted as latency). With
shedding off nothing is shed, so only the first kind is run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from loadtest import httpload

# Issue 7's goal.
TARGET_P99_S = 2.0


@dataclass
class OverloadResult:
    side: str  # "shedding off" | "shedding on"
    client: str  # "straight back" | "Retry-After"
    admission_max_in_flight: int | None  # None: the mesh's default
    connections: int
    seconds: float
    requests: int = 0
    answered: int = 0
    p50_ms: float = float("nan")  # of answered requests, whatever their status
    p99_ms: float = float("nan")
    held_per_s: float = 0.0
    held_p99_ms: float = float("nan")  # of holds answered 201
    shed: dict[str, int] = field(default_factory=dict)  # 503/429 answers
    other: dict[str, int] = field(default_factory=dict)  # every other non-201 answer
    socket_errors: int = 0
    healthz_after: int = 0
    healthz_after_ms: float = float("nan")
    hold_after: int = 0
    client_cores: float = 0.0
    server_cores: float = 0.0
    machine_cores: float = 0.0
    top_processes: list[tuple[str, float]] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return (
            self.socket_errors == 0
            and self.p99_ms <= TARGET_P99_S * 1000
            and (self.healthz_after == 200)
        )


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 1)


async def flood(
    base_url: str,
    take_cell: Any,
    result: OverloadResult,
    *,
    headers: dict[str, str],
    warmup_seconds: float,
    cpu: Any = None,
) -> None:
    """Holds back to back on every connection; fills ``result`` from the measured window."""
    by_status: dict[int, list[float]] = {}
    honour_retry_after = result.client == "Retry-After"

    async def hold(conn: httpload.Connection, rec: httpload.Recorder, i: int) -> None:
        unit, day = take_cell()
        body = {"unit_id": unit, "start": day, "call_id": f"overload-{i // 1_000_000}"}
        t0 = time.perf_counter()
        wait = 0.0
        try:
            resp = await conn.request("POST", "/inventory/holds", body)
            status = resp.status
            if honour_retry_after and status in (429, 503):
                wait = float(resp.headers.get("retry-after", "0") or 0)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            await conn.close()  # the next request reconnects
            status = httpload.NETWORK_ERROR
        by_status.setdefault(status, []).append(time.perf_counter() - t0)
        if wait > 0:
            await asyncio.sleep(wait)

    if warmup_seconds > 0:
        await httpload.run_closed_loop(
            base_url,
            hold,
            connections=result.connections,
            duration_seconds=warmup_seconds,
            headers=headers,
        )
        by_status.clear()
    if cpu is not None:
        cpu.start()
    _, elapsed = await httpload.run_closed_loop(
        base_url,
        hold,
        connections=result.connections,
        duration_seconds=result.seconds,
        headers=headers,
    )
    if cpu is not None:
        cpu.stop(result)
    answered = [s for status, ls in by_status.items() if status for s in ls]
    result.seconds = round(elapsed, 2)
    result.requests = sum(len(v) for v in by_status.values())
    result.answered = len(answered)
    result.p50_ms, result.p99_ms = _pct(answered, 50), _pct(answered, 99)
    held = by_status.get(201, [])
    result.held_per_s = round(len(held) / elapsed, 1)
    result.held_p99_ms = _pct(held, 99)
    result.shed = {str(s): len(by_status[s]) for s in (503, 429) if s in by_status}
    result.other = {
        str(s): len(v) for s, v in sorted(by_status.items()) if s not in (0, 201, 429, 503)
    }
    result.socket_errors = len(by_status.get(httpload.NETWORK_ERROR, []))
    await _after(base_url, take_cell, result, headers)


async def _after(
    base_url: str, take_cell: Any, result: OverloadResult, headers: dict[str, str]
) -> None:
    """The first /healthz and hold once the flood has stopped: is the mesh itself again?"""
    conn = httpload.Connection(base_url, headers)
    try:
        t0 = time.perf_counter()
        health = await conn.request("GET", "/healthz")
        result.healthz_after_ms = round((time.perf_counter() - t0) * 1000, 1)
        result.healthz_after = health.status
        unit, day = take_cell()
        held = await conn.request(
            "POST", "/inventory/holds", {"unit_id": unit, "start": day, "call_id": "after"}
        )
        result.hold_after = held.status
    except (OSError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        await conn.close()


def table(results: list[OverloadResult]) -> str:
    head = (
        f"{'side':14s} {'client':13s} {'conns':>5s} {'answered':>8s} {'p50 ms':>7s} {'p99 ms':>7s} "
        f"{'201/s':>7s} {'201 p99':>7s} {'shed':>14s} {'other':>10s} {'sock err':>8s} "
        f"{'healthz after':>13s} {'hold after':>10s} {'cores srv/mach':>14s} {'met':>4s}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        shed = " ".join(f"{k}:{v}" for k, v in r.shed.items()) or "0"
        other = " ".join(f"{k}:{v}" for k, v in r.other.items()) or "0"
        lines.append(
            f"{r.side:14s} {r.client:13s} {r.connections:5d} {r.answered:8d} "
            f"{r.p50_ms:7.1f} {r.p99_ms:7.1f} "
            f"{r.held_per_s:7.1f} {r.held_p99_ms:7.1f} {shed:>14s} {other:>10s} "
            f"{r.socket_errors:8d} {f'{r.healthz_after} {r.healthz_after_ms} ms':>13s} "
            f"{r.hold_after:10d} {f'{r.server_cores}/{r.machine_cores}':>14s} "
            f"{'yes' if r.met else 'no':>4s}"
        )
    return "\n".join(lines)
