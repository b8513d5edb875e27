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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

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
from services.inventory import HoldRequest, HoldResponse, RentalBooking, UnitInMaintenance
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
# Saga attempts that began ($1: booked an appointment, or began a change) and were never
# settled ($2), oldest first.
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


async def _run_to_end(work: Coroutine[Any, Any, _T]) -> _T:
    """Run ``work`` to its end even if the caller goes away (Serve cancels the handler of a
    client that hung up), so a saga's compensation never stops half way."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve_outcome)
    return await asyncio.shield(task)


class _CarChanged(Exception):
    """The test drive's car changed (a move landed) between freeing the car and the desk."""


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
    # cancelled and the attempt stays unsettled: a retry with the same key, or
    # ``settle_test_drives`` (the scheduling deployment runs it), finishes it later. So after
    # any failure there are both halves or neither, and a car hold at most until its TTL.
    # Cancelling or moving a booked test drive: see "changing a test drive" below.

    async def book_test_drive(
        self, request: TestDriveRequest, idempotency_key: str | None = None
    ) -> TestDrive:
        """Book a test drive: a sales-desk appointment and the demo car, together or not at all.

        The car is held first (cheap to let go), then the appointment is booked, then the car's
        hold is confirmed; a failure undoes what was done (see the saga notes above). The saga
        runs to its end even if the caller goes away, so a compensation never stops half way.
        """
        return await _run_to_end(self._book_test_drive(request, idempotency_key))

    async def _book_test_drive(
        self, request: TestDriveRequest, idempotency_key: str | None
    ) -> TestDrive:
        self._vehicle_holds()
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
            # The durable link a cancel or a move of the test drive follows to the car.
            await conn.execute(q.SET_CAR_HOLD, uuid.UUID(appointment.appointment_id), hold.hold_id)

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

    def _vehicle_holds(self, message: str = _BOOK_UNKNOWN) -> VehicleHolds:
        if self.vehicles is None:
            raise DependencyUnavailable(message)
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

    async def _mark_drive_settled(
        self, attempt: _DriveAttempt, outcome: str, *, scope: str = _TD_SETTLED
    ) -> None:
        try:
            async with self.pool.acquire() as conn:
                await idempotency.remember(
                    conn,
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

    async def settle_test_drives(
        self, *, older_than: timedelta | None = None, limit: int = 100
    ) -> int:
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
        for began, ended, settle in sweeps:
            with _storage_errors():
                rows = await self.pool.fetch(
                    _SELECT_UNSETTLED_TEST_DRIVES,
                    began,
                    ended,
                    older_than.total_seconds(),
                    limit,
                    _SWEEP_HORIZON.total_seconds(),
                )
            for row in rows:
                attempt = _DriveAttempt(row["key"])
                try:
                    await settle(attempt)
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
        another resource of the pool. A move that fails leaves the appointment where it was. A
        test drive's car moves with it, or neither moves (see "changing a test drive")."""
        return await _run_to_end(self._reschedule(appointment_id, new_start, idempotency_key))

    async def _reschedule(
        self, appointment_id: str, new_start: str | datetime, idempotency_key: str | None
    ) -> Appointment:
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
            car_hold = await self.pool.fetchval(q.SELECT_CAR_HOLD, aid)
            if car_hold is not None:
                return await self._move_test_drive(current, car_hold, st, start, end, key, payload)
            return await self._move_desk(current, st, start, end, key, payload)

    async def _move_desk(
        self,
        current: Appointment,
        st: _ServiceType,
        start: datetime,
        end: datetime,
        key: str | None,
        payload: dict[str, Any],
        *,
        also: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    ) -> Appointment:
        """Move the appointment's booking; ``also`` runs in the move's transaction."""
        aid = uuid.UUID(current.appointment_id)
        answer: list[Appointment] = []

        async def write_details(conn: asyncpg.Connection, booking: Booking) -> None:
            customer_id = await conn.fetchval(q.TOUCH_APPOINTMENT, aid)
            if also is not None:
                await also(conn)
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
        """Mark the appointment cancelled (never deleted) and offer its time again. A test
        drive's car is cancelled first (see "changing a test drive")."""
        return await _run_to_end(self._cancel(appointment_id, reason, idempotency_key))

    async def _cancel(
        self, appointment_id: str, reason: str, idempotency_key: str | None
    ) -> Appointment:
        key = idempotency.check_key(idempotency_key)
        aid = _parse_uuid(appointment_id, what="an appointment", field="appointment_id")
        why = clean_text(reason, field="reason", max_length=500, required=True) or ""
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
            if await self.pool.fetchval(q.SELECT_CAR_HOLD, aid) is not None:
                return await self._cancel_test_drive(current, why, key, payload)
            return await self._cancel_desk(current, why, key, payload)

    async def _cancel_desk(
        self,
        current: Appointment,
        why: str,
        key: str | None,
        payload: dict[str, Any] | None,
        *,
        car_hold: str | None = None,
        attempt: _DriveAttempt | None = None,
    ) -> Appointment:
        """Cancel the appointment's booking. For a test drive, ``car_hold`` is the car just
        freed (refused with ``_CarChanged`` if the appointment has another car by now) and the
        cancel ``attempt`` is recorded settled in the same transaction."""
        aid = uuid.UUID(current.appointment_id)
        try:
            # Lock order everywhere: booking, appointment, customer (no deadlock with a
            # concurrent reschedule of the same appointment).
            async with self.pool.acquire() as conn, conn.transaction():
                if car_hold is not None:
                    # A move of this appointment commits before this lock is granted, or
                    # waits for this transaction (and then finds the booking cancelled).
                    await conn.execute(q.LOCK_BOOKING, uuid.UUID(current.booking_id))
                    if await conn.fetchval(q.SELECT_CAR_HOLD, aid) != car_hold:
                        raise _CarChanged
                await self.reservations.cancel_booking(
                    uuid.UUID(current.booking_id),
                    reason=why,
                    cell_seconds=self.cell_seconds,
                    conn=conn,
                )
                customer_id = await conn.fetchval(q.TOUCH_APPOINTMENT, aid)
                await self._refresh_preferences(conn, customer_id)
                cancelled = await self._appointment(conn, aid)
                if attempt is not None:
                    await idempotency.note(
                        conn,
                        scope=_TD_CHANGE_SETTLED,
                        key=attempt.key,
                        payload=attempt.record,
                        response={"outcome": "cancelled"},
                    )
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

    # -- changing a test drive -----------------------------------------------------------------
    #
    # The appointment row names the hold its demo car was booked from (``car_hold_id``, written
    # in the appointment's transaction by the booking saga); inventory finds the car's rental by
    # it. Cancelling or moving a test drive changes both halves or neither, with records like
    # the booking saga's: ``_TD_CHANGE`` when it begins (what it does), ``_TD_CHANGE_SETTLED``
    # once the car matches the desk again. A retry, or ``settle_test_drives``, finishes a change
    # left half way (a process died, inventory stopped answering).
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

    async def _move_test_drive(
        self,
        current: Appointment,
        car_hold: str,
        st: _ServiceType,
        start: datetime,
        end: datetime,
        key: str | None,
        payload: dict[str, Any],
    ) -> Appointment:
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
            async with self.pool.acquire() as conn:
                await idempotency.remember(
                    conn,
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
            moved = await self._move_desk(current, st, start, end, key, payload, also=take_new_car)
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
            return await self._appointment(self.pool, uuid.UUID(str(change["appointment_id"])))
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
        async with self.pool.acquire() as conn:
            if await idempotency.note(
                conn,
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
        return await self._appointment(self.pool, uuid.UUID(str(change["appointment_id"])))

    async def _cancel_test_drive(
        self, current: Appointment, why: str, key: str | None, payload: dict[str, Any]
    ) -> Appointment:
        self._vehicle_holds(_CHANGE_UNWIRED)
        aid = uuid.UUID(current.appointment_id)
        attempt = _cancel_attempt(aid)
        async with self.pool.acquire() as conn:
            # The first reason stands for the sweep; this request's goes on the appointment.
            await idempotency.note(
                conn,
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
                return await self._cancel_desk(
                    current, why, key, payload, car_hold=car_hold, attempt=attempt
                )
            except _CarChanged:
                log.info("test drive moved while being cancelled", extra={"attempt": attempt.key})
        raise Conflict(
            "That test drive changed while it was being cancelled; try again.",
            appointment_id=str(aid),
        )

    async def _settle_change(self, attempt: _DriveAttempt) -> None:
        """The sweep's end of a cancel or move left half way."""
        change = await idempotency.replay(
            self.pool, scope=_TD_CHANGE, key=attempt.key, payload=attempt.record
        )
        if change is None:
            return
        if change["op"] == "cancel":
            current = await self._appointment(self.pool, uuid.UUID(str(change["appointment_id"])))
            await self._finish_cancel(attempt, current, str(change["reason"]))
        else:
            await self._settle_move(attempt, change)

    async def _car_booking(self, hold_id: str) -> RentalBooking | None:
        """The rental booked from the car's hold, or None if it never became one."""
        vehicles = self._vehicle_holds(_CHANGE_UNWIRED)
        unknown: Exception | None = None
        for pause in _retry_pauses():
            await asyncio.sleep(pause)
            try:
                return await vehicles.booking_for_hold(hold_id)
            except DependencyUnavailable as e:
                unknown = e
            except DomainError:
                raise
            except Exception as e:
                unknown = e
        raise _unknown_error(unknown, _MOVE_UNKNOWN)

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
