"""The appointment desk, end to end in text mode (SIMULATED LLM, real mesh code and stores):
identify, find slots, book, a repeated booking that replays, move, cancel, book again, wrap up
with the priced call summary."""

from __future__ import annotations

import re

import pytest

from agent.simulation import APPOINTMENT_RULES

pytestmark = pytest.mark.integration

PHONE = "(512) 555-0147"
REFERENCE = re.compile(r"reference ([\w-]+)")


async def test_a_caller_books_moves_cancels_and_hears_the_summary(mesh, sim):
    said = sim.said
    day = sim.business_day()
    async with sim.call("appointment", APPOINTMENT_RULES) as (session, state):
        result = await session.run(user_input=f"Hi, my number is {PHONE}")
        result.expect.next_event().is_function_call(name="identify_caller")
        result.expect.next_event().is_function_call_output(is_error=False)
        result.expect.next_event().is_message(role="assistant")
        assert "first-time caller" in said(result)

        result = await session.run(user_input=f"Is anything free for oil_change on {day}?")
        result.expect.next_event().is_function_call(
            name="find_slots", arguments={"service_type": "oil_change", "date": day.isoformat()}
        )
        slots = sim.ISO_IN_PARENS.findall(said(result))
        assert len(slots) >= 3, said(result)
        first, second = slots[0], slots[2]

        result = await session.run(user_input=f"Please book an oil_change at {first} for Ada King")
        result.expect.next_event().is_function_call(name="book_appointment")
        result.expect.next_event().is_function_call_output(is_error=False)
        reply = said(result)
        assert "Booked: Oil change" in reply and "between $49 and $89" in reply
        reference = REFERENCE.search(reply).group(1)

        # The model calls the same tool again with the same arguments: the mesh replays the
        # first answer instead of booking a second bay.
        result = await session.run(user_input=f"Please book an oil_change at {first} for Ada King")
        result.expect.next_event().is_function_call(name="book_appointment")
        assert REFERENCE.search(said(result)).group(1) == reference
        assert await _confirmed_appointments(mesh, PHONE) == 1

        result = await session.run(user_input=f"Can you move {reference} to {second}")
        result.expect.next_event().is_function_call(
            name="reschedule_appointment", arguments={"reference": reference}
        )
        result.expect.next_event().is_function_call_output(is_error=False)
        assert "Moved" in said(result)

        result = await session.run(user_input=f"Please cancel {reference} because plans changed")
        result.expect.next_event().is_function_call(name="cancel_appointment")
        result.expect.next_event().is_function_call_output(is_error=False)
        assert "Cancelled the Oil change" in said(result)
        assert await _confirmed_appointments(mesh, PHONE) == 0

        # The same words as the first booking, after a cancel: a new booking, not a replay.
        result = await session.run(user_input=f"Please book an oil_change at {first} for Ada King")
        result.expect.next_event().is_function_call(name="book_appointment")
        result.expect.next_event().is_function_call_output(is_error=False)
        new_reference = REFERENCE.search(said(result)).group(1)
        assert new_reference != reference
        assert await _confirmed_appointments(mesh, PHONE) == 1

        result = await session.run(user_input="That's all, thanks")
        result.expect.next_event().is_function_call(name="wrap_up")
        result.expect.next_event().is_function_call_output(is_error=False)
        reply = said(result)
        assert new_reference in reply and "Expected total: between $49 and $89" in reply

    summary = state.summary
    assert summary is not None
    assert summary.outcome == "booked" and new_reference in summary.booking_references
    # The calls service has no "cancelled" marker, so the cancelled reference stays listed.
    assert summary.cost.total_usd > 0  # the simulated LLM reports token usage
    detail = (await mesh.http.get(f"/calls/{state.call_id}")).json()
    tools = {e["name"]: e["outcome"] for e in detail["events"] if e["kind"] == "tool"}
    assert tools["book_appointment"] == "ok" and tools["cancel_appointment"] == "ok"
    assert detail["usage"]["llm_prompt_tokens"] > 0


async def test_a_refusal_is_heard_as_the_mesh_sentence(mesh, sim):
    said = sim.said
    day = sim.business_day()
    async with sim.call("appointment", APPOINTMENT_RULES) as (session, _):
        # Booking before saying who you are: the flow asks for the number.
        result = await session.run(user_input=f"Please book an oil_change at {day}T10:00")
        result.expect.next_event().is_function_call(name="book_appointment")
        result.expect.next_event().is_function_call_output(
            output="I need the phone number on the account first.", is_error=True
        )
        await session.run(user_input=f"my number is {PHONE}")

        # A service we do not offer: the mesh's sentence, as the mesh wrote it.
        result = await session.run(user_input=f"anything free for tyre_balancing on {day}")
        result.expect.next_event().is_function_call(name="find_slots")
        output = result.expect.next_event().is_function_call_output(is_error=True)
        assert output.event().item.output.startswith("We do not offer that service; we offer")
        assert said(result) == output.event().item.output


async def _confirmed_appointments(mesh, phone: str) -> int:
    response = await mesh.http.post("/scheduling/appointments/lookup", json={"phone": phone})
    assert response.status_code == 200, response.text
    return len(response.json())
