"""The appointment desk: identify the caller by phone, find slots, book, move, cancel, wrap up.

Stages, their instructions and the tools live together here. Every tool reaches the mesh
through the call's one :class:`~agent.mesh.MeshClient`; a refusal from the mesh is a
``ToolError`` carrying the mesh's own sentence, so the model says it as written.
"""

from __future__ import annotations

from decimal import Decimal

from livekit.agents import Agent, RunContext, ToolError, function_tool

from agent.flows._speech import day, listing, price_range, when
from agent.lifecycle import end_call
from agent.mesh_models import Appointment
from agent.state import CallState
from agent.usage import usage_from_session

FLOW = "appointment"

INSTRUCTIONS = """\
You are the front desk of a service department, answering the phone. Be brief and warm: one \
or two short sentences per turn, no lists read aloud, no markdown.

How a call goes:
1. Identify the caller: ask for the phone number on their account and call identify_caller. \
A first-time caller is welcome; ask their name when you book.
2. Find a time: if the service is unclear, call list_services. Then call find_slots for the \
day they want and offer two or three of the times it returns.
3. Book with book_appointment once the caller has chosen a service and a time. Read back the \
day, the time, the reference and the price range.
4. To move or cancel, call list_my_appointments if you do not know the reference yet, then \
reschedule_appointment or cancel_appointment.
5. When the caller has what they need, call wrap_up and read them its summary.

Never promise a time that a tool has not confirmed. When a tool answers with a problem, say \
its sentence to the caller as it is and offer the alternative it names.
"""


def _describe(appt: Appointment) -> str:
    return (
        f"{appt.service_name} on {when(appt.start)}, reference {appt.reference}, "
        f"{price_range(appt.price_min_usd, appt.price_max_usd)}"
    )


class AppointmentDesk(Agent):
    def __init__(self, *, instructions: str = INSTRUCTIONS) -> None:
        super().__init__(instructions=instructions)

    @staticmethod
    def _phone(state: CallState) -> str:
        phone = state.appointment.phone or state.caller_phone
        if not phone:
            raise ToolError("I need the phone number on the account first.")
        return phone

    @function_tool
    async def identify_caller(self, context: RunContext[CallState], phone: str) -> str:
        """Look up the caller by the phone number on their account. Call this first.

        Args:
            phone: The phone number exactly as the caller said it, e.g. "555 010 2345".
        """
        state = context.userdata
        async with state.mesh.tool("identify_caller"):
            customer = await state.mesh.find_customer(phone)
            if customer is None:
                state.appointment.phone = phone
                return "This is a first-time caller. Ask for their name when you book."
            state.appointment.phone = customer.phone
            state.appointment.name = customer.name
            upcoming = await state.mesh.list_appointments(customer.phone)
        for appt in upcoming:
            state.appointment.remember(appt)
        greeting = f"Welcome back, {customer.name}." if customer.name else "Welcome back."
        if customer.preferred_time_of_day:
            greeting += f" They usually prefer the {customer.preferred_time_of_day}."
        if not upcoming:
            return greeting + " They have no upcoming appointments."
        return greeting + " Upcoming: " + listing([_describe(a) for a in upcoming]) + "."

    @function_tool
    async def list_services(self, context: RunContext[CallState]) -> str:
        """The services we offer, with how long each takes and its price range."""
        state = context.userdata
        async with state.mesh.tool("list_services"):
            services = await state.mesh.list_service_types()
        return listing(
            [
                f"{s.name} ({s.service_type}), {s.duration_minutes} minutes, "
                f"{price_range(s.price_min_usd, s.price_max_usd)}"
                for s in services
            ]
        )

    @function_tool
    async def find_slots(self, context: RunContext[CallState], service_type: str, date: str) -> str:
        """Free start times for a service on one day.

        Args:
            service_type: The service, e.g. "oil_change" or "Brake inspection".
            date: The day as YYYY-MM-DD.
        """
        state = context.userdata
        async with state.mesh.tool("find_slots"):
            slots = await state.mesh.list_slots(day=date, service_type=service_type)
        if not slots.slots:
            spoken = f"Nothing is free on {day(slots.date)}."
            if slots.next_open_date is not None:
                spoken += f" The next day with a free time is {day(slots.next_open_date)}."
            return spoken
        times = [f"{s.start:%-I:%M %p} ({s.start.isoformat()})" for s in slots.slots[:8]]
        more = f" and {len(slots.slots) - 8} more" if len(slots.slots) > 8 else ""
        return f"Free on {day(slots.date)}: " + ", ".join(times) + more + "."

    @function_tool
    async def book_appointment(
        self,
        context: RunContext[CallState],
        service_type: str,
        start: str,
        name: str | None = None,
        notes: str | None = None,
    ) -> str:
        """Book the service at a start time the caller chose from find_slots.

        Args:
            service_type: The service, e.g. "oil_change".
            start: The start time as ISO 8601, as find_slots gave it.
            name: The caller's name, needed for a first-time caller.
            notes: Anything the caller wants the technician to know.
        """
        state = context.userdata
        async with state.mesh.tool("book_appointment"):
            appt = await state.mesh.book_appointment(
                phone=self._phone(state),
                service_type=service_type,
                start=start,
                name=name or state.appointment.name,
                notes=notes,
            )
        state.appointment.remember(appt)
        if appt.reference not in state.appointment.booked:
            state.appointment.booked.append(appt.reference)
            state.mesh.mark("booked", appt.reference)
        return f"Booked: {_describe(appt)}."

    @function_tool
    async def list_my_appointments(self, context: RunContext[CallState]) -> str:
        """The caller's upcoming appointments with their references."""
        state = context.userdata
        async with state.mesh.tool("list_my_appointments"):
            upcoming = await state.mesh.list_appointments(self._phone(state))
        for appt in upcoming:
            state.appointment.remember(appt)
        if not upcoming:
            return "The caller has no upcoming appointments."
        return "Upcoming: " + listing([_describe(a) for a in upcoming]) + "."

    async def _appointment(self, state: CallState, reference: str) -> Appointment:
        appt = state.appointment.find(reference)
        if appt is None:
            for listed in await state.mesh.list_appointments(self._phone(state)):
                state.appointment.remember(listed)
            appt = state.appointment.find(reference)
        if appt is None:
            raise ToolError(
                "I could not find an upcoming appointment with that reference on this account."
            )
        return appt

    @function_tool
    async def reschedule_appointment(
        self, context: RunContext[CallState], reference: str, new_start: str
    ) -> str:
        """Move one of the caller's appointments to a new start time.

        Args:
            reference: The appointment's reference, as read to the caller.
            new_start: The new start time as ISO 8601, from find_slots.
        """
        state = context.userdata
        async with state.mesh.tool("reschedule_appointment"):
            current = await self._appointment(state, reference)
            moved = await state.mesh.reschedule_appointment(current.appointment_id, new_start)
        state.appointment.remember(moved)
        return f"Moved: {_describe(moved)}."

    @function_tool
    async def cancel_appointment(
        self, context: RunContext[CallState], reference: str, reason: str
    ) -> str:
        """Cancel one of the caller's appointments.

        Args:
            reference: The appointment's reference, as read to the caller.
            reason: Why, in the caller's words (a few words are enough).
        """
        state = context.userdata
        async with state.mesh.tool("cancel_appointment"):
            current = await self._appointment(state, reference)
            cancelled = await state.mesh.cancel_appointment(current.appointment_id, reason)
        state.appointment.remember(cancelled)
        if cancelled.reference in state.appointment.booked:
            state.appointment.booked.remove(cancelled.reference)
        return f"Cancelled the {cancelled.service_name} on {when(cancelled.start)}."

    @function_tool
    async def wrap_up(self, context: RunContext[CallState]) -> str:
        """End of the call: what was booked and what it will cost. Call it once, last."""
        state = context.userdata
        booked = [a for r in state.appointment.booked if (a := state.appointment.find(r))]
        if booked:
            low = sum((a.price_min_usd for a in booked), Decimal(0))
            high = sum((a.price_max_usd for a in booked), Decimal(0))
            spoken = (
                "Booked today: "
                + listing([_describe(a) for a in booked])
                + f". Expected total: {price_range(low, high)}."
            )
        else:
            spoken = "Nothing was booked on this call."
        # Not timed as a tool: its event would arrive after the call has ended.
        await end_call(state, usage=usage_from_session(context.session.usage), summary=spoken)
        return spoken


__all__ = ["FLOW", "INSTRUCTIONS", "AppointmentDesk"]
