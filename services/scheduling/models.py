"""Requests and answers of the scheduling service; the answers are the HTTP response bodies.

Requests take loose types (text, numbers) on purpose: the service checks each field itself and
refuses with a sentence the agent can repeat, rather than a schema error it cannot.
"""

from __future__ import annotations

import datetime as dt
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VehicleIn(_Request):
    year: int | None = None
    make: str
    model: str
    plate: str | None = None


class BookRequest(_Request):
    phone: str
    service_type: str
    start: datetime | str
    notes: str | None = None
    name: str | None = None
    email: str | None = None
    call_id: str | None = None
    vehicle: VehicleIn | None = None


class ServiceType(BaseModel):
    service_type: str
    name: str
    description: str
    duration_minutes: int
    price_min_usd: float
    price_max_usd: float
    resource_pool: str
    resources: int


class Slot(BaseModel):
    start: datetime
    end: datetime


class SlotList(BaseModel):
    date: dt.date
    service_type: str
    slots: list[Slot]
    # The next day with a free slot within the booking horizon, when this one has none.
    next_open_date: dt.date | None = None


class Vehicle(BaseModel):
    vehicle_id: str
    year: int | None
    make: str
    model: str
    plate: str | None


class Customer(BaseModel):
    customer_id: str
    phone: str
    name: str | None
    email: str | None
    preferred_time_of_day: Literal["morning", "afternoon"] | None
    preferred_weekdays: list[str]
    vehicles: list[Vehicle]


class Appointment(BaseModel):
    appointment_id: str
    booking_id: str
    reference: str
    status: Literal["confirmed", "cancelled"]
    service_type: str
    service_name: str
    start: datetime
    end: datetime
    resource_id: str
    price_min_usd: float
    price_max_usd: float
    phone: str
    customer_name: str | None
    vehicle_id: str | None
    notes: str | None
    call_id: str | None
    cancel_reason: str | None = None


class Callback(BaseModel):
    callback_id: str
    phone: str
    customer_name: str | None
    reason: str
    scheduled_for: datetime
    status: Literal["pending", "done", "cancelled"]
    call_id: str | None


class TestDriveRequest(_Request):
    """A test drive: the sales desk at ``start`` and the demo car ``vehicle_unit_id``."""

    __test__: ClassVar[bool] = False  # a domain name, not a pytest test class

    phone: str
    vehicle_unit_id: str
    start: datetime | str
    name: str | None = None
    email: str | None = None
    notes: str | None = None
    call_id: str | None = None


class TestDrive(BaseModel):
    """Both halves of a booked test drive; there is never one without the other."""

    __test__: ClassVar[bool] = False  # a domain name, not a pytest test class

    appointment: Appointment
    vehicle_booking_id: str
    vehicle_reference: str
    vehicle_unit_id: str
    vehicle_name: str
