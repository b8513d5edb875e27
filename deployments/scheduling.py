"""The scheduling application at ``/scheduling``: service types, slots, appointments,
customers, callbacks, and dealership test drives (which hold a demo car through a handle to
the inventory application)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from deployments.api import service_api
from deployments.composition import scheduling_service
from deployments.deps import PERSONAL, WRITE, AppMetrics, IdempotencyKey, Scheduling
from deployments.handles import RemoteDeployment, RemoteVehicleHolds
from deployments.metrics import Metrics
from deployments.replica import ServiceReplica, service_deployment
from services.errors import Unavailable
from services.scheduling import (
    Appointment,
    BookRequest,
    Callback,
    Customer,
    SchedulingService,
    ServiceType,
    SlotList,
    TestDrive,
    TestDriveRequest,
)
from services.settings import Settings

log = logging.getLogger(__name__)

# How often a replica settles test drives (bookings, cancels, moves) that never finished (a
# replica died half way, or inventory could not say what became of the car). Every step is
# idempotent, so replicas sweeping at the same time do no harm.
TEST_DRIVE_SWEEP_SECONDS = 60.0


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reschedule(_Body):
    start: dt.datetime | str


class AppointmentCancellation(_Body):
    reason: str = Field(max_length=500)


class PhoneLookup(_Body):
    phone: str = Field(max_length=64, description="As said or typed.")


class CallbackRequest(_Body):
    phone: str = Field(max_length=64)
    reason: str = Field(max_length=500)
    preferred_time: dt.datetime | str | None = None
    call_id: str | None = Field(None, max_length=128)


PhoneQuery = Annotated[str, Query(max_length=64, description="As said or typed.")]


def count(metrics: Metrics | None, result: str) -> None:
    if metrics is not None:
        metrics.count_reservation(kind="appointment", result=result)


router = APIRouter()


@router.get("/service-types", tags=["slots"])
async def list_service_types(scheduling: Scheduling) -> list[ServiceType]:
    return await scheduling.list_service_types()


@router.get("/slots", tags=["slots"])
async def list_slots(
    scheduling: Scheduling,
    date: Annotated[dt.date, Query(description="YYYY-MM-DD, in the business time zone.")],
    service_type: Annotated[str, Query(max_length=64)],
) -> SlotList:
    """Free start times of a service type on a day, and the next day with one if none."""
    return await scheduling.list_slots(date, service_type)


@router.post("/appointments", status_code=201, dependencies=[WRITE], tags=["appointments"])
async def book_appointment(
    body: BookRequest,
    scheduling: Scheduling,
    metrics: AppMetrics,
    idempotency_key: IdempotencyKey = None,
) -> Appointment:
    """Book the service at that start on the first free bay or clinician; 409 if taken."""
    try:
        appointment = await scheduling.book_appointment(body, idempotency_key=idempotency_key)
    except Unavailable:
        count(metrics, "unavailable")
        raise
    count(metrics, "confirmed")
    return appointment


@router.post("/test-drives", status_code=201, dependencies=[WRITE], tags=["appointments"])
async def book_test_drive(
    body: TestDriveRequest,
    scheduling: Scheduling,
    metrics: AppMetrics,
    idempotency_key: IdempotencyKey = None,
) -> TestDrive:
    """Book the sales desk and a demo car together, or neither; 409 if either is taken."""
    try:
        drive = await scheduling.book_test_drive(body, idempotency_key=idempotency_key)
    except Unavailable:
        count(metrics, "unavailable")
        raise
    count(metrics, "confirmed")
    return drive


@router.get("/appointments/{appointment_id}", dependencies=[PERSONAL], tags=["appointments"])
async def get_appointment(appointment_id: str, scheduling: Scheduling) -> Appointment:
    return await scheduling.get_appointment(appointment_id)


@router.post(
    "/appointments/{appointment_id}/reschedule", dependencies=[WRITE], tags=["appointments"]
)
async def reschedule_appointment(
    appointment_id: str,
    body: Reschedule,
    scheduling: Scheduling,
    idempotency_key: IdempotencyKey = None,
) -> Appointment:
    """Move an appointment; a move that fails leaves it where it was. A test drive's demo
    car moves with it, or neither moves (409 naming what is taken)."""
    return await scheduling.reschedule_appointment(
        appointment_id, body.start, idempotency_key=idempotency_key
    )


@router.post("/appointments/{appointment_id}/cancel", dependencies=[WRITE], tags=["appointments"])
async def cancel_appointment(
    appointment_id: str,
    body: AppointmentCancellation,
    scheduling: Scheduling,
    metrics: AppMetrics,
    idempotency_key: IdempotencyKey = None,
) -> Appointment:
    """Cancel (the row stays, marked cancelled) and offer the time again. A test drive's
    demo car is cancelled first; 503 if it cannot be reached (the cancel then finishes on
    its own)."""
    appointment = await scheduling.cancel_appointment(
        appointment_id, body.reason, idempotency_key=idempotency_key
    )
    count(metrics, "cancelled")
    return appointment


# Lookups by phone are POST bodies, so a phone number is never in a URL or an access log.
@router.post("/customers/lookup", dependencies=[PERSONAL], tags=["customers"])
async def lookup_customer(body: PhoneLookup, scheduling: Scheduling) -> Customer:
    """The customer with that phone number, their vehicles and learned preferences."""
    return await scheduling.get_customer(body.phone)


@router.post("/appointments/lookup", dependencies=[PERSONAL], tags=["appointments"])
async def lookup_customer_appointments(
    body: PhoneLookup, scheduling: Scheduling
) -> list[Appointment]:
    """A customer's upcoming confirmed appointments, soonest first."""
    return await scheduling.list_customer_appointments(body.phone)


# The GET forms put the phone number in the URL; kept for old callers only.
@router.get("/customers", dependencies=[PERSONAL], tags=["customers"], deprecated=True)
async def get_customer(phone: PhoneQuery, scheduling: Scheduling) -> Customer:
    """Deprecated: use POST /scheduling/customers/lookup (the phone stays out of URLs)."""
    return await scheduling.get_customer(phone)


@router.get("/appointments", dependencies=[PERSONAL], tags=["appointments"], deprecated=True)
async def list_customer_appointments(
    phone: PhoneQuery, scheduling: Scheduling
) -> list[Appointment]:
    """Deprecated: use POST /scheduling/appointments/lookup (the phone stays out of URLs)."""
    return await scheduling.list_customer_appointments(phone)


@router.post("/callbacks", status_code=201, dependencies=[WRITE], tags=["callbacks"])
async def schedule_callback(
    body: CallbackRequest, scheduling: Scheduling, idempotency_key: IdempotencyKey = None
) -> Callback:
    """Promise a call back at the first business-hours time at or after the preferred one."""
    return await scheduling.schedule_callback(
        body.phone,
        body.reason,
        preferred_time=body.preferred_time,
        call_id=body.call_id,
        idempotency_key=idempotency_key,
    )


@router.get("/callbacks", dependencies=[PERSONAL], tags=["callbacks"])
async def list_callbacks(
    scheduling: Scheduling, date: Annotated[dt.date | None, Query()] = None
) -> list[Callback]:
    """Callbacks of one day, or with no date every pending one from today on."""
    return await scheduling.list_callbacks(date)


def build_scheduling_api(
    settings: Settings,
    *,
    service: SchedulingService | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    return service_api("scheduling", router, settings, metrics=metrics, service=service)


@service_deployment("Scheduling")
@serve.ingress()
class SchedulingDeployment(ServiceReplica):
    service: SchedulingService
    api = staticmethod(build_scheduling_api)

    def open_service(self, inventory: RemoteDeployment | None) -> None:
        backends = self.context.backends
        self.service = scheduling_service(
            self.context.settings,
            backends.pool,
            backends.redis,
            vehicles=RemoteVehicleHolds(inventory) if inventory is not None else None,
        )
        self.watch_reconcile()
        if inventory is not None:
            self.in_background(self._settle_test_drives())

    async def _settle_test_drives(self) -> None:
        while True:
            await asyncio.sleep(TEST_DRIVE_SWEEP_SECONDS)
            try:
                settled = await self.service.settle_test_drives()
            except Exception:
                log.warning("could not sweep unsettled test drives", exc_info=True)
                continue
            if settled:
                log.info("settled unfinished test drives", extra={"settled": settled})


def scheduling_app(
    settings: Settings, inventory: RemoteDeployment | None = None
) -> serve.Application:
    return SchedulingDeployment.bind(settings, inventory)  # type: ignore[attr-defined]
