"""The conversation flows, by the name the calls service knows them by."""

from __future__ import annotations

from collections.abc import Callable

from livekit.agents import Agent

from agent.flows.appointment import AppointmentDesk
from agent.flows.rental import RentalDesk

FLOWS: dict[str, Callable[[], Agent]] = {
    "appointment": AppointmentDesk,
    "rental": RentalDesk,
}


def build_agent(flow: str) -> Agent:
    """The first Agent of a flow; ``KeyError`` for a flow this worker does not run."""
    return FLOWS[flow]()


__all__ = ["FLOWS", "AppointmentDesk", "RentalDesk", "build_agent"]
