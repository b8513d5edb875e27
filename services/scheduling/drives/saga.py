"""``TestDrives``: the saga over the sales desk and a demo car, booked, moved and cancelled
together or not at all. How each step can fail and what is undone: ``docs/test-drives.md``."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from services.reservations import ReservationStore
from services.scheduling.drives.booking import Bookings
from services.scheduling.drives.car import Car
from services.scheduling.drives.changes import Changes
from services.scheduling.drives.desk import AppointmentDesk
from services.scheduling.drives.retries import run_to_end
from services.scheduling.drives.sweep import SWEEP_MARGIN_SECONDS, sweep
from services.scheduling.models import TestDrive, TestDriveRequest
from services.scheduling.vehicles import VehicleHolds
from services.settings import Settings


class TestDrives:
    """The test-drive saga over inventory's demo cars (``vehicles``; None where the dealership
    desk is not wired: then test drives are refused and there is nothing to settle).

    It keeps no appointment desk: each call is handed the desk it works on (the
    ``SchedulingService`` passes itself), so the desk holds the saga and never the reverse.
    """

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        reservations: ReservationStore,
        vehicles: VehicleHolds | None,
        settings: Settings,
    ) -> None:
        self.pool = pool
        self.reservations = reservations
        self.vehicles = vehicles
        self.settings = settings
        self.car = Car(vehicles)

    def bookings(self, desk: AppointmentDesk) -> Bookings:
        """Booking test drives on ``desk``."""
        return Bookings(desk=desk, pool=self.pool, car=self.car)

    def changes(self, desk: AppointmentDesk) -> Changes:
        """Moving and cancelling test drives booked on ``desk``: both halves or neither."""
        return Changes(desk=desk, pool=self.pool, car=self.car)

    async def book(
        self, desk: AppointmentDesk, request: TestDriveRequest, idempotency_key: str | None = None
    ) -> TestDrive:
        """Book a test drive: a sales-desk appointment and the demo car, together or not at all.

        The car is held first (cheap to let go), then the appointment is booked, then the car's
        hold is confirmed; a failure undoes what was done. The saga runs to its end even if the
        caller goes away, so a compensation never stops half way.
        """
        return await run_to_end(self.bookings(desk).book(request, idempotency_key))

    async def settle(
        self, desk: AppointmentDesk, *, older_than: timedelta | None = None, limit: int = 100
    ) -> int:
        """Settle test-drive bookings, cancels and moves that never finished: both halves, or
        neither. Only attempts older than ``older_than`` are looked at (by default a car hold's
        TTL and then some, when no confirm can still land). Returns how many were settled."""
        if self.vehicles is None:
            return 0
        if older_than is None:
            older_than = timedelta(
                seconds=self.settings.hold_ttl_seconds
                + self.reservations.pending_ttl_seconds
                + SWEEP_MARGIN_SECONDS
            )
        return await sweep(
            self.pool,
            bookings=self.bookings(desk).settle,
            changes=self.changes(desk).settle,
            older_than=older_than,
            limit=limit,
        )
