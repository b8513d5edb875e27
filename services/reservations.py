"""The one reservation primitive: a resource held over a time range.

An appointment (a bay or clinician over 30-minute cells) and a rental (a unit over days) are
the same thing here. Two stores, two jobs:

* Redis is the fast path. A Lua script reserves every grid cell of a request or none, with a TTL
  and a holder token. Confirm and release check the token. All keys of one resource share the
  hash tag ``{r:<resource_id>}``, so every script touches a single Redis Cluster slot.
* PostgreSQL is the truth. A confirmed booking is a row in ``bookings`` whose range is protected
  by an exclusion constraint, so if Redis loses every hold a double booking is still refused.

A confirm therefore runs: read the hold, *claim* its cells (pending, short TTL), insert the row,
then *finalize* the cells as booked until the booking ends. A failure between steps either
releases the cells (conflict) or restores the hold (database unreachable), so nothing is lost.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, ClassVar, cast
from zoneinfo import ZoneInfo

import asyncpg
import redis.asyncio as aioredis
from asyncpg.types import Range
from redis.exceptions import RedisError

from services.db import PG_UNAVAILABLE, Statement
from services.errors import (
    Conflict,
    DependencyUnavailable,
    HoldExpired,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
    Unavailable,
)
from services.kv import ClaimReply, LuaScript, NegotiateReply, ReleaseReply, ReserveReply
from services.settings import Settings

log = logging.getLogger(__name__)

RESOURCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_HOLD_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]{0,63})\.([0-9a-f]{24})$")
DAY = 86_400
# Letters and digits a person can read out and hear back without confusion (no 0/O, 1/I, 5/S...).
REFERENCE_ALPHABET = "ACDEFGHJKMNPQRTUVWXY34679"
REFERENCE_LENGTH = 6
MAX_CELLS = 400  # a 30-minute grid over a week, or a rental of a year and a month

_reserve = LuaScript("reserve")
_claim = LuaScript("claim")
_finalize = LuaScript("finalize")
_unclaim = LuaScript("unclaim")
_release = LuaScript("release")
_negotiate = LuaScript("negotiate")


@dataclass(frozen=True, slots=True)
class Hold:
    hold_id: str
    resource_id: str
    start: datetime
    end: datetime
    expires_at: datetime
    kind: str
    call_id: str | None
    cell_seconds: int
    # Anything the owning service stored with the hold (unit requirements, negotiated rate...).
    fields: dict[str, str] = field(default_factory=dict)
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class HoldHash:
    """The hold's Redis hash, the one schema of its fields: reserve.lua stores ``to_hash()``;
    claim.lua adds ``state`` and ``pending`` while a confirm is under way; unclaim.lua reads
    ``expires_ms``, negotiate.lua ``start_ms``, ``end_ms``, ``kind`` and the owner's rate
    fields (services.inventory's UnitTerms). ``extra`` is whatever the owning service stored."""

    resource_id: str
    start_ms: int
    end_ms: int
    cell_seconds: int
    kind: str
    call_id: str | None
    expires_ms: int
    extra: dict[str, str] = field(default_factory=dict)
    state: str | None = None  # 'confirming' once claimed
    pending: str | None = None  # the claim's marker, 'P:<booking_id>'

    OWN: ClassVar[frozenset[str]] = frozenset(
        {"resource_id", "start_ms", "end_ms", "cell_seconds", "kind", "call_id", "expires_ms",
         "state", "pending"}
    )  # fmt: skip

    @classmethod
    def new(
        cls,
        resource_id: str,
        start: datetime,
        end: datetime,
        cell_seconds: int,
        kind: str,
        *,
        call_id: str | None,
        expires_ms: int,
        extra: dict[str, str] | None = None,
    ) -> HoldHash:
        return cls(
            resource_id, _ms(start), _ms(end), cell_seconds, kind, call_id, expires_ms,
            dict(extra or {}),
        )  # fmt: skip

    def fingerprint(self) -> str:
        """What an idempotency key's record says it was used for: the request, not its TTL."""
        what = (
            f"{self.resource_id}|{self.start_ms}|{self.end_ms}|{self.cell_seconds}|{self.kind}"
            f"|{self.call_id or ''}"
        )
        return hashlib.sha256(what.encode()).hexdigest()[:24]

    def reserve_args(self, token: str, ttl_ms: int, fingerprint: str) -> list[Any]:
        """reserve.lua's ARGV: the token, the TTL, the fingerprint, then the hash's pairs."""
        args: list[Any] = [token, ttl_ms, fingerprint]
        for k, v in self.to_hash().items():
            args += [k, v]
        return args

    def to_hash(self) -> dict[str, str]:
        """The fields reserve.lua stores (a new hold is never claimed: no state, no pending)."""
        return {
            "resource_id": self.resource_id,
            "start_ms": str(self.start_ms),
            "end_ms": str(self.end_ms),
            "cell_seconds": str(self.cell_seconds),
            "kind": self.kind,
            "call_id": self.call_id or "",
            "expires_ms": str(self.expires_ms),
            **self.extra,
        }

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> HoldHash:
        return cls(
            resource_id=raw["resource_id"],
            start_ms=int(raw["start_ms"]),
            end_ms=int(raw["end_ms"]),
            cell_seconds=int(raw["cell_seconds"]),
            kind=raw["kind"],
            call_id=raw["call_id"] or None,
            expires_ms=int(raw["expires_ms"]),
            extra={k: v for k, v in raw.items() if k not in cls.OWN},
            state=raw.get("state"),
            pending=raw.get("pending"),
        )

    def hold(self, hold_id: str, *, replayed: bool = False) -> Hold:
        return Hold(
            hold_id=hold_id,
            resource_id=self.resource_id,
            start=_from_ms(self.start_ms),
            end=_from_ms(self.end_ms),
            expires_at=_from_ms(self.expires_ms),
            kind=self.kind,
            call_id=self.call_id,
            cell_seconds=self.cell_seconds,
            fields=dict(self.extra),
            replayed=replayed,
        )


@dataclass(frozen=True, slots=True)
class Booking:
    booking_id: uuid.UUID
    reference: str
    resource_id: str
    start: datetime
    end: datetime
    kind: str
    status: str
    call_id: str | None
    hold_id: str | None
    created_at: datetime
    replayed: bool = False

    @classmethod
    def from_row(cls, row: asyncpg.Record, *, replayed: bool = False) -> Booking:
        return cls(
            booking_id=row["booking_id"],
            reference=row["reference"],
            resource_id=row["resource_id"],
            start=row["during"].lower,
            end=row["during"].upper,
            kind=row["kind"],
            status=row["status"],
            call_id=row["call_id"],
            hold_id=row["hold_id"],
            created_at=row["created_at"],
            replayed=replayed,
        )


@dataclass(frozen=True, slots=True)
class Negotiation:
    """negotiate.lua's answer to one proposed rate: what it decided, and the hold's terms."""

    reply: NegotiateReply
    attempts: int
    floor_cents: int
    max_cents: int
    agreed_cents: int | None  # the rate locked to the hold, if any
    start: datetime
    end: datetime
    kind: str


# Called inside the booking's transaction so a service can write its detail rows atomically.
WriteDetails = Callable[[asyncpg.Connection, Booking, Hold], Awaitable[None]]


# A service's rows written in the booking's own INSERT statement, built from the booking about
# to be written and the hold just claimed: one round trip to PostgreSQL instead of BEGIN, the
# booking, each row and COMMIT (the hot path's confirm). Each statement has parameters $1..$n
# of its own and runs as a WITH clause beside the booking's insert; if one fails, the booking
# is not written either.
DetailRowsFor = Callable[[Booking, Hold], Sequence[Statement]]
_PARAMETER = re.compile(r"\$(\d+)")


_BOOKING_COLUMNS = (
    "booking_id, reference, resource_id, during, kind, status, call_id, hold_id, created_at"
)
# $1..$8; `created_at` is given so that a booking is fully known before it is written.
_BOOKING_PARAMETERS = 8
_INSERT_BOOKING = f"""INSERT INTO bookings
           (booking_id, resource_id, during, kind, reference, hold_id, call_id, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
 RETURNING {_BOOKING_COLUMNS}"""  # noqa: S608 - constant column list


_SELECT_CONFIRMED_OVERLAPPING = f"""SELECT {_BOOKING_COLUMNS} FROM bookings
 WHERE resource_id = $1 AND during && $2 AND status = 'confirmed'"""  # noqa: S608 - constant


@lru_cache(maxsize=64)
def _insert_with_details(statements: tuple[str, ...]) -> str:
    """The booking's INSERT with each statement beside it as a WITH clause, its parameters
    renumbered to follow the booking's eight. Cached: the same few named statements come on
    every confirm. SQL from named constants only; values are parameters."""
    clauses: list[str] = []
    shift = _BOOKING_PARAMETERS
    for i, statement in enumerate(statements):

        def renumber(m: re.Match[str], shift: int = shift) -> str:
            return f"${int(m[1]) + shift}"

        clauses.append(f",\n  detail_{i} AS ({_PARAMETER.sub(renumber, statement)})")
        shift += max((int(n) for n in _PARAMETER.findall(statement)), default=0)
    return (
        f"WITH booking AS ({_INSERT_BOOKING}){''.join(clauses)}\n"
        f"SELECT {_BOOKING_COLUMNS} FROM booking"
    )


def new_reference() -> str:
    return "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _from_ms(ms: int | str) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


class ReservationStore:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        tz: ZoneInfo,
        prefix: str = "cm",
        hold_ttl_seconds: int = 300,
        pending_ttl_seconds: int = 30,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.tz = tz
        self.prefix = prefix
        self.hold_ttl_seconds = hold_ttl_seconds
        self.pending_ttl_seconds = pending_ttl_seconds

    @classmethod
    def from_settings(
        cls, *, pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings
    ) -> ReservationStore:
        return cls(
            pool=pool,
            redis=redis,
            tz=settings.tz,
            prefix=settings.redis_prefix,
            hold_ttl_seconds=settings.hold_ttl_seconds,
        )

    # -- grid and keys ------------------------------------------------------------------------

    def cells(self, start: datetime, end: datetime, cell_seconds: int) -> list[int]:
        """The grid cells covering [start, end).

        Day cells are local calendar days in the business time zone; shorter cells count from
        the Unix epoch. A range that does not fall on cell boundaries is refused.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidInput("Times must include a time zone offset.", field="start")
        if end <= start:
            raise InvalidInput("The end must be after the start.", field="end")
        if cell_seconds == DAY:
            s, e = start.astimezone(self.tz), end.astimezone(self.tz)
            if s.timetz().replace(tzinfo=None) != datetime.min.time() or e.time() != e.min.time():
                raise InvalidInput("Rentals start and end at midnight, by the day.", field="start")
            cells = list(range(s.date().toordinal(), e.date().toordinal()))
        else:
            s_ts, e_ts = int(start.timestamp()), int(end.timestamp())
            if s_ts % cell_seconds or e_ts % cell_seconds or start.microsecond or end.microsecond:
                minutes = cell_seconds // 60
                raise InvalidInput(
                    f"Times must fall on the {minutes}-minute grid, like 9:00 or 9:30.",
                    field="start",
                )
            cells = list(range(s_ts // cell_seconds, e_ts // cell_seconds))
        if len(cells) > MAX_CELLS:
            raise InvalidInput("That range is too long to hold in one request.", field="end")
        return cells

    def _tag(self, resource_id: str) -> str:
        return f"{self.prefix}:{{r:{resource_id}}}"

    def hold_key(self, hold_id: str) -> str:
        resource_id, token = self.parse_hold_id(hold_id)
        return f"{self._tag(resource_id)}:h:{token}"

    def cell_keys(self, resource_id: str, cells: list[int]) -> list[str]:
        """The Redis keys of the given cells; reading them shows who holds or booked each."""
        tag = self._tag(resource_id)
        return [f"{tag}:c:{c}" for c in cells]

    @staticmethod
    def parse_hold_id(hold_id: str) -> tuple[str, str]:
        m = _HOLD_ID.match(hold_id or "")
        if not m:
            raise NotFound("There is no hold with that id.", hold_id=str(hold_id)[:100])
        return m.group(1), m.group(2)

    # -- holds --------------------------------------------------------------------------------

    async def reserve_cells(
        self,
        *,
        resource_id: str,
        start: datetime,
        end: datetime,
        cell_seconds: int,
        kind: str,
        call_id: str | None = None,
        fields: dict[str, str] | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Hold:
        """Hold every cell of [start, end) on the resource, or raise :class:`Unavailable`."""
        if not RESOURCE_ID.match(resource_id):
            raise InvalidInput("That resource id is not valid.", field="resource_id")
        cells = self.cells(start, end, cell_seconds)
        ttl_ms = (ttl_seconds or self.hold_ttl_seconds) * 1000
        token = secrets.token_hex(12)
        expires_ms = int(time.time() * 1000) + ttl_ms
        stored = HoldHash.new(
            resource_id, start, end, cell_seconds, kind,
            call_id=call_id, expires_ms=expires_ms, extra=fields,
        )  # fmt: skip
        tag = self._tag(resource_id)
        keys = [f"{tag}:h:{token}", f"{tag}:i:{idempotency_key or '-'}"]
        keys += self.cell_keys(resource_id, cells)
        # A replay must ask for the same thing: the key's record carries the request's
        # fingerprint, and the script refuses the key for anything else.
        fingerprint = stored.fingerprint() if idempotency_key else ""
        try:
            result = await _reserve(
                self.redis, keys, stored.reserve_args(token, ttl_ms, fingerprint)
            )
        except RedisError as e:
            raise DependencyUnavailable("Holds are unavailable for a moment.") from e
        status = ReserveReply(int(result[0]))
        # 422, as draft-ietf-httpapi-idempotency-key-header has it
        if status == ReserveReply.KEY_REUSED:
            raise IdempotencyKeyReused(
                "That idempotency key was already used for a different hold; use a new key.",
                idempotency_key=idempotency_key,
            )
        if status == ReserveReply.TAKEN:
            taken_at = start + timedelta(seconds=cell_seconds * (int(result[1]) - 1))
            if cell_seconds == DAY:
                taken_at = datetime.combine(
                    (start.astimezone(self.tz) + timedelta(days=int(result[1]) - 1)).date(),
                    datetime.min.time(),
                    self.tz,
                )
            raise Unavailable(
                "That time is already taken.",
                resource_id=resource_id,
                taken_from=taken_at.isoformat(),
            )
        hold_id = f"{resource_id}.{result[1]}"
        if status == ReserveReply.REPLAYED:
            return await self.get_hold(hold_id, replayed=True)
        return Hold(
            hold_id=hold_id,
            resource_id=resource_id,
            start=start,
            end=end,
            expires_at=_from_ms(expires_ms),
            kind=kind,
            call_id=call_id,
            cell_seconds=cell_seconds,
            fields=dict(fields or {}),
        )

    async def _read_hold_hash(self, key: str) -> dict[str, str]:
        try:
            raw = await self.redis.hgetall(key)  # type: ignore[misc]
        except RedisError as e:
            raise DependencyUnavailable("Holds are unavailable for a moment.") from e
        # The client decodes responses (create_redis), so keys and values are str.
        return cast(dict[str, str], raw)

    async def get_hold(self, hold_id: str, *, replayed: bool = False) -> Hold:
        raw = await self._read_hold_hash(self.hold_key(hold_id))
        if not raw:
            raise HoldExpired(
                "That hold has expired or was released; place a new hold.", hold_id=hold_id
            )
        return self._hold_from_hash(hold_id, raw, replayed=replayed)

    @staticmethod
    def _hold_from_hash(hold_id: str, raw: dict[str, str], *, replayed: bool = False) -> Hold:
        return HoldHash.from_hash(raw).hold(hold_id, replayed=replayed)

    async def release_hold(self, hold_id: str) -> bool:
        """Let the hold go. True if it existed; a hold being confirmed cannot be released."""
        resource_id, token = self.parse_hold_id(hold_id)
        key = self.hold_key(hold_id)
        raw = await self._read_hold_hash(key)
        if not raw:
            return False
        held = HoldHash.from_hash(raw)
        cells = self.cells(_from_ms(held.start_ms), _from_ms(held.end_ms), held.cell_seconds)
        try:
            freed = await _release(
                self.redis, [key, *self.cell_keys(resource_id, cells)], [f"H:{token}", "1", "1"]
            )
        except RedisError as e:
            raise DependencyUnavailable("Holds are unavailable for a moment.") from e
        if int(freed) == ReleaseReply.REFUSED:
            raise Conflict("That hold is being confirmed and can no longer be released.")
        return True

    # -- negotiation --------------------------------------------------------------------------

    async def negotiate(
        self, hold_id: str, *, proposed_cents: int, max_attempts: int
    ) -> Negotiation:
        """Propose a rate for a hold with rate bounds (negotiate.lua): counted, compared with
        the bounds and, when accepted, locked to the hold, in one step."""
        try:
            reply = await _negotiate(
                self.redis, [self.hold_key(hold_id)], [proposed_cents, max_attempts]
            )
        except RedisError as e:
            raise DependencyUnavailable("Holds are unavailable for a moment.") from e
        return Negotiation(
            reply=NegotiateReply(int(reply[0])),
            attempts=int(reply[1]),
            floor_cents=int(reply[2]),
            max_cents=int(reply[3]),
            agreed_cents=int(reply[4]) if reply[4] != "" else None,
            start=_from_ms(reply[5]),
            end=_from_ms(reply[6]),
            kind=str(reply[7]),
        )

    # -- confirm ------------------------------------------------------------------------------

    async def confirm_hold(
        self,
        hold_id: str,
        *,
        write_details: WriteDetails | None = None,
        detail_rows: DetailRowsFor | None = None,
        hold: Hold | None = None,
    ) -> Booking:
        """Turn a hold into a booking row. Confirming the same hold again returns that booking.

        A service's own rows go with it either through ``write_details`` (any statements, in
        the booking's transaction) or ``detail_rows`` (in the booking's one statement).
        ``hold`` is the hold as the caller just read or placed it, which saves reading it again
        (a hold's cells never change; the claim below re-checks that it still owns them)."""
        if write_details is not None and detail_rows is not None:
            raise ValueError("write_details or detail_rows, not both")
        resource_id, token = self.parse_hold_id(hold_id)
        key = self.hold_key(hold_id)
        if hold is None or hold.hold_id != hold_id:
            raw = await self._read_hold_hash(key)
            if not raw:
                return await self._confirmed_or_expired(hold_id)
            hold = self._hold_from_hash(hold_id, raw)
        cell_keys = self.cell_keys(resource_id, self.cells(hold.start, hold.end, hold.cell_seconds))

        booking_id = uuid.uuid4()
        try:
            claimed = await _claim(
                self.redis,
                [key, *cell_keys],
                [token, f"P:{booking_id}", self.pending_ttl_seconds * 1000],
            )
        except RedisError as e:
            raise DependencyUnavailable("Holds are unavailable for a moment.") from e
        status = ClaimReply(int(claimed[0]))
        if status == ClaimReply.NO_HOLD:
            return await self._confirmed_or_expired(hold_id)
        if status == ClaimReply.CELL_LOST:
            await self._release_quietly(key, cell_keys, f"H:{token}", drop_hash=True)
            raise HoldExpired(
                "That hold lapsed before it was confirmed; place a new hold.", hold_id=hold_id
            )
        held = HoldHash.from_hash(dict(zip(claimed[1::2], claimed[2::2], strict=True)))
        if status == ClaimReply.UNDER_WAY:
            # An earlier confirm claimed this hold and has not finished: its reply was lost, its
            # replica died, or it is still writing. Finish it under its booking id rather than
            # wait for its claim to lapse; the unique hold_id lets only one row in, and both
            # confirms answer that row.
            booking_id = _pending_booking_id(held.pending or "")
        pending = f"P:{booking_id}"
        hold = held.hold(hold_id)

        try:
            booking = await self._insert_booking(booking_id, hold, write_details, detail_rows)
        except asyncpg.ExclusionViolationError:
            # Redis let us hold it, but PostgreSQL has a booking there: Redis had lost state.
            await self._release_quietly(key, cell_keys, pending, drop_hash=True)
            await self._remark_booked_quietly(hold)
            raise Unavailable(
                "That time was booked by someone else in the meantime; choose another time.",
                resource_id=resource_id,
            ) from None
        except PG_UNAVAILABLE as e:
            await self._unclaim_quietly(key, cell_keys, token, pending)
            raise DependencyUnavailable(
                "Bookings cannot be saved for a moment; the hold is kept, try again shortly."
            ) from e
        except BaseException:
            # A detail write refused (a domain error), an idempotency key taken by a twin, or
            # something unexpected. If a concurrent confirm of this hold wrote the row, the
            # cells are that booking's; otherwise keep the hold.
            await self._settle_quietly(hold, key, cell_keys, token, pending)
            raise

        await self._finalize_quietly(booking, key, cell_keys, pending, token)
        return booking

    async def _finalize_quietly(
        self, booking: Booking, key: str, cell_keys: list[str], pending: str, token: str
    ) -> None:
        try:
            await _finalize(
                self.redis,
                [key, *cell_keys],
                [pending, f"B:{booking.booking_id}", _ms(booking.end), f"H:{token}"],
            )
        except RedisError:
            # The row is the truth; the pending cells expire on their own and PostgreSQL keeps
            # refusing overlaps meanwhile.
            log.warning(
                "could not mark confirmed cells as booked", extra={"hold_id": booking.hold_id}
            )

    async def _settle_quietly(
        self, hold: Hold, key: str, cell_keys: list[str], token: str, pending: str
    ) -> None:
        try:
            booking = await self.booking_for_hold(hold.hold_id)
        except (*PG_UNAVAILABLE, asyncpg.PostgresError):
            booking = None
        if booking is not None and booking.status == "confirmed":
            await self._finalize_quietly(booking, key, cell_keys, pending, token)
        elif booking is None:
            await self._unclaim_quietly(key, cell_keys, token, pending)

    async def _insert_booking(
        self,
        booking_id: uuid.UUID,
        hold: Hold,
        write_details: WriteDetails | None,
        detail_rows: DetailRowsFor | None,
    ) -> Booking:
        for attempt in range(5):
            draft = Booking(
                booking_id=booking_id,
                reference=new_reference(),
                resource_id=hold.resource_id,
                start=hold.start,
                end=hold.end,
                kind=hold.kind,
                status="confirmed",
                call_id=hold.call_id,
                hold_id=hold.hold_id,
                created_at=datetime.now(UTC),
            )
            args = (
                draft.booking_id,
                draft.resource_id,
                Range(draft.start, draft.end, lower_inc=True, upper_inc=False),
                draft.kind,
                draft.reference,
                draft.hold_id,
                draft.call_id,
                draft.created_at,
            )
            try:
                if detail_rows is not None:
                    rows = detail_rows(draft, hold)
                    row = await self.pool.fetchrow(
                        _insert_with_details(tuple(r.sql for r in rows)),
                        *args,
                        *(arg for r in rows for arg in r.args),
                    )
                    return Booking.from_row(row)
                async with self.pool.acquire() as conn, conn.transaction():
                    booking = Booking.from_row(await conn.fetchrow(_INSERT_BOOKING, *args))
                    if write_details is not None:
                        await write_details(conn, booking, hold)
                    return booking
            except asyncpg.DeadlockDetectedError:
                # Two inserts of overlapping ranges can each wait for the other's exclusion
                # check; PostgreSQL aborts one. Its transaction is gone, so run it again: it
                # now sees the other's row (a conflict) or none (that one rolled back).
                if attempt < 4:
                    continue
                raise
            except asyncpg.UniqueViolationError as e:
                if e.constraint_name == "bookings_reference_key" and attempt < 4:
                    continue  # a reference collision: draw another
                # A concurrent confirm of this hold wrote it first (under the same booking id
                # when it took over a claim, so the primary key may be the one to refuse).
                if e.constraint_name in ("bookings_hold_id_key", "bookings_pkey"):
                    existing = await self.booking_for_hold(hold.hold_id)
                    if existing is not None:
                        return existing
                raise
        raise AssertionError("unreachable")

    async def _confirmed_or_expired(self, hold_id: str) -> Booking:
        try:
            booking = await self.booking_for_hold(hold_id)
        except PG_UNAVAILABLE as e:
            raise DependencyUnavailable("Bookings cannot be read for a moment.") from e
        if booking is not None:
            return booking
        raise HoldExpired(
            "That hold has expired or was released; place a new hold.", hold_id=hold_id
        )

    async def _remark_booked_quietly(self, hold: Hold) -> None:
        """Mark the cells of the bookings PostgreSQL has over a hold's range (Redis had lost
        them), where no one holds them, so the next hold there is refused at once."""
        try:
            rows = await self.pool.fetch(
                _SELECT_CONFIRMED_OVERLAPPING,
                hold.resource_id,
                Range(hold.start, hold.end, lower_inc=True, upper_inc=False),
            )
            for row in rows:
                booking = Booking.from_row(row)
                booked = f"B:{booking.booking_id}"
                cells = self.cells(booking.start, booking.end, hold.cell_seconds)
                await _finalize(
                    self.redis,
                    [
                        f"{self._tag(booking.resource_id)}:h:-",
                        *self.cell_keys(hold.resource_id, cells),
                    ],
                    [booked, booked, _ms(booking.end)],
                )
        except (*PG_UNAVAILABLE, asyncpg.PostgresError, RedisError, InvalidInput):
            log.warning("could not mark a booking Redis had lost", extra={"hold_id": hold.hold_id})

    async def _release_quietly(
        self, key: str, cell_keys: list[str], marker: str, *, drop_hash: bool
    ) -> None:
        try:
            await _release(self.redis, [key, *cell_keys], [marker, "0", "1" if drop_hash else "0"])
        except RedisError:
            log.warning("could not release cells; they expire on their own")

    async def _unclaim_quietly(
        self, key: str, cell_keys: list[str], token: str, pending: str
    ) -> None:
        try:
            await _unclaim(self.redis, [key, *cell_keys], [token, pending, int(time.time() * 1000)])
        except RedisError:
            log.warning("could not restore a hold after a failed confirm")

    # -- bookings -----------------------------------------------------------------------------

    async def booking_for_hold(self, hold_id: str) -> Booking | None:
        row = await self.pool.fetchrow(
            f"SELECT {_BOOKING_COLUMNS} FROM bookings WHERE hold_id = $1",  # noqa: S608
            hold_id,
        )
        return Booking.from_row(row, replayed=True) if row else None

    async def get_booking(self, booking_id: uuid.UUID | str) -> Booking:
        bid = _parse_uuid(booking_id, "booking")
        try:
            row = await self.pool.fetchrow(
                f"SELECT {_BOOKING_COLUMNS} FROM bookings WHERE booking_id = $1",  # noqa: S608
                bid,
            )
        except PG_UNAVAILABLE as e:
            raise DependencyUnavailable("Bookings cannot be read for a moment.") from e
        if row is None:
            raise NotFound("There is no booking with that id.", booking_id=str(booking_id)[:64])
        return Booking.from_row(row)

    async def cancel_booking(
        self,
        booking_id: uuid.UUID | str,
        *,
        reason: str,
        cell_seconds: int,
        conn: asyncpg.Connection | None = None,
        free_cells: bool = True,
    ) -> Booking:
        """Mark a booking cancelled (never deleted) and free its cells. Idempotent. Inside a
        caller's transaction (``conn``), pass ``free_cells=False`` and call
        :meth:`free_booked_cells` after it commits: cells freed before the commit would be
        free in Redis while a rolled-back cancel leaves the booking confirmed."""
        bid = _parse_uuid(booking_id, "booking")
        sql = f"""UPDATE bookings
                     SET status = 'cancelled', cancelled_at = now(), cancel_reason = $2,
                         updated_at = now()
                   WHERE booking_id = $1 AND status = 'confirmed'
               RETURNING {_BOOKING_COLUMNS}"""  # noqa: S608
        try:
            row = await (conn or self.pool).fetchrow(sql, bid, reason)
        except PG_UNAVAILABLE as e:
            raise DependencyUnavailable("Bookings cannot be changed for a moment.") from e
        if row is None:
            booking = await self.get_booking(bid)  # NotFound, or already cancelled
            return booking
        booking = Booking.from_row(row)
        if free_cells:
            await self.free_booked_cells(booking, cell_seconds)
        return booking

    async def free_booked_cells(self, booking: Booking, cell_seconds: int) -> None:
        cell_keys = self.cell_keys(
            booking.resource_id, self.cells(booking.start, booking.end, cell_seconds)
        )
        await self._release_quietly(
            f"{self._tag(booking.resource_id)}:h:-",
            cell_keys,
            f"B:{booking.booking_id}",
            drop_hash=False,
        )

    async def _mark_moved(self, moved: Booking, cell_seconds: int, hold: Hold | None) -> None:
        """Mark the cells of a moved booking as booked: the fresh ones still carry the move's
        hold marker, the ones it kept carry the booking's own. Drops the move's hold hash."""
        cell_keys = self.cell_keys(
            moved.resource_id, self.cells(moved.start, moved.end, cell_seconds)
        )
        booked = f"B:{moved.booking_id}"
        if hold is not None:
            hold_key, held = self.hold_key(hold.hold_id), f"H:{self.parse_hold_id(hold.hold_id)[1]}"
        else:
            hold_key, held = f"{self._tag(moved.resource_id)}:h:-", booked
        try:
            await _finalize(self.redis, [hold_key, *cell_keys], [held, booked, _ms(moved.end)])
        except RedisError:
            # PostgreSQL has the move; the fresh cells stay held until the hold's TTL and
            # PostgreSQL keeps refusing overlaps after that.
            log.warning("could not mark moved booking's cells as booked")

    async def move_booking(
        self,
        booking_id: uuid.UUID | str,
        *,
        resource_id: str,
        start: datetime,
        end: datetime,
        cell_seconds: int,
        write_details: Callable[[asyncpg.Connection, Booking], Awaitable[None]] | None = None,
    ) -> Booking:
        """Move a confirmed booking. The new time is held before the old one is let go, and the
        move is a single-row update, so a failed move leaves the booking where it was."""
        old = await self.get_booking(booking_id)
        if old.status != "confirmed":
            raise Conflict("That booking is cancelled and cannot be moved.")
        # Cells the booking already owns (same resource, overlapping) must not block its move.
        own = set()
        if resource_id == old.resource_id:
            own = set(self.cells(old.start, old.end, cell_seconds))
        wanted = self.cells(start, end, cell_seconds)
        fresh = [c for c in wanted if c not in own]
        hold: Hold | None = None
        if fresh:
            hold = await self._reserve_cell_list(resource_id, fresh, cell_seconds, old.kind)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                # Only from where it was read: a move that raced this one and won makes this
                # one a conflict, instead of this one moving from a time it no longer has.
                row = await conn.fetchrow(
                    f"""UPDATE bookings
                           SET resource_id = $2, during = $3, updated_at = now()
                         WHERE booking_id = $1 AND status = 'confirmed'
                           AND resource_id = $4 AND during = $5
                     RETURNING {_BOOKING_COLUMNS}""",  # noqa: S608
                    old.booking_id,
                    resource_id,
                    Range(start, end, lower_inc=True, upper_inc=False),
                    old.resource_id,
                    Range(old.start, old.end, lower_inc=True, upper_inc=False),
                )
                if row is None:
                    raise Conflict("That booking changed while it was being moved; try again.")
                moved = Booking.from_row(row)
                if write_details is not None:
                    await write_details(conn, moved)
        except asyncpg.ExclusionViolationError:
            if hold is not None:
                await self.release_hold(hold.hold_id)
            raise Unavailable("That time is already taken.", resource_id=resource_id) from None
        except PG_UNAVAILABLE as e:
            if hold is not None:
                await self.release_hold(hold.hold_id)
            raise DependencyUnavailable(
                "Bookings cannot be changed for a moment; the booking is unchanged."
            ) from e
        except BaseException:
            if hold is not None:
                await self.release_hold(hold.hold_id)
            raise
        # New cells booked first, then the old ones it left freed: no cell of the booking is
        # ever free in Redis in between.
        await self._mark_moved(moved, cell_seconds, hold)
        kept = set(wanted) if resource_id == old.resource_id else set()
        left = [c for c in self.cells(old.start, old.end, cell_seconds) if c not in kept]
        if left:
            await self._release_quietly(
                f"{self._tag(old.resource_id)}:h:-",
                self.cell_keys(old.resource_id, left),
                f"B:{old.booking_id}",
                drop_hash=False,
            )
        return moved

    async def _reserve_cell_list(
        self, resource_id: str, cells: list[int], cell_seconds: int, kind: str
    ) -> Hold:
        # The fresh cells of a move need not be contiguous; hold each run of them.
        token = secrets.token_hex(12)
        ttl_ms = self.pending_ttl_seconds * 1000
        tag = self._tag(resource_id)
        first = cells[0]
        start = self._cell_start(first, cell_seconds)
        end = self._cell_start(cells[-1] + 1, cell_seconds)
        stored = HoldHash.new(
            resource_id, start, end, cell_seconds, kind,
            call_id=None, expires_ms=int(time.time() * 1000) + ttl_ms,
        )  # fmt: skip
        keys = [f"{tag}:h:{token}", f"{tag}:i:-", *self.cell_keys(resource_id, cells)]
        try:
            result = await _reserve(self.redis, keys, stored.reserve_args(token, ttl_ms, ""))
        except RedisError as e:
            raise DependencyUnavailable("Holds are unavailable for a moment.") from e
        if int(result[0]) == ReserveReply.TAKEN:
            raise Unavailable("That time is already taken.", resource_id=resource_id)
        # The stored range spans the fresh cells; release_hold recomputes the cells from it, so
        # it only frees cells carrying this token's marker.
        return Hold(
            hold_id=f"{resource_id}.{token}",
            resource_id=resource_id,
            start=start,
            end=end,
            expires_at=_from_ms(stored.expires_ms),
            kind=kind,
            call_id=None,
            cell_seconds=cell_seconds,
        )

    def _cell_start(self, cell: int, cell_seconds: int) -> datetime:
        if cell_seconds == DAY:
            return datetime.combine(datetime.fromordinal(cell).date(), datetime.min.time(), self.tz)
        return datetime.fromtimestamp(cell * cell_seconds, tz=UTC)


def _pending_booking_id(marker: str) -> uuid.UUID:
    try:
        return uuid.UUID(marker.removeprefix("P:"))
    except ValueError:
        # Not written by claim.lua; a fresh id still lets PostgreSQL decide on the hold id.
        return uuid.uuid4()


def _parse_uuid(value: uuid.UUID | str, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(f"There is no {what} with that id.") from None
