"""The sweep: settles test-drive attempts that began and never settled (their process died,
or inventory could not tell whether the car was booked), once no late confirm can land."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg

from services.scheduling import _sql
from services.scheduling._desk import storage_errors
from services.scheduling.drives.attempts import (
    TD_BOOKED,
    TD_CHANGE,
    TD_CHANGE_SETTLED,
    TD_SETTLED,
    DriveAttempt,
)

log = logging.getLogger(__name__)

# The sweep looks at attempts older than a car hold's life plus this, and younger than the
# horizon (an attempt still unsettled after that has been logged for days; a person decides).
SWEEP_MARGIN_SECONDS = 60
_SWEEP_HORIZON = timedelta(days=14)

SettleOne = Callable[[DriveAttempt], Awaitable[object]]


async def sweep(
    pool: asyncpg.Pool,
    *,
    bookings: SettleOne,
    changes: SettleOne,
    older_than: timedelta,
    limit: int,
) -> int:
    """Settle unsettled bookings (``bookings``), then unsettled cancels and moves
    (``changes``), each older than ``older_than``, at most ``limit`` of each. Returns how many
    were settled; the others are tried again next time."""
    sweeps: list[tuple[str, str, SettleOne]] = [
        (TD_BOOKED, TD_SETTLED, bookings),
        (TD_CHANGE, TD_CHANGE_SETTLED, changes),
    ]
    settled = 0
    for began, ended, settle_one in sweeps:
        with storage_errors():
            rows = await pool.fetch(
                _sql.SELECT_UNSETTLED_TEST_DRIVES,
                began,
                ended,
                older_than.total_seconds(),
                limit,
                _SWEEP_HORIZON.total_seconds(),
            )
        for row in rows:
            attempt = DriveAttempt(row["key"])
            try:
                await settle_one(attempt)
            except Exception:
                log.warning(
                    "test drive still unsettled", extra={"attempt": attempt.key}, exc_info=True
                )
                continue
            settled += 1
    return settled
