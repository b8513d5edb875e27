"""The benchmark runner's pure parts: cells handed out, results summarised, flags read."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from loadtest import httpload
from loadtest.bench import (
    DAYS,
    Cells,
    Latency,
    ScenarioResult,
    parse_args,
    ratios,
    table,
)

pytestmark = pytest.mark.unit


def test_cells_visit_every_unit_before_the_next_day_and_never_repeat_within_capacity() -> None:
    cells = Cells("BENCH-H", 3, date(2030, 1, 1))
    first = [cells.take() for _ in range(4)]
    assert first == [
        ("BENCH-H0001", "2030-01-01"),
        ("BENCH-H0002", "2030-01-01"),
        ("BENCH-H0003", "2030-01-01"),
        ("BENCH-H0001", "2030-01-02"),
    ]
    cells = Cells("BENCH-C", 2, date(2030, 1, 1))
    taken = [cells.take() for _ in range(cells.capacity)]
    assert len(set(taken)) == 2 * DAYS
    assert cells.take() == taken[0]  # past capacity it wraps (and the server answers 409)


def test_latency_summary_and_errors_count_every_answer_that_is_not_201() -> None:
    stats = httpload.Stats()
    for ms in range(1, 101):
        stats.add(ms / 1000, 201 if ms <= 98 else 409)
    lat = Latency.of(stats)
    assert lat.count == 100 and lat.p50_ms == 51.0 and lat.p99_ms == 100.0
    assert lat.statuses == {"201": 98, "409": 2}
    assert Latency.of(None).count == 0


def _result(side: str, scenario: str, per_s: float, p99: float) -> ScenarioResult:
    return ScenarioResult(
        side=side,
        scenario=scenario,
        seconds=1.0,
        connections=4,
        per_s=per_s,
        p50_ms=1.0,
        p99_ms=p99,
        errors=0,
        requests={"hold": Latency(10, 1.0, p99, {"201": 10})},
    )


def test_table_shows_targets_met_and_the_mesh_over_single_ratio() -> None:
    results = [
        _result("mesh", "holds", 1500.0, 40.0),
        _result("mesh", "bookings", 1200.0, 45.0),
        _result("single", "holds", 2000.0, 30.0),
        _result("single", "bookings", 1000.0, 60.0),
    ]
    assert ratios(results) == {"holds": 0.75, "bookings": 1.2}
    text = table(results).splitlines()
    mesh_holds = next(line for line in text if line.startswith("mesh holds"))
    single_bookings = next(line for line in text if line.startswith("single bookings"))
    assert " no " in mesh_holds and "0.75 ok" in mesh_holds  # 1,500/s misses 2,000/s
    assert " no " in single_bookings  # p99 60 ms misses 50 ms
    assert " yes " in next(line for line in text if line.startswith("single holds"))
    assert ratios(results[:2]) == {}  # one side only: no ratio


def test_flags_default_to_64_connections_and_refuse_too_many_units() -> None:
    args = parse_args([])
    assert args.connections == 64 and args.only is None and not args.json
    assert parse_args(["--only", "single", "--seconds", "2"]).seconds == 2.0
    with pytest.raises(SystemExit):
        parse_args(["--units", "10000"])


def test_httpload_reads_a_chunked_answer() -> None:
    async def read() -> httpload.Response:
        conn = httpload.Connection("http://127.0.0.1:1")
        conn.reader = asyncio.StreamReader()
        conn.reader.feed_data(
            b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n"
            b'3\r\n{"a\r\n5\r\n": 1}\r\n0\r\n\r\n'
        )
        return await conn._read_response()

    resp = asyncio.run(read())
    assert resp.status == 201 and resp.json() == {"a": 1}
