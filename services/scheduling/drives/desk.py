"""What the saga needs of the appointment desk (``SchedulingService``), handed to it on each
call."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from services.scheduling._desk import AlsoWrite, InTransaction, ServiceTypeRow, Wanted
from services.scheduling.models import Appointment, BookRequest


class AppointmentDesk(Protocol):
    """The desk's checks, its writes one idempotency key at a time, and booking, moving,
    cancelling and reading one appointment, with a step of the saga in the desk's own
    transaction."""

    def check_booking(self, request: BookRequest) -> Wanted:
        """The request with every field checked and normalised (InvalidInput if one is not)."""

    def writing(self, scope: str, key: str | None) -> AbstractAsyncContextManager[None]:
        """Around a write: storage errors mapped, twins of one idempotency key in turn."""

    async def check_slot(
        self, service_type: str, start: datetime
    ) -> tuple[ServiceTypeRow, datetime]:
        """The service type and the end of a booking of it at ``start``, refused if it is not
        offered or that time is outside business hours."""

    async def book_slot(
        self,
        st: ServiceTypeRow,
        wanted: Wanted,
        end: datetime,
        key: str | None,
        *,
        also: AlsoWrite | None = None,
    ) -> Appointment:
        """Book on the first free resource of the pool; ``also`` runs in its transaction."""

    async def move_desk(
        self,
        current: Appointment,
        st: ServiceTypeRow,
        start: datetime,
        end: datetime,
        key: str | None,
        payload: dict[str, Any],
        *,
        also: InTransaction | None = None,
    ) -> Appointment:
        """Move the appointment's booking; ``also`` runs in the move's transaction."""

    async def cancel_desk(
        self,
        current: Appointment,
        why: str,
        key: str | None,
        payload: dict[str, Any] | None,
        *,
        first: InTransaction | None = None,
        also: InTransaction | None = None,
    ) -> Appointment:
        """Cancel the appointment's booking; ``first`` and ``also`` run at the start and at the
        end of the cancel's transaction."""

    async def cancel_appointment(
        self, appointment_id: str, reason: str, idempotency_key: str | None = None
    ) -> Appointment:
        """The desk's own cancel, as any caller asks for it."""

    async def read_appointment(self, appointment_id: uuid.UUID) -> Appointment:
        """The appointment (NotFound if there is none)."""
