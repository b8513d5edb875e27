"""schemathesis hooks for the mesh fuzz (``SCHEMATHESIS_HOOKS=callmesh_fuzz_hooks``).

The documents say a hold's start is a string and an appointment's a date-time; almost every
string the fuzzer makes up is refused with 422, so its workflows (hold -> rate -> confirm ->
release, appointment -> reschedule -> cancel, call -> events -> end) would never start. Half
of the generated bodies of the routes that start them become valid ones here (a call's flow
is one of four words, which a made-up string almost never is); the other half stay as
generated.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import schemathesis
from hypothesis import strategies as st

# Demo units that confirm with no verification (a projector, a generator, a compressor).
UNITS = ["PRJ-901", "GEN-701", "GEN-702", "CMP-801"]
TZ = ZoneInfo("America/New_York")


def _operation(context: schemathesis.HookContext) -> tuple[str, str]:
    operation = context.operation
    return (operation.method.upper(), operation.path) if operation is not None else ("", "")


def _rental(days_ahead: int, days: int, unit: str) -> dict[str, Any]:
    start = date.today() + timedelta(days=days_ahead)
    end = start + timedelta(days=days)
    return {"unit_id": unit, "start": start.isoformat(), "end": end.isoformat()}


def _call(flow: str, phone: int) -> dict[str, Any]:
    return {"flow": flow, "caller_phone": f"+1617555{phone:04d}", "channel": "phone"}


def _appointment(days_ahead: int, hour: int, phone: int) -> dict[str, Any]:
    day = date.today() + timedelta(days=days_ahead)
    while day.weekday() > 4:
        day += timedelta(days=1)
    start = datetime.combine(day, time(hour), tzinfo=TZ)
    phone_number = f"+1617555{phone:04d}"
    return {"phone": phone_number, "service_type": "oil_change", "start": start.isoformat()}


@schemathesis.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy:
    route = _operation(context)
    if route == ("POST", "/holds"):
        valid = st.builds(_rental, st.integers(30, 300), st.integers(1, 3), st.sampled_from(UNITS))
    elif route == ("POST", "/appointments"):
        valid = st.builds(
            _appointment, st.integers(7, 60), st.integers(9, 15), st.integers(0, 9999)
        )
    elif route == ("POST", "/appointments/{appointment_id}/reschedule"):
        valid = st.builds(
            lambda a: {"start": a["start"]},
            st.builds(_appointment, st.integers(7, 60), st.integers(9, 15), st.just(0)),
        )
    elif route == ("POST", ""):  # the calls application's start of a call
        valid = st.builds(
            _call,
            st.sampled_from(["appointment", "rental", "dealership", "intake"]),
            st.integers(0, 9999),
        )
    else:
        return st.just(body)
    return st.one_of(st.just(body), valid)
