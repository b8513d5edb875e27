"""Scheduling: the appointment desks (service bays, clinicians, a sales desk).

Business hours and closed days, a slot grid, service types with a duration and a price range,
customers known by their phone number, appointments (list slots, book, reschedule, cancel),
preferences learned from bookings, callbacks when no human is free, and dealership test
drives (the sales desk and a demo car, booked, moved and cancelled together or not at all).
"""

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
from services.scheduling.service import SchedulingService
from services.scheduling.vehicles import VehicleHolds

__all__ = [
    "Appointment",
    "BookRequest",
    "BusinessCalendar",
    "Callback",
    "Customer",
    "SchedulingService",
    "ServiceType",
    "Slot",
    "SlotList",
    "TestDrive",
    "TestDriveRequest",
    "Vehicle",
    "VehicleHolds",
    "VehicleIn",
]
