"""The calls service's endpoints: a call's start, its events (through the outbox), its end."""

from __future__ import annotations

import contextlib
from functools import cached_property
from typing import Any

from agent.mesh.errors import MeshError
from agent.mesh.outbox import Event, EventOutbox
from agent.mesh.transport import MeshTransport
from agent.mesh_models import Call, CallSummary, Usage


class CallsEndpoints(MeshTransport):
    @cached_property
    def _events(self) -> EventOutbox:
        return EventOutbox(call_id=self.call_id, keys=self.keys, send=self._post_events)

    async def _post_events(self, batch: list[Event], key: str) -> None:
        await self._send(
            "POST", f"/calls/{self.call_id}/events", json_body=batch, key=key, retry_safe=True
        )

    async def start_call(
        self, *, flow: str, caller_phone: str | None = None, channel: str = "phone"
    ) -> Call:
        """Record the call; repeating it (a retried hook) returns the same call."""
        body: dict[str, Any] = {"call_id": self.call_id, "flow": flow, "channel": channel}
        if caller_phone:
            body["caller_phone"] = caller_phone
        response = await self._send(
            "POST", "/calls", json_body=body, key=self.keys.fixed("start"), retry_safe=True
        )
        return Call.model_validate_json(response.content)

    def mark(self, marker: str, reference: str | None = None) -> None:
        """A milestone: ``booked`` (with its reference), ``transferred``, ``callback_scheduled``."""
        event: Event = {"kind": "marker", "marker": marker}
        if reference:
            event["reference"] = reference
        self._events.add(event)

    def add_usage(self, usage: Usage) -> None:
        if not usage.empty:
            self._events.add({"kind": "usage", **usage.model_dump()}, send_soon=False)

    async def flush_events(self) -> None:
        """Send every buffered event. A batch keeps its key until it is accepted, so a batch
        sent twice is recorded once. Raises the last MeshError if something stays unsent."""
        await self._events.flush()

    async def end_call(
        self, *, outcome: str, usage: Usage | None = None, summary: str | None = None
    ) -> CallSummary:
        """Report the last usage, end the call, and return its summary and priced cost. Ending
        twice returns the first answer."""
        if usage is not None:
            self.add_usage(usage)
        await self._events.settle()
        with contextlib.suppress(MeshError):
            # The end still counts; the summary lacks what could not be sent.
            await self._events.flush()
        body: dict[str, Any] = {"outcome": outcome}
        if summary:
            body["summary"] = summary
        response = await self._send(
            "POST",
            f"/calls/{self.call_id}/end",
            json_body=body,
            key=self.keys.fixed("end"),
            retry_safe=True,
        )
        return CallSummary.model_validate_json(response.content)
