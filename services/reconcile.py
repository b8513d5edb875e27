"""Rebuilding Redis's booked cells from PostgreSQL after Redis lost data.

Redis holds the fast path's cells, PostgreSQL the bookings. When Redis loses data (FLUSHALL, a
restart without persistence, a failover to a replica that had not caught up) the booked cells
of confirmed bookings are gone, and holds would be granted over them until the confirm refused.

An epoch key says "this Redis has every booked cell": written after a rebuild, with no TTL, so
a Redis that lost its data has none. Each replica that owns cells runs a :class:`Watcher`: one
GET per interval, and when the epoch is missing one rebuilder (a lock) marks the cells of every
confirmed booking that has not ended (``mark_booked.lua``: a hold or a confirm under way over
a booked time loses that cell, since PostgreSQL would refuse its confirm and the time must not
come free when the hold lapses), reads those bookings again to free the cells of any cancelled
or moved meanwhile, and commits the epoch only if its lock survived (if not, Redis lost data
again: start over).

Entry point for tests and the fault suite: :func:`reconcile`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from asyncpg.types import Range

from services.errors import InvalidInput
from services.kv import EpochReply, LuaScript
from services.reservations import Booking, ReservationStore
from services.settings import Settings

log = logging.getLogger(__name__)

_mark_booked = LuaScript("mark_booked")

WATCH_SECONDS = 5.0  # a loss is noticed within this, and rebuilt well inside 30 s
LOCK_MS = 30_000  # renewed after every batch; a rebuilder that died lets go within this
BATCH = 1_000  # SETs per pipeline round trip
_ATTEMPTS = 5

_epoch = LuaScript("epoch")

# Every booking that marks cells booked today: confirmed and not yet ended. Appointments use
# the scheduling grid, rentals and test drives their unit's. Columns as Booking.from_row reads.
SELECT_LIVE_BOOKINGS = """
SELECT b.booking_id, b.reference, b.resource_id, b.during, b.kind, b.status, b.call_id,
       b.hold_id, b.created_at,
       CASE WHEN b.kind = 'appointment' THEN $1::int ELSE u.cell_minutes * 60 END AS cell_seconds
  FROM bookings b
  LEFT JOIN units u ON u.unit_id = b.resource_id AND b.kind <> 'appointment'
 WHERE b.status = 'confirmed' AND upper(b.during) > now()"""

# The same bookings read again after their cells were marked: a cancel or a move that
# committed in between may have freed its cells before this rebuild wrote them.
SELECT_BOOKINGS_AGAIN = """
SELECT booking_id, status, resource_id, during FROM bookings WHERE booking_id = ANY($1::uuid[])"""


@dataclass(frozen=True, slots=True)
class Rebuild:
    """What one rebuild did: bookings read, cells it marked (cells already set are left)."""

    bookings: int
    cells_marked: int
    cells_freed: int


def epoch_key(prefix: str) -> str:
    # One hash tag for the epoch and its lock, so the commit script is valid in Redis Cluster.
    return f"{prefix}:{{epoch}}"


def lock_key(prefix: str) -> str:
    return f"{prefix}:{{epoch}}:lock"


class Reconciler:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        settings: Settings,
        store: ReservationStore | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.slot_seconds = settings.slot_minutes * 60
        self.store = store or ReservationStore.from_settings(
            pool=pool, redis=redis, settings=settings
        )
        self.epoch_key = epoch_key(settings.redis_prefix)
        self.lock_key = lock_key(settings.redis_prefix)

    async def ensure(self, *, wait: bool = False) -> Rebuild | None:
        """Rebuild if Redis lost its data (no epoch); None when nothing was lost or another
        replica is rebuilding (with ``wait``, return once it has). One GET when nothing was."""
        if await self.redis.get(self.epoch_key) is not None:
            return None
        return await self.rebuild(wait=wait)

    async def rebuild(self, *, wait: bool = False, force: bool = False) -> Rebuild | None:
        """Mark every live booking's cells and set the epoch, unless another replica holds
        the lock or set the epoch meanwhile (then None; after it finished, with ``wait``).
        ``force`` rebuilds even over an epoch."""
        for _ in range(_ATTEMPTS):
            token = secrets.token_hex(12)
            if not await self.redis.set(self.lock_key, token, nx=True, px=LOCK_MS):
                if not wait:
                    return None
                await self._wait_for_other()
                if await self.redis.get(self.epoch_key) is not None:
                    return None
                continue
            if not force and await self.redis.get(self.epoch_key) is not None:
                # Another replica committed between our GET and our lock: nothing to do.
                await _epoch(self.redis, [self.lock_key, self.epoch_key], [token, "drop", 0, ""])
                return None
            try:
                done = await self._rebuild(token)
            except BaseException:
                with contextlib.suppress(Exception):
                    await _epoch(
                        self.redis, [self.lock_key, self.epoch_key], [token, "drop", 0, ""]
                    )
                raise
            if done is not None:
                log.info(
                    "rebuilt booked cells from PostgreSQL",
                    extra={"bookings": done.bookings, "cells": done.cells_marked},
                )
                return done
            log.warning("Redis lost the rebuild lock; rebuilding again")
        raise RuntimeError("Redis kept losing data during the rebuild of booked cells")

    async def _wait_for_other(self) -> None:
        deadline = time.monotonic() + LOCK_MS / 1000
        while time.monotonic() < deadline:
            epoch, lock = await self.redis.mget([self.epoch_key, self.lock_key])
            if epoch is not None or lock is None:
                return
            await asyncio.sleep(0.05)

    async def _rebuild(self, token: str) -> Rebuild | None:
        rows = await self.pool.fetch(SELECT_LIVE_BOOKINGS, self.slot_seconds)
        live = [(Booking.from_row(r), r["cell_seconds"]) for r in rows if r["cell_seconds"]]
        marked = await self._mark(live, token)
        if marked is None:
            return None
        freed = 0
        changed = await self._changed_since(live)
        for booking, cell_seconds, now in changed:
            await self.store.free_booked_cells(booking, cell_seconds)
            freed += 1
            if now is not None:  # moved, still confirmed: its new range is booked
                more = await self._mark([(now, cell_seconds)], token)
                if more is None:
                    return None
                marked += more
        committed = await _epoch(
            self.redis,
            [self.lock_key, self.epoch_key],
            [token, "commit", LOCK_MS, f"{int(time.time() * 1000)}:{token}"],
        )
        if int(committed) != EpochReply.DONE:
            return None
        return Rebuild(bookings=len(live), cells_marked=marked, cells_freed=freed)

    async def _mark(self, live: list[tuple[Booking, int]], token: str) -> int | None:
        """Mark every cell of each booking booked until it ends; None if the lock is lost."""
        marked = 0
        # The script runs from a pipeline, which cannot load it on NOSCRIPT: load it first
        # (a Redis that lost its data has usually lost its scripts too).
        await self.redis.script_load(_mark_booked.source)
        pipe = self.redis.pipeline(transaction=False)
        queued = 0
        for booking, cell_seconds in live:
            try:
                cells = self.store.cells(booking.start, booking.end, cell_seconds)
            except InvalidInput:
                log.warning(
                    "a booking's range is not on its grid",
                    extra={"booking_id": str(booking.booking_id)},
                )
                continue
            end_ms = int(booking.end.timestamp() * 1000)
            keys = self.store.cell_keys(booking.resource_id, cells)
            pipe.evalsha(_mark_booked.sha, len(keys), *keys, f"B:{booking.booking_id}", end_ms)
            queued += len(keys)
            if queued >= BATCH:
                marked += sum(int(n) for n in await pipe.execute())
                queued = 0
                if not await self._renew(token):
                    return None
        if queued:
            marked += sum(int(n) for n in await pipe.execute())
        if not await self._renew(token):
            return None
        return marked

    async def _renew(self, token: str) -> bool:
        args = [token, "renew", LOCK_MS, ""]
        done = await _epoch(self.redis, [self.lock_key, self.epoch_key], args)
        return int(done) == EpochReply.DONE

    async def _changed_since(
        self, live: list[tuple[Booking, int]]
    ) -> list[tuple[Booking, int, Booking | None]]:
        """Bookings cancelled or moved since they were read: (as read, grid, as now if still
        confirmed)."""
        if not live:
            return []
        rows = await self.pool.fetch(SELECT_BOOKINGS_AGAIN, [b.booking_id for b, _ in live])
        now = {r["booking_id"]: r for r in rows}
        changed: list[tuple[Booking, int, Booking | None]] = []
        for booking, cell_seconds in live:
            row = now.get(booking.booking_id)
            if (
                row is not None
                and row["status"] == "confirmed"
                and row["resource_id"] == booking.resource_id
                and row["during"] == _during(booking)
            ):
                continue
            moved = None
            if row is not None and row["status"] == "confirmed":
                moved = _replace_range(booking, row)
            changed.append((booking, cell_seconds, moved))
        return changed


def _during(booking: Booking) -> Range:
    return Range(booking.start, booking.end, lower_inc=True, upper_inc=False)


def _replace_range(booking: Booking, row: asyncpg.Record) -> Booking:
    return Booking(
        booking_id=booking.booking_id,
        reference=booking.reference,
        resource_id=row["resource_id"],
        start=row["during"].lower,
        end=row["during"].upper,
        kind=booking.kind,
        status="confirmed",
        call_id=booking.call_id,
        hold_id=booking.hold_id,
        created_at=booking.created_at,
    )


async def reconcile(
    *, pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, force: bool = False
) -> Rebuild | None:
    """Make Redis carry the booked cells of every confirmed booking that has not ended.

    Cheap when nothing was lost (one GET, None). Otherwise rebuilds, or waits for the replica
    that is rebuilding and returns None. ``force`` rebuilds even if the epoch is there. Safe
    to call from many processes at once."""
    reconciler = Reconciler(pool=pool, redis=redis, settings=settings)
    if force:
        return await reconciler.rebuild(wait=True, force=True)
    return await reconciler.ensure(wait=True)


class Watcher:
    """The periodic check a replica that owns cells runs: :meth:`Reconciler.ensure` now (so on
    replica start) and every ``interval`` seconds after."""

    def __init__(self, reconciler: Reconciler, *, interval: float = WATCH_SECONDS) -> None:
        self.reconciler = reconciler
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Watcher:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reconcile")
        return self

    async def _run(self) -> None:
        task = asyncio.current_task()
        while True:
            try:
                await self.reconciler.ensure()
            except Exception:
                # Redis or PostgreSQL is down: the next round tries again.
                log.warning("could not check or rebuild Redis's booked cells", exc_info=True)
            # A client library may turn the stop's cancellation into an error of its own (seen
            # in tests: the task went on sleeping, cancelled once and never again): stop anyway.
            if task is not None and task.cancelling():
                return
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Cancel the watcher and wait (a bounded time: a replica's shutdown must not hang)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            log.warning("the reconcile watcher did not stop")
            return
        with contextlib.suppress(asyncio.CancelledError):
            task.result()


def watch(
    *,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    interval: float = WATCH_SECONDS,
) -> Watcher:
    """Start the watcher in the running event loop (a replica's async constructor)."""
    return Watcher(Reconciler(pool=pool, redis=redis, settings=settings), interval=interval).start()
