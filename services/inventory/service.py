"""The inventory service: units, ranked search, holds, negotiation, confirm and rentals.

A hold is the hot path: one cached unit lookup and one Lua call (``ReservationStore``). The hold
hash carries everything confirm and negotiation need (rates in cents, requirements, the unit's
name), so neither re-reads the unit. Price rules live here and in ``negotiate.lua``, never in a
prompt: a rate is accepted only within [daily_rate, max_rate], attempts per hold are bounded,
and an accepted rate is locked to the hold and charged on confirm.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from time import monotonic
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services import idempotency
from services.db import Statement
from services.errors import (
    Conflict,
    DependencyUnavailable,
    HoldExpired,
    InvalidInput,
    NegotiationRefused,
    NotFound,
    Unavailable,
    VerificationRequired,
)
from services.inventory import _sql
from services.inventory._terms import UnitTerms
from services.inventory.models import (
    BookingKind,
    HoldRequest,
    HoldResponse,
    RateAgreement,
    ReleaseResult,
    RentalBooking,
    Requirements,
    Unit,
    UnitStatus,
)
from services.inventory.requirements import (
    RequirementsChecker,
    describe_requirements,
    spoken_list,
)
from services.kv import NegotiateReply
from services.ratelimit import HoldQuota
from services.reservations import (
    DAY,
    RESOURCE_ID,
    Booking,
    Hold,
    ReservationStore,
)
from services.settings import Settings
from services.storage import STORE_UNAVAILABLE
from services.validation import check_id, check_number, clean_text, parse_date, parse_datetime

log = logging.getLogger(__name__)

HORIZON_DAYS = 365  # how far ahead a unit can be held
MAX_TEST_DRIVE_MINUTES = 240
MAX_RATE = Decimal("1000000")  # per day; anything above is not a rate anyone means
CENT = Decimal("0.01")
_CONFIRM_SCOPE = "inventory.confirm"
_CATEGORY = re.compile(r"^[a-z][a-z_]{0,39}$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_STATUSES: tuple[UnitStatus, ...] = ("AVAILABLE", "RENTED", "MAINTENANCE")

# Store failures that mean "try again shortly", not "your request was wrong": the one
# definition every service uses (services.storage).
_PG_DOWN = STORE_UNAVAILABLE


class PartOfTestDrive(Conflict):
    """The booking is a test drive's demo car: the test drive is cancelled as a whole."""

    code = "part_of_test_drive"


class UnitInMaintenance(Unavailable):
    """The unit exists but cannot be held: it is in the shop."""

    code = "unit_in_maintenance"


@asynccontextmanager
async def _pg(message: str) -> AsyncIterator[None]:
    try:
        yield
    except _PG_DOWN as e:
        raise DependencyUnavailable(message) from e


def _cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value(rounding=ROUND_HALF_UP))


def _from_cents(cents: int | str) -> Decimal:
    return (Decimal(int(cents)) / 100).quantize(CENT)


def _money(amount: Decimal) -> str:
    return f"${amount:,.2f}".replace(".00", "")


class InventoryService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        settings: Settings,
        reservations: ReservationStore | None = None,
        requirements: RequirementsChecker | None = None,
        unit_cache_seconds: float = 5.0,
        quota: HoldQuota | None = None,
    ) -> None:
        """``requirements`` checks a call's verifications; ``None`` means nothing can be
        verified, so units that require something are refused at confirm.

        Units are cached in-process for ``unit_cache_seconds``: a status change made elsewhere
        reaches this replica's holds within that time (``set_unit_status`` clears it at once
        here)."""
        self.pool = pool
        self.redis = redis
        self.settings = settings
        self.tz = settings.tz
        self.store = reservations or ReservationStore.from_settings(
            pool=pool, redis=redis, settings=settings
        )
        self.requirements = requirements
        self.quota = quota or HoldQuota.from_settings(redis, settings)
        self.unit_cache_seconds = unit_cache_seconds
        self._units: dict[str, tuple[float, Unit]] = {}

    # -- units --------------------------------------------------------------------------------

    async def get_unit(self, unit_id: str) -> Unit:
        unit_id = _check_unit_id(unit_id)
        async with _pg("The equipment list cannot be read for a moment; try again shortly."):
            row = await self.pool.fetchrow(_sql.SELECT_UNIT, unit_id)
        if row is None:
            raise NotFound("We have no unit with that id.", unit_id=unit_id)
        unit = _unit_from_row(row)
        self._units[unit_id] = (monotonic() + self.unit_cache_seconds, unit)
        return unit

    async def _cached_unit(self, unit_id: str) -> Unit:
        entry = self._units.get(unit_id)
        if entry is not None and entry[0] > monotonic():
            return entry[1]
        return await self.get_unit(unit_id)

    async def search_units(
        self,
        query: str | None = None,
        category: str | None = None,
        max_daily_rate: Decimal | float | str | None = None,
        limit: int = 20,
    ) -> list[Unit]:
        """Units ranked by how well they match the words (name first, then category, then
        description; typos tolerated), filtered by category and a daily-rate ceiling."""
        words = clean_text(query, field="query", max_length=200)
        categories = _category_candidates(category)
        ceiling = None
        if max_daily_rate is not None:
            ceiling = _parse_amount(max_daily_rate, field="max_daily_rate")
        limit = int(check_number(limit, field="limit", minimum=1, maximum=100))
        async with _pg("The equipment list cannot be read for a moment; try again shortly."):
            if words:
                rows = await self.pool.fetch(
                    _sql.SEARCH_UNITS_BY_WORDS, words, categories, ceiling, limit
                )
            else:
                rows = await self.pool.fetch(_sql.LIST_UNITS, categories, ceiling, limit)
        return [_unit_from_row(r) for r in rows]

    async def set_unit_status(self, unit_id: str, status: str) -> Unit:
        """Mark a unit AVAILABLE, RENTED or MAINTENANCE (a unit in MAINTENANCE cannot be held)."""
        unit_id = _check_unit_id(unit_id)
        if status not in _STATUSES:
            raise InvalidInput(
                "The status must be AVAILABLE, RENTED or MAINTENANCE.", field="status"
            )
        async with _pg("The equipment list cannot be changed for a moment; try again shortly."):
            row = await self.pool.fetchrow(_sql.SET_UNIT_STATUS, unit_id, status)
        if row is None:
            raise NotFound("We have no unit with that id.", unit_id=unit_id)
        unit = _unit_from_row(row)
        self._units[unit_id] = (monotonic() + self.unit_cache_seconds, unit)
        return unit

    # -- holds --------------------------------------------------------------------------------

    async def create_hold(
        self, request: HoldRequest, *, idempotency_key: str | None = None
    ) -> HoldResponse:
        """Hold a unit for a rental (by the day) or a test drive (on the unit's grid)."""
        unit_id = _check_unit_id(request.unit_id)
        call_id = check_id(request.call_id, field="call_id") if request.call_id else None
        key = idempotency.check_key(idempotency_key)
        unit = await self._cached_unit(unit_id)
        if unit.status == "MAINTENANCE":
            raise UnitInMaintenance(
                f"The {unit.name} is in maintenance and cannot be booked right now; "
                "I can suggest a similar unit.",
                unit_id=unit_id,
            )
        if unit.cell_minutes == DAY // 60:
            start, end = self._rental_range(request.start, request.end)
        else:
            start, end = self._test_drive_range(request.start, request.end, unit.cell_minutes)
        # The call's quota first, atomically per call: racing holds of one call cannot all
        # pass. The slot goes back when the hold ends, or now if it is not placed.
        slot = (
            await self.quota.take(call_id, ttl_seconds=self.settings.hold_ttl_seconds)
            if call_id
            else None
        )
        fields = UnitTerms(
            unit_name=unit.name,
            floor_cents=_cents(unit.daily_rate),
            max_cents=_cents(unit.max_rate),
            certification=unit.required_certification,
            min_insurance=unit.min_insurance,
            quota_slot=slot,
        ).to_fields()
        try:
            hold = await self._reserve(unit, unit_id, start, end, call_id, fields, key, slot)
        except Unavailable as e:
            raise Unavailable(
                f"The {unit.name} is already booked for part of that time; "
                "try other dates or a similar unit.",
                **e.details,
            ) from None
        except HoldExpired as e:
            # A replay whose first hold is gone: tell the caller if it became a booking.
            booking = await self._booking_for_hold(str(e.details.get("hold_id", "")))
            if booking is None:
                raise
            raise Conflict(
                "That request already placed a hold that has since been confirmed; "
                f"the booking reference is {booking.reference}.",
                booking_id=str(booking.booking_id),
                reference=booking.reference,
            ) from None
        return self._hold_response(hold, _terms(hold))

    async def _reserve(
        self,
        unit: Unit,
        unit_id: str,
        start: datetime,
        end: datetime,
        call_id: str | None,
        fields: dict[str, str],
        key: str | None,
        slot: str | None,
    ) -> Hold:
        try:
            hold = await self.store.reserve_cells(
                resource_id=unit_id,
                start=start,
                end=end,
                cell_seconds=unit.cell_minutes * 60,
                kind=unit.booking_kind,
                call_id=call_id,
                fields=fields,
                idempotency_key=key,
            )
        except BaseException:
            if slot is not None and call_id:
                await self.quota.give_back(call_id, slot)
            raise
        if slot is not None and call_id and hold.replayed:
            # A replay answers the first hold, which holds a slot of its own.
            await self.quota.give_back(call_id, slot)
        return hold

    async def get_hold(self, hold_id: str) -> HoldResponse:
        await self._check_inventory_hold_id(hold_id)
        hold = await self.store.get_hold(hold_id)
        return self._hold_response(hold, _terms(hold))

    async def release_hold(self, hold_id: str) -> ReleaseResult:
        """Let a hold go; releasing one that is already gone is not an error."""
        await self._check_inventory_hold_id(hold_id)
        try:
            hold: Hold | None = await self.store.get_hold(hold_id)
        except HoldExpired:
            hold = None
        released = await self.store.release_hold(hold_id)
        if released and hold is not None:
            await self._give_back_slot(hold)
        return ReleaseResult(hold_id=hold_id, released=released)

    async def _give_back_slot(self, hold: Hold) -> None:
        terms = UnitTerms.of(hold)
        slot = terms.quota_slot if terms is not None else None
        if slot and hold.call_id:
            await self.quota.give_back(hold.call_id, slot)

    def _rental_range(
        self, start_raw: str | datetime | date, end_raw: str | datetime | date | None
    ) -> tuple[datetime, datetime]:
        first = self._as_day(start_raw, field="start")
        last = self._as_day(end_raw, field="end") if end_raw is not None else None
        returned = last if last is not None else first + timedelta(days=1)
        today = datetime.now(self.tz).date()
        if first < today:
            raise InvalidInput(
                "That start date is in the past; rentals can start today or later.", field="start"
            )
        if returned <= first:
            raise InvalidInput(
                "The return date must be at least one day after the start date.", field="end"
            )
        if returned > today + timedelta(days=HORIZON_DAYS):
            raise InvalidInput(
                f"We take rentals up to {HORIZON_DAYS} days ahead; choose earlier dates.",
                field="end",
            )
        return (
            datetime.combine(first, time.min, self.tz),
            datetime.combine(returned, time.min, self.tz),
        )

    def _test_drive_range(
        self,
        start_raw: str | datetime | date,
        end_raw: str | datetime | date | None,
        cell_minutes: int,
    ) -> tuple[datetime, datetime]:
        start = self._as_time(start_raw, field="start")
        end = (
            self._as_time(end_raw, field="end")
            if end_raw is not None
            else start + timedelta(minutes=cell_minutes)
        )
        now = datetime.now(self.tz)
        if start < now:
            raise InvalidInput(
                "That time is in the past; test drives can be booked from now on.", field="start"
            )
        if end <= start:
            raise InvalidInput("The end must be after the start.", field="end")
        if end - start > timedelta(minutes=MAX_TEST_DRIVE_MINUTES):
            raise InvalidInput(
                f"A test drive can last at most {MAX_TEST_DRIVE_MINUTES // 60} hours.", field="end"
            )
        if start > now + timedelta(days=HORIZON_DAYS):
            raise InvalidInput(
                f"We book test drives up to {HORIZON_DAYS} days ahead; choose an earlier day.",
                field="start",
            )
        return start, end

    def _as_day(self, value: str | datetime | date, *, field: str) -> date:
        """A rental day: a date, or the local date of a date and time."""
        if isinstance(value, str):
            text = clean_text(value, field=field, max_length=40, required=True)
            assert text is not None
            if _DATE_ONLY.match(text):
                return parse_date(text, field=field)
            try:
                value = parse_datetime(text, field=field, tz=self.tz)
            except InvalidInput as e:
                if "earliest" in e.details:
                    raise  # a real time outside the calendar: that sentence says so
                return parse_date(text, field=field)  # refuses: "a date like 2026-03-14"
        if isinstance(value, datetime):
            return parse_datetime(value, field=field, tz=self.tz).astimezone(self.tz).date()
        return parse_date(value, field=field)

    def _as_time(self, value: str | datetime | date, *, field: str) -> datetime:
        """A test-drive time: a date and time; a bare date is not enough."""
        if isinstance(value, date) and not isinstance(value, datetime):
            raise InvalidInput(
                f"A test drive needs a {field} time, like 2026-03-14T10:30.", field=field
            )
        if isinstance(value, str):
            text = clean_text(value, field=field, max_length=40, required=True)
            assert text is not None
            if _DATE_ONLY.match(text):
                raise InvalidInput(
                    f"A test drive needs a {field} time, like 2026-03-14T10:30.", field=field
                )
            value = text
        return parse_datetime(value, field=field, tz=self.tz)

    def _hold_response(self, hold: Hold, terms: UnitTerms) -> HoldResponse:
        list_rate = _from_cents(terms.floor_cents)
        agreed = terms.agreed_cents
        rate = _from_cents(agreed) if agreed is not None else list_rate
        days, minutes = self._length(hold.start, hold.end, hold.kind)
        return HoldResponse(
            hold_id=hold.hold_id,
            unit_id=hold.resource_id,
            unit_name=terms.name(hold),
            kind=_kind(hold.kind),
            start=hold.start.astimezone(self.tz),
            end=hold.end.astimezone(self.tz),
            expires_at=hold.expires_at,
            days=days,
            minutes=minutes,
            daily_rate=rate,
            quoted_total=_total(rate, days),
            requires=terms.requirements,
            replayed=hold.replayed,
        )

    def _length(self, start: datetime, end: datetime, kind: str) -> tuple[int | None, int | None]:
        if kind == "rental":
            return (end.astimezone(self.tz).date() - start.astimezone(self.tz).date()).days, None
        return None, int((end - start).total_seconds() // 60)

    async def _check_inventory_hold_id(self, hold_id: str) -> str:
        """The unit a hold id names, which must be one of ours (not a scheduling hold)."""
        unit_id, _ = self.store.parse_hold_id(hold_id)
        try:
            await self._cached_unit(unit_id)
        except NotFound:
            raise NotFound("There is no hold with that id.", hold_id=hold_id[:100]) from None
        return unit_id

    # -- negotiation --------------------------------------------------------------------------

    async def propose_rate(self, hold_id: str, rate: Decimal | float | str) -> RateAgreement:
        """Propose a daily rate for a held unit. Accepted within [daily_rate, max_rate], at most
        ``negotiation_max_attempts`` proposals per hold; an accepted rate is locked to the hold.
        Proposing the locked rate again returns the same agreement."""
        unit_id = await self._check_inventory_hold_id(hold_id)
        amount = _parse_amount(rate, field="rate")
        proposed = _cents(amount)
        max_attempts = self.settings.negotiation_max_attempts
        answer = await self.store.negotiate(
            hold_id, proposed_cents=proposed, max_attempts=max_attempts
        )
        code, attempts = answer.reply, answer.attempts
        floor, ceiling = _from_cents(answer.floor_cents), _from_cents(answer.max_cents)
        agreed = answer.agreed_cents or 0
        left = max(0, max_attempts - attempts)
        unit = await self._cached_unit(unit_id)
        facts: dict[str, Any] = {"hold_id": hold_id, "attempts_left": left}
        if code == NegotiateReply.NO_HOLD:
            if await self._booking_for_hold(hold_id) is not None:
                raise NegotiationRefused(
                    "That hold is already confirmed; its rate can no longer change.", **facts
                )
            raise HoldExpired(
                "That hold has expired or was released; place a new hold.", hold_id=hold_id
            )
        if code == NegotiateReply.CONFIRMING:
            raise NegotiationRefused(
                "That hold is being confirmed; its rate can no longer change.", **facts
            )
        if code == NegotiateReply.LOCKED and agreed != proposed:
            raise NegotiationRefused(
                f"A rate of {_money(_from_cents(agreed))} per day is already agreed for this "
                "hold and cannot change.",
                agreed_rate=str(_from_cents(agreed)),
                **facts,
            )
        if code == NegotiateReply.NO_ATTEMPTS_LEFT:
            raise NegotiationRefused(
                f"We have reached the limit of {max_attempts} offers for this hold; the rate "
                f"for the {unit.name} is {_money(floor)} per day.",
                lowest_rate=str(floor),
                **facts,
            )
        last = " That was the last offer we can take for this hold." if left == 0 else ""
        if code == NegotiateReply.BELOW_FLOOR:
            raise NegotiationRefused(
                f"The lowest rate we can accept for the {unit.name} is {_money(floor)} per day."
                + last,
                lowest_rate=str(floor),
                **facts,
            )
        if code == NegotiateReply.ABOVE_MAXIMUM:
            raise NegotiationRefused(
                f"That is above our highest rate for the {unit.name}, which is "
                f"{_money(ceiling)} per day." + last,
                highest_rate=str(ceiling),
                **facts,
            )
        days, _ = self._length(answer.start, answer.end, answer.kind)
        agreed_rate = _from_cents(agreed)
        return RateAgreement(
            hold_id=hold_id,
            unit_id=unit_id,
            agreed_rate=agreed_rate,
            list_rate=floor,
            days=days,
            quoted_total=_total(agreed_rate, days),
            attempts_used=attempts,
            attempts_left=left,
        )

    # -- confirm ------------------------------------------------------------------------------

    async def confirm_hold(
        self, hold_id: str, *, idempotency_key: str | None = None
    ) -> RentalBooking:
        """Turn a hold into a rental booking, after checking what the unit requires against
        the verifications recorded for the hold's call. Confirming again returns the same
        booking."""
        await self._check_inventory_hold_id(hold_id)
        key = idempotency.check_key(idempotency_key)
        payload = {"hold_id": hold_id}
        if key is not None:
            first = await self._replay_confirm(key, payload)
            if first is not None:
                return first
        try:
            hold = await self.store.get_hold(hold_id)
        except HoldExpired:
            booking = await self._booking_for_hold(hold_id)
            if booking is None:
                raise
            return await self.get_booking(booking.booking_id, replayed=True)
        terms = _terms(hold)
        needs = terms.requirements
        if needs.any:  # units that require nothing skip this: the hot path
            await self._check_requirements(hold, terms.name(hold), needs)

        written: list[RentalBooking] = []

        def rental_rows(booking: Booking, claimed: Hold) -> list[Statement]:
            # Written in the booking's own statement: the hot path's one PostgreSQL round trip.
            # The claimed hold carries the rate a negotiation locked in.
            rental = self._rental_from(booking, claimed)
            rows = [
                Statement(
                    _sql.INSERT_RENTAL,
                    (
                        booking.booking_id,
                        claimed.resource_id,
                        claimed.call_id,
                        rental.days,
                        rental.minutes,
                        rental.list_rate,
                        rental.daily_rate,
                        rental.total,
                        rental.negotiated,
                    ),
                )
            ]
            if key is not None:
                rows.append(
                    idempotency.remember_row(
                        scope=_CONFIRM_SCOPE,
                        key=key,
                        payload=payload,
                        response=rental.model_dump(mode="json"),
                    )
                )
            written.append(rental)
            return rows

        try:
            booking = await self.store.confirm_hold(hold_id, detail_rows=rental_rows, hold=hold)
        except asyncpg.UniqueViolationError as e:
            # The same idempotency key was used by a concurrent confirm of another hold.
            if key is not None and e.constraint_name == "idempotency_keys_pkey":
                first = await self._replay_confirm(key, payload)
                if first is not None:
                    return first
            raise DependencyUnavailable("The booking could not be saved; try again.") from e
        except _PG_DOWN as e:
            raise DependencyUnavailable(
                "Bookings cannot be saved for a moment; the hold is kept, try again shortly."
            ) from e
        except (Unavailable, HoldExpired):
            # The store dropped the hold: its place in the call's quota goes with it.
            await self._give_back_slot(hold)
            raise
        if written and not booking.replayed:
            await self._give_back_slot(hold)
            return written[-1]
        return await self.get_booking(booking.booking_id, replayed=True)

    async def _check_requirements(self, hold: Hold, name: str, needs: Requirements) -> None:
        if self.requirements is None:
            missing = describe_requirements(
                certification=needs.certification, min_insurance=needs.min_insurance
            )
        else:
            missing = await self.requirements.missing_requirements(
                call_id=hold.call_id,
                certification=needs.certification,
                min_insurance=needs.min_insurance,
            )
        if missing:
            raise VerificationRequired(
                f"Before I can confirm the {name}, we need to verify {spoken_list(missing)}.",
                missing=list(missing),
                hold_id=hold.hold_id,
            )

    async def _replay_confirm(self, key: str, payload: dict[str, str]) -> RentalBooking | None:
        async with _pg("Bookings cannot be read for a moment; try again shortly."):
            stored = await idempotency.replay(
                self.pool, scope=_CONFIRM_SCOPE, key=key, payload=payload
            )
        if stored is None:
            return None
        return RentalBooking.model_validate({**stored, "replayed": True})

    def _rental_from(self, booking: Booking, hold: Hold) -> RentalBooking:
        terms = _terms(hold)
        list_rate = _from_cents(terms.floor_cents)
        negotiated = terms.agreed_cents is not None
        rate = _from_cents(terms.agreed_cents) if terms.agreed_cents is not None else list_rate
        days, minutes = self._length(booking.start, booking.end, booking.kind)
        return RentalBooking(
            booking_id=str(booking.booking_id),
            reference=booking.reference,
            unit_id=booking.resource_id,
            unit_name=terms.unit_name or booking.resource_id,
            kind=_kind(booking.kind),
            status="confirmed",
            start=booking.start.astimezone(self.tz),
            end=booking.end.astimezone(self.tz),
            days=days,
            minutes=minutes,
            call_id=booking.call_id,
            daily_rate=rate,
            list_rate=list_rate,
            negotiated=negotiated,
            total=_total(rate, days),
            created_at=booking.created_at,
        )

    # -- bookings -----------------------------------------------------------------------------

    async def get_booking(
        self, booking_id: str | uuid.UUID, *, replayed: bool = False
    ) -> RentalBooking:
        bid = _booking_uuid(booking_id)
        async with _pg("Bookings cannot be read for a moment; try again shortly."):
            row = await self.pool.fetchrow(_sql.SELECT_RENTAL, bid)
        if row is None:
            raise NotFound("There is no rental booking with that id.", booking_id=str(bid))
        return RentalBooking(
            booking_id=str(row["booking_id"]),
            reference=row["reference"],
            unit_id=row["unit_id"],
            unit_name=row["unit_name"],
            kind=_kind(row["kind"]),
            status=row["status"],
            start=row["during"].lower.astimezone(self.tz),
            end=row["during"].upper.astimezone(self.tz),
            days=row["days"],
            minutes=row["minutes"],
            call_id=row["call_id"],
            daily_rate=row["agreed_daily_rate"],
            list_rate=row["list_daily_rate"],
            negotiated=row["negotiated"],
            total=row["total"],
            created_at=row["created_at"],
            cancel_reason=row["cancel_reason"],
            replayed=replayed,
        )

    async def cancel_rental(
        self, booking_id: str | uuid.UUID, reason: str | None = None
    ) -> RentalBooking:
        """Cancel a rental (its row stays, marked cancelled) and free the unit. Idempotent.

        A demo car booked for a test drive is refused: cancelling it here would leave the
        test drive's appointment standing, so it is cancelled through scheduling, car and all."""
        bid = _booking_uuid(booking_id)
        async with _pg("Bookings cannot be changed for a moment; try again shortly."):
            drive = await self.pool.fetchrow(_sql.SELECT_TEST_DRIVE_OF_CAR, bid)
        if drive is not None:
            raise PartOfTestDrive(
                "That car is booked for a test drive; cancel the test drive through scheduling "
                f"(POST /scheduling/appointments/{drive['appointment_id']}/cancel), which "
                "cancels the car with it.",
                booking_id=str(bid),
                appointment_id=str(drive["appointment_id"]),
            )
        return await self._cancel_rental(bid, reason)

    async def _cancel_rental(self, bid: uuid.UUID, reason: str | None) -> RentalBooking:
        why = clean_text(reason, field="reason", max_length=300) or "cancelled by the caller"
        async with _pg("Bookings cannot be changed for a moment; try again shortly."):
            cell_minutes = await self.pool.fetchval(_sql.SELECT_RENTAL_GRID, bid)
            if cell_minutes is None:
                raise NotFound("There is no rental booking with that id.", booking_id=str(bid))
            try:
                await self.store.cancel_booking(bid, reason=why, cell_seconds=cell_minutes * 60)
            except RedisError:
                # The row is cancelled; the booked cells expire when the booking would have.
                log.warning("could not free a cancelled rental's cells")
        return await self.get_booking(bid)

    async def booking_for_hold(self, hold_id: str) -> RentalBooking | None:
        """The rental booked from a hold (confirmed, or cancelled since), or None when that hold
        never became a booking (it is still held, lapsed or was let go). Reads only."""
        await self._check_inventory_hold_id(hold_id)
        booking = await self._booking_for_hold(hold_id)
        return None if booking is None else await self.get_booking(booking.booking_id)

    async def cancel_rental_for_hold(
        self, hold_id: str, reason: str | None = None
    ) -> RentalBooking:
        """Cancel the rental booked from a hold (a test drive's car: the sales desk knows the
        hold, not the booking) and free the unit. Idempotent: cancelling again returns the
        cancelled booking. A hold that never became a booking is NotFound."""
        await self._check_inventory_hold_id(hold_id)
        booking = await self._booking_for_hold(hold_id)
        if booking is None:
            raise NotFound("No booking was made from that hold.", hold_id=hold_id[:100])
        return await self._cancel_rental(booking.booking_id, reason)

    async def _booking_for_hold(self, hold_id: str) -> Booking | None:
        if not hold_id:
            return None
        async with _pg("Bookings cannot be read for a moment; try again shortly."):
            return await self.store.booking_for_hold(hold_id)


# -- helpers ----------------------------------------------------------------------------------


def _check_unit_id(unit_id: str | None) -> str:
    if unit_id is None or not RESOURCE_ID.match(str(unit_id)):
        raise InvalidInput(
            "That unit id is not valid; unit ids look like EXC-201.", field="unit_id"
        )
    return str(unit_id)


def _category_candidates(category: str | None) -> list[str] | None:
    """``Boom lifts`` and ``boom-lift`` mean ``boom_lift``; unknown words just match nothing."""
    text = clean_text(category, field="category", max_length=40)
    if text is None:
        return None
    norm = re.sub(r"[\s-]+", "_", text.lower())
    if not _CATEGORY.match(norm):
        raise InvalidInput(
            "The category should be a word like excavator or boom_lift.", field="category"
        )
    return [norm, norm[:-1]] if norm.endswith("s") else [norm]


def _parse_amount(value: Decimal | float | str, *, field: str) -> Decimal:
    """A money amount per day: finite, not negative, not absurd; rounded to cents."""
    if isinstance(value, bool):
        raise InvalidInput(f"The {field.replace('_', ' ')} must be an amount.", field=field)
    if isinstance(value, str):
        text = clean_text(value, field=field, max_length=20, required=True) or ""
        value = text.lstrip("$").replace(",", "")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput(
            f"The {field.replace('_', ' ')} must be an amount like 325 or 325.50.", field=field
        ) from None
    if not amount.is_finite():
        raise InvalidInput(f"The {field.replace('_', ' ')} must be an amount.", field=field)
    if amount < 0 or amount > MAX_RATE:
        raise InvalidInput(
            f"The {field.replace('_', ' ')} must be between $0 and {_money(MAX_RATE)}.",
            field=field,
        )
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def _booking_uuid(value: str | uuid.UUID) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value)[:64])
    except ValueError:
        raise NotFound("There is no rental booking with that id.") from None


def _kind(kind: str) -> BookingKind:
    return "test_drive" if kind == "test_drive" else "rental"


def _terms(hold: Hold) -> UnitTerms:
    terms = UnitTerms.of(hold)
    if terms is None:  # a hold on a unit's resource that inventory did not place
        raise NotFound("There is no hold with that id.", hold_id=hold.hold_id)
    return terms


def _total(rate: Decimal, days: int | None) -> Decimal:
    # A rental is charged per day; a test drive once, at the unit's rate (zero for demo cars).
    return (rate * (days if days is not None else 1)).quantize(CENT)


def _unit_from_row(row: asyncpg.Record) -> Unit:
    return Unit(
        unit_id=row["unit_id"],
        name=row["name"],
        category=row["category"],
        description=row["description"],
        status=row["status"],
        daily_rate=row["daily_rate"],
        max_rate=row["max_rate"],
        required_certification=row["required_certification"],
        min_insurance=row["min_insurance"],
        location=row["location"],
        weight_class=row["weight_class"],
        cell_minutes=row["cell_minutes"],
        booking_kind="rental" if row["cell_minutes"] == DAY // 60 else "test_drive",
    )
