"""The equipment-rental desk through its eight stages, in text mode (SIMULATED LLM, real mesh
code and stores): every refusal along the way is heard as the mesh's sentence, and the booking
it ends with is a row in PostgreSQL at the negotiated rate."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from agent.simulation import RENTAL_RULES
from agent.state import RentalStage

pytestmark = pytest.mark.integration

REFERENCE = re.compile(r"reference ([\w-]+)")


def _dates(mesh, start_in: int, days: int) -> tuple[str, str]:
    today = datetime.now(mesh.settings.tz).date()
    start = today + timedelta(days=start_in)
    return start.isoformat(), (start + timedelta(days=days)).isoformat()


async def test_a_contractor_rents_an_excavator_through_all_eight_stages(mesh, sim):
    said = sim.said
    start, end = _dates(mesh, 20, 2)
    async with sim.call("rental", RENTAL_RULES) as (session, state):
        stage = lambda: state.rental.stage  # noqa: E731

        # Out of order: the desk asks for the licence first.
        result = await session.run(user_input=f"I want EXC-201 from {start} to {end}")
        result.expect.next_event().is_function_call(name="select_equipment")
        result.expect.next_event().is_function_call_output(
            output="Before that, I need to verify the business licence number.", is_error=True
        )

        # 1. licence: an expired one is refused in the mesh's words, a valid one passes.
        result = await session.run(user_input="My licence number is BL-100871")
        result.expect.next_event().is_function_call(
            name="verify_business_licence", arguments={"licence_number": "BL-100871"}
        )
        assert "expired" in said(result).lower() and stage() is RentalStage.LICENCE
        result = await session.run(user_input="Sorry, the licence is BL-100234 in TX")
        result.expect.next_event().is_function_call(name="verify_business_licence")
        assert stage() is RentalStage.SEARCH

        # 2. search
        result = await session.run(user_input="I need a mini excavator")
        result.expect.next_event().is_function_call(
            name="search_equipment", arguments={"query": "mini excavator"}
        )
        assert "EXC-201" in said(result) and stage() is RentalStage.SELECTION

        # 3. selection places a hold.
        result = await session.run(user_input=f"I'll take EXC-201 from {start} to {end}")
        result.expect.next_event().is_function_call(
            name="select_equipment",
            arguments={"unit_id": "EXC-201", "start_date": start, "end_date": end},
        )
        result.expect.next_event().is_function_call_output(is_error=False)
        assert "Held the Kubota KX040 mini excavator" in said(result)
        assert "$650 in total" in said(result) and stage() is RentalStage.SITE

        # 4. site safety: a light-rated site cannot take a medium unit.
        result = await session.run(user_input="The site is SITE-1003")
        result.expect.next_event().is_function_call(name="verify_site")
        assert stage() is RentalStage.SITE
        await session.run(user_input="OK, the site is SITE-1001")
        assert stage() is RentalStage.PRICE

        # 5. price: the agent only proposes; the mesh enforces the floor.
        result = await session.run(user_input="How about $200 a day")
        result.expect.next_event().is_function_call(
            name="propose_rate", arguments={"daily_rate": 200.0}
        )
        result.expect.next_event().is_function_call_output(is_error=True)
        assert said(result).startswith("The lowest rate we can accept for the Kubota")
        assert "$325 per day" in said(result) and stage() is RentalStage.PRICE
        result = await session.run(user_input="Then I offer $350")
        result.expect.next_event().is_function_call(name="propose_rate")
        assert "Agreed: $350 per day, $700 in total" in said(result)
        assert stage() is RentalStage.OPERATOR

        # 6. operator: a forklift-only operator does not hold the excavator certification.
        result = await session.run(user_input="The operator is OP-7004")
        result.expect.next_event().is_function_call(name="verify_operator")
        assert stage() is RentalStage.OPERATOR
        await session.run(user_input="Then the operator is OP-7001")
        assert stage() is RentalStage.INSURANCE

        # 7. insurance: $500k does not cover the $1M the unit requires.
        result = await session.run(user_input="Policy number is POL-55002")
        result.expect.next_event().is_function_call(name="verify_insurance")
        assert stage() is RentalStage.INSURANCE
        await session.run(user_input="My other policy number is POL-55001")
        assert stage() is RentalStage.BOOKING

        # 8. booking: hold -> confirm, at the agreed rate.
        result = await session.run(user_input="Great, please confirm")
        result.expect.next_event().is_function_call(name="confirm_booking")
        result.expect.next_event().is_function_call_output(is_error=False)
        reference = REFERENCE.search(said(result)).group(1)
        assert "$700 in total" in said(result) and stage() is RentalStage.DONE

        # Confirming again (the model repeats itself) books nothing new.
        result = await session.run(user_input="confirm")
        assert REFERENCE.search(said(result)).group(1) == reference

        result = await session.run(user_input="that's all")
        result.expect.next_event().is_function_call(name="wrap_up")

    row = await mesh.stores.pool.fetchrow(
        """SELECT b.status, r.agreed_daily_rate, r.total, r.negotiated FROM bookings b
             JOIN rentals r USING (booking_id) WHERE b.reference = $1""",
        reference,
    )
    assert row is not None and row["status"] == "confirmed"
    assert (row["agreed_daily_rate"], row["total"], row["negotiated"]) == (
        Decimal("350.00"),
        Decimal("700.00"),
        True,
    )
    assert await mesh.stores.pool.fetchval("SELECT count(*) FROM rentals") == 1
    assert state.summary is not None and state.summary.booking_references == [reference]
    checks = (await mesh.http.get(f"/verification/calls/{state.call_id}")).json()
    assert [c["status"] for c in checks].count("verified") == 4


async def test_a_hold_lost_before_confirm_is_heard_and_the_desk_offers_to_hold_again(mesh, sim):
    said = sim.said
    start, end = _dates(mesh, 30, 1)
    async with sim.call("rental", RENTAL_RULES) as (session, state):
        for words in (
            "licence is BL-100234",
            f"I'll take GEN-702 from {start} to {end}",
            "the site is SITE-1003",
            "the price is fine",
        ):
            await session.run(user_input=words)
        assert state.rental.stage is RentalStage.BOOKING

        await mesh.stores.flush_redis()  # every hold is gone, as after a Redis restart
        result = await session.run(user_input="confirm")
        result.expect.next_event().is_function_call(name="confirm_booking")
        result.expect.next_event().is_function_call_output(is_error=True)
        assert "I can hold the same unit again" in said(result)
        assert state.rental.stage is RentalStage.SELECTION and state.rental.hold is None

        # Holding again goes straight back to the checks; nothing was booked twice.
        await session.run(user_input=f"I'll take GEN-702 from {start} to {end}")
        assert state.rental.stage is RentalStage.SITE
    assert await mesh.stores.pool.fetchval("SELECT count(*) FROM rentals") == 0
