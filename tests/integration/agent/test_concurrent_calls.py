"""Many SIMULATED calls at once against the real mesh code and stores: callers of both desks
racing for the same bays and units. Exactly the feasible number book; every other caller hears
the mesh's refusal as a sentence; nothing overlaps in PostgreSQL.

Rentals: the requested ranges of one unit form blocks of pairwise-overlapping ranges (every
range of a block covers the block's middle day) and the blocks are disjoint, so however the
race goes exactly one caller per block and unit can win. Appointments: three service bays, so
exactly three callers per start time.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest

from agent.simulation import APPOINTMENT_RULES, RENTAL_RULES
from agent.state import RentalStage

pytestmark = pytest.mark.integration

CALLS = 120  # of each desk, all at once
UNITS = ("GEN-701", "CMP-801", "PRJ-901")  # require no certification or insurance
BLOCKS = 4
FIRST_DAY = 60
BAYS = 3
TAKEN = "That time is taken for an oil change."
UNIT_TAKEN = re.compile(r"The .+ is already booked for part of that time")


def rental_request(i: int) -> tuple[str, int, int]:
    """The i-th caller's unit and day offsets [start, end)."""
    unit = UNITS[i % len(UNITS)]
    j = i // len(UNITS)
    base = FIRST_DAY + 5 * (j % BLOCKS)
    return unit, base + (j // BLOCKS) % 3, base + 3 + (j // (BLOCKS * 3)) % 2


async def _rent(sim, i: int) -> tuple[str, str]:
    unit, start_in, end_in = rental_request(i)
    today = datetime.now(sim.mesh.settings.tz).date()
    start = (today + timedelta(days=start_in)).isoformat()
    end = (today + timedelta(days=end_in)).isoformat()
    async with sim.call("rental", RENTAL_RULES) as (session, state):
        await session.run(user_input="my licence is BL-100234")
        result = await session.run(user_input=f"I'll take {unit} from {start} to {end}")
        if state.rental.hold is None:
            return "refused", sim.said(result)
        await session.run(user_input="the site is SITE-1001")
        await session.run(user_input="the price is fine")
        result = await session.run(user_input="please confirm")
        assert state.rental.stage is RentalStage.DONE, sim.said(result)
        return "booked", state.rental.booking.reference


async def _book(sim, i: int, starts: list[str]) -> tuple[str, str]:
    async with sim.call("appointment", APPOINTMENT_RULES) as (session, _):
        await session.run(user_input=f"my number is (512) 555-{1000 + i:04d}")
        result = await session.run(
            user_input=f"book an oil_change at {starts[i % len(starts)]} for Caller {i}"
        )
        reply = sim.said(result)
        if reply.startswith("Booked:"):
            return "booked", reply
        return "refused", reply


async def test_many_calls_race_for_bays_and_units_and_losers_hear_why(mesh, sim):
    day = sim.business_day()
    starts = [f"{day}T10:00", f"{day}T14:30"]
    began = time.perf_counter()
    rentals, appointments = await asyncio.gather(
        asyncio.gather(*(_rent(sim, i) for i in range(CALLS))),
        asyncio.gather(*(_book(sim, i, starts) for i in range(CALLS))),
    )
    seconds = time.perf_counter() - began

    rented = Counter(outcome for outcome, _ in rentals)
    booked = Counter(outcome for outcome, _ in appointments)
    print(
        f"\n[{mesh.stores.kind}] {2 * CALLS} simulated calls in {seconds:.1f}s: "
        f"rentals {dict(rented)}, appointments {dict(booked)}"
    )
    assert rented == {"booked": len(UNITS) * BLOCKS, "refused": CALLS - len(UNITS) * BLOCKS}
    assert booked == {"booked": BAYS * len(starts), "refused": CALLS - BAYS * len(starts)}
    # Every loser heard the mesh's sentence, not a code or silence.
    for outcome, heard in rentals:
        if outcome == "refused":
            assert UNIT_TAKEN.search(heard), heard
    for outcome, heard in appointments:
        if outcome == "refused":
            assert heard.startswith(TAKEN) and "That day I can offer" in heard, heard

    pool = mesh.stores.pool
    references = [ref for outcome, ref in rentals if outcome == "booked"]
    confirmed = await pool.fetch(
        "SELECT reference FROM bookings WHERE status = 'confirmed' AND reference = ANY($1)",
        references,
    )
    assert len(confirmed) == len(references)  # every "booked" a caller heard is a row
    assert await pool.fetchval("SELECT count(*) FROM bookings WHERE status = 'confirmed'") == (
        len(UNITS) * BLOCKS + BAYS * len(starts)
    )
    assert (
        await pool.fetchval(
            """SELECT count(*) FROM bookings a JOIN bookings b
                 ON a.resource_id = b.resource_id AND a.booking_id < b.booking_id
                AND a.during && b.during
              WHERE a.status = 'confirmed' AND b.status = 'confirmed'"""
        )
        == 0
    )
