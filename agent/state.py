"""Per-call state: one dataclass, read by every tool through ``RunContext[CallState]``.

The flows keep their own progress in a sub-record (``appointment``, ``rental``) so the root
stays one object the session owns from the first word to the summary.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal

from agent.mesh import MeshClient
from agent.mesh_models import Appointment, CallSummary, Hold, RentalBooking, Unit, Usage


@dataclass
class AppointmentProgress:
    phone: str | None = None
    name: str | None = None
    # Appointments this call knows about, by reference and by id (booked or listed).
    known: dict[str, Appointment] = field(default_factory=dict)
    booked: list[str] = field(default_factory=list)  # references booked on this call

    def remember(self, appointment: Appointment) -> None:
        self.known[appointment.reference.lower()] = appointment
        self.known[appointment.appointment_id.lower()] = appointment

    def find(self, reference_or_id: str) -> Appointment | None:
        return self.known.get(reference_or_id.strip().lower())


class RentalStage(enum.IntEnum):
    """The equipment-rental desk, in order. Each stage's words live in ``flows/rental.py``."""

    LICENCE = 1
    SEARCH = 2
    SELECTION = 3
    SITE = 4
    PRICE = 5
    OPERATOR = 6
    INSURANCE = 7
    BOOKING = 8
    DONE = 9


@dataclass
class RentalProgress:
    stage: RentalStage = RentalStage.LICENCE
    candidates: dict[str, Unit] = field(default_factory=dict)  # from the last search, by id
    unit: Unit | None = None
    hold: Hold | None = None
    agreed_rate: Decimal | None = None
    booking: RentalBooking | None = None


@dataclass
class CallState:
    call_id: str
    flow: str
    mesh: MeshClient
    caller_phone: str | None = None
    channel: str = "phone"
    # Set by a tool when the call's outcome is known (booked, callback_scheduled...).
    outcome: str | None = None
    started: bool = False
    summary: CallSummary | None = None
    # Usage already reported to the calls service (usage events are added up there).
    usage_reported: Usage = field(default_factory=Usage)
    appointment: AppointmentProgress = field(default_factory=AppointmentProgress)
    rental: RentalProgress = field(default_factory=RentalProgress)

    @property
    def references(self) -> list[str]:
        refs = list(self.appointment.booked)
        if self.rental.booking is not None:
            refs.append(self.rental.booking.reference)
        return refs
