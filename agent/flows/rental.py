"""The equipment-rental desk: eight stages from a licence check to an atomic booking.

1. licence check, 2. equipment search, 3. selection (places a hold, so the unit is the caller's
while the rest is checked), 4. site safety for the unit's weight class, 5. price negotiation
(the agent proposes; the mesh accepts only within the unit's bounds and counts offers),
6. operator certification and 7. insurance (only when the unit requires them), 8. booking
(confirm the hold: the mesh re-checks every requirement and writes the booking atomically).

The stages, the words for each and the tools are all here. The agent's instructions change
with the stage, and a tool called out of order refuses with the sentence that asks for what
is missing, so the model is steered by the state, not by memory.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from livekit.agents import Agent, RunContext, ToolError, function_tool

from agent.flows._speech import day, listing, money
from agent.lifecycle import end_call
from agent.mesh import MeshExpired
from agent.mesh_models import Hold, Unit
from agent.state import CallState, RentalProgress, RentalStage
from agent.usage import usage_from_session

FLOW = "rental"
Stage = RentalStage

INSTRUCTIONS = """\
You are the booking desk of an equipment-rental yard, on the phone with a contractor. Be \
brief and practical: one or two short sentences per turn, no markdown. Every check is done \
by a tool; never say something is verified, available or booked unless a tool said so. When \
a tool answers with a problem, say its sentence as it is and ask for what it needs.
"""

# What the agent is doing at each stage (added to INSTRUCTIONS), and what a tool says when
# it is called before its stage: the sentence asking for what is needed now.
STAGE_INSTRUCTIONS: dict[Stage, str] = {
    Stage.LICENCE: "Now: ask for the business licence number (and state) and call "
    "verify_business_licence.",
    Stage.SEARCH: "Now: ask what equipment they need and for which dates, then call "
    "search_equipment.",
    Stage.SELECTION: "Now: help them choose one unit from the search and call select_equipment "
    "with its unit id and the rental dates.",
    Stage.SITE: "Now: ask for the job site id or street address and call verify_site.",
    Stage.PRICE: "Now: quote the daily rate. If they ask for a lower rate, call propose_rate "
    "with their figure; if they accept the rate, call accept_price.",
    Stage.OPERATOR: "Now: ask who will operate the unit (operator licence id or full name) and "
    "call verify_operator.",
    Stage.INSURANCE: "Now: ask for the insurance policy number and call verify_insurance.",
    Stage.BOOKING: "Now: read back the unit, dates and total, and when they agree call "
    "confirm_booking.",
    Stage.DONE: "The rental is booked. Answer questions, then call wrap_up.",
}
ASK_FOR: dict[Stage, str] = {
    Stage.LICENCE: "Before that, I need to verify the business licence number.",
    Stage.SEARCH: "Before that, tell me what equipment you need so I can search for it.",
    Stage.SELECTION: "Before that, choose the unit and the dates so I can hold it.",
    Stage.SITE: "Before that, I need to check the job site can take this unit.",
    Stage.PRICE: "Before that, let's settle the daily rate.",
    Stage.OPERATOR: "Before that, I need to verify the operator's certification.",
    Stage.INSURANCE: "Before that, I need to verify the insurance policy.",
    Stage.BOOKING: "Everything is checked; shall I confirm the booking?",
    Stage.DONE: "This rental is already booked.",
}


def _next_after_price(hold: Hold) -> Stage:
    if hold.requires.certification:
        return Stage.OPERATOR
    if hold.requires.min_insurance is not None:
        return Stage.INSURANCE
    return Stage.BOOKING


def _describe_unit(unit: Unit) -> str:
    needs = []
    if unit.required_certification:
        needs.append(f"a {unit.required_certification.replace('_', ' ')} certified operator")
    if unit.min_insurance is not None:
        needs.append(f"insurance of at least {money(unit.min_insurance)}")
    required = f"; requires {listing(needs)}" if needs else ""
    rate = f"{money(unit.daily_rate)} per day"
    return f"{unit.unit_id}: {unit.name}, {rate} at {unit.location}{required}"


class RentalDesk(Agent):
    def __init__(self, *, stage: Stage = Stage.LICENCE) -> None:
        super().__init__(instructions=self.instructions_for(stage))

    @staticmethod
    def instructions_for(stage: Stage) -> str:
        return INSTRUCTIONS + "\n" + STAGE_INSTRUCTIONS[stage]

    async def _enter(self, progress: RentalProgress, stage: Stage) -> None:
        if progress.stage != stage:
            progress.stage = stage
            await self.update_instructions(self.instructions_for(stage))

    @staticmethod
    def _require(progress: RentalProgress, *stages: Stage) -> None:
        if progress.stage not in stages:
            raise ToolError(ASK_FOR[progress.stage])

    # -- 1. licence -------------------------------------------------------------------------------

    @function_tool
    async def verify_business_licence(
        self, context: RunContext[CallState], licence_number: str, state: str | None = None
    ) -> str:
        """Verify the caller's business licence. Nothing can be rented before this.

        Args:
            licence_number: The licence number as the caller said it, e.g. "BL-100234".
            state: The two-letter state that issued it, if the caller said.
        """
        call = context.userdata
        progress = call.rental
        async with call.mesh.tool("verify_business_licence"):
            self._require(progress, Stage.LICENCE)
            result = await call.mesh.verify_business_licence(licence_number, state)
        if result.verified:
            await self._enter(progress, Stage.SEARCH)
        return result.message

    # -- 2. search and 3. selection ---------------------------------------------------------------

    @function_tool
    async def search_equipment(
        self,
        context: RunContext[CallState],
        query: str,
        category: str | None = None,
        max_daily_rate: float | None = None,
    ) -> str:
        """Search the rental yard for equipment.

        Args:
            query: What the caller needs, in their words, e.g. "mini excavator".
            category: A category if they named one, e.g. "excavator", "boom_lift", "generator".
            max_daily_rate: The most they want to pay per day, if they said.
        """
        call = context.userdata
        progress = call.rental
        async with call.mesh.tool("search_equipment"):
            self._require(progress, Stage.SEARCH, Stage.SELECTION)
            ceiling = Decimal(str(max_daily_rate)) if max_daily_rate is not None else None
            units = await call.mesh.search_units(
                query=query, category=category, max_daily_rate=ceiling
            )
        usable = [u for u in units if u.status == "AVAILABLE"]
        if not usable:
            return "Nothing available matches that; ask what else would do the job."
        progress.candidates = {u.unit_id: u for u in usable}
        await self._enter(progress, Stage.SELECTION)
        return "Available: " + "; ".join(_describe_unit(u) for u in usable) + "."

    @function_tool
    async def select_equipment(
        self, context: RunContext[CallState], unit_id: str, start_date: str, end_date: str
    ) -> str:
        """Hold the unit the caller chose for their dates, so nobody else can take it while we
        finish the checks.

        Args:
            unit_id: The unit id from search_equipment, e.g. "EXC-201".
            start_date: The first rental day, YYYY-MM-DD.
            end_date: The return day, YYYY-MM-DD (a one-day rental returns the next day).
        """
        call = context.userdata
        progress = call.rental
        async with call.mesh.tool("select_equipment"):
            self._require(progress, Stage.SEARCH, Stage.SELECTION, Stage.SITE, Stage.PRICE)
            unit = progress.candidates.get(unit_id) or await call.mesh.get_unit(unit_id)
            previous = progress.hold
            hold = await call.mesh.create_hold(unit_id=unit_id, start=start_date, end=end_date)
            if previous is not None and previous.hold_id != hold.hold_id:
                await call.mesh.release_hold(previous.hold_id)
        progress.unit, progress.hold, progress.agreed_rate = unit, hold, None
        nxt = Stage.SITE if unit.weight_class else Stage.PRICE
        await self._enter(progress, nxt)
        length = f"{hold.days} day{'s' if hold.days != 1 else ''}" if hold.days else ""
        return (
            f"Held the {hold.unit_name} from {day(hold.start)} to {day(hold.end)} ({length}) at "
            f"{money(hold.daily_rate)} per day, {money(hold.quoted_total)} in total. "
            f"The hold lasts until {hold.expires_at:%-I:%M %p}. {STAGE_INSTRUCTIONS[nxt]}"
        )

    # -- 4. site safety ---------------------------------------------------------------------------

    @function_tool
    async def verify_site(self, context: RunContext[CallState], site: str) -> str:
        """Check the job site can take the held unit's weight class.

        Args:
            site: The job site id (e.g. "SITE-1001") or its street address.
        """
        call = context.userdata
        progress = call.rental
        async with call.mesh.tool("verify_site"):
            self._require(progress, Stage.SITE)
            assert progress.unit is not None and progress.unit.weight_class is not None
            result = await call.mesh.verify_site_safety(site, progress.unit.weight_class)
        if result.verified:
            await self._enter(progress, Stage.PRICE)
        return result.message

    # -- 5. price ---------------------------------------------------------------------------------

    @function_tool
    async def propose_rate(self, context: RunContext[CallState], daily_rate: float) -> str:
        """Offer the caller's daily rate to the yard. Only the yard decides; a refusal names
        the lowest rate it accepts and how many offers are left.

        Args:
            daily_rate: The daily rate in dollars the caller asked for, e.g. 300.
        """
        call = context.userdata
        progress = call.rental
        async with call.mesh.tool("propose_rate"):
            self._require(progress, Stage.PRICE)
            assert progress.hold is not None
            try:
                rate = Decimal(str(daily_rate)).quantize(Decimal("0.01"))
            except InvalidOperation:
                raise ToolError("What daily rate would you like to offer?") from None
            agreement = await call.mesh.propose_rate(progress.hold.hold_id, rate)
        progress.agreed_rate = agreement.agreed_rate
        nxt = _next_after_price(progress.hold)
        await self._enter(progress, nxt)
        return (
            f"Agreed: {money(agreement.agreed_rate)} per day, {money(agreement.quoted_total)} "
            f"in total. {STAGE_INSTRUCTIONS[nxt]}"
        )

    @function_tool
    async def accept_price(self, context: RunContext[CallState]) -> str:
        """The caller accepts the quoted daily rate (or the rate already agreed)."""
        call = context.userdata
        progress = call.rental
        async with call.mesh.tool("accept_price"):
            self._require(progress, Stage.PRICE)
            assert progress.hold is not None
        nxt = _next_after_price(progress.hold)
        await self._enter(progress, nxt)
        rate = progress.agreed_rate or progress.hold.daily_rate
        return f"The rate is {money(rate)} per day. {STAGE_INSTRUCTIONS[nxt]}"

    # -- 6. operator and 7. insurance -------------------------------------------------------------

    @function_tool
    async def verify_operator(self, context: RunContext[CallState], operator: str) -> str:
        """Verify the operator holds the certification the held unit requires.

        Args:
            operator: The operator's licence id (e.g. "OP-7001") or full name.
        """
        call = context.userdata
        progress = call.rental
        async with call.mesh.tool("verify_operator"):
            self._require(progress, Stage.OPERATOR)
            assert progress.hold is not None and progress.hold.requires.certification
            result = await call.mesh.verify_operator_certification(
                operator, progress.hold.requires.certification
            )
        if result.verified:
            nxt = Stage.INSURANCE if progress.hold.requires.min_insurance else Stage.BOOKING
            await self._enter(progress, nxt)
        return result.message

    @function_tool
    async def verify_insurance(self, context: RunContext[CallState], policy_number: str) -> str:
        """Verify the insurance policy covers what the held unit requires.

        Args:
            policy_number: The policy number as the caller said it, e.g. "POL-55001".
        """
        call = context.userdata
        progress = call.rental
        async with call.mesh.tool("verify_insurance"):
            self._require(progress, Stage.INSURANCE)
            assert progress.hold is not None and progress.hold.requires.min_insurance is not None
            result = await call.mesh.verify_insurance(
                policy_number, progress.hold.requires.min_insurance
            )
        if result.verified:
            await self._enter(progress, Stage.BOOKING)
        return result.message

    # -- 8. booking -------------------------------------------------------------------------------

    @function_tool
    async def confirm_booking(self, context: RunContext[CallState]) -> str:
        """Confirm the held unit as a booking. Only after the caller agreed to the total."""
        call = context.userdata
        progress = call.rental
        async with call.mesh.tool("confirm_booking"):
            self._require(progress, Stage.BOOKING, Stage.DONE)
            if progress.booking is not None:
                booking = progress.booking
            else:
                assert progress.hold is not None
                try:
                    booking = await call.mesh.confirm_hold(progress.hold.hold_id)
                except MeshExpired as e:
                    progress.hold = None
                    await self._enter(progress, Stage.SELECTION)
                    raise ToolError(
                        f"{e.message} I can hold the same unit again for those dates."
                    ) from e
        if progress.booking is None:
            progress.booking = booking
            call.mesh.mark("booked", booking.reference)
        await self._enter(progress, Stage.DONE)
        return (
            f"Booked: the {booking.unit_name} from {day(booking.start)} to {day(booking.end)}, "
            f"{money(booking.daily_rate)} per day, {money(booking.total)} in total, "
            f"reference {booking.reference}."
        )

    @function_tool
    async def wrap_up(self, context: RunContext[CallState]) -> str:
        """End of the call: what was booked and its total. Call it once, last."""
        call = context.userdata
        booking = call.rental.booking
        if booking is not None:
            spoken = (
                f"Booked today: the {booking.unit_name}, reference {booking.reference}, "
                f"{money(booking.total)} in total."
            )
        else:
            if call.rental.hold is not None:
                async with call.mesh.tool("release_hold"):
                    await call.mesh.release_hold(call.rental.hold.hold_id)
                call.rental.hold = None
            spoken = "Nothing was booked on this call."
        await end_call(call, usage=usage_from_session(context.session.usage), summary=spoken)
        return spoken


__all__ = ["ASK_FOR", "FLOW", "INSTRUCTIONS", "STAGE_INSTRUCTIONS", "RentalDesk", "Stage"]
