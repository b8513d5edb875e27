"""A test-drive saga's attempts: their keys, the records that log them, and numbering a
caller's attempts.

The records are idempotency records (first answer wins), each written in the transaction of
the step it describes; ``docs/test-drives.md`` says what each one means.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from services import idempotency
from services.errors import Conflict, DependencyUnavailable

log = logging.getLogger(__name__)

# Booking a test drive.
TD_ANSWER = "scheduling.test_drive"  # the caller's answer, under the caller's key
TD_STARTED = "scheduling.test_drive.started"  # an attempt of a caller's key began
TD_BOOKED = "scheduling.test_drive.booked"  # its appointment exists (and which car hold)
TD_SETTLED = "scheduling.test_drive.settled"  # both halves exist, or neither
# Cancels and moves of a booked test drive.
TD_CHANGE = "scheduling.test_drive.change"  # a cancel or move began, and what it does
TD_MOVE_DECIDED = "scheduling.test_drive.change.decided"  # a move's outcome: moved or kept
TD_CHANGE_SETTLED = "scheduling.test_drive.change.settled"  # the car matches the desk again
# Attempts one idempotency key may make (each earlier one failed and was undone).
TEST_DRIVE_MAX_ATTEMPTS = 20

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class DriveAttempt:
    """One attempt at a test-drive saga. ``key`` is ``<caller's key>|<n>`` for a booking and
    ``<caller's key>|m<n>`` for a move, or ``~<random>|0`` / ``~<random>|m0`` without one (``~``
    and ``|`` never occur in a caller's key); a cancel is ``<appointment id>|cancel``, one per
    appointment. Every step's idempotency key derives from it."""

    key: str

    def step_key(self, step: str) -> str:
        return f"td-{hashlib.sha256(self.key.encode()).hexdigest()[:40]}-{step}"

    @property
    def record(self) -> dict[str, str]:
        """The payload of the attempt's own records (booked, settled)."""
        return {"attempt": self.key}


def cancel_attempt(appointment_id: uuid.UUID) -> DriveAttempt:
    return DriveAttempt(f"{appointment_id}|cancel")


async def next_attempt(
    pool: asyncpg.Pool,
    key: str | None,
    payload: dict[str, Any],
    *,
    kind: str,
    settle: Callable[[DriveAttempt], Awaitable[_T | None]],
) -> tuple[DriveAttempt, _T | None]:
    """The next attempt of a saga (``kind``: "" a booking, "m" a move) for this request,
    after ``settle`` brought each earlier attempt of its key to its end. ``settle`` answers
    what that attempt achieved if it did succeed after all, which is then the answer."""
    if key is None:
        return DriveAttempt(f"~{uuid.uuid4().hex}|{kind}0"), None
    for n in range(TEST_DRIVE_MAX_ATTEMPTS):
        attempt = DriveAttempt(f"{key}|{kind}{n}")
        # Refuses a key reused for another request (Conflict), as every replay does.
        started = await idempotency.replay(pool, scope=TD_STARTED, key=attempt.key, payload=payload)
        if started is None:
            try:
                await idempotency.remember(
                    pool,
                    scope=TD_STARTED,
                    key=attempt.key,
                    payload=payload,
                    response={"attempt": n},
                )
            except asyncpg.UniqueViolationError:
                raise DependencyUnavailable(
                    "That request is still being processed; try again in a moment."
                ) from None
            return attempt, None
        # That attempt never answered (it failed, or its process died): settle it first.
        earlier = await settle(attempt)
        if earlier is not None:
            return attempt, earlier
    raise Conflict(
        "That request was tried too many times with one idempotency key; use a new key.",
        idempotency_key=key,
    )


async def mark_settled(
    pool: asyncpg.Pool, attempt: DriveAttempt, outcome: str, *, scope: str = TD_SETTLED
) -> None:
    try:
        await idempotency.remember(
            pool,
            scope=scope,
            key=attempt.key,
            payload=attempt.record,
            response={"outcome": outcome},
        )
    except asyncpg.UniqueViolationError:
        pass  # settled already (a retry and the sweep both did it)
    except Exception:
        log.warning(
            "could not record a test drive as settled; the sweep will look again",
            extra={"attempt": attempt.key},
            exc_info=True,
        )
