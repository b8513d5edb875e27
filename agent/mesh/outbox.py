"""Tool events, markers and usage for the calls service, sent in batches off the tools' path.

A batch is frozen with its own idempotency key the first time it is sent and keeps that key
until the calls service accepts it, so a batch sent twice is recorded once. What cannot be
sent now waits for the next flush or the call's end.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from agent.mesh.errors import MeshError
from agent.mesh.keys import WriteKeys

log = logging.getLogger(__name__)

MAX_EVENTS_PER_BATCH = 200  # the calls service's own limit

Event = dict[str, Any]
# Sends one batch with its key; raises MeshError if the calls service did not take it.
SendBatch = Callable[[list[Event], str], Awaitable[object]]


class EventOutbox:
    """One call's events on their way to the calls service."""

    def __init__(self, *, call_id: str, keys: WriteKeys, send: SendBatch) -> None:
        self.call_id = call_id
        self._keys = keys
        self._send = send
        self._pending: list[Event] = []
        self._outbox: deque[tuple[str, list[Event]]] = deque()
        self._batches = 0
        self._flush_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    def add(self, event: Event, *, send_soon: bool = True) -> None:
        """Buffer ``event``; with ``send_soon``, start sending in the background."""
        self._pending.append(event)
        if send_soon and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush_quietly())

    async def settle(self) -> None:
        """Wait for a background send to end (it keeps what it could not send)."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except MeshError:
            pass  # kept in the outbox; the next flush or the call's end sends it

    async def flush(self) -> None:
        """Send every buffered event. Raises the last MeshError if something stays unsent."""
        async with self._flush_lock:
            while self._pending:
                batch = self._pending[:MAX_EVENTS_PER_BATCH]
                del self._pending[:MAX_EVENTS_PER_BATCH]
                self._outbox.append((self._keys.fixed(f"events-{self._batches}"), batch))
                self._batches += 1
            while self._outbox:
                key, batch = self._outbox[0]
                try:
                    await self._send(batch, key)
                except MeshError:
                    log.warning("call events not recorded yet", extra={"call_id": self.call_id})
                    raise
                self._outbox.popleft()
