"""First answers are kept for the retention period and then purged, oldest first, in
batches (real PostgreSQL, both backends)."""

from __future__ import annotations

import pytest

from services import idempotency

pytestmark = pytest.mark.integration


async def _record(pool, scope: str, key: str, age_days: float) -> None:
    await pool.execute(
        """INSERT INTO idempotency_keys (scope, key, request_hash, response, created_at)
           VALUES ($1, $2, 'h', '{}'::jsonb, now() - make_interval(secs => $3))""",
        scope,
        key,
        age_days * 86_400,
    )


async def test_records_past_retention_are_purged_in_batches_and_the_rest_kept(fresh):
    pool = fresh.pool
    before = await pool.fetchval("SELECT count(*) FROM idempotency_keys")
    for n in range(7):
        await _record(pool, "inventory.confirm", f"old-{n}", 31 + n)
    await _record(pool, "scheduling.test_drive.booked", "old-drive", 45)
    await _record(pool, "inventory.confirm", "recent", 29)
    await _record(pool, "scheduling.book", "today", 0)

    purged = await idempotency.purge(pool, older_than_days=30, batch=3)

    assert purged == 8  # three batches: 3 + 3 + 2
    keys = {r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys")}
    assert {"recent", "today"} <= keys
    assert not any(k.startswith("old") for k in keys)
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys") == before + 2
    assert await idempotency.purge(pool, older_than_days=30) == 0
