"""The load-test invariant checker finds what it is meant to find, on a real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncpg.types import Range

from loadtest.invariant import check, read_ledger

pytestmark = pytest.mark.integration

T0 = datetime(2030, 1, 1, 9, tzinfo=UTC)


async def _insert(
    conn, resource: str, start: datetime, hours: int, status="confirmed"
) -> uuid.UUID:
    booking_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO bookings (booking_id, resource_id, during, kind, status, reference)
           VALUES ($1, $2, $3, 'rental', $4, $5)""",
        booking_id,
        resource,
        Range(start, start + timedelta(hours=hours)),
        status,
        uuid.uuid4().hex[:8],
    )
    return booking_id


async def test_clean_data_passes_and_missing_answers_are_reported(fresh):
    async with fresh.pool.acquire() as conn, conn.transaction():
        a = await _insert(conn, "INV-1", T0, 2)
        b = await _insert(conn, "INV-1", T0 + timedelta(hours=2), 2)  # touching, not overlapping
        c = await _insert(conn, "INV-1", T0, 2, status="cancelled")
        report = await check(conn, [a, b])
        assert report.ok and report.confirmed_answers == 2
        ghost = uuid.uuid4()
        report = await check(conn, [a, ghost, c])
        assert not report.ok
        assert set(report.missing) == {str(ghost), str(c)}  # a cancelled row is not a confirmation


async def test_overlaps_are_reported_when_the_constraint_is_gone(fresh):
    # The constraint makes an overlap impossible; drop it inside a transaction that is rolled
    # back, to prove the checker would see one.
    conn = await fresh.pool.acquire()
    try:
        tr = conn.transaction()
        await tr.start()
        await conn.execute("ALTER TABLE bookings DROP CONSTRAINT bookings_no_overlap")
        a = await _insert(conn, "INV-2", T0, 3)
        b = await _insert(conn, "INV-2", T0 + timedelta(hours=1), 3)
        report = await check(conn, [a, b])
        assert [o[0] for o in report.overlaps] == ["INV-2"]
        assert not report.ok
        assert "INVARIANT VIOLATED" in report.lines()[-1]
        await tr.rollback()
    finally:
        await fresh.pool.release(conn)


def test_ledger_reading_counts_malformed_lines(tmp_path: Path) -> None:
    good = uuid.uuid4()
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(
        json.dumps({"booking_id": str(good), "reference": "ACD347"})
        + "\n"
        + "not json\n"
        + json.dumps({"reference": "x"})
        + "\n\n"
    )
    ids, malformed = read_ledger([ledger, tmp_path / "absent.jsonl"])
    assert ids == [good] and malformed == 2
