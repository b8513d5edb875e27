"""Moving and cancelling a booked test drive: both halves or neither. A cancel frees the car
first and only moves forward; a move books the car at both times, then moves the desk (the
pivot), then frees the old car (``docs/test-drives.md``)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services import idempotency
from services.errors import Conflict, DependencyUnavailable, DomainError, Unavailable
from services.inventory import HoldRequest, UnitInMaintenance
from services.scheduling import _sql
from services.scheduling._desk import ServiceTypeRow
from services.scheduling.drives.attempts import (
    TD_CHANGE,
    TD_CHANGE_SETTLED,
    TD_MOVE_DECIDED,
    DriveAttempt,
    cancel_attempt,
    mark_settled,
    next_attempt,
)
from services.scheduling.drives.car import Car
from services.scheduling.drives.desk import AppointmentDesk
from services.scheduling.drives.retries import CHANGE_UNWIRED, MOVE_UNKNOWN, unknown_error
from services.scheduling.models import Appointment

log = logging.getLogger(__name__)

_MOVED_CAR_REASON = "the test drive moved to another time"
_KEPT_CAR_REASON = "the test drive could not move to that time"
# Rounds a cancel follows a test drive whose car changed under it (a move landed meanwhile).
_CANCEL_ROUNDS = 3
_CANCEL_UNKNOWN = (
    "The test drive is not cancelled yet because its car cannot be reached just now; the "
    "cancellation is recorded and finishes on its own once the car can be reached, or ask "
    "again in a minute."
)


class _CarChanged(Exception):
    """The test drive's car changed (a move landed) between freeing the car and the desk."""


class Changes:
    """Moves and cancels of booked test drives, and settling one left half way."""

    def __init__(self, *, desk: AppointmentDesk, pool: asyncpg.Pool, car: Car) -> None:
        self.desk = desk
        self.pool = pool
        self.car = car

    # -- moving --------------------------------------------------------------------------------

    async def move(
        self,
        current: Appointment,
        car_hold: str,
        st: ServiceTypeRow,
        start: datetime,
        end: datetime,
        key: str | None,
        payload: dict[str, Any],
    ) -> Appointment:
        """Move a booked test drive (its car booked from ``car_hold``) to ``start``: both halves
        or neither. The desk's reschedule calls it inside its write, once the appointment and
        the new time passed the desk's own checks."""
        aid = uuid.UUID(current.appointment_id)
        self.car.holds(CHANGE_UNWIRED)
        if start < current.end and current.start < end:
            if start == current.start:
                return current  # it is there already
            raise Conflict(
                "A test drive can only move to a time clear of its current one; to move it by "
                "less than its length, cancel it and book the new time.",
                appointment_id=str(aid),
            )
        cancelling = cancel_attempt(aid)
        if await idempotency.replay(
            self.pool, scope=TD_CHANGE, key=cancelling.key, payload=cancelling.record
        ):
            raise Conflict(
                "That test drive is being cancelled, so it can no longer be moved.",
                appointment_id=str(aid),
            )
        car = await self.car.booking(car_hold)
        if car is None:
            # The booking saga has not settled yet (inventory could not say whether the car
            # was booked); it keeps both halves or neither within minutes.
            raise DependencyUnavailable(
                "That test drive is still being booked; try again in a few minutes.",
                appointment_id=str(aid),
            )
        if car.status != "confirmed":
            raise Conflict(
                "That test drive is being cancelled, so it can no longer be moved.",
                appointment_id=str(aid),
            )
        attempt, earlier = await next_attempt(
            self.pool, key, payload, kind="m", settle=self._settle_earlier_move
        )
        if earlier is not None:
            return earlier
        try:
            hold = await self.car.hold(
                attempt,
                HoldRequest(unit_id=car.unit_id, start=start, end=end, call_id=car.call_id),
            )
        except UnitInMaintenance:
            raise  # its own sentence: the car cannot be driven at any time for now
        except Unavailable as e:
            raise Unavailable(
                f"The {car.unit_name} is already booked at that time, so the test drive stays "
                "where it is; I can look for another time.",
                **e.details,
            ) from None
        change = {
            "op": "move",
            "appointment_id": str(aid),
            "from_hold": car_hold,
            "to_hold": hold.hold_id,
        }
        try:
            await idempotency.remember(
                self.pool,
                scope=TD_CHANGE,
                key=attempt.key,
                payload=attempt.record,
                response=change,
            )
        except Exception:
            await self.car.let_go(attempt, hold.hold_id)
            raise

        async def take_new_car(conn: asyncpg.Connection) -> None:
            # The pivot, in the desk move's transaction.
            if await conn.fetchval(_sql.SWAP_CAR_HOLD, aid, car_hold, hold.hold_id) is None:
                raise Conflict(
                    "That test drive changed while it was being moved; try again.",
                    appointment_id=str(aid),
                )
            await idempotency.remember(
                conn,
                scope=TD_MOVE_DECIDED,
                key=attempt.key,
                payload=attempt.record,
                response={"outcome": "moved"},
            )

        try:
            await self.car.confirm(attempt, hold.hold_id)
            moved = await self.desk.move_desk(
                current, st, start, end, key, payload, also=take_new_car
            )
        except Exception as error:
            return await self._undo_move(attempt, change, error)
        try:
            await self._settle_move(attempt, change)
        except Exception:
            log.warning(
                "test drive moved; its old car booking is left for the sweep",
                extra={"attempt": attempt.key, "hold_id": car_hold},
                exc_info=True,
            )
        return moved

    async def _undo_move(
        self, attempt: DriveAttempt, change: dict[str, Any], error: Exception
    ) -> Appointment:
        """After a move failed before or at the pivot: both halves back at the old time (raise
        ``error``), or, if the desk move committed after all, the moved appointment."""
        facts = {"attempt": attempt.key, "appointment_id": change["appointment_id"]}
        caller_error = (
            error if isinstance(error, DomainError) else unknown_error(error, MOVE_UNKNOWN)
        )
        try:
            outcome = await self._settle_move(attempt, change)
        except Exception:
            log.error("test-drive move unsettled: left for the sweep", extra=facts, exc_info=True)
            raise caller_error from None
        if outcome == "moved":
            log.warning("test-drive move committed although its answer was lost", extra=facts)
            return await self.desk.read_appointment(uuid.UUID(str(change["appointment_id"])))
        log.info("test-drive move undone: the new car let go, both halves kept", extra=facts)
        raise caller_error

    async def _settle_move(self, attempt: DriveAttempt, change: dict[str, Any]) -> str:
        """Bring a move to both halves at the new time ("moved") or both at the old ("kept"):
        decide, then free the car the desk no longer has, then record the move settled.
        Raises DependencyUnavailable while inventory cannot be reached."""
        outcome = await self._decide_move(attempt)
        if outcome == "moved":
            await self.car.free(attempt, str(change["from_hold"]), _MOVED_CAR_REASON)
        else:
            await self.car.free(attempt, str(change["to_hold"]), _KEPT_CAR_REASON)
        await mark_settled(self.pool, attempt, outcome, scope=TD_CHANGE_SETTLED)
        return outcome

    async def _decide_move(self, attempt: DriveAttempt) -> str:
        """The move's outcome: "moved" if its desk move committed; otherwise "kept", recorded
        now, after which that desk move cannot commit any more (it writes the same record)."""
        if await idempotency.note(
            self.pool,
            scope=TD_MOVE_DECIDED,
            key=attempt.key,
            payload=attempt.record,
            response={"outcome": "kept"},
        ):
            return "kept"
        decided = await idempotency.replay(
            self.pool, scope=TD_MOVE_DECIDED, key=attempt.key, payload=attempt.record
        )
        return str(decided["outcome"]) if decided else "kept"

    async def _settle_earlier_move(self, attempt: DriveAttempt) -> Appointment | None:
        """Settle an earlier move attempt of the caller's key: the moved appointment if it did
        move, else None (it never got as far as the car, or both halves were kept)."""
        change = await idempotency.replay(
            self.pool, scope=TD_CHANGE, key=attempt.key, payload=attempt.record
        )
        if change is None:
            return None  # a car hold it may have placed lapses at its TTL
        settled = await idempotency.replay(
            self.pool, scope=TD_CHANGE_SETTLED, key=attempt.key, payload=attempt.record
        )
        outcome = str(settled["outcome"]) if settled else await self._settle_move(attempt, change)
        if outcome != "moved":
            return None
        return await self.desk.read_appointment(uuid.UUID(str(change["appointment_id"])))

    # -- cancelling ----------------------------------------------------------------------------

    async def cancel(
        self, current: Appointment, why: str, key: str | None, payload: dict[str, Any]
    ) -> Appointment:
        """Cancel a booked test drive: its car first, then the desk. The desk's cancel calls it
        inside its write, once the appointment passed the desk's own checks."""
        self.car.holds(CHANGE_UNWIRED)
        aid = uuid.UUID(current.appointment_id)
        attempt = cancel_attempt(aid)
        # The first reason stands for the sweep; this request's goes on the appointment.
        await idempotency.note(
            self.pool,
            scope=TD_CHANGE,
            key=attempt.key,
            payload=attempt.record,
            response={"op": "cancel", "appointment_id": str(aid), "reason": why},
        )
        return await self._finish_cancel(attempt, current, why, key, payload)

    async def _finish_cancel(
        self,
        attempt: DriveAttempt,
        current: Appointment,
        why: str,
        key: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Appointment:
        """Free the test drive's car, then cancel the desk appointment (steps 2 and 3)."""
        aid = uuid.UUID(current.appointment_id)
        for _ in range(_CANCEL_ROUNDS):
            car_hold = str(await self.pool.fetchval(_sql.SELECT_CAR_HOLD, aid))
            try:
                await self.car.free(attempt, car_hold, why)
            except DependencyUnavailable as e:
                log.warning("test-drive cancel waits for its car", extra={"attempt": attempt.key})
                raise DependencyUnavailable(_CANCEL_UNKNOWN, appointment_id=str(aid)) from e
            try:
                return await self._cancel_desk(current, why, key, payload, attempt, car_hold)
            except _CarChanged:
                log.info("test drive moved while being cancelled", extra={"attempt": attempt.key})
        raise Conflict(
            "That test drive changed while it was being cancelled; try again.",
            appointment_id=str(aid),
        )

    async def _cancel_desk(
        self,
        current: Appointment,
        why: str,
        key: str | None,
        payload: dict[str, Any] | None,
        attempt: DriveAttempt,
        car_hold: str,
    ) -> Appointment:
        """Cancel the desk appointment if it still has ``car_hold``, the car just freed (else
        ``_CarChanged``), and record the cancel ``attempt`` settled in the same transaction."""
        aid = uuid.UUID(current.appointment_id)

        async def still_that_car(conn: asyncpg.Connection) -> None:
            # A move of this appointment commits before this lock is granted, or waits for
            # this transaction (and then finds the booking cancelled).
            await conn.execute(_sql.LOCK_BOOKING, uuid.UUID(current.booking_id))
            if await conn.fetchval(_sql.SELECT_CAR_HOLD, aid) != car_hold:
                raise _CarChanged

        async def record_settled(conn: asyncpg.Connection) -> None:
            await idempotency.note(
                conn,
                scope=TD_CHANGE_SETTLED,
                key=attempt.key,
                payload=attempt.record,
                response={"outcome": "cancelled"},
            )

        return await self.desk.cancel_desk(
            current, why, key, payload, first=still_that_car, also=record_settled
        )

    async def settle(self, attempt: DriveAttempt) -> None:
        """The sweep's end of a cancel or move left half way."""
        change = await idempotency.replay(
            self.pool, scope=TD_CHANGE, key=attempt.key, payload=attempt.record
        )
        if change is None:
            return
        if change["op"] == "cancel":
            current = await self.desk.read_appointment(uuid.UUID(str(change["appointment_id"])))
            await self._finish_cancel(attempt, current, str(change["reason"]))
        else:
            await self._settle_move(attempt, change)
