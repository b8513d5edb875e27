"""A call's start and end in the calls service, shared by the worker and the wrap-up tools.

Neither may stop a caller from being served: a start that fails is logged and the call goes
on (the end retries the start), and ending twice returns the first summary.
"""

from __future__ import annotations

import logging

from agent.mesh import MeshError
from agent.mesh_models import CallSummary, Usage
from agent.state import CallState
from agent.usage import usage_since

log = logging.getLogger(__name__)


async def start_call(state: CallState) -> bool:
    """Record the call in the calls service; False (and a log line) if it could not be."""
    try:
        await state.mesh.start_call(
            flow=state.flow, caller_phone=state.caller_phone, channel=state.channel
        )
    except MeshError as e:
        log.warning("call start not recorded", extra={"call_id": state.call_id, "code": e.code})
        return False
    state.started = True
    return True


def outcome_of(state: CallState) -> str:
    if state.outcome:
        return state.outcome
    return "booked" if state.references else "information_only"


async def end_call(
    state: CallState, *, usage: Usage | None = None, summary: str | None = None
) -> CallSummary | None:
    """End the call with the usage not yet reported; the summary and priced cost, or None if
    the calls service could not be reached."""
    if state.summary is not None:
        return state.summary
    if not state.started and not await start_call(state):
        return None
    delta = usage_since(usage, state.usage_reported) if usage is not None else None
    try:
        state.summary = await state.mesh.end_call(
            outcome=outcome_of(state), usage=delta, summary=summary
        )
    except MeshError as e:
        log.warning("call end not recorded", extra={"call_id": state.call_id, "code": e.code})
        return None
    if usage is not None:
        state.usage_reported = usage
    return state.summary
