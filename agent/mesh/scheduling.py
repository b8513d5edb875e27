"""The scheduling service's endpoints: service types, slots, customers and appointments."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import TypeAdapter

from agent.mesh.errors import MeshNotFound
from agent.mesh.transport import MeshTransport, iso
from agent.mesh_models import Appointment, Callback, Customer, ServiceType, SlotList


class SchedulingEndpoints(MeshTransport):
    async def list_service_types(self) -> list[ServiceType]:
        return await self._get_list("/scheduling/service-types", ServiceType)

    async def list_slots(self, *, day: date | str, service_type: str) -> SlotList:
        return await self._get(
            "/scheduling/slots", SlotList, date=iso(day), service_type=service_type
        )

    async def find_customer(self, phone: str) -> Customer | None:
        """The customer with that phone number, or None for a first-time caller."""
        try:
            response = await self._lookup("/scheduling/customers/lookup", {"phone": phone})
        except MeshNotFound:
            return None
        return Customer.model_validate_json(response.content)

    async def list_appointments(self, phone: str) -> list[Appointment]:
        response = await self._lookup("/scheduling/appointments/lookup", {"phone": phone})
        return TypeAdapter(list[Appointment]).validate_json(response.content)

    async def book_appointment(
        self,
        *,
        phone: str,
        service_type: str,
        start: datetime | str,
        name: str | None = None,
        notes: str | None = None,
    ) -> Appointment:
        body = {
            "phone": phone,
            "service_type": service_type,
            "start": iso(start),
            "name": name,
            "notes": notes,
            "call_id": self.call_id,
        }
        return await self._write(
            "book_appointment",
            "/scheduling/appointments",
            {k: v for k, v in body.items() if v is not None},
            Appointment,
        )

    async def reschedule_appointment(
        self, appointment_id: str, start: datetime | str
    ) -> Appointment:
        return await self._write(
            "reschedule_appointment",
            f"/scheduling/appointments/{appointment_id}/reschedule",
            {"start": iso(start)},
            Appointment,
        )

    async def cancel_appointment(self, appointment_id: str, reason: str) -> Appointment:
        return await self._write(
            "cancel_appointment",
            f"/scheduling/appointments/{appointment_id}/cancel",
            {"reason": reason},
            Appointment,
        )

    async def schedule_callback(
        self, *, phone: str, reason: str, preferred_time: datetime | str | None = None
    ) -> Callback:
        body: dict[str, Any] = {"phone": phone, "reason": reason, "call_id": self.call_id}
        if preferred_time is not None:
            body["preferred_time"] = iso(preferred_time)
        return await self._write("schedule_callback", "/scheduling/callbacks", body, Callback)
