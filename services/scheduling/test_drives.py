"""Dealership test drives: a saga over the sales desk (an appointment, booked through the
appointment desk) and a demo car (a hold and its confirm in inventory, through ``VehicleHolds``),
booked, moved and cancelled together or not at all.

``SchedulingService`` composes ``TestDrives`` and sends it its test drives: a booking, and a move
or cancel of an appointment that has a car. The notes above ``TestDrives.book`` and above
"changing a test drive" say how each step can fail and what is undone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol, TypeVar

import asyncpg

from services import idempotency
from services.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    HoldExpired,
    NotFound,
    Unavailable,
)
from services.inventory import HoldRequest, HoldResponse, RentalBooking, UnitInMaintenance
from services.reservations import ReservationStore
from services.scheduling import _queries as q
from services.scheduling._desk import (
    AlsoWrite,
    InTransaction,
    ServiceTypeRow,
    Wanted,
    storage_errors,
)
from services.scheduling.models import Appointment, BookRequest, TestDrive, TestDriveRequest
from services.scheduling.vehicles import VehicleHolds
from services.settings import Settings
from services.validation import check_id

log = logging.getLogger(__name__)

# The service type of a dealership test drive (served by the sales desk).
TEST_DRIVE = "test_drive"

# Test drives (a saga over the sales desk and a demo car; see TestDrives.book). Its records are
# idempotency records: first answer wins, written in the transaction of the step they describe.
_TD_ANSWER = "scheduling.test_drive"  # the caller's answer, under the caller's key
_TD_STARTED = "scheduling.test_drive.started"  # an attempt of a caller's key began
_TD_BOOKED = "scheduling.test_drive.booked"  # its appointment exists (and which car hold)
_TD_SETTLED = "scheduling.test_drive.settled"  # both halves exist, or neither
_DRIVE_CANCEL_REASON = "the test-drive car could not be booked"
# Cancels and moves of a booked test drive (see "changing a test drive"); records as above.
_TD_CHANGE = "scheduling.test_drive.change"  # a cancel or move began, and what it does
_TD_MOVE_DECIDED = "scheduling.test_drive.change.decided"  # a move's outcome: moved or kept
_TD_CHANGE_SETTLED = "scheduling.test_drive.change.settled"  # the car matches the desk again
_MOVED_CAR_REASON = "the test drive moved to another time"
_KEPT_CAR_REASON = "the test drive could not move to that time"
# Rounds a cancel follows a test drive whose car changed under it (a move landed meanwhile).
_CANCEL_ROUNDS = 3
_BOOK_UNKNOWN = "Test drives cannot be booked right now; try again soon."
_CHANGE_UNWIRED = "Test drives cannot be changed right now; try again soon."
_MOVE_UNKNOWN = "The test drive could not be moved just now; try again soon."
_CANCEL_UNKNOWN = (
    "The test drive is not cancelled yet because its car cannot be reached just now; the "
    "cancellation is recorded and finishes on its own once the car can be reached, or ask "
    "again in a minute."
)
# Pauses before each try of a saga step whose outcome was unknown (a timeout, a store down).
TEST_DRIVE_RETRY_PAUSES: tuple[float, ...] = (0.0, 0.2, 0.5)
# Attempts one idempotency key may make (each earlier one failed and was undone).
TEST_DRIVE_MAX_ATTEMPTS = 20
# The sweep looks at attempts older than a car hold's life plus this, and younger than the
# horizon (an attempt still unsettled after that has been logged for days; a person decides).
_SWEEP_MARGIN_SECONDS = 60
_SWEEP_HORIZON = timedelta(days=14)


class AppointmentDesk(Protocol):
    """What the saga needs of the appointment desk (``SchedulingService``): its checks, its
    writes one idempotency key at a time, and booking, moving, cancelling and reading one
    appointment, with a step of the saga in the desk's own transaction."""

    def check_booking(self, request: BookRequest) -> Wanted:
        """The request with every field checked and normalised (InvalidInput if one is not)."""

    def writing(self, scope: str, key: str | None) -> AbstractAsyncContextManager[None]:
        """Around a write: storage errors mapped, twins of one idempotency key in turn."""

    async def check_slot(
        self, service_type: str, start: datetime
    ) -> tuple[ServiceTypeRow, datetime]:
        """The service type and the end of a booking of it at ``start``, refused if it is not
        offered or that time is outside business hours."""

    async def book_slot(
        self,
        st: ServiceTypeRow,
        wanted: Wanted,
        end: datetime,
        key: str | None,
        *,
        also: AlsoWrite | None = None,
    ) -> Appointment:
        """Book on the first free resource of the pool; ``also`` runs in its transaction."""

    async def move_desk(
        self,
        current: Appointment,
        st: ServiceTypeRow,
        start: datetime,
        end: datetime,
        key: str | None,
        payload: dict[str, Any],
        *,
        also: InTransaction | None = None,
    ) -> Appointment:
        """Move the appointment's booking; ``also`` runs in the move's transaction."""

    async def cancel_desk(
        self,
        current: Appointment,
        why: str,
        key: str | None,
        payload: dict[str, Any] | None,
        *,
        first: InTransaction | None = None,
        also: InTransaction | None = None,
    ) -> Appointment:
        """Cancel the appointment's booking; ``first`` and ``also`` run at the start and at the
        end of the cancel's transaction."""

    async def cancel_appointment(
        self, appointment_id: str, reason: str, idempotency_key: str | None = None
    ) -> Appointment:
        """The desk's own cancel, as any caller asks for it."""

    async def read_appointment(self, appointment_id: uuid.UUID) -> Appointment:
        """The appointment (NotFound if there is none)."""


@dataclass(frozen=True, slots=True)
class _DriveAttempt:
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


def _drive_answer(appointment: Appointment, car: RentalBooking) -> TestDrive:
    return TestDrive(
        appointment=appointment,
        vehicle_booking_id=car.booking_id,
        vehicle_reference=car.reference,
        vehicle_unit_id=car.unit_id,
        vehicle_name=car.unit_name,
    )


def _retry_pauses() -> tuple[float, ...]:
    return TEST_DRIVE_RETRY_PAUSES


def _cancel_attempt(appointment_id: uuid.UUID) -> _DriveAttempt:
    return _DriveAttempt(f"{appointment_id}|cancel")


def _unknown_error(
    cause: BaseException | None, message: str = _BOOK_UNKNOWN
) -> DependencyUnavailable:
    """What the caller hears when a step's outcome stayed unknown: try again shortly."""
    if isinstance(cause, DependencyUnavailable):
        return cause
    error = DependencyUnavailable(message)
    error.__cause__ = cause
    return error


def _retrieve_outcome(task: asyncio.Task[Any]) -> None:
    # A saga whose caller went away still ends; its error is logged, not left unretrieved.
    if not task.cancelled() and (error := task.exception()) is not None:
        log.debug("test drive ended with an error", exc_info=error)


_T = TypeVar("_T")


async def run_to_end(work: Coroutine[Any, Any, _T]) -> _T:
    """Run ``work`` to its end even if the caller goes away (Serve cancels the handler of a
    client that hung up), so a saga's compensation never stops half way."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve_outcome)
    return await asyncio.shield(task)


async def _until_known(
    call: Callable[[], Awaitable[_T]],
    *,
    step: str,
    facts: dict[str, str],
    message: str = _BOOK_UNKNOWN,
) -> _T:
    """Ask ``call`` (a step carrying its idempotency key, so asking again answers what
    happened) again after each retry pause while its outcome is unknown. A refusal of the
    other service (a domain error other than DependencyUnavailable) is final and raised."""
    unknown: Exception | None = None
    for pause in _retry_pauses():
        await asyncio.sleep(pause)
        try:
            return await call()
        except DependencyUnavailable as e:
            unknown = e
        except DomainError:
            raise
        except Exception as e:
            unknown = e
        log.warning("test-drive step: outcome unknown", extra={"step": step, **facts})
    raise _unknown_error(unknown, message)


class _CarChanged(Exception):
    """The test drive's car changed (a move landed) between freeing the car and the desk."""


class TestDrives:
    """The test-drive saga. ``desk`` is the appointment desk that composes it; ``vehicles`` is
    inventory's demo cars, None where the dealership desk is not wired (then test drives are
    refused and there is nothing to settle)."""

    __test__: ClassVar[bool] = False  # a domain name, not a pytest test class

    def __init__(
        self,
        *,
        desk: AppointmentDesk,
        pool: asyncpg.Pool,
        reservations: ReservationStore,
        vehicles: VehicleHolds | None,
        settings: Settings,
    ) -> None:
        self.desk = desk
        self.pool = pool
        self.reservations = reservations
        self.vehicles = vehicles
        self.settings = settings

    # -- booking a test drive ------------------------------------------------------------------
    #
    # A test drive is a saga over two services: the sales desk (an appointment, through the
    # ``AppointmentDesk``) and a demo car (a hold and its confirm, in inventory, reached through
    # ``VehicleHolds``). Each attempt has a key (the caller's idempotency key and the attempt's
    # number, or a random one) and every step's idempotency key derives from it:
    #
    #   1. record the attempt          (with a caller's key: it numbers that key's attempts)
    #   2. hold the car                (undone by letting the hold go; it lapses at its TTL)
    #   3. book the desk appointment   (and record, in the same transaction, that it exists,
    #                                   and on the appointment row the car's hold id)
    #   4. confirm the car             (a timeout leaves its outcome unknown: asked again)
    #   5. record the attempt settled, with the caller's answer
    #
    # After step 3 a failure settles the CAR first, because a confirm can land after its caller
    # stopped waiting: letting the hold go either succeeds (then no confirm can book it any
    # more) or finds it gone, and confirming a gone hold only looks up the booking made from
    # it. A booked car keeps the appointment (the test drive stands); a car that is certainly
    # not booked cancels the appointment. When the car's fate cannot be learned, nothing is
    # cancelled and the attempt stays unsettled: a retry with the same key, or ``settle`` (the
    # scheduling deployment runs it), finishes it later. So after any failure there are both
    # halves or neither, and a car hold at most until its TTL.
    # Cancelling or moving a booked test drive: see "changing a test drive" below.

    async def book(
        self, request: TestDriveRequest, idempotency_key: str | None = None
    ) -> TestDrive:
        """Book a test drive: a sales-desk appointment and the demo car, together or not at all.

        The car is held first (cheap to let go), then the appointment is booked, then the car's
        hold is confirmed; a failure undoes what was done (see the saga notes above). The saga
        runs to its end even if the caller goes away, so a compensation never stops half way.
        """
        return await run_to_end(self._book(request, idempotency_key))

    async def _book(self, request: TestDriveRequest, idempotency_key: str | None) -> TestDrive:
        self._vehicle_holds()
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
        async with self.desk.writing(_TD_ANSWER, key):
            if key and (prior := await idempotency.replay(
                self.pool, scope=_TD_ANSWER, key=key, payload=payload
            )):  # fmt: skip
                return TestDrive.model_validate(prior)
            st, end = await self.desk.check_slot(TEST_DRIVE, wanted.start)
            attempt, earlier = await self._next_drive_attempt(key, payload)
            if earlier is not None:
                return earlier
            car_request = HoldRequest(
                unit_id=unit_id, start=wanted.start, end=end, call_id=wanted.call_id
            )
            return await self._run_drive(attempt, st, wanted, end, car_request, key, payload)

    async def _next_drive_attempt(
        self, key: str | None, payload: dict[str, Any]
    ) -> tuple[_DriveAttempt, TestDrive | None]:
        """The next attempt for this request, after settling any earlier attempt of its key.
        If an earlier attempt had in fact booked both halves, its test drive is the answer."""

        async def settle(attempt: _DriveAttempt) -> TestDrive | None:
            drive = await self._settle_drive(attempt)
            if drive is not None:
                await self._remember_drive(attempt, key, payload, drive, settled=True)
            return drive

        return await self._next_attempt(key, payload, kind="", settle=settle)

    async def _next_attempt(
        self,
        key: str | None,
        payload: dict[str, Any],
        *,
        kind: str,
        settle: Callable[[_DriveAttempt], Awaitable[_T | None]],
    ) -> tuple[_DriveAttempt, _T | None]:
        """The next attempt of a saga (``kind``: "" a booking, "m" a move) for this request,
        after ``settle`` brought each earlier attempt of its key to its end. ``settle`` answers
        what that attempt achieved if it did succeed after all, which is then the answer."""
        if key is None:
            return _DriveAttempt(f"~{uuid.uuid4().hex}|{kind}0"), None
        for n in range(TEST_DRIVE_MAX_ATTEMPTS):
            attempt = _DriveAttempt(f"{key}|{kind}{n}")
            # Refuses a key reused for another request (Conflict), as every replay does.
            started = await idempotency.replay(
                self.pool, scope=_TD_STARTED, key=attempt.key, payload=payload
            )
            if started is None:
                try:
                    await idempotency.remember(
                        self.pool,
                        scope=_TD_STARTED,
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

    async def _run_drive(
        self,
        attempt: _DriveAttempt,
        st: ServiceTypeRow,
        wanted: Wanted,
        end: datetime,
        car_request: HoldRequest,
        key: str | None,
        payload: dict[str, Any],
    ) -> TestDrive:
        hold = await self._hold_car(attempt, car_request)

        async def record_booked(conn: asyncpg.Connection, appointment: Appointment) -> None:
            await idempotency.remember(
                conn,
                scope=_TD_BOOKED,
                key=attempt.key,
                payload=attempt.record,
                response={"appointment_id": appointment.appointment_id, "hold_id": hold.hold_id},
            )
            # The durable link a cancel or a move of the test drive follows to the car.
            await conn.execute(q.SET_CAR_HOLD, uuid.UUID(appointment.appointment_id), hold.hold_id)

        try:
            appointment = await self.desk.book_slot(st, wanted, end, None, also=record_booked)
        except Exception:
            await self._let_car_go(attempt, hold.hold_id)
            raise
        try:
            car = await self._confirm_car(attempt, hold.hold_id)
        except Exception as error:
            car = await self._undo_drive(attempt, hold.hold_id, appointment, error)
        answer = _drive_answer(appointment, car)
        await self._remember_drive(attempt, key, payload, answer)
        return answer

    def _vehicle_holds(self, message: str = _BOOK_UNKNOWN) -> VehicleHolds:
        if self.vehicles is None:
            raise DependencyUnavailable(message)
        return self.vehicles

    async def _hold_car(self, attempt: _DriveAttempt, request: HoldRequest) -> HoldResponse:
        """Hold the car; a hold whose answer was lost is asked for again with the same key,
        which returns that same hold."""
        vehicles = self._vehicle_holds()
        # A refusal means nothing was held; if a hold was placed after all while the outcome
        # stayed unknown, it lapses at its TTL.
        return await _until_known(
            lambda: vehicles.create_hold(request, idempotency_key=attempt.step_key("car-hold")),
            step="car hold",
            facts={"attempt": attempt.key},
        )

    async def _confirm_car(self, attempt: _DriveAttempt, hold_id: str) -> RentalBooking:
        """Confirm the car's hold. An answer that never came (a timeout: the confirm may still
        have happened) is asked for again with the same key, which returns that booking, or
        confirms now if the first never ran. A refusal is final."""
        vehicles = self._vehicle_holds()
        return await _until_known(
            lambda: vehicles.confirm_hold(hold_id, idempotency_key=attempt.step_key("car-confirm")),
            step="car confirm",
            facts={"attempt": attempt.key, "hold_id": hold_id},
        )

    async def _car_fate(self, attempt: _DriveAttempt, hold_id: str) -> RentalBooking | None:
        """Whether the car ended up booked (its booking) or certainly not (None), making sure
        no confirm still in flight can book it later. Raises DependencyUnavailable when
        inventory cannot tell."""
        vehicles = self._vehicle_holds()
        unknown: Exception | None = None
        for pause in _retry_pauses():
            await asyncio.sleep(pause)
            try:
                released = await vehicles.release_hold(hold_id)
            except Conflict as e:
                unknown = e  # a confirm of this hold is under way: ask again once it ended
                continue
            except Exception as e:
                unknown = e
                continue
            if released.released:
                return None  # the hold is gone and was no booking: nothing can confirm it now
            # The hold was already gone (confirmed, released or lapsed): confirming it now only
            # looks up the booking made from it.
            try:
                return await vehicles.confirm_hold(
                    hold_id, idempotency_key=attempt.step_key("car-confirm")
                )
            except HoldExpired:
                return None
            except Exception as e:
                unknown = e
        raise _unknown_error(unknown)

    async def _undo_drive(
        self, attempt: _DriveAttempt, hold_id: str, appointment: Appointment, error: Exception
    ) -> RentalBooking:
        """After the car's confirm failed: the car's booking if it was booked after all (the
        test drive stands); otherwise cancel the appointment and raise ``error``."""
        facts = {
            "attempt": attempt.key,
            "hold_id": hold_id,
            "appointment_id": appointment.appointment_id,
        }
        log.info("test-drive car not confirmed; settling the attempt", extra=facts)
        caller_error = error if isinstance(error, DomainError) else _unknown_error(error)
        try:
            car = await self._car_fate(attempt, hold_id)
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
            await self._cancel_drive_appointment(attempt, appointment.appointment_id)
        except Exception:
            log.error(
                "test drive unsettled: the appointment could not be cancelled; left for the sweep",
                extra=facts,
                exc_info=True,
            )
            raise caller_error from None
        await self._mark_drive_settled(attempt, "rolled_back")
        log.info("test drive rolled back: car hold let go, appointment cancelled", extra=facts)
        raise caller_error

    async def _let_car_go(self, attempt: _DriveAttempt, hold_id: str) -> None:
        try:
            await self._vehicle_holds().release_hold(hold_id)
        except Exception:
            # The hold lapses at its TTL; the caller's answer is the error being raised.
            log.warning(
                "could not release a test-drive car hold",
                extra={"attempt": attempt.key, "hold_id": hold_id},
                exc_info=True,
            )
        else:
            log.info(
                "test-drive car hold let go", extra={"attempt": attempt.key, "hold_id": hold_id}
            )

    async def _cancel_drive_appointment(self, attempt: _DriveAttempt, appointment_id: str) -> None:
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
        await _until_known(
            cancel,
            step="desk cancel",
            facts={"attempt": attempt.key, "appointment_id": appointment_id},
        )

    async def _settle_drive(self, attempt: _DriveAttempt) -> TestDrive | None:
        """Bring an attempt that never answered to both halves (its test drive is returned) or
        neither (None). Raises DependencyUnavailable while the car's fate cannot be learned."""
        booked = await idempotency.replay(
            self.pool, scope=_TD_BOOKED, key=attempt.key, payload=attempt.record
        )
        if booked is None:
            return None  # no appointment was made; a car hold lapses at its TTL
        settled = await idempotency.replay(
            self.pool, scope=_TD_SETTLED, key=attempt.key, payload=attempt.record
        )
        if settled is not None and settled.get("outcome") != "booked":
            return None
        car = await self._car_fate(attempt, str(booked["hold_id"]))
        if car is None:
            await self._cancel_drive_appointment(attempt, str(booked["appointment_id"]))
            await self._mark_drive_settled(attempt, "rolled_back")
            log.info("unsettled test drive rolled back", extra={"attempt": attempt.key})
            return None
        appointment = await self.desk.read_appointment(uuid.UUID(str(booked["appointment_id"])))
        if settled is None:
            await self._mark_drive_settled(attempt, "booked")
            log.info("unsettled test drive found booked", extra={"attempt": attempt.key})
        return _drive_answer(appointment, car)

    async def _mark_drive_settled(
        self, attempt: _DriveAttempt, outcome: str, *, scope: str = _TD_SETTLED
    ) -> None:
        try:
            await idempotency.remember(
                self.pool,
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

    async def _remember_drive(
        self,
        attempt: _DriveAttempt,
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
                        scope=_TD_SETTLED,
                        key=attempt.key,
                        payload=attempt.record,
                        response={"outcome": "booked"},
                    )
                if key:
                    await idempotency.remember(
                        conn,
                        scope=_TD_ANSWER,
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

    async def settle(self, *, older_than: timedelta | None = None, limit: int = 100) -> int:
        """Settle test-drive attempts that booked an appointment and never finished (their
        process died, or inventory could not tell whether the car was booked): both halves,
        or neither. Then cancels and moves of test drives left half way, the same way (see
        "changing a test drive"). Only attempts older than ``older_than`` are looked at (by
        default a car hold's TTL and then some, when no confirm can still land). Returns how
        many were settled; the others are tried again next time."""
        if self.vehicles is None:
            return 0
        if older_than is None:
            older_than = timedelta(
                seconds=self.settings.hold_ttl_seconds
                + self.reservations.pending_ttl_seconds
                + _SWEEP_MARGIN_SECONDS
            )
        sweeps: list[tuple[str, str, Callable[[_DriveAttempt], Awaitable[object]]]] = [
            (_TD_BOOKED, _TD_SETTLED, self._settle_drive),
            (_TD_CHANGE, _TD_CHANGE_SETTLED, self._settle_change),
        ]
        settled = 0
        for began, ended, settle_one in sweeps:
            with storage_errors():
                rows = await self.pool.fetch(
                    q.SELECT_UNSETTLED_TEST_DRIVES,
                    began,
                    ended,
                    older_than.total_seconds(),
                    limit,
                    _SWEEP_HORIZON.total_seconds(),
                )
            for row in rows:
                attempt = _DriveAttempt(row["key"])
                try:
                    await settle_one(attempt)
                except Exception:
                    log.warning(
                        "test drive still unsettled", extra={"attempt": attempt.key}, exc_info=True
                    )
                    continue
                settled += 1
        return settled

    # -- changing a test drive -----------------------------------------------------------------
    #
    # The appointment row names the hold its demo car was booked from (``car_hold_id``, written
    # in the appointment's transaction by the booking saga); inventory finds the car's rental by
    # it. Cancelling or moving a test drive changes both halves or neither, with records like
    # the booking saga's: ``_TD_CHANGE`` when it begins (what it does), ``_TD_CHANGE_SETTLED``
    # once the car matches the desk again. A retry, or ``settle``, finishes a change left half
    # way (a process died, inventory stopped answering).
    #
    # Cancel, forward only, every step idempotent:
    #   1. record the cancel (one per appointment)      PostgreSQL down: 503, nothing changed
    #   2. free the car: let its hold go (no late confirm can book it then) or cancel the
    #      rental booked from it                        inventory unreachable: 503, the desk
    #                                                   untouched; the cancel finishes later
    #   3. cancel the desk appointment and record the cancel settled, in one transaction, if
    #      the appointment still has that car (a move landed meanwhile: 2 again, with its car)
    # The car goes first, so an appointment is never cancelled while its car stays booked; and
    # a car can always be freed, so a recorded cancel only ever moves forward: the caller who
    # heard the 503 can ask again, or leave it to the sweep.
    #
    # Move: a second booking of the car, then the desk (the pivot), then the old car goes:
    #   1. refused at once: a time overlapping the current one (the car's own booking would be
    #      in the way), a test drive being cancelled, a car not booked (yet)
    #   2. hold the car at the new time                 taken: refused, nothing changed
    #   3. record the move (from which car hold to which)
    #   4. confirm the new hold                         the car is booked at both times now
    #   5. move the desk (its move holds the new time before letting the old go); in the same
    #      transaction the appointment takes the new car's hold and the move is decided "moved"
    #   6. free the old car; record the move settled
    # A failure before 5 commits decides "kept" instead (the record 5 writes: whichever comes
    # first stands, so a late step 5 fails) and frees the new car: both halves stay at the old
    # time. A failure after 5 only delays 6: both halves are at the new time, and a retry or the
    # sweep cancels the old car's booking. The car is never booked at neither time, so no one
    # can take the old time while the move may still fail.

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
        or neither (see above). The desk's reschedule calls it inside its write, once the
        appointment and the new time passed the desk's own checks."""
        aid = uuid.UUID(current.appointment_id)
        self._vehicle_holds(_CHANGE_UNWIRED)
        if start < current.end and current.start < end:
            if start == current.start:
                return current  # it is there already
            raise Conflict(
                "A test drive can only move to a time clear of its current one; to move it by "
                "less than its length, cancel it and book the new time.",
                appointment_id=str(aid),
            )
        cancelling = _cancel_attempt(aid)
        if await idempotency.replay(
            self.pool, scope=_TD_CHANGE, key=cancelling.key, payload=cancelling.record
        ):
            raise Conflict(
                "That test drive is being cancelled, so it can no longer be moved.",
                appointment_id=str(aid),
            )
        car = await self._car_booking(car_hold)
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
        attempt, earlier = await self._next_attempt(
            key, payload, kind="m", settle=self._settle_earlier_move
        )
        if earlier is not None:
            return earlier
        try:
            hold = await self._hold_car(
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
                scope=_TD_CHANGE,
                key=attempt.key,
                payload=attempt.record,
                response=change,
            )
        except Exception:
            await self._let_car_go(attempt, hold.hold_id)
            raise

        async def take_new_car(conn: asyncpg.Connection) -> None:
            # The pivot, in the desk move's transaction.
            if await conn.fetchval(q.SWAP_CAR_HOLD, aid, car_hold, hold.hold_id) is None:
                raise Conflict(
                    "That test drive changed while it was being moved; try again.",
                    appointment_id=str(aid),
                )
            await idempotency.remember(
                conn,
                scope=_TD_MOVE_DECIDED,
                key=attempt.key,
                payload=attempt.record,
                response={"outcome": "moved"},
            )

        try:
            await self._confirm_car(attempt, hold.hold_id)
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
        self, attempt: _DriveAttempt, change: dict[str, Any], error: Exception
    ) -> Appointment:
        """After a move failed before or at the pivot: both halves back at the old time (raise
        ``error``), or, if the desk move committed after all, the moved appointment."""
        facts = {"attempt": attempt.key, "appointment_id": change["appointment_id"]}
        caller_error = (
            error if isinstance(error, DomainError) else _unknown_error(error, _MOVE_UNKNOWN)
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

    async def _settle_move(self, attempt: _DriveAttempt, change: dict[str, Any]) -> str:
        """Bring a move to both halves at the new time ("moved") or both at the old ("kept"):
        decide, then free the car the desk no longer has, then record the move settled.
        Raises DependencyUnavailable while inventory cannot be reached."""
        outcome = await self._decide_move(attempt)
        if outcome == "moved":
            await self._free_car(attempt, str(change["from_hold"]), _MOVED_CAR_REASON)
        else:
            await self._free_car(attempt, str(change["to_hold"]), _KEPT_CAR_REASON)
        await self._mark_drive_settled(attempt, outcome, scope=_TD_CHANGE_SETTLED)
        return outcome

    async def _decide_move(self, attempt: _DriveAttempt) -> str:
        """The move's outcome: "moved" if its desk move committed; otherwise "kept", recorded
        now, after which that desk move cannot commit any more (it writes the same record)."""
        if await idempotency.note(
            self.pool,
            scope=_TD_MOVE_DECIDED,
            key=attempt.key,
            payload=attempt.record,
            response={"outcome": "kept"},
        ):
            return "kept"
        decided = await idempotency.replay(
            self.pool, scope=_TD_MOVE_DECIDED, key=attempt.key, payload=attempt.record
        )
        return str(decided["outcome"]) if decided else "kept"

    async def _settle_earlier_move(self, attempt: _DriveAttempt) -> Appointment | None:
        """Settle an earlier move attempt of the caller's key: the moved appointment if it did
        move, else None (it never got as far as the car, or both halves were kept)."""
        change = await idempotency.replay(
            self.pool, scope=_TD_CHANGE, key=attempt.key, payload=attempt.record
        )
        if change is None:
            return None  # a car hold it may have placed lapses at its TTL
        settled = await idempotency.replay(
            self.pool, scope=_TD_CHANGE_SETTLED, key=attempt.key, payload=attempt.record
        )
        outcome = str(settled["outcome"]) if settled else await self._settle_move(attempt, change)
        if outcome != "moved":
            return None
        return await self.desk.read_appointment(uuid.UUID(str(change["appointment_id"])))

    async def cancel(
        self, current: Appointment, why: str, key: str | None, payload: dict[str, Any]
    ) -> Appointment:
        """Cancel a booked test drive: its car first, then the desk (see above). The desk's
        cancel calls it inside its write, once the appointment passed the desk's own checks."""
        self._vehicle_holds(_CHANGE_UNWIRED)
        aid = uuid.UUID(current.appointment_id)
        attempt = _cancel_attempt(aid)
        # The first reason stands for the sweep; this request's goes on the appointment.
        await idempotency.note(
            self.pool,
            scope=_TD_CHANGE,
            key=attempt.key,
            payload=attempt.record,
            response={"op": "cancel", "appointment_id": str(aid), "reason": why},
        )
        return await self._finish_cancel(attempt, current, why, key, payload)

    async def _finish_cancel(
        self,
        attempt: _DriveAttempt,
        current: Appointment,
        why: str,
        key: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Appointment:
        """Free the test drive's car, then cancel the desk appointment (steps 2 and 3)."""
        aid = uuid.UUID(current.appointment_id)
        for _ in range(_CANCEL_ROUNDS):
            car_hold = str(await self.pool.fetchval(q.SELECT_CAR_HOLD, aid))
            try:
                await self._free_car(attempt, car_hold, why)
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
        attempt: _DriveAttempt,
        car_hold: str,
    ) -> Appointment:
        """Cancel the desk appointment if it still has ``car_hold``, the car just freed (else
        ``_CarChanged``), and record the cancel ``attempt`` settled in the same transaction."""
        aid = uuid.UUID(current.appointment_id)

        async def still_that_car(conn: asyncpg.Connection) -> None:
            # A move of this appointment commits before this lock is granted, or waits for
            # this transaction (and then finds the booking cancelled).
            await conn.execute(q.LOCK_BOOKING, uuid.UUID(current.booking_id))
            if await conn.fetchval(q.SELECT_CAR_HOLD, aid) != car_hold:
                raise _CarChanged

        async def record_settled(conn: asyncpg.Connection) -> None:
            await idempotency.note(
                conn,
                scope=_TD_CHANGE_SETTLED,
                key=attempt.key,
                payload=attempt.record,
                response={"outcome": "cancelled"},
            )

        return await self.desk.cancel_desk(
            current, why, key, payload, first=still_that_car, also=record_settled
        )

    async def _settle_change(self, attempt: _DriveAttempt) -> None:
        """The sweep's end of a cancel or move left half way."""
        change = await idempotency.replay(
            self.pool, scope=_TD_CHANGE, key=attempt.key, payload=attempt.record
        )
        if change is None:
            return
        if change["op"] == "cancel":
            current = await self.desk.read_appointment(uuid.UUID(str(change["appointment_id"])))
            await self._finish_cancel(attempt, current, str(change["reason"]))
        else:
            await self._settle_move(attempt, change)

    async def _car_booking(self, hold_id: str) -> RentalBooking | None:
        """The rental booked from the car's hold, or None if it never became one."""
        vehicles = self._vehicle_holds(_CHANGE_UNWIRED)
        return await _until_known(
            lambda: vehicles.booking_for_hold(hold_id),
            step="car lookup",
            facts={"hold_id": hold_id},
            message=_MOVE_UNKNOWN,
        )

    async def _free_car(self, attempt: _DriveAttempt, hold_id: str, reason: str) -> None:
        """Make sure no rental stands on a car hold: let the hold go (then no confirm still on
        its way can book it) or, if it is gone, cancel the rental booked from it, if any.
        Idempotent. Raises DependencyUnavailable while inventory cannot tell."""
        vehicles = self._vehicle_holds(_CHANGE_UNWIRED)
        facts = {"attempt": attempt.key, "hold_id": hold_id}
        unknown: Exception | None = None
        for pause in _retry_pauses():
            await asyncio.sleep(pause)
            try:
                if (await vehicles.release_hold(hold_id)).released:
                    log.info("test-drive car hold let go", extra=facts)
                    return
                await vehicles.cancel_rental_for_hold(hold_id, reason[:300])
            except NotFound:
                return  # the hold lapsed or was let go: it never became a booking
            except Conflict as e:
                unknown = e  # a confirm of this hold is under way: ask again once it ended
            except Exception as e:
                unknown = e
            else:
                log.info("test-drive car booking cancelled", extra=facts)
                return
            log.warning("test-drive car: could not free it yet", extra=facts)
        raise _unknown_error(unknown)
