"""The appointment desks: service types, free slots, bookings, callbacks.

A booking holds ONE resource of the service type's pool (a bay, a clinician, the sales desk) over
grid cells through the reservation primitive, and the appointment row is written in the same
transaction as the booking row, so every confirmed answer is a row in PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
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
from services.errors import Conflict, DependencyUnavailable, InvalidInput, NotFound, Unavailable
from services.inventory import HoldRequest
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

    async def book_test_drive(
        self, request: TestDriveRequest, idempotency_key: str | None = None
    ) -> TestDrive:
        """Book a test drive: a sales-desk appointment and the demo car, together or not at all.

        The car is held first (cheap to let go), then the appointment is booked, then the car's
        hold is confirmed. A failure at any step undoes the steps before it, so a caller is
        never told of half a test drive.
        """
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
        async with self._write("scheduling.test_drive", key):
            if key and (prior := await idempotency.replay(
                self.pool, scope="scheduling.test_drive", key=key, payload=payload
            )):  # fmt: skip
                return TestDrive.model_validate(prior)
            st = await self._service_type(TEST_DRIVE)
            end = self.calendar.check_start(
                wanted.start, st.duration_minutes, self._clock(), what=st.spoken
            )
            hold = await self.vehicles.create_hold(
                HoldRequest(unit_id=unit_id, start=wanted.start, end=end, call_id=wanted.call_id)
            )
            try:
                appointment = await self._book(st, wanted, end, None)
            except BaseException:
                await self._let_vehicle_go(hold.hold_id)
                raise
            try:
                car = await self.vehicles.confirm_hold(hold.hold_id)
            except BaseException:
                await self.cancel_appointment(
                    appointment.appointment_id, reason="the test-drive car could not be booked"
                )
                await self._let_vehicle_go(hold.hold_id)
                raise
            answer = TestDrive(
                appointment=appointment,
                vehicle_booking_id=car.booking_id,
                vehicle_reference=car.reference,
                vehicle_unit_id=car.unit_id,
                vehicle_name=car.unit_name,
            )
            if key:
                with _storage_errors():
                    async with self.pool.acquire() as conn:
                        await idempotency.remember(
                            conn,
                            scope="scheduling.test_drive",
                            key=key,
                            payload=payload,
                            response=answer.model_dump(mode="json"),
                        )
            return answer

    async def _let_vehicle_go(self, hold_id: str) -> None:
        assert self.vehicles is not None
        try:
            await self.vehicles.release_hold(hold_id)
        except Exception:
            # The hold expires on its own; the caller's answer is the error being raised.
            log.warning("could not release a test-drive car hold", extra={"hold_id": hold_id})

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
        self, st: _ServiceType, wanted: _Wanted, end: datetime, key: str | None
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
                await self.reservations.confirm_hold(hold.hold_id, write_details=write_details)
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
