"""First-answer-wins records for writes a caller may repeat.

An LLM that times out and retries a tool, or a client whose connection dropped, sends the same
write again. With an idempotency key the second request gets the first answer back and writes
nothing new. Records are written inside the same transaction as the write they describe.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import asyncpg

from services.db import Statement
from services.errors import Conflict, InvalidInput

_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not _KEY.match(key):
        raise InvalidInput(
            "The idempotency key must be 1 to 128 letters, digits, dots, dashes, colons or "
            "underscores.",
            field="idempotency_key",
        )
    return key


def request_hash(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


async def replay(
    conn: asyncpg.Connection | asyncpg.Pool, *, scope: str, key: str, payload: Any
) -> dict[str, Any] | None:
    """The stored answer for (scope, key), or None. A key reused for another request is refused."""
    row = await conn.fetchrow(
        "SELECT request_hash, response FROM idempotency_keys WHERE scope = $1 AND key = $2",
        scope,
        key,
    )
    if row is None:
        return None
    if row["request_hash"] != request_hash(payload):
        raise Conflict(
            "That idempotency key was already used for a different request; use a new key.",
            idempotency_key=key,
        )
    response: dict[str, Any] = row["response"]
    return response


_PKEY = "idempotency_keys_pkey"


def is_twin(error: BaseException) -> bool:
    """``error`` is the unique violation of a record that a concurrent request with the same
    key wrote first; its answer (:func:`replay`) is the answer to this one."""
    return isinstance(error, asyncpg.UniqueViolationError) and error.constraint_name == _PKEY


_REMEMBER = (
    "INSERT INTO idempotency_keys (scope, key, request_hash, response) VALUES ($1, $2, $3, $4)"
)


async def remember(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    scope: str,
    key: str,
    payload: Any,
    response: dict[str, Any],
) -> None:
    """Record the answer; call inside the write's transaction (or on the pool, for a record
    that is its own write). A concurrent twin fails here."""
    await conn.execute(_REMEMBER, scope, key, request_hash(payload), response)


def remember_row(*, scope: str, key: str, payload: Any, response: dict[str, Any]) -> Statement:
    """:func:`remember` as a row written in a booking's own statement."""
    return Statement(_REMEMBER, (scope, key, request_hash(payload), response))


async def note(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    scope: str,
    key: str,
    payload: Any,
    response: dict[str, Any],
) -> bool:
    """Record the answer unless (scope, key) has one already; True if this one was written.
    For records that many writers may make in turn (a saga's own steps), where the first
    stays and the others are no error."""
    status = await conn.execute(
        """INSERT INTO idempotency_keys (scope, key, request_hash, response)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (scope, key) DO NOTHING""",
        scope,
        key,
        request_hash(payload),
        response,
    )
    return bool(status == "INSERT 0 1")


# The oldest records first, a batch per statement, so a purge never holds many row locks.
_PURGE_BATCH = """
DELETE FROM idempotency_keys
 WHERE ctid = ANY(ARRAY(
       SELECT ctid FROM idempotency_keys
        WHERE created_at < now() - make_interval(days => $1)
        ORDER BY created_at
        LIMIT $2))"""


async def purge(pool: asyncpg.Pool, *, older_than_days: int, batch: int = 5000) -> int:
    """Delete the records older than ``older_than_days``; returns how many went. A replay
    with a purged key is answered as a new request."""
    purged = 0
    while True:
        status = await pool.execute(_PURGE_BATCH, older_than_days, batch)
        deleted = int(status.split()[-1])
        purged += deleted
        if deleted < batch:
            return purged
