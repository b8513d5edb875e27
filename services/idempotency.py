"""First-answer-wins records for writes a caller may repeat.

An LLM that times out and retries a tool, or a client whose connection dropped, sends the same
write again. With an idempotency key the second request gets the first answer back and writes
nothing new. Records are written inside the same transaction as the write they describe.

As draft-ietf-httpapi-idempotency-key-header has it: the key may come quoted (a structured
field string, ``"abc"``); a key sent again with a different request is refused with 422
(:class:`IdempotencyKeyReused`); a key whose first request is still running is refused with 409
and Retry-After (:class:`IdempotencyKeyInFlight`), and asked again after that first request
ended, it gets the first answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import asyncpg

from services.db import Statement
from services.errors import IdempotencyKeyInFlight, IdempotencyKeyReused, InvalidInput

_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def check_key(key: str | None) -> str | None:
    """The key, without the double quotes a structured-field string carries (``"abc"`` is
    the key abc); InvalidInput when it is not 1 to 128 of the allowed characters."""
    if key is None:
        return None
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
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
        raise IdempotencyKeyReused(
            "That idempotency key was already used for a different request; use a new key.",
            field="idempotency_key",
            idempotency_key=key,
        )
    response: dict[str, Any] = row["response"]
    return response


IN_FLIGHT_RETRY_AFTER_SECONDS = 1


def in_flight(key: str) -> IdempotencyKeyInFlight:
    """The refusal of a twin that arrives while the first request with its key runs."""
    return IdempotencyKeyInFlight(
        "A request with that idempotency key is still being processed; ask again in a moment "
        "to get its answer.",
        retry_after=IN_FLIGHT_RETRY_AFTER_SECONDS,
        idempotency_key=key,
    )


# Held until the transaction ends, so the mark goes with the commit (or the rollback) of the
# write it guards; a twin that finds it taken is in flight, one that takes it after the first
# committed replays the first's record.
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock($1)"


def _lock_id(scope: str, key: str) -> int:
    digest = hashlib.sha256(f"idempotency:{scope}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_ANSWERED = "SELECT EXISTS (SELECT 1 FROM idempotency_keys WHERE scope = $1 AND key = $2)"


async def answered(conn: asyncpg.Connection | asyncpg.Pool, *, scope: str, key: str) -> bool:
    """(scope, key) has its first answer on record: a twin that finds the key marked in
    flight by another twin replays it instead of being refused."""
    return bool(await conn.fetchval(_ANSWERED, scope, key))


async def claim(conn: asyncpg.Connection, *, scope: str, key: str) -> None:
    """Mark (scope, key) in flight for the rest of ``conn``'s transaction; call it first in
    the write's transaction, before :func:`replay`. Raises IdempotencyKeyInFlight when a twin
    holds the mark and no first answer is on record yet (replays of a committed first answer
    are never refused, however many come at once)."""
    if not await conn.fetchval(_TRY_LOCK, _lock_id(scope, key)):
        if not await answered(conn, scope=scope, key=key):
            raise in_flight(key)


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
