"""The migration runner (services/db.py ``migrate``) on real PostgreSQL, both kinds of backend.

Each test makes a database of its own on the backend's server, so the runner starts from
nothing, and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from services import db
from services.db import create_pool, migrate, migration_files

pytestmark = pytest.mark.integration

VERSIONS = [version for version, _ in migration_files()]


@pytest.fixture
async def blank_dsn(stores) -> AsyncIterator[str]:
    """The DSN of a new, empty database on the same server as the session's."""
    name = f"callmesh_migrate_{secrets.token_hex(4)}"
    await stores.pool.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(stores.database_url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    await stores.pool.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _recorded(pool: asyncpg.Pool) -> list[tuple[str, object]]:
    rows = await pool.fetch("SELECT version, applied_at FROM schema_migrations ORDER BY version")
    return [(r["version"], r["applied_at"]) for r in rows]


async def _advisory_locks_held(pool: asyncpg.Pool) -> int:
    return await pool.fetchval(
        """SELECT count(*) FROM pg_locks
            WHERE locktype = 'advisory'
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
    )


def test_every_sql_file_is_a_version_in_order() -> None:
    folder = resources.files("services") / "migrations"
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    assert VERSIONS == [f.removesuffix(".sql") for f in files]
    assert len(set(VERSIONS)) == len(VERSIONS) >= 5
    # Four-digit prefixes, so the order of names is the order of numbers.
    assert [int(v[:4]) for v in VERSIONS] == list(range(1, len(VERSIONS) + 1))


async def test_the_session_database_is_fully_migrated_and_a_rerun_applies_nothing(stores):
    before = await _recorded(stores.pool)
    assert [v for v, _ in before] == VERSIONS
    assert await migrate(stores.pool) == []
    assert await _recorded(stores.pool) == before


async def test_concurrent_runs_on_a_fresh_database_apply_each_migration_once(blank_dsn):
    pools = [await create_pool(blank_dsn, min_size=1, max_size=2) for _ in range(4)]
    try:
        runs = await asyncio.gather(*(migrate(pool) for pool in pools))
        applied = Counter(version for run in runs for version in run)
        assert applied == dict.fromkeys(VERSIONS, 1), runs
        recorded = await _recorded(pools[0])
        assert [v for v, _ in recorded] == VERSIONS
        # The schema is really there, with the invariant's constraint.
        assert (
            await pools[1].fetchval(
                "SELECT count(*) FROM pg_constraint WHERE conname = 'bookings_no_overlap'"
            )
            == 1
        )
        assert await _advisory_locks_held(pools[0]) == 0

        # A second run, from every pool at once again, applies nothing and records nothing.
        assert await asyncio.gather(*(migrate(pool) for pool in pools)) == [[]] * len(pools)
        assert await _recorded(pools[2]) == recorded
    finally:
        for pool in pools:
            await pool.close()


async def test_a_failing_migration_is_rolled_back_and_not_recorded(blank_dsn, monkeypatch):
    real = migration_files()
    broken = ("9999_broken", "CREATE TABLE half_done (x int); SELECT 1 / 0;")
    pool = await create_pool(blank_dsn, min_size=1, max_size=2)
    try:
        monkeypatch.setattr(db, "migration_files", lambda: [*real, broken])
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(pool)
        # The files before it each committed with their record; the broken one left nothing.
        assert [v for v, _ in await _recorded(pool)] == VERSIONS
        assert await pool.fetchval("SELECT to_regclass('half_done') IS NULL")
        assert await _advisory_locks_held(pool) == 0  # the lock was let go despite the error

        fixed = ("9999_broken", "CREATE TABLE half_done (x int);")
        monkeypatch.setattr(db, "migration_files", lambda: [*real, fixed])
        assert await migrate(pool) == ["9999_broken"]
        assert [v for v, _ in await _recorded(pool)] == [*VERSIONS, "9999_broken"]
    finally:
        await pool.close()
