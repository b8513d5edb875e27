"""PostgreSQL access: the pool, and the migration runner over versioned SQL files."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

# What asyncpg raises when PostgreSQL cannot be reached, stops answering or cannot take this
# request right now. ``services.storage`` turns these (and Redis's) into DependencyUnavailable
# (503 with Retry-After at the edge): the caller's request was fine, a retry can succeed.
PG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,  # includes a pool acquire or a command that outlived its timeout
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # A connection that broke in the middle of an operation (PostgreSQL restarting under
    # load: "cannot switch to state 15; another operation is in progress").
    asyncpg.exceptions.InternalClientError,
    # 57xxx: query_canceled (statement timeout, pg_cancel_backend), admin_shutdown
    # (pg_terminate_backend), crash_shutdown, cannot_connect_now (starting up).
    asyncpg.exceptions.OperatorInterventionError,
    # 53xxx: too_many_connections, out_of_memory, disk_full.
    asyncpg.exceptions.InsufficientResourcesError,
)
# 40xxx: deadlock_detected, serialization_failure. The transaction is gone and running it again
# is the cure; writes that can retry do (confirms, reschedules), and what is left is a 503.
PG_RETRYABLE: tuple[type[BaseException], ...] = (asyncpg.exceptions.TransactionRollbackError,)

# Any 64-bit constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK_ID = 0x63616C6C6D657368  # "callmesh"
# Migrations (and replicas waiting for another's) may outlast the pool's command timeout.
MIGRATION_TIMEOUT_SECONDS = 600.0


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection to the pool without asyncpg's reset query.

    asyncpg still rolls back an open transaction before calling this. The reset query
    (unlock advisory locks, close cursors, UNLISTEN, RESET ALL) would be one more round trip
    on every release, i.e. on every booking; callmesh leaves no session state behind (the
    migration runner unlocks its advisory lock itself), so there is nothing to reset."""


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]
    """An asyncpg pool whose every acquire (``pool.fetch`` and friends included) waits at most
    ``acquire_timeout`` seconds for a connection, then raises TimeoutError: a stalled or
    saturated PostgreSQL answers 503 in seconds instead of holding requests past the proxy's
    request timeout (30 s, serve_config.yaml)."""

    __slots__ = ("_acquire_timeout",)

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self._acquire_timeout if timeout is None else timeout)


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, acquire_timeout: float = 5.0
) -> asyncpg.Pool:
    # asyncpg.create_pool with its own defaults, building the bounded pool instead.
    pool = BoundedPool(
        dsn,
        acquire_timeout=acquire_timeout,
        min_size=min_size,
        max_size=max_size,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        setup=None,
        init=_init_connection,
        reset=_keep_session,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        # Every timestamp crosses the wire as UTC; the business zone is applied in Python.
        server_settings={"timezone": "UTC", "application_name": "callmesh"},
        command_timeout=10,
    )
    await pool
    return pool


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement (a named constant, never built from input) and its parameters."""

    sql: str
    args: tuple[Any, ...]


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) pairs in order; a version is the file name without ``.sql``."""
    folder = resources.files("services") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the migrations not yet recorded; return the versions applied.

    Safe to run from many replicas at once: an advisory lock serialises them and each file runs
    in its own transaction together with its record in ``schema_migrations``.
    """
    applied: list[str] = []
    async with pool.acquire() as conn:
        # Replicas starting together wait here for the first one's migrations.
        await conn.execute(
            "SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID, timeout=MIGRATION_TIMEOUT_SECONDS
        )
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, sql in migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql, timeout=MIGRATION_TIMEOUT_SECONDS)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
                log.info("applied migration", extra={"version": version})
                applied.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
    return applied


def record(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None
