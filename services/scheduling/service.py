"""The appointment desks: service types, free slots, bookings, callbacks.

A booking holds ONE resource of the service type's pool (a bay, a clinician, the sales desk) over
grid cells through the reservation primitive, and the appointment row is written in the same
transaction as the booking row, so every confirmed answer is a row in PostgreSQL.

Dealership test drives (the sales desk and a demo car, together or not at all) are a saga of
their own in ``drives/``; the desk sends it the test drives it is asked to book, move or
cancel, handing it itself on each call as the desk to work on (``drives.AppointmentDesk``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import redis.asyncio as aioredis
from asyncpg.types import Range
from pydantic import BaseModel
from redis.asyncio.lock import Lock
from redis.exceptions import RedisError

from services import idempotency
from services.errors import Conflict, InvalidInput, NotFound, Unavailable
from services.normalize import normalize_email, normalize_phone
from services.reservations import Booking, Hold, ReservationStore
from services.scheduling import _sql
from services.scheduling._desk import (
    AlsoWrite,
    InTransaction,
    ServiceTypeRow,
    Wanted,
    storage_errors,
)
from services.scheduling.business_hours import BusinessCalendar
from services.scheduling.drives import TestDrives, run_to_end
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
from services.storage import STORE_UNAVAILABLE
from services.validation import check_id, check_number, clean_text, parse_date, parse_datetime

log = logging.getLogger(__name__)

KIND = "appointment"
# A booking's hold is confirmed at once; a short life means a crash between the two steps frees
# the time within seconds instead of minutes.
BOOKING_HOLD_SECONDS = 30
# Days searched per round trip when looking for the next open date.
_SEARCH_CHUNK_DAYS = 7
_SERVICE_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_IDEMPOTENCY_PKEY = "idempotency_keys_pkey"
# How long a request holding an idempotency key may take before a twin stops waiting for it.
IDEMPOTENCY_LOCK_SECONDS = 30
# Tries of a move that PostgreSQL aborts as a deadlock victim (as a confirm's insert has).
DEADLOCK_RETRIES = 5


_Answer = TypeVar("_Answer", bound=BaseModel)


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
    """Business hours, service types, slots, appointments, customers and callbacks; dealership
    test drives through the ``TestDrives`` saga, to which it hands itself as the
    ``AppointmentDesk`` on each call."""

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
        self.redis = redis
        self.settings = settings
        self.tz = settings.tz
        self.calendar = BusinessCalendar(settings)
        self.cell_seconds = settings.slot_minutes * 60
        self.reservations = reservations or ReservationStore.from_settings(
            pool=pool, redis=redis, settings=settings
        )
        self._clock = clock
        # Dealership test drives over inventory's demo cars (``vehicles``; None where the
        # dealership desk is not wired). The saga keeps no reference to this desk: each call
        # hands it the desk.
        self.test_drives = TestDrives(
            pool=pool,
            reservations=self.reservations,
            vehicles=vehicles,
            settings=settings,
        )

    # -- service types and slots --------------------------------------------------------------

    async def list_service_types(self) -> list[ServiceType]:
        with storage_errors():
            rows = await self.pool.fetch(_sql.SELECT_SERVICE_TYPES)
        return [ServiceTypeRow.from_row(r).public() for r in rows]

    async def list_slots(self, date: str | dt.date, service_type: str) -> SlotList:
        """Free start times of a service type on a day; when there are none, the next day with
        one (within the booking horizon)."""
        day = parse_date(date, field="date")
        now = self._clock()
        self.calendar.check_day(day, now)
        with storage_errors():
            st = await self._service_type(service_type)
            free = await self._free_slots(st, [day], now)
            next_open: dt.date | None = None
            if not free[day]:
                next_open = await self._next_open_date(st, day, now)
        return SlotList(
            date=day, service_type=st.service_type_id, slots=free[day], next_open_date=next_open
        )

    async def _service_type(self, value: str) -> ServiceTypeRow:
        # Agents say "Oil change" as often as they send oil_change.
        key = re.sub(r"[\s-]+", "_", str(value or "").strip().lower())
        if not _SERVICE_TYPE.match(key):
            raise InvalidInput("Please tell me which service you would like.", field="service_type")
        row = await self.pool.fetchrow(_sql.SELECT_SERVICE_TYPE, key)
        if row is None:
            offered = await self.pool.fetch(_sql.SELECT_SERVICE_TYPES)
            names = ", ".join(r["name"].lower() for r in offered)
            raise InvalidInput(
                f"We do not offer that service; we offer {names}.",
                field="service_type",
                offered=[r["service_type_id"] for r in offered],
            )
        st = ServiceTypeRow.from_row(row)
        if not st.resource_ids:
            raise Unavailable(
                f"No one is available for {st.spoken} at the moment; please ask for a callback.",
                service_type=st.service_type_id,
            )
        return st

    async def _free_slots(
        self, st: ServiceTypeRow, days: list[date], now: datetime
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
        for row in await self.pool.fetch(_sql.SELECT_BUSY, list(st.resource_ids), span):
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

    async def _next_open_date(self, st: ServiceTypeRow, after: date, now: datetime) -> date | None:
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
        wanted = self.check_booking(request)
        async with self.writing("scheduling.book", key):
            if key and (prior := await idempotency.replay(
                self.pool, scope="scheduling.book", key=key, payload=wanted.payload()
            )):  # fmt: skip
                return Appointment.model_validate(prior)
            st, end = await self.check_slot(request.service_type, wanted.start)
            return await self.book_slot(st, wanted, end, key)

    async def book_test_drive(
        self, request: TestDriveRequest, idempotency_key: str | None = None
    ) -> TestDrive:
        """Book a test drive: a sales-desk appointment and the demo car, together or not at all
        (the saga is ``TestDrives.book``)."""
        return await self.test_drives.book(self, request, idempotency_key)

    async def settle_test_drives(
        self, *, older_than: timedelta | None = None, limit: int = 100
    ) -> int:
        """Settle test drives whose booking, cancel or move never finished: both halves, or
        neither (``TestDrives.settle``). Returns how many were settled."""
        return await self.test_drives.settle(self, older_than=older_than, limit=limit)

    def check_booking(self, request: BookRequest) -> Wanted:
        """The request with every field checked and normalised (InvalidInput if one is not)."""
        vehicle = _check_vehicle(request.vehicle) if request.vehicle else None
        return Wanted(
            service_type=str(request.service_type),
            phone=normalize_phone(request.phone),
            start=parse_datetime(request.start, field="start", tz=self.tz),
            notes=clean_text(request.notes, field="notes", max_length=1000, multiline=True),
            name=clean_text(request.name, field="name", max_length=120),
            email=normalize_email(request.email) if request.email else None,
            call_id=check_id(request.call_id, field="call_id") if request.call_id else None,
            vehicle=vehicle,
        )

    async def check_slot(
        self, service_type: str, start: datetime
    ) -> tuple[ServiceTypeRow, datetime]:
        """The service type and the end of a booking of it at ``start``, refused if it is not
        offered or that time is outside business hours."""
        st = await self._service_type(service_type)
        end = self.calendar.check_start(start, st.duration_minutes, self._clock(), what=st.spoken)
        return st, end

    async def book_slot(
        self,
        st: ServiceTypeRow,
        wanted: Wanted,
        end: datetime,
        key: str | None,
        *,
        also: AlsoWrite | None = None,
    ) -> Appointment:
        """Book the service at ``wanted.start`` on the first free resource of its pool;
        ``also`` runs in the booking's transaction."""
        answer: list[Appointment] = []

        async def write_details(conn: asyncpg.Connection, booking: Booking, hold: Hold) -> None:
            customer_id = await conn.fetchval(
                _sql.UPSERT_CUSTOMER, uuid.uuid4(), wanted.phone, wanted.name, wanted.email
            )
            vehicle_id = None
            if wanted.vehicle is not None:
                vehicle_id = await _vehicle_id(conn, customer_id, wanted.vehicle)
            appointment_id = uuid.uuid4()
            await conn.execute(
                _sql.INSERT_APPOINTMENT,
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
                if first := await self._first_answer(
                    error, Appointment, scope="scheduling.book", key=key, payload=wanted.payload()
                ):
                    return first
                raise
            return answer[0]
        raise await self._taken(st, wanted.start)

    async def _first_answer(
        self,
        error: BaseException,
        model: type[_Answer],
        *,
        scope: str,
        key: str | None,
        payload: Any,
    ) -> _Answer | None:
        """The first answer, when ``error`` says a concurrent request with the same
        idempotency key committed before this one; None for any other error."""
        if not key or not _is_idempotency_race(error):
            return None
        prior = await idempotency.replay(self.pool, scope=scope, key=key, payload=payload)
        return model.model_validate(prior) if prior is not None else None

    @asynccontextmanager
    async def writing(self, scope: str, key: str | None) -> AsyncIterator[None]:
        """Around every write: storage errors mapped, twins of one idempotency key in turn."""
        with storage_errors():
            async with self._one_at_a_time(scope, key):
                yield

    @asynccontextmanager
    async def _one_at_a_time(self, scope: str, key: str | None) -> AsyncIterator[None]:
        """One request per idempotency key at a time: a twin arriving while the first runs is
        refused as in flight (409 with Retry-After), one arriving after it replays its answer.

        Without this a twin arriving while the first is still booking finds the time held by
        its own original and refuses it as taken. The PostgreSQL record stays the guarantee;
        this lock only marks the first as running (it lapses by itself if its holder dies).
        """
        if key is None:
            yield
            return
        lock = self.redis.lock(
            f"{self.settings.redis_prefix}:idem:{scope}:{key}",
            timeout=IDEMPOTENCY_LOCK_SECONDS,
            raise_on_release_error=False,
        )
        if not await lock.acquire(blocking=False):
            # Held by the first request (in flight) or by another replay of its answer.
            if not await idempotency.answered(self.pool, scope=scope, key=key):
                raise idempotency.in_flight(key)
            yield  # the caller's replay answers; nothing is written
            return
        try:
            yield
        finally:
            await _let_go(lock)

    async def _taken(self, st: ServiceTypeRow, start: datetime) -> Unavailable:
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
        test drive's car moves with it, or neither moves (``drives.Changes.move``)."""
        return await run_to_end(self._reschedule(appointment_id, new_start, idempotency_key))

    async def _reschedule(
        self, appointment_id: str, new_start: str | datetime, idempotency_key: str | None
    ) -> Appointment:
        key = idempotency.check_key(idempotency_key)
        aid = _parse_uuid(appointment_id, what="an appointment", field="appointment_id")
        start = parse_datetime(new_start, field="new_start", tz=self.tz)
        payload = {"appointment_id": str(aid), "start": start.astimezone(UTC).isoformat()}
        async with self.writing("scheduling.reschedule", key):
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
            car_hold = await self.pool.fetchval(_sql.SELECT_CAR_HOLD, aid)
            if car_hold is not None:
                changes = self.test_drives.changes(self)
                return await changes.move(current, car_hold, st, start, end, key, payload)
            return await self.move_desk(current, st, start, end, key, payload)

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
        aid = uuid.UUID(current.appointment_id)
        answer: list[Appointment] = []

        async def write_details(conn: asyncpg.Connection, booking: Booking) -> None:
            customer_id = await conn.fetchval(_sql.TOUCH_APPOINTMENT, aid)
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
                moved = await self._move_retrying_deadlocks(
                    current.booking_id, resource_id, start, end, write_details, answer
                )
            except Unavailable:
                continue
            except asyncpg.UniqueViolationError as error:
                if first := await self._first_answer(
                    error, Appointment, scope="scheduling.reschedule", key=key, payload=payload
                ):
                    return first
                raise
            await self._free_if_cancelled_meanwhile(moved)
            return answer[-1]
        raise await self._taken(st, start)

    async def _free_if_cancelled_meanwhile(self, moved: Booking) -> None:
        """A cancel that committed after this move (so it cancelled the moved booking) may
        have freed the new time's cells before the move marked them booked; the move, which
        marks last, frees them again, or the time would stay taken in Redis until it ends."""
        try:
            status = await self.pool.fetchval(_sql.SELECT_BOOKING_STATUS, moved.booking_id)
        except STORE_UNAVAILABLE:
            # The move committed: its answer stands. PostgreSQL refuses overlaps regardless.
            log.warning("could not check a moved booking for a concurrent cancel")
            return
        if status == "cancelled":
            await self.reservations.free_booked_cells(moved, self.cell_seconds)

    async def _move_retrying_deadlocks(
        self,
        booking_id: str,
        resource_id: str,
        start: datetime,
        end: datetime,
        write_details: Callable[[asyncpg.Connection, Booking], Awaitable[None]],
        answer: list[Appointment],
    ) -> Booking:
        """``move_booking``, run again when PostgreSQL aborts it as a deadlock victim (two
        moves into overlapping times can each wait for the other's exclusion check), as a
        confirm does: the move is gone, its hold released, and the next try sees the other's
        row (a conflict) or none."""
        for attempt in range(DEADLOCK_RETRIES):
            answer.clear()
            try:
                return await self.reservations.move_booking(
                    booking_id,
                    resource_id=resource_id,
                    start=start,
                    end=end,
                    cell_seconds=self.cell_seconds,
                    write_details=write_details,
                )
            except asyncpg.DeadlockDetectedError:
                if attempt == DEADLOCK_RETRIES - 1:
                    raise  # a 503 (services.storage): the booking is where it was
        raise AssertionError("unreachable")

    async def cancel_appointment(
        self, appointment_id: str, reason: str, idempotency_key: str | None = None
    ) -> Appointment:
        """Mark the appointment cancelled (never deleted) and offer its time again. A test
        drive's car is cancelled first (``drives.Changes.cancel``)."""
        return await run_to_end(self._cancel(appointment_id, reason, idempotency_key))

    async def _cancel(
        self, appointment_id: str, reason: str, idempotency_key: str | None
    ) -> Appointment:
        key = idempotency.check_key(idempotency_key)
        aid = _parse_uuid(appointment_id, what="an appointment", field="appointment_id")
        why = clean_text(reason, field="reason", max_length=500, required=True) or ""
        payload = {"appointment_id": str(aid), "reason": why}
        async with self.writing("scheduling.cancel", key):
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
            if await self.pool.fetchval(_sql.SELECT_CAR_HOLD, aid) is not None:
                return await self.test_drives.changes(self).cancel(current, why, key, payload)
            return await self.cancel_desk(current, why, key, payload)

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
        """Cancel the appointment's booking. ``first`` runs at the start of the cancel's
        transaction, before the booking is touched, and ``also`` at its end (a test drive's
        cancel checks its car, and records itself settled, there)."""
        aid = uuid.UUID(current.appointment_id)
        try:
            # Lock order everywhere: booking, appointment, customer (no deadlock with a
            # concurrent reschedule of the same appointment).
            async with self.pool.acquire() as conn, conn.transaction():
                if first is not None:
                    await first(conn)
                booking = await self.reservations.cancel_booking(
                    uuid.UUID(current.booking_id),
                    reason=why,
                    cell_seconds=self.cell_seconds,
                    conn=conn,
                    free_cells=False,  # after the commit, below
                )
                customer_id = await conn.fetchval(_sql.TOUCH_APPOINTMENT, aid)
                await self._refresh_preferences(conn, customer_id)
                cancelled = await self._appointment(conn, aid)
                if also is not None:
                    await also(conn)
                if key:
                    await idempotency.remember(
                        conn,
                        scope="scheduling.cancel",
                        key=key,
                        payload=payload,
                        response=cancelled.model_dump(mode="json"),
                    )
        except asyncpg.UniqueViolationError as error:
            if replayed := await self._first_answer(
                error, Appointment, scope="scheduling.cancel", key=key, payload=payload
            ):
                return replayed
            raise
        # Only now: freed before the commit, a cancel that then failed would leave the booking
        # confirmed in PostgreSQL and its time free in Redis.
        await self.reservations.free_booked_cells(booking, self.cell_seconds)
        return cancelled

    async def get_appointment(self, appointment_id: str) -> Appointment:
        aid = _parse_uuid(appointment_id, what="an appointment", field="appointment_id")
        with storage_errors():
            return await self._appointment(self.pool, aid)

    async def read_appointment(self, appointment_id: uuid.UUID) -> Appointment:
        """The appointment (NotFound if there is none); storage errors as they come."""
        return await self._appointment(self.pool, appointment_id)

    async def list_customer_appointments(self, phone: str) -> list[Appointment]:
        """The customer's upcoming confirmed appointments, soonest first."""
        e164 = normalize_phone(phone)
        with storage_errors():
            rows = await self.pool.fetch(_sql.SELECT_UPCOMING_FOR_PHONE, e164, self._clock())
        return [self._appointment_from_row(r) for r in rows]

    async def _appointment(
        self, conn: asyncpg.Connection | asyncpg.Pool, appointment_id: uuid.UUID
    ) -> Appointment:
        row = await conn.fetchrow(_sql.SELECT_APPOINTMENT, appointment_id)
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
        with storage_errors():
            row = await self.pool.fetchrow(_sql.SELECT_CUSTOMER, e164)
            if row is None:
                raise NotFound("I could not find a customer with that phone number.")
            vehicles = await self.pool.fetch(_sql.SELECT_VEHICLES, row["customer_id"])
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
        await conn.execute(_sql.LOCK_CUSTOMER, customer_id)
        starts = [r["starts"] for r in await conn.fetch(_sql.SELECT_CUSTOMER_STARTS, customer_id)]
        time_of_day, weekdays = learn_preferences(starts, self.tz)
        await conn.execute(_sql.UPDATE_PREFERENCES, customer_id, time_of_day, weekdays)

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
        async with self.writing("scheduling.callback", key):
            if key and (prior := await idempotency.replay(
                self.pool, scope="scheduling.callback", key=key, payload=payload
            )):  # fmt: skip
                return Callback.model_validate(prior)
            when = self.calendar.next_open_moment(wanted, now)
            callback_id = uuid.uuid4()
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    customer_id = await conn.fetchval(
                        _sql.UPSERT_CUSTOMER, uuid.uuid4(), e164, None, None
                    )
                    await conn.execute(
                        _sql.INSERT_CALLBACK, callback_id, customer_id, why, when, cid
                    )
                    callback = self._callback_from_row(
                        await conn.fetchrow(_sql.SELECT_CALLBACK, callback_id)
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
                if first := await self._first_answer(
                    error, Callback, scope="scheduling.callback", key=key, payload=payload
                ):
                    return first
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
        with storage_errors():
            rows = await self.pool.fetch(_sql.SELECT_CALLBACKS_BETWEEN, start, end, statuses)
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


async def _let_go(lock: Lock) -> None:
    """Release the twins' lock, whatever Redis says. By now the write committed (or failed
    with its own error): a lock that lapsed, that Redis lost, or a Redis that is gone must not
    turn that answer into a 503 a caller would book again on. The lock expires by itself."""
    try:
        await lock.release()
    except RedisError:  # LockNotOwnedError, LockError and connection errors alike
        log.warning("could not release an idempotency lock; it lapses on its own")


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
        _sql.SELECT_SAME_VEHICLE,
        customer_id,
        vehicle.make,
        vehicle.model,
        vehicle.year,
        vehicle.plate,
    )
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    vehicle_id = uuid.uuid4()
    await conn.execute(
        _sql.INSERT_VEHICLE,
        vehicle_id,
        customer_id,
        vehicle.year,
        vehicle.make,
        vehicle.model,
        vehicle.plate,
    )
    return vehicle_id
