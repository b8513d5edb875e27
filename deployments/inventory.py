"""The inventory application at ``/inventory``: units, holds, rates, confirms, rentals.

This is the hot path (hold, confirm): the proxy routes straight to this replica, which talks
to Redis and PostgreSQL itself. It calls the verification application only to confirm a unit
that requires something.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Body, FastAPI, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from deployments.api import service_api
from deployments.composition import inventory_service
from deployments.deps import WRITE, AppMetrics, IdempotencyKey, Inventory
from deployments.handles import RemoteDeployment, RemoteRequirementsChecker
from deployments.metrics import Metrics
from deployments.replica import ServiceReplica, service_deployment
from services.errors import DomainError, HoldExpired, Unavailable, VerificationRequired
from services.inventory import (
    HoldRequest,
    HoldResponse,
    InventoryService,
    RateAgreement,
    RateProposal,
    ReleaseResult,
    RentalBooking,
    RequirementsChecker,
    Unit,
    UnitStatus,
)
from services.settings import Settings

# Refusals counted in callmesh_reservations_total; the booking kind of a refused hold is not
# known at the edge, so those count as kind="unknown".
_REFUSALS: tuple[tuple[type[DomainError], str], ...] = (
    (Unavailable, "unavailable"),
    (VerificationRequired, "verification_required"),
    (HoldExpired, "expired"),
)


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: UnitStatus


class RentalCancellation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=300)


def count(metrics: Metrics | None, kind: str, result: str) -> None:
    if metrics is not None:
        metrics.count_reservation(kind=kind, result=result)


def count_refusal(metrics: Metrics | None, error: DomainError) -> None:
    for cls, result in _REFUSALS:
        if isinstance(error, cls):
            count(metrics, "unknown", result)
            return


router = APIRouter()


@router.get("/units", tags=["units"])
async def search_units(
    inventory: Inventory,
    query: Annotated[str | None, Query(max_length=200)] = None,
    category: Annotated[str | None, Query(max_length=40)] = None,
    max_daily_rate: Annotated[Decimal | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[Unit]:
    """Units ranked by how well they match the words, filtered by category and rate."""
    return await inventory.search_units(
        query=query, category=category, max_daily_rate=max_daily_rate, limit=limit
    )


@router.get("/units/{unit_id}", tags=["units"])
async def get_unit(unit_id: str, inventory: Inventory) -> Unit:
    return await inventory.get_unit(unit_id)


@router.put("/units/{unit_id}/status", dependencies=[WRITE], tags=["units"])
async def set_unit_status(unit_id: str, body: StatusChange, inventory: Inventory) -> Unit:
    """Mark a unit AVAILABLE, RENTED or MAINTENANCE (a unit in maintenance cannot be held)."""
    return await inventory.set_unit_status(unit_id, body.status)


@router.post("/holds", status_code=201, dependencies=[WRITE], tags=["holds"])
async def create_hold(
    body: HoldRequest,
    inventory: Inventory,
    metrics: AppMetrics,
    idempotency_key: IdempotencyKey = None,
) -> HoldResponse:
    """Hold a unit for a rental (dates) or a test drive (times); 409 if it is taken."""
    try:
        hold = await inventory.create_hold(body, idempotency_key=idempotency_key)
    except DomainError as e:
        count_refusal(metrics, e)
        raise
    count(metrics, hold.kind, "held")
    return hold


@router.get("/holds/{hold_id}", tags=["holds"])
async def get_hold(hold_id: str, inventory: Inventory) -> HoldResponse:
    return await inventory.get_hold(hold_id)


@router.post("/holds/{hold_id}/rate", dependencies=[WRITE], tags=["holds"])
async def propose_rate(hold_id: str, body: RateProposal, inventory: Inventory) -> RateAgreement:
    """Propose a daily rate within the unit's bounds; a limited number of offers per hold."""
    return await inventory.propose_rate(hold_id, body.rate)


@router.post("/holds/{hold_id}/confirm", status_code=201, dependencies=[WRITE], tags=["holds"])
async def confirm_hold(
    hold_id: str,
    inventory: Inventory,
    metrics: AppMetrics,
    idempotency_key: IdempotencyKey = None,
) -> RentalBooking:
    """Turn a hold into a booking; 409 naming what must be verified first, 410 if expired."""
    try:
        booking = await inventory.confirm_hold(hold_id, idempotency_key=idempotency_key)
    except DomainError as e:
        count_refusal(metrics, e)
        raise
    if not booking.replayed:
        count(metrics, booking.kind, "confirmed")
    return booking


@router.delete("/holds/{hold_id}", status_code=204, dependencies=[WRITE], tags=["holds"])
async def release_hold(hold_id: str, inventory: Inventory, metrics: AppMetrics) -> Response:
    """Let a hold go; releasing one that is already gone is not an error."""
    result = await inventory.release_hold(hold_id)
    if result.released:
        count(metrics, "unknown", "released")
    return Response(status_code=204)


@router.get("/bookings/{booking_id}", tags=["bookings"])
async def get_booking(booking_id: str, inventory: Inventory) -> RentalBooking:
    return await inventory.get_booking(booking_id)


@router.post("/bookings/{booking_id}/cancel", dependencies=[WRITE], tags=["bookings"])
async def cancel_booking(
    booking_id: str,
    inventory: Inventory,
    body: Annotated[RentalCancellation | None, Body()] = None,
) -> RentalBooking:
    """Cancel a rental (the row stays, marked cancelled) and free the unit."""
    return await inventory.cancel_rental(booking_id, reason=body.reason if body else None)


def build_inventory_api(
    settings: Settings,
    *,
    service: InventoryService | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    return service_api("inventory", router, settings, metrics=metrics, service=service)


@service_deployment("Inventory")
@serve.ingress()
class InventoryDeployment(ServiceReplica):
    service: InventoryService
    api = staticmethod(build_inventory_api)

    def open_service(self, verification: RemoteDeployment | None) -> None:
        checker: RequirementsChecker | None = (
            RemoteRequirementsChecker(verification) if verification is not None else None
        )
        backends = self.context.backends
        self.service = inventory_service(
            self.context.settings, backends.pool, backends.redis, requirements=checker
        )
        self.watch_reconcile()

    # Called by the scheduling application (DeploymentHandle) to book, move and cancel a
    # test-drive car.
    async def create_hold(
        self, request: HoldRequest, idempotency_key: str | None = None
    ) -> HoldResponse:
        return await self.service.create_hold(request, idempotency_key=idempotency_key)

    async def confirm_hold(self, hold_id: str, idempotency_key: str | None = None) -> RentalBooking:
        return await self.service.confirm_hold(hold_id, idempotency_key=idempotency_key)

    async def release_hold(self, hold_id: str) -> ReleaseResult:
        return await self.service.release_hold(hold_id)

    async def booking_for_hold(self, hold_id: str) -> RentalBooking | None:
        return await self.service.booking_for_hold(hold_id)

    async def cancel_rental_for_hold(
        self, hold_id: str, reason: str | None = None
    ) -> RentalBooking:
        return await self.service.cancel_rental_for_hold(hold_id, reason)


def inventory_app(
    settings: Settings, verification: RemoteDeployment | None = None
) -> serve.Application:
    return InventoryDeployment.bind(settings, verification)  # type: ignore[attr-defined]


def inventory_remote() -> RemoteDeployment:
    return RemoteDeployment(deployment="Inventory", app_name="inventory", what="Vehicles")
