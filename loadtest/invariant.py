"""The invariant, checked after every load test.

No two confirmed bookings of one resource overlap, and every confirmed answer given to a caller
is a row in PostgreSQL. The load generators append each confirmed answer they received to a
ledger (JSON lines with at least ``booking_id``); this module checks the ledger against the
database and exits non-zero on any violation.

    python -m loadtest.invariant --database-url postgresql://... --ledger ledger.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

OVERLAPS_SQL = """
SELECT a.resource_id, a.booking_id AS first, b.booking_id AS second
  FROM bookings a
  JOIN bookings b
    ON a.resource_id = b.resource_id
   AND a.booking_id < b.booking_id
   AND a.during && b.during
 WHERE a.status = 'confirmed' AND b.status = 'confirmed'
 LIMIT 100
"""

CONFIRMED_AMONG_SQL = """
SELECT booking_id FROM bookings WHERE booking_id = ANY($1::uuid[]) AND status = 'confirmed'
"""


@dataclass
class InvariantReport:
    confirmed_answers: int = 0
    overlaps: list[tuple[str, str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    malformed_lines: int = 0

    @property
    def ok(self) -> bool:
        return not self.overlaps and not self.missing and not self.malformed_lines

    def lines(self) -> list[str]:
        out = [
            f"confirmed answers in ledger: {self.confirmed_answers}",
            f"overlapping confirmed bookings: {len(self.overlaps)}",
            f"confirmed answers with no confirmed row: {len(self.missing)}",
            f"malformed ledger lines: {self.malformed_lines}",
        ]
        out += [f"  overlap on {r}: {a} and {b}" for r, a, b in self.overlaps[:10]]
        out += [f"  missing row for booking {b}" for b in self.missing[:10]]
        out.append("invariant holds" if self.ok else "INVARIANT VIOLATED")
        return out


def read_ledger(paths: list[Path]) -> tuple[list[uuid.UUID], int]:
    ids: list[uuid.UUID] = []
    malformed = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                ids.append(uuid.UUID(str(json.loads(line)["booking_id"])))
            except (ValueError, KeyError, TypeError):
                malformed += 1
    return ids, malformed


async def check(conn: asyncpg.Connection, booking_ids: list[uuid.UUID]) -> InvariantReport:
    report = InvariantReport(confirmed_answers=len(booking_ids))
    report.overlaps = [
        (r["resource_id"], str(r["first"]), str(r["second"]))
        for r in await conn.fetch(OVERLAPS_SQL)
    ]
    found: set[uuid.UUID] = set()
    for i in range(0, len(booking_ids), 5000):
        chunk = booking_ids[i : i + 5000]
        found.update(r["booking_id"] for r in await conn.fetch(CONFIRMED_AMONG_SQL, chunk))
    report.missing = [str(b) for b in booking_ids if b not in found]
    return report


async def _main(database_url: str, ledgers: list[Path]) -> int:
    ids, malformed = read_ledger(ledgers)
    conn = await asyncpg.connect(database_url)
    try:
        report = await check(conn, ids)
    finally:
        await conn.close()
    report.malformed_lines = malformed
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--ledger", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    return asyncio.run(_main(args.database_url, args.ledger))


if __name__ == "__main__":
    sys.exit(main())
