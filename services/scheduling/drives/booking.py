"""Booking a test drive: hold the car, book the desk appointment, confirm the car; after a
failure, the car is settled first and then the appointment (``docs/test-drives.md``)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services import idempotency
from services.errors import DependencyUnavailable, DomainError, NotFound
from services.inventory import HoldRequest, RentalBooking
from services.scheduling import _sql
from services.scheduling._desk import ServiceTypeRow, Wanted
from services.scheduling.drives.attempts import (
    TD_ANSWER,
    TD_BOOKED,
    TD_SETTLED,
    DriveAttempt,
    mark_settled,
    next_attempt,
)
from services.scheduling.drives.car import Car
from services.scheduling.drives.desk import AppointmentDesk
from services.scheduling.drives.retries import unknown_error, until_known
from services.scheduling.models import Appointment, BookRequest, TestDrive, TestDriveRequest
from services.validation import check_id

log = logging.getLogger(__name__)

# The service type of a dealership test drive (served by the sales desk).
TEST_DRIVE = "test_drive"
_DRIVE_CANCEL_REASON = "the test-drive car could not be booked"


def drive_answer(appointment: Appointment, car: RentalBooking) -> TestDrive:
    return TestDrive(
        appointment=appointment,
        vehicle_booking_id=car.booking_id,
        vehicle_reference=car.reference,
        vehicle_unit_id=car.unit_id,
        vehicle_name=car.unit_name,
    )


class Bookings:
    """Booking test drives over the desk and the car, and settling a booking left half way."""

    def __init__(self, *, desk: AppointmentDesk, pool: asyncpg.Pool, car: Car) -> None:
        self.desk = desk
        self.pool = pool
        self.car = car

    async def book(self, request: TestDriveRequest, idempotency_key: str | None) -> TestDrive:
        self.car.holds()
        key = idempotency.check_key(idempotency_key)
        unit_id = check_id(request.vehicle_unit_id, field="vehicle_unit_id")
        wanted = self.desk.check_booking(
            BookRequest(
                phone=request.phone,
                service_type=TEST_DRIVE,
                start=request.start,
                notes=request.notes,
                name=request.name,
                email=request.email,
                call_id=request.call_id,
            )
        )
        payload = {**wanted.payload(), "vehicle_unit_id": unit_id}
        async with self.desk.writing(TD_ANSWER, key):
            if key and (prior := await idempotency.replay(
                self.pool, scope=TD_ANSWER, key=key, payload=payload
            )):  # fmt: skip
                return TestDrive.model_validate(prior)
            st, end = await self.desk.check_slot(TEST_DRIVE, wanted.start)
            attempt, earlier = await self._next_attempt(key, payload)
            if earlier is not None:
                return earlier
            car_request = HoldRequest(
                unit_id=unit_id, start=wanted.start, end=end, call_id=wanted.call_id
            )
            return await self._run(attempt, st, wanted, end, car_request, key, payload)

    async def _next_attempt(
        self, key: str | None, payload: dict[str, Any]
    ) -> tuple[DriveAttempt, TestDrive | None]:
        """The next attempt for this request, after settling any earlier attempt of its key.
        If an earlier attempt had in fact booked both halves, its test drive is the answer."""

        async def settle(attempt: DriveAttempt) -> TestDrive | None:
            drive = await self.settle(attempt)
            if drive is not None:
                await self._remember(attempt, key, payload, drive, settled=True)
            return drive

        return await next_attempt(self.pool, key, payload, kind="", settle=settle)

    async def _run(
        self,
        attempt: DriveAttempt,
        st: ServiceTypeRow,
        wanted: Wanted,
        end: datetime,
        car_request: HoldRequest,
        key: str | None,
        payload: dict[str, Any],
    ) -> TestDrive:
        hold = await self.car.hold(attempt, car_request)

        async def record_booked(conn: asyncpg.Connection, appointment: Appointment) -> None:
            await idempotency.remember(
                conn,
                scope=TD_BOOKED,
                key=attempt.key,
                payload=attempt.record,
                response={"appointment_id": appointment.appointment_id, "hold_id": hold.hold_id},
            )
            # The durable link a cancel or a move of the test drive follows to the car.
            await conn.execute(
                _sql.SET_CAR_HOLD, uuid.UUID(appointment.appointment_id), hold.hold_id
            )

        try:
            appointment = await self.desk.book_slot(st, wanted, end, None, also=record_booked)
        except Exception:
            await self.car.let_go(attempt, hold.hold_id)
            raise
        try:
            car = await self.car.confirm(attempt, hold.hold_id)
        except Exception as error:
            car = await self._undo(attempt, hold.hold_id, appointment, error)
        answer = drive_answer(appointment, car)
        await self._remember(attempt, key, payload, answer)
        return answer

    async def _undo(
        self, attempt: DriveAttempt, hold_id: str, appointment: Appointment, error: Exception
    ) -> RentalBooking:
        """After the car's confirm failed: the car's booking if it was booked after all (the
        test drive stands); otherwise cancel the appointment and raise ``error``."""
        facts = {
            "attempt": attempt.key,
            "hold_id": hold_id,
            "appointment_id": appointment.appointment_id,
        }
        log.info("test-drive car not confirmed; settling the attempt", extra=facts)
        caller_error = error if isinstance(error, DomainError) else unknown_error(error)
        try:
            car = await self.car.fate(attempt, hold_id)
        except DependencyUnavailable:
            log.error(
                "test drive unsettled: the car's booking cannot be learned; kept the "
                "appointment for the sweep",
                extra=facts,
            )
            raise caller_error from None
        if car is not None:
            log.warning("test-drive car was booked after all; the test drive stands", extra=facts)
            return car
        try:
            await self._cancel_appointment(attempt, appointment.appointment_id)
        except Exception:
            log.error(
                "test drive unsettled: the appointment could not be cancelled; left for the sweep",
                extra=facts,
                exc_info=True,
            )
            raise caller_error from None
        await mark_settled(self.pool, attempt, "rolled_back")
        log.info("test drive rolled back: car hold let go, appointment cancelled", extra=facts)
        raise caller_error

    async def _cancel_appointment(self, attempt: DriveAttempt, appointment_id: str) -> None:
        async def cancel() -> None:
            try:
                await self.desk.cancel_appointment(
                    appointment_id,
                    _DRIVE_CANCEL_REASON,
                    idempotency_key=attempt.step_key("cancel"),
                )
            except NotFound:
                pass  # its transaction never committed: nothing to cancel

        # Another refusal (it has started, say) is final: a person must look at it.
        await until_known(
            cancel,
            step="desk cancel",
            facts={"attempt": attempt.key, "appointment_id": appointment_id},
        )

    async def settle(self, attempt: DriveAttempt) -> TestDrive | None:
        """Bring an attempt that never answered to both halves (its test drive is returned) or
        neither (None). Raises DependencyUnavailable while the car's fate cannot be learned."""
        booked = await idempotency.replay(
            self.pool, scope=TD_BOOKED, key=attempt.key, payload=attempt.record
        )
        if booked is None:
            return None  # no appointment was made; a car hold lapses at its TTL
        settled = await idempotency.replay(
            self.pool, scope=TD_SETTLED, key=attempt.key, payload=attempt.record
        )
        if settled is not None and settled.get("outcome") != "booked":
            return None
        car = await self.car.fate(attempt, str(booked["hold_id"]))
        if car is None:
            await self._cancel_appointment(attempt, str(booked["appointment_id"]))
            await mark_settled(self.pool, attempt, "rolled_back")
            log.info("unsettled test drive rolled back", extra={"attempt": attempt.key})
            return None
        appointment = await self.desk.read_appointment(uuid.UUID(str(booked["appointment_id"])))
        if settled is None:
            await mark_settled(self.pool, attempt, "booked")
            log.info("unsettled test drive found booked", extra={"attempt": attempt.key})
        return drive_answer(appointment, car)

    async def _remember(
        self,
        attempt: DriveAttempt,
        key: str | None,
        payload: dict[str, Any],
        answer: TestDrive,
        *,
        settled: bool = False,
    ) -> None:
        """Record the attempt settled (unless it is already) and, with a caller's key, the
        answer to replay. Both halves exist already, so a failure here only logs: the sweep
        settles the attempt and a retry with the key rebuilds the answer."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                if not settled:
                    await idempotency.remember(
                        conn,
                        scope=TD_SETTLED,
                        key=attempt.key,
                        payload=attempt.record,
                        response={"outcome": "booked"},
                    )
                if key:
                    await idempotency.remember(
                        conn,
                        scope=TD_ANSWER,
                        key=key,
                        payload=payload,
                        response=answer.model_dump(mode="json"),
                    )
        except Exception:
            log.warning(
                "test drive booked but not recorded as settled; the sweep will",
                extra={"attempt": attempt.key},
                exc_info=True,
            )
