"""The benchmark runner end to end against the single-process app, briefly and with a few
connections: it counts what it sent, and every booking it reports confirmed is a row. No
timing is asserted."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import pytest

from loadtest import httpload
from loadtest.bench import (
    BOOK_PREFIX,
    Cells,
    cleanup_stores,
    drive,
    parse_args,
    prepare_stores,
    run_bench,
    single_server,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("require_servers")]

PG_ADMIN = os.environ.get("CALLMESH_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CALLMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _args(tmp_path: Path) -> list[str]:
    return [
        *("--only", "single", "--seconds", "1", "--warmup", "0", "--connections", "4"),
        *("--units", "20", "--single-port", str(_free_port()), "--log-dir", str(tmp_path)),
        *("--pg-admin", PG_ADMIN, "--redis-url", REDIS_URL),
    ]


def test_the_runner_counts_holds_and_bookings_and_the_invariant_holds(tmp_path: Path) -> None:
    report, results = run_bench(parse_args(_args(tmp_path)))
    assert [(r.side, r.scenario) for r in results] == [("single", "holds"), ("single", "bookings")]
    holds, bookings = results
    assert holds.requests["hold"].count > 0
    assert holds.per_s > 0 and holds.errors == 0
    confirmed = bookings.requests["confirm"].statuses.get("201", 0)
    assert confirmed > 0 and bookings.per_s > 0
    assert bookings.invariant == {
        "ok": True,
        "confirmed_answers": confirmed,
        "overlaps": 0,
        "missing_rows": 0,
    }
    assert report["invariant_ok"] and report["ratio_mesh_over_single"] == {}


def test_every_booking_the_runner_reports_confirmed_is_a_row(tmp_path: Path) -> None:
    args = parse_args(_args(tmp_path))
    stores = asyncio.run(prepare_stores(args))
    try:
        with single_server(stores, args.single_port, tmp_path / "single.log", {}):
            cells = Cells(BOOK_PREFIX, stores.units, date.today() + timedelta(days=2))
            result, booking_ids = httpload.run(
                drive(
                    f"http://127.0.0.1:{args.single_port}",
                    "bookings",
                    cells,
                    seconds=1.0,
                    connections=3,
                    headers={},
                )
            )
        assert booking_ids and len(booking_ids) == result.requests["confirm"].statuses["201"]

        async def rows(ids: list[uuid.UUID]) -> int:
            conn = await asyncpg.connect(stores.database_url)
            try:
                return int(
                    await conn.fetchval(
                        """SELECT count(*) FROM bookings b JOIN rentals r USING (booking_id)
                            WHERE b.booking_id = ANY($1::uuid[]) AND b.status = 'confirmed'""",
                        ids,
                    )
                )
            finally:
                await conn.close()

        assert asyncio.run(rows(booking_ids)) == len(set(booking_ids))
    finally:
        asyncio.run(cleanup_stores(stores, args.pg_admin))


def test_the_overload_flood_counts_shed_answers_socket_errors_and_health_after(
    tmp_path: Path,
) -> None:
    from loadtest import overload

    args = parse_args(_args(tmp_path))
    stores = asyncio.run(prepare_stores(args))
    # Two requests at a time admitted, forty connections: most of the flood is shed.
    tiny = {"CALLMESH_ADMISSION_MAX_IN_FLIGHT": "2"}
    try:
        with single_server(stores, args.single_port, tmp_path / "single.log", {}, tiny):
            cells = Cells("BENCH-H", stores.units, date.today() + timedelta(days=2))
            result = overload.OverloadResult(
                side="shedding on",
                client="straight back",
                admission_max_in_flight=2,
                connections=40,
                seconds=1.0,
            )
            httpload.run(
                overload.flood(
                    f"http://127.0.0.1:{args.single_port}",
                    cells.take,
                    result,
                    headers={},
                    warmup_seconds=0,
                )
            )
    finally:
        asyncio.run(cleanup_stores(stores, PG_ADMIN))
    assert result.requests == result.answered + result.socket_errors
    assert result.shed.get("503", 0) > 0
    assert result.held_per_s > 0
    assert result.socket_errors == 0
    assert (result.healthz_after, result.hold_after) == (200, 201)
    assert "shedding on" in overload.table([result])
