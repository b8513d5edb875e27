"""The appointment desks: service types, free slots, bookings, callbacks.

A booking holds ONE resource of the service type's pool (a bay, a clinician, the sales desk) over
grid cells through the reservation primitive, and the appointment row is written in the same
transaction as the booking row, so every confirmed answer is a row in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from asyncpg.types import Range
from redis.exceptions import RedisError

from services import idempotency
from services.db import PG_UNAVAILABLE
from services.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    HoldExpired,
    InvalidInput,
    NotFound,
    Unavailable,
)
from services.inventory import HoldRequest, HoldResponse, RentalBooking
from services.normalize import normalize_email, normalize_phone
from services.reservations import Booking, Hold, ReservationStore
from services.scheduling import _queries as q
from services.scheduling.business_hours import BusinessCalendar
from services.scheduling.models import (
    Appointment,
    BookRequest,
    Callback,
    Customer,
    ServiceType,
    Slot,
    SlotList,
    TestDrive,
    TestDriveRequest,
    Vehicle,
    VehicleIn,
)
from services.scheduling.preferences import learn_preferences
from services.scheduling.vehicles import VehicleHolds
from services.settings import Settings
from services.validation import check_id, check_number, clean_text, parse_date, parse_datetime

log = logging.getLogger(__name__)

KIND = "appointment"
# The service type of a dealership test drive (served by the sales desk).
TEST_DRIVE = "test_drive"
# A booking's hold is confirmed at once; a short life means a crash between the two steps frees
# the time within seconds instead of minutes.
BOOKING_HOLD_SECONDS = 30
# Days searched per round trip when looking for the next open date.
_SEARCH_CHUNK_DAYS = 7
_SERVICE_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_IDEMPOTENCY_PKEY = "idempotency_keys_pkey"
# How long a request holding an idempotency key may take before a twin stops waiting for it.
IDEMPOTENCY_LOCK_SECONDS = 30

# Test drives (a saga over the sales desk and a demo car; see book_test_drive). Its records are
# idempotency records: first answer wins, written in the transaction of the step they describe.
_TD_ANSWER = "scheduling.test_drive"  # the caller's answer, under the caller's key
_TD_STARTED = "scheduling.test_drive.started"  # an attempt of a caller's key began
_TD_BOOKED = "scheduling.test_drive.booked"  # its appointment exists (and which car hold)
_TD_SETTLED = "scheduling.test_drive.settled"  # both halves exist, or neither
_DRIVE_CANCEL_REASON = "the test-drive car could not be booked"
# Pauses before each try of a saga step whose outcome was unknown (a timeout, a store down).
TEST_DRIVE_RETRY_PAUSES: tuple[float, ...] = (0.0, 0.2, 0.5)
# Attempts one idempotency key may make (each earlier one failed and was undone).
TEST_DRIVE_MAX_ATTEMPTS = 20
# The sweep looks at attempts older than a car hold's life plus this, and younger than the
# horizon (an attempt still unsettled after that has been logged for days; a person decides).
_SWEEP_MARGIN_SECONDS = 60
_SWEEP_HORIZON = timedelta(days=14)
# Attempts that booked an appointment and were never settled, oldest first.
_SELECT_UNSETTLED_TEST_DRIVES = """
SELECT b.key
  FROM idempotency_keys b
 WHERE b.scope = $1
   AND b.created_at < now() - make_interval(secs => $3)
   AND b.created_at > now() - make_interval(secs => $5)
   AND NOT EXISTS (SELECT 1 FROM idempotency_keys s WHERE s.scope = $2 AND s.key = b.key)
 ORDER BY b.created_at
 LIMIT $4"""


@dataclass(frozen=True, slots=True)
class _ServiceType:
    service_type_id: str
    name: str
    description: str
    duration_minutes: int
    price_min_usd: float
    price_max_usd: float
    resource_pool: str
    resource_ids: tuple[str, ...]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> _ServiceType:
        return cls(
            service_type_id=row["service_type_id"],
            name=row["name"],
            description=row["description"],
            duration_minutes=row["duration_minutes"],
            price_min_usd=float(row["price_min_usd"]),
            price_max_usd=float(row["price_max_usd"]),
            resource_pool=row["resource_pool"],
            resource_ids=tuple(row["resource_ids"]),
        )

    @property
    def spoken(self) -> str:
        """The name as it reads in a sentence: "an oil change"."""
        name = self.name.lower()
        return ("an " if name[0] in "aeiou" else "a ") + name

    def public(self) -> ServiceType:
        return ServiceType(
            service_type=self.service_type_id,
            name=self.name,
            description=self.description,
            duration_minutes=self.duration_minutes,
            price_min_usd=self.price_min_usd,
            price_max_usd=self.price_max_usd,
            resource_pool=self.resource_pool,
            resources=len(self.resource_ids),
        )


@dataclass(frozen=True, slots=True)
class _Wanted:
    """A booking request after every field was checked and normalised."""

    service_type: str
    phone: str
    start: datetime
    notes: str | None
    name: str | None
    email: str | None
    call_id: str | None
    vehicle: VehicleIn | None

    def payload(self) -> dict[str, Any]:
        """What identifies the request for its idempotency key."""
        return {
            "service_type": self.service_type,
            "phone": self.phone,
            "start": self.start.astimezone(UTC).isoformat(),
            "notes": self.notes,
            "name": self.name,
            "email": self.email,
            "call_id": self.call_id,
            "vehicle": self.vehicle.model_dump() if self.vehicle else None,
        }


@contextmanager
def _storage_errors() -> Iterator[None]:
    """Map an unreachable PostgreSQL or Redis to DependencyUnavailable; nothing else changes."""
    try:
        yield
    except PG_UNAVAILABLE as e:
        raise DependencyUnavailable("Scheduling is unavailable for a moment; try again.") from e
    except RedisError as e:
        raise DependencyUnavailable("Scheduling is unavailable for a moment; try again.") from e


def _is_idempotency_race(error: BaseException) -> bool:
    """A concurrent request with the same idempotency key committed first."""
    return (
        isinstance(error, asyncpg.UniqueViolationError)
        and error.constraint_name == _IDEMPOTENCY_PKEY
    )


def _parse_uuid(value: str | uuid.UUID, *, what: str, field: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        raise NotFound(
            f"I could not find {what} with that id.", **{field: str(value)[:64]}
        ) from None


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _DriveAttempt:
    """One attempt at a test drive. ``key`` is ``<caller's key>|<n>``, or ``~<random>|0``
    without one (``~`` and ``|`` never occur in a caller's key); every step's idempotency key
    derives from it."""

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


def _unknown_error(cause: BaseException | None) -> DependencyUnavailable:
    """What the caller hears when a step's outcome stayed unknown: try again shortly."""
    if isinstance(cause, DependencyUnavailable):
        return cause
    error = DependencyUnavailable("Test drives cannot be booked right now; try again soon.")
    error.__cause__ = cause
    return error


def _retrieve_outcome(task: asyncio.Task[Any]) -> None:
    # A saga whose caller went away still ends; its error is logged, not left unretrieved.
    if not task.cancelled() and (error := task.exception()) is not None:
        log.debug("test drive ended with an error", exc_info=error)


# Called inside the appointment's transaction (a test drive records its saga step there).
_AlsoWrite = Callable[[asyncpg.Connection, Appointment], Awaitable[None]]


class SchedulingService:
    """Business hours, service types, slots, appointments, customers and callbacks."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        settings: Settings,
        reservations: ReservationStore | None = None,
        vehicles: VehicleHolds | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.pool = pool
        # Inventory's demo cars, for test drives; None where the dealership desk is not wired.
        self.vehicles = vehicles
        self.redis = redis
        self.settings = settings
        self.tz = settings.tz
        self.calendar = BusinessCalendar(settings)
        self.cell_seconds = settings.slot_minutes * 60
        self.reservations = reservations or ReservationStore.from_settings(
            pool=pool, redis=redis, settings=settings
        )
        self._clock = clock

    # -- service types and slots --------------------------------------------------------------

    async def list_service_types(self) -> list[ServiceType]:
        with _storage_errors():
            rows = await self.pool.fetch(q.SELECT_SERVICE_TYPES)
        return [_ServiceType.from_row(r).public() for r in rows]

    async def list_slots(self, date: str | dt.date, service_type: str) -> SlotList:
        """Free start times of a service type on a day; when there are none, the next day with
        one (within the booking horizon)."""
        day = parse_date(date, field="date")
        now = self._clock()
        self.calendar.check_day(day, now)
        with _storage_errors():
            st = await self._service_type(service_type)
            free = await self._free_slots(st, [day], now)
            next_open: dt.date | None = None
            if not free[day]:
                next_open = await self._next_open_date(st, day, now)
        return SlotList(
            date=day, service_type=st.service_type_id, slots=free[day], next_open_date=next_open
        )

    async def _service_type(self, value: str) -> _ServiceType:
        # Agents say "Oil change" as often as they send oil_change.
        key = re.sub(r"[\s-]+", "_", str(value or "").strip().lower())
        if not _SERVICE_TYPE.match(key):
            raise InvalidInput("Please tell me which service you would like.", field="service_type")
        row = await self.pool.fetchrow(q.SELECT_SERVICE_TYPE, key)
        if row is None:
            offered = await self.pool.fetch(q.SELECT_SERVICE_TYPES)
            names = ", ".join(r["name"].lower() for r in offered)
            raise InvalidInput(
                f"We do not offer that service; we offer {names}.",
                field="service_type",
                offered=[r["service_type_id"] for r in offered],
            )
        st = _ServiceType.from_row(row)
        if not st.resource_ids:
            raise Unavailable(
                f"No one is available for {st.spoken} at the moment; please ask for a callback.",
                service_type=st.service_type_id,
            )
        return st

    async def _free_slots(
        self, st: _ServiceType, days: list[date], now: datetime
    ) -> dict[date, list[Slot]]:
        """The slots of each day where some resource of the pool is free for every cell: not
        booked in PostgreSQL and not held in Redis."""
        length = self.calendar.occupied(st.duration_minutes)
        candidates = {d: self.calendar.slot_starts(d, st.duration_minutes, now) for d in days}
        starts = [s for day_starts in candidates.values() for s in day_starts]
        if not starts:
            return {d: [] for d in days}
        cells_of = {s: self.reservations.cells(s, s + length, self.cell_seconds) for s in starts}
        wanted = sorted({c for cells in cells_of.values() for c in cells})

        span = Range(min(starts), max(starts) + length, lower_inc=True, upper_inc=False)
        taken: dict[str, set[int]] = {r: set() for r in st.resource_ids}
        for row in await self.pool.fetch(q.SELECT_BUSY, list(st.resource_ids), span):
            first = int(row["starts"].timestamp()) // self.cell_seconds
            last = -(-int(row["ends"].timestamp()) // self.cell_seconds)
            taken[row["resource_id"]].update(range(first, last))
        # One MGET per resource, all in one round trip. A held, pending or booked cell has a
        # value; a free one has none.
        pipe = self.redis.pipeline(transaction=False)
        for resource_id in st.resource_ids:
            pipe.mget(self.reservations.cell_keys(resource_id, wanted))
        for resource_id, values in zip(st.resource_ids, await pipe.execute(), strict=True):
            taken[resource_id].update(c for c, v in zip(wanted, values, strict=True) if v)

        return {
            d: [
                Slot(start=s.astimezone(self.tz), end=(s + length).astimezone(self.tz))
                for s in day_starts
                if any(taken[r].isdisjoint(cells_of[s]) for r in st.resource_ids)
            ]
            for d, day_starts in candidates.items()
        }

    async def _next_open_date(self, st: _ServiceType, after: date, now: datetime) -> date | None:
        last = self.calendar.last_bookable_day(now)
        day = after + timedelta(days=1)
        while day <= last:
            chunk = [
                day + timedelta(days=i)
                for i in range(_SEARCH_CHUNK_DAYS)
                if day + timedelta(days=i) <= last
            ]
            open_days = [d for d in chunk if self.calendar.is_open(d)]
            if open_days:
                free = await self._free_slots(st, open_days, now)
                for d in open_days:
                    if free[d]:
                        return d
            day = chunk[-1] + timedelta(days=1)
        return None

    # -- appointments -------------------------------------------------------------------------

    async def book_appointment(
        self, request: BookRequest, idempotency_key: str | None = None
    ) -> Appointment:
        """Book the service at that start on the first free resource of its pool."""
        key = idempotency.check_key(idempotency_key)
        wanted = self._check_booking(request)
        async with self._write("scheduling.book", key):
            if key and (prior := await idempotency.replay(
                self.pool, scope="scheduling.book", key=key, payload=wanted.payload()
            )):  # fmt: skip
                return Appointment.model_validate(prior)
            st = await self._service_type(request.service_type)
            end = self.calendar.check_start(
                wanted.start, st.duration_minutes, self._clock(), what=st.spoken
            )
            return await self._book(st, wanted, end, key)

    # -- dealership test drives -----------------------------------------------------------------
    #
    # A test drive is a saga over two services: the sales desk (an appointment, here) and a demo
    # car (a hold and its confirm, in inventory, reached through ``VehicleHolds``). Each attempt
    # has a key (the caller's idempotency key and the attempt's number, or a random one) and
    # every step's idempotency key derives from it:
    #
    #   1. record the attempt          (with a caller's key: it numbers that key's attempts)
    #   2. hold the car                (undone by letting the hold go; it lapses at its TTL)
    #   3. book the desk appointment   (and record, in the same transaction, that it exists)
    #   4. confirm the car             (a timeout leaves its outcome unknown: asked again)
    #   5. record the attempt settled, with the caller's answer
    #
    # After step 3 a failure settles the CAR first, because a confirm can land after its caller
    # stopped waiting: letting the hold go either succeeds (then no confirm can book it any
    # more) or finds it gone, and confirming a gone hold only looks up the booking made from
    # it. A booked car keeps the appointment (the test drive stands); a car that is certainly
    # not booked cancels the appointment. When the car's fate cannot be learned, nothing is
    # cancelled and the attempt stays unsettled: a retry with the same key, or
    # ``settle_test_drives`` (the scheduling deployment runs it), finishes it later. So after
    # any failure there are both halves or neither, and a car hold at most until its TTL.

    async def book_test_drive(
        self, request: TestDriveRequest, idempotency_key: str | None = None
    ) -> TestDrive:
        """Book a test drive: a sales-desk appointment and the demo car, together or not at all.

        The car is held first (cheap to let go), then the appointment is booked, then the car's
        hold is confirmed; a failure undoes what was done (see the saga notes above). The saga
        runs to its end even if the caller goes away, so a compensation never stops half way.
        """
        task = asyncio.ensure_future(self._book_test_drive(request, idempotency_key))
        task.add_done_callback(_retrieve_outcome)
        return await asyncio.shield(task)

    async def _book_test_drive(
        self, request: TestDriveRequest, idempotency_key: str | None
    ) -> TestDrive:
        if self.vehicles is None:
            raise DependencyUnavailable("Test drives cannot be booked right now; try again soon.")
        key = idempotency.check_key(idempotency_key)
        unit_id = check_id(request.vehicle_unit_id, field="vehicle_unit_id")
        wanted = self._check_booking(
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
        async with self._write(_TD_ANSWER, key):
            if key and (prior := await idempotency.replay(
                self.pool, scope=_TD_ANSWER, key=key, payload=payload
            )):  # fmt: skip
                return TestDrive.model_validate(prior)
            st = await self._service_type(TEST_DRIVE)
            end = self.calendar.check_start(
                wanted.start, st.duration_minutes, self._clock(), what=st.spoken
            )
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
        if key is None:
            return _DriveAttempt(f"~{uuid.uuid4().hex}|0"), None
        for n in range(TEST_DRIVE_MAX_ATTEMPTS):
            attempt = _DriveAttempt(f"{key}|{n}")
            # Refuses a key reused for another request (Conflict), as every replay does.
            started = await idempotency.replay(
                self.pool, scope=_TD_STARTED, key=attempt.key, payload=payload
            )
            if started is None:
                try:
                    async with self.pool.acquire() as conn:
                        await idempotency.remember(
                            conn,
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
            drive = await self._settle_drive(attempt)
            if drive is not None:
                await self._remember_drive(attempt, key, payload, drive, settled=True)
                return attempt, drive
        raise Conflict(
            "That request was tried too many times with one idempotency key; use a new key.",
            idempotency_key=key,
        )

    async def _run_drive(
        self,
        attempt: _DriveAttempt,
        st: _ServiceType,
        wanted: _Wanted,
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

        try:
            appointment = await self._book(st, wanted, end, None, also=record_booked)
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

    def _vehicle_holds(self) -> VehicleHolds:
        if self.vehicles is None:
            raise DependencyUnavailable("Test drives cannot be booked right now; try again soon.")
        return self.vehicles

    async def _hold_car(self, attempt: _DriveAttempt, request: HoldRequest) -> HoldResponse:
        """Hold the car; a hold whose answer was lost is asked for again with the same key,
        which returns that same hold."""
        vehicles = self._vehicle_holds()
        unknown: Exception | None = None
        for pause in _retry_pauses():
            await asyncio.sleep(pause)
            try:
                return await vehicles.create_hold(
                    request, idempotency_key=attempt.step_key("car-hold")
                )
            except DependencyUnavailable as e:
                unknown = e
            except DomainError:
                raise  # refused: nothing was held
            except Exception as e:
                unknown = e
            log.warning("test-drive car hold: outcome unknown", extra={"attempt": attempt.key})
        # If a hold was placed after all, it lapses at its TTL.
        raise _unknown_error(unknown)

    async def _confirm_car(self, attempt: _DriveAttempt, hold_id: str) -> RentalBooking:
        """Confirm the car's hold. An answer that never came (a timeout: the confirm may still
        have happened) is asked for again with the same key, which returns that booking, or
        confirms now if the first never ran. A refusal is final."""
        vehicles = self._vehicle_holds()
        unknown: Exception | None = None
        for pause in _retry_pauses():
            await asyncio.sleep(pause)
            try:
                return await vehicles.confirm_hold(
                    hold_id, idempotency_key=attempt.step_key("car-confirm")
                )
            except DependencyUnavailable as e:
                unknown = e
            except DomainError:
                raise
            except Exception as e:
                unknown = e
            log.warning(
                "test-drive car confirm: outcome unknown",
                extra={"attempt": attempt.key, "hold_id": hold_id},
            )
        raise _unknown_error(unknown)

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
        unknown: Exception | None = None
        for pause in _retry_pauses():
            await asyncio.sleep(pause)
            try:
                await self.cancel_appointment(
                    appointment_id,
                    _DRIVE_CANCEL_REASON,
                    idempotency_key=attempt.step_key("cancel"),
                )
            except NotFound:
                return  # its transaction never committed: nothing to cancel
            except DependencyUnavailable as e:
                unknown = e
            except DomainError:
                raise  # e.g. it has started: a person must look at it
            except Exception as e:
                unknown = e
            else:
                return
            log.warning(
                "could not cancel a test-drive appointment yet",
                extra={"attempt": attempt.key, "appointment_id": appointment_id},
            )
        raise _unknown_error(unknown)

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
        appointment = await self._appointment(self.pool, uuid.UUID(str(booked["appointment_id"])))
        if settled is None:
            await self._mark_drive_settled(attempt, "booked")
            log.info("unsettled test drive found booked", extra={"attempt": attempt.key})
        return _drive_answer(appointment, car)

    async def _mark_drive_settled(self, attempt: _DriveAttempt, outcome: str) -> None:
        try:
            async with self.pool.acquire() as conn:
                await idempotency.remember(
                    conn,
                    scope=_TD_SETTLED,
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

    async def settle_test_drives(
        self, *, older_than: timedelta | None = None, limit: int = 100
    ) -> int:
        """Settle test-drive attempts that booked an appointment and never finished (their
        process died, or inventory could not tell whether the car was booked): both halves,
        or neither. Only attempts older than ``older_than`` are looked at (by default a car
        hold's TTL and then some, when no confirm can still land). Returns how many were
        settled; the others are tried again next time."""
        if self.vehicles is None:
            return 0
        if older_than is None:
            older_than = timedelta(
                seconds=self.settings.hold_ttl_seconds
                + self.reservations.pending_ttl_seconds
                + _SWEEP_MARGIN_SECONDS
            )
        with _storage_errors():
            rows = await self.pool.fetch(
                _SELECT_UNSETTLED_TEST_DRIVES,
                _TD_BOOKED,
                _TD_SETTLED,
                older_than.total_seconds(),
                limit,
                _SWEEP_HORIZON.total_seconds(),
            )
        settled = 0
        for row in rows:
            attempt = _DriveAttempt(row["key"])
            try:
                await self._settle_drive(attempt)
            except Exception:
                log.warning(
                    "test drive still unsettled", extra={"attempt": attempt.key}, exc_info=True
                )
                continue
            settled += 1
        return settled

    def _check_booking(self, request: BookRequest) -> _Wanted:
        vehicle = _check_vehicle(request.vehicle) if request.vehicle else None
        return _Wanted(
            service_type=str(request.service_type),
            phone=normalize_phone(request.phone),
            start=parse_datetime(request.start, field="start", tz=self.tz),
            notes=clean_text(request.notes, field="notes", max_length=1000, multiline=True),
            name=clean_text(request.name, field="name", max_length=120),
            email=normalize_email(request.email) if request.email else None,
            call_id=check_id(request.call_id, field="call_id") if request.call_id else None,
            vehicle=vehicle,
        )

    async def _book(
        self,
        st: _ServiceType,
        wanted: _Wanted,
        end: datetime,
        key: str | None,
        *,
        also: _AlsoWrite | None = None,
    ) -> Appointment:
        answer: list[Appointment] = []

        async def write_details(conn: asyncpg.Connection, booking: Booking, hold: Hold) -> None:
            customer_id = await conn.fetchval(
                q.UPSERT_CUSTOMER, uuid.uuid4(), wanted.phone, wanted.name, wanted.email
            )
            vehicle_id = None
            if wanted.vehicle is not None:
                vehicle_id = await _vehicle_id(conn, customer_id, wanted.vehicle)
            appointment_id = uuid.uuid4()
            await conn.execute(
                q.INSERT_APPOINTMENT,
                appointment_id,
                booking.booking_id,
                customer_id,
                st.service_type_id,
                vehicle_id,
                wanted.notes,
                wanted.call_id,
            )
            await self._refresh_preferences(conn, customer_id)
            appointment = await self._appointment(conn, appointment_id)
            if also is not None:
                await also(conn, appointment)
            if key:
                await idempotency.remember(
                    conn,
                    scope="scheduling.book",
                    key=key,
                    payload=wanted.payload(),
                    response=appointment.model_dump(mode="json"),
                )
            answer.append(appointment)

        for resource_id in st.resource_ids:
            try:
                hold = await self.reservations.reserve_cells(
                    resource_id=resource_id,
                    start=wanted.start,
                    end=end,
                    cell_seconds=self.cell_seconds,
                    kind=KIND,
                    call_id=wanted.call_id,
                    ttl_seconds=BOOKING_HOLD_SECONDS,
                )
            except Unavailable:
                continue
            try:
                await self.reservations.confirm_hold(
                    hold.hold_id, write_details=write_details, hold=hold
                )
            except Unavailable:
                continue  # Redis had lost a booking PostgreSQL knows of; try the next resource.
            except BaseException as error:
                await self._release_quietly(hold.hold_id)
                if key and _is_idempotency_race(error):
                    prior = await idempotency.replay(
                        self.pool, scope="scheduling.book", key=key, payload=wanted.payload()
                    )
                    if prior is not None:
                        return Appointment.model_validate(prior)
                raise
            return answer[0]
        raise await self._taken(st, wanted.start)

    @asynccontextmanager
    async def _write(self, scope: str, key: str | None) -> AsyncIterator[None]:
        """Around every write: storage errors mapped, twins of one idempotency key in turn."""
        with _storage_errors():
            async with self._one_at_a_time(scope, key):
                yield

    @asynccontextmanager
    async def _one_at_a_time(self, scope: str, key: str | None) -> AsyncIterator[None]:
        """Requests repeating one idempotency key run one after another.

        Without this a twin arriving while the first is still booking finds the time held by
        its own original and refuses, instead of waiting for the first answer to replay it.
        The PostgreSQL record stays the guarantee; this lock only orders the twins.
        """
        if key is None:
            yield
            return
        lock = self.redis.lock(
            f"{self.settings.redis_prefix}:idem:{scope}:{key}",
            timeout=IDEMPOTENCY_LOCK_SECONDS,
            sleep=0.02,
            blocking_timeout=IDEMPOTENCY_LOCK_SECONDS,
            raise_on_release_error=False,
        )
        if not await lock.acquire():
            raise DependencyUnavailable(
                "That request is still being processed; try again in a moment."
            )
        try:
            yield
        finally:
            await lock.release()

    async def _taken(self, st: _ServiceType, start: datetime) -> Unavailable:
        """The refusal for a taken time, naming the nearest free times that day."""
        day = start.astimezone(self.tz).date()
        free = (await self._free_slots(st, [day], self._clock()))[day]
        nearest = sorted(free, key=lambda s: abs((s.start - start).total_seconds()))[:3]
        when = ", ".join(s.start.strftime("%-I:%M %p").lower() for s in sorted(
            nearest, key=lambda s: s.start))  # fmt: skip
        sentence = f"That time is taken for {st.spoken}."
        sentence += f" That day I can offer {when}." if when else " That day is fully booked."
        return Unavailable(
            sentence,
            service_type=st.service_type_id,
            alternatives=[s.start.isoformat() for s in nearest],
        )

    async def _release_quietly(self, hold_id: str) -> None:
        try:
            await self.reservations.release_hold(hold_id)
        except Exception:  # the hold expires on its own within seconds
            log.warning("could not release a booking hold", extra={"hold_id": hold_id})

    async def reschedule_appointment(
        self,
        appointment_id: str,
        new_start: str | datetime,
        idempotency_key: str | None = None,
    ) -> Appointment:
        """Move an appointment; the new time is held before the old one is let go, possibly on
        another resource of the pool. A move that fails leaves the appointment where it was."""
        key = idempotency.check_key(idempotency_key)
        aid = _parse_uuid(appointment_id, what="an appointment", field="appointment_id")
        start = parse_datetime(new_start, field="new_start", tz=self.tz)
        payload = {"appointment_id": str(aid), "start": start.astimezone(UTC).isoformat()}
        async with self._write("scheduling.reschedule", key):
            if key and (prior := await idempotency.replay(
                self.pool, scope="scheduling.reschedule", key=key, payload=payload
            )):  # fmt: skip
                return Appointment.model_validate(prior)
            current = await self._appointment(self.pool, aid)
            now = self._clock()
            if current.status != "confirmed":
                raise Conflict(
                    "That appointment was cancelled; I can book a new one instead.",
                    appointment_id=str(aid),
                )
            if current.start <= now:
                raise Conflict(
                    "That appointment has already started, so it can no longer be moved.",
                    appointment_id=str(aid),
                )
            st = await self._service_type(current.service_type)
            end = self.calendar.check_start(start, st.duration_minutes, now, what=st.spoken)
            answer: list[Appointment] = []

            async def write_details(conn: asyncpg.Connection, booking: Booking) -> None:
                customer_id = await conn.fetchval(q.TOUCH_APPOINTMENT, aid)
                await self._refresh_preferences(conn, customer_id)
                moved = await self._appointment(conn, aid)
                if key:
                    await idempotency.remember(
                        conn,
                        scope="scheduling.reschedule",
                        key=key,
                        payload=payload,
                        response=moved.model_dump(mode="json"),
                    )
                answer.append(moved)

            # Its own resource first: the customer keeps their bay when it is free.
            order = [current.resource_id, *(r for r in st.resource_ids if r != current.resource_id)]
            for resource_id in order:
                try:
                    await self.reservations.move_booking(
                        current.booking_id,
                        resource_id=resource_id,
                        start=start,
                        end=end,
                        cell_seconds=self.cell_seconds,
                        write_details=write_details,
                    )
                except Unavailable:
                    continue
                except asyncpg.UniqueViolationError as error:
                    if key and _is_idempotency_race(error):
                        prior = await idempotency.replay(
                            self.pool, scope="scheduling.reschedule", key=key, payload=payload
                        )
                        if prior is not None:
                            return Appointment.model_validate(prior)
                    raise
                return answer[0]
            raise await self._taken(st, start)

    async def cancel_appointment(
        self, appointment_id: str, reason: str, idempotency_key: str | None = None
    ) -> Appointment:
        """Mark the appointment cancelled (never deleted) and offer its time again."""
        key = idempotency.check_key(idempotency_key)
        aid = _parse_uuid(appointment_id, what="an appointment", field="appointment_id")
        why = clean_text(reason, field="reason", max_length=500, required=True)
        payload = {"appointment_id": str(aid), "reason": why}
        async with self._write("scheduling.cancel", key):
            if key and (prior := await idempotency.replay(
                self.pool, scope="scheduling.cancel", key=key, payload=payload
            )):  # fmt: skip
                return Appointment.model_validate(prior)
            current = await self._appointment(self.pool, aid)
            if current.status == "confirmed" and current.start <= self._clock():
                raise Conflict(
                    "That appointment has already started, so it can no longer be cancelled.",
                    appointment_id=str(aid),
                )
            try:
                # Lock order everywhere: booking, appointment, customer (no deadlock with a
                # concurrent reschedule of the same appointment).
                async with self.pool.acquire() as conn, conn.transaction():
                    await self.reservations.cancel_booking(
                        uuid.UUID(current.booking_id),
                        reason=why or "",
                        cell_seconds=self.cell_seconds,
                        conn=conn,
                    )
                    customer_id = await conn.fetchval(q.TOUCH_APPOINTMENT, aid)
                    await self._refresh_preferences(conn, customer_id)
                    cancelled = await self._appointment(conn, aid)
                    if key:
                        await idempotency.remember(
                            conn,
                            scope="scheduling.cancel",
                            key=key,
                            payload=payload,
                            response=cancelled.model_dump(mode="json"),
                        )
            except asyncpg.UniqueViolationError as error:
                if key and _is_idempotency_race(error):
                    prior = await idempotency.replay(
                        self.pool, scope="scheduling.cancel", key=key, payload=payload
                    )
                    if prior is not None:
                        return Appointment.model_validate(prior)
                raise
            return cancelled

    async def get_appointment(self, appointment_id: str) -> Appointment:
        aid = _parse_uuid(appointment_id, what="an appointment", field="appointment_id")
        with _storage_errors():
            return await self._appointment(self.pool, aid)

    async def list_customer_appointments(self, phone: str) -> list[Appointment]:
        """The customer's upcoming confirmed appointments, soonest first."""
        e164 = normalize_phone(phone)
        with _storage_errors():
            rows = await self.pool.fetch(q.SELECT_UPCOMING_FOR_PHONE, e164, self._clock())
        return [self._appointment_from_row(r) for r in rows]

    async def _appointment(
        self, conn: asyncpg.Connection | asyncpg.Pool, appointment_id: uuid.UUID
    ) -> Appointment:
        row = await conn.fetchrow(q.SELECT_APPOINTMENT, appointment_id)
        if row is None:
            raise NotFound(
                "I could not find an appointment with that id.", appointment_id=str(appointment_id)
            )
        return self._appointment_from_row(row)

    def _appointment_from_row(self, row: asyncpg.Record) -> Appointment:
        return Appointment(
            appointment_id=str(row["appointment_id"]),
            booking_id=str(row["booking_id"]),
            reference=row["reference"],
            status=row["status"],
            service_type=row["service_type_id"],
            service_name=row["service_name"],
            start=row["starts"].astimezone(self.tz),
            end=row["ends"].astimezone(self.tz),
            resource_id=row["resource_id"],
            price_min_usd=float(row["price_min_usd"]),
            price_max_usd=float(row["price_max_usd"]),
            phone=row["phone"],
            customer_name=row["customer_name"],
            vehicle_id=str(row["vehicle_id"]) if row["vehicle_id"] else None,
            notes=row["notes"],
            call_id=row["call_id"],
            cancel_reason=row["cancel_reason"],
        )

    # -- customers ----------------------------------------------------------------------------

    async def get_customer(self, phone: str) -> Customer:
        """The customer with that phone number, their vehicles and learned preferences."""
        e164 = normalize_phone(phone)
        with _storage_errors():
            row = await self.pool.fetchrow(q.SELECT_CUSTOMER, e164)
            if row is None:
                raise NotFound("I could not find a customer with that phone number.")
            vehicles = await self.pool.fetch(q.SELECT_VEHICLES, row["customer_id"])
        return Customer(
            customer_id=str(row["customer_id"]),
            phone=row["phone"],
            name=row["name"],
            email=row["email"],
            preferred_time_of_day=row["preferred_time_of_day"],
            preferred_weekdays=list(row["preferred_weekdays"]),
            vehicles=[
                Vehicle(
                    vehicle_id=str(v["vehicle_id"]),
                    year=v["year"],
                    make=v["make"],
                    model=v["model"],
                    plate=v["plate"],
                )
                for v in vehicles
            ],
        )

    async def _refresh_preferences(self, conn: asyncpg.Connection, customer_id: uuid.UUID) -> None:
        """Learn preferred time of day and weekdays again from the confirmed appointments.

        The customer row is locked first, so concurrent bookings of one customer each see the
        others' appointments and the last one to commit wins with the full picture.
        """
        await conn.execute(q.LOCK_CUSTOMER, customer_id)
        starts = [r["starts"] for r in await conn.fetch(q.SELECT_CUSTOMER_STARTS, customer_id)]
        time_of_day, weekdays = learn_preferences(starts, self.tz)
        await conn.execute(q.UPDATE_PREFERENCES, customer_id, time_of_day, weekdays)

    # -- callbacks ----------------------------------------------------------------------------

    async def schedule_callback(
        self,
        phone: str,
        reason: str,
        preferred_time: str | datetime | None = None,
        call_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Callback:
        """Promise a call back at the first time inside business hours at or after the
        preferred time (or now), rounded up to the slot grid."""
        key = idempotency.check_key(idempotency_key)
        e164 = normalize_phone(phone)
        why = clean_text(reason, field="reason", max_length=500, required=True)
        cid = check_id(call_id, field="call_id") if call_id else None
        now = self._clock()
        wanted = (
            parse_datetime(preferred_time, field="preferred_time", tz=self.tz)
            if preferred_time is not None
            else now
        )
        payload = {
            "phone": e164,
            "reason": why,
            "preferred_time": wanted.astimezone(UTC).isoformat() if preferred_time else None,
            "call_id": cid,
        }
        async with self._write("scheduling.callback", key):
            if key and (prior := await idempotency.replay(
                self.pool, scope="scheduling.callback", key=key, payload=payload
            )):  # fmt: skip
                return Callback.model_validate(prior)
            when = self.calendar.next_open_moment(wanted, now)
            callback_id = uuid.uuid4()
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    customer_id = await conn.fetchval(
                        q.UPSERT_CUSTOMER, uuid.uuid4(), e164, None, None
                    )
                    await conn.execute(q.INSERT_CALLBACK, callback_id, customer_id, why, when, cid)
                    callback = self._callback_from_row(
                        await conn.fetchrow(q.SELECT_CALLBACK, callback_id)
                    )
                    if key:
                        await idempotency.remember(
                            conn,
                            scope="scheduling.callback",
                            key=key,
                            payload=payload,
                            response=callback.model_dump(mode="json"),
                        )
            except asyncpg.UniqueViolationError as error:
                if key and _is_idempotency_race(error):
                    prior = await idempotency.replay(
                        self.pool, scope="scheduling.callback", key=key, payload=payload
                    )
                    if prior is not None:
                        return Callback.model_validate(prior)
                raise
            return callback

    async def list_callbacks(self, date: str | dt.date | None = None) -> list[Callback]:
        """Callbacks of one day (any status), or with no date every pending one from today on."""
        if date is None:
            start = datetime.combine(
                self.calendar.today(self._clock()), datetime.min.time(), self.tz
            )
            end = datetime.max.replace(tzinfo=UTC)
            statuses = ["pending"]
        else:
            day = parse_date(date, field="date")
            start = datetime.combine(day, datetime.min.time(), self.tz)
            end = datetime.combine(day + timedelta(days=1), datetime.min.time(), self.tz)
            statuses = ["pending", "done", "cancelled"]
        with _storage_errors():
            rows = await self.pool.fetch(q.SELECT_CALLBACKS_BETWEEN, start, end, statuses)
        return [self._callback_from_row(r) for r in rows]

    def _callback_from_row(self, row: asyncpg.Record) -> Callback:
        return Callback(
            callback_id=str(row["callback_id"]),
            phone=row["phone"],
            customer_name=row["customer_name"],
            reason=row["reason"],
            scheduled_for=row["scheduled_for"].astimezone(self.tz),
            status=row["status"],
            call_id=row["call_id"],
        )


def _check_vehicle(vehicle: VehicleIn) -> VehicleIn:
    year = vehicle.year
    if year is not None:
        year = int(check_number(year, field="vehicle_year", minimum=1900, maximum=2100))
    plate = clean_text(vehicle.plate, field="licence_plate", max_length=16)
    return VehicleIn(
        year=year,
        make=clean_text(vehicle.make, field="vehicle_make", max_length=60, required=True) or "",
        model=clean_text(vehicle.model, field="vehicle_model", max_length=60, required=True) or "",
        plate=plate.upper() if plate else None,
    )


async def _vehicle_id(
    conn: asyncpg.Connection, customer_id: uuid.UUID, vehicle: VehicleIn
) -> uuid.UUID:
    existing = await conn.fetchval(
        q.SELECT_SAME_VEHICLE, customer_id, vehicle.make, vehicle.model, vehicle.year, vehicle.plate
    )
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    vehicle_id = uuid.uuid4()
    await conn.execute(
        q.INSERT_VEHICLE,
        vehicle_id,
        customer_id,
        vehicle.year,
        vehicle.make,
        vehicle.model,
        vehicle.plate,
    )
    return vehicle_id
