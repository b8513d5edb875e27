"""The appointment desk's own values, which the test-drive saga holds and hands back to it: a
service type as the desk books it, a booking request after checking, the hooks a saga step runs
in a desk transaction, and what an unreachable PostgreSQL or Redis becomes.

The desk (``service.py``) holds the saga (``drives/``) and hands itself to each of its calls;
the saga reaches the desk only through its ``AppointmentDesk`` protocol and these values, so it
never imports ``service.py`` and keeps no reference to the desk.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.scheduling.models import Appointment, ServiceType, VehicleIn
from services.storage import store_errors

# Called inside the appointment's transaction (a test drive records its saga step there).
AlsoWrite = Callable[[asyncpg.Connection, Appointment], Awaitable[None]]
# Called inside a move's or a cancel's transaction.
InTransaction = Callable[[asyncpg.Connection], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ServiceTypeRow:
    service_type_id: str
    name: str
    description: str
    duration_minutes: int
    price_min_usd: float
    price_max_usd: float
    resource_pool: str
    resource_ids: tuple[str, ...]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ServiceTypeRow:
        return cls(
            service_type_id=row["service_type_id"],
            name=row["name"],
            description=row["description"],
            duration_minutes=row["duration_minutes"],
            price_min_usd=float(row["price_min_usd"]),
            price_max_usd=float(row["price_max_usd"]),
            resource_pool=row["resource_pool"],
            resource_ids=tuple(row["resource_ids"]),
        )

    @property
    def spoken(self) -> str:
        """The name as it reads in a sentence: "an oil change"."""
        name = self.name.lower()
        return ("an " if name[0] in "aeiou" else "a ") + name

    def public(self) -> ServiceType:
        return ServiceType(
            service_type=self.service_type_id,
            name=self.name,
            description=self.description,
            duration_minutes=self.duration_minutes,
            price_min_usd=self.price_min_usd,
            price_max_usd=self.price_max_usd,
            resource_pool=self.resource_pool,
            resources=len(self.resource_ids),
        )


@dataclass(frozen=True, slots=True)
class Wanted:
    """A booking request after every field was checked and normalised."""

    service_type: str
    phone: str
    start: datetime
    notes: str | None
    name: str | None
    email: str | None
    call_id: str | None
    vehicle: VehicleIn | None

    def payload(self) -> dict[str, Any]:
        """What identifies the request for its idempotency key."""
        return {
            "service_type": self.service_type,
            "phone": self.phone,
            "start": self.start.astimezone(UTC).isoformat(),
            "notes": self.notes,
            "name": self.name,
            "email": self.email,
            "call_id": self.call_id,
            "vehicle": self.vehicle.model_dump() if self.vehicle else None,
        }


@contextmanager
def storage_errors() -> Iterator[None]:
    """A store that cannot serve the request becomes DependencyUnavailable
    (``services.storage``); nothing else changes."""
    with store_errors("Scheduling is unavailable for a moment; try again."):
        yield
