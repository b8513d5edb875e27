"""What the scheduling desk needs from inventory to book, move and cancel a dealership test
drive.

Inventory's ``InventoryService`` satisfies this in one process; in the mesh a handle to the
inventory application does (``deployments.handles.RemoteVehicleHolds``).
"""

from __future__ import annotations

from typing import Protocol

from services.inventory import HoldRequest, HoldResponse, ReleaseResult, RentalBooking


class VehicleHolds(Protocol):
    async def create_hold(
        self, request: HoldRequest, *, idempotency_key: str | None = None
    ) -> HoldResponse: ...

    async def confirm_hold(
        self, hold_id: str, *, idempotency_key: str | None = None
    ) -> RentalBooking: ...

    async def release_hold(self, hold_id: str) -> ReleaseResult: ...

    async def booking_for_hold(self, hold_id: str) -> RentalBooking | None: ...

    async def cancel_rental_for_hold(
        self, hold_id: str, reason: str | None = None
    ) -> RentalBooking: ...
