"""Idempotency keys: no double booking on a retry.

Every write that may be repeated carries an ``Idempotency-Key`` derived from the call, the
operation and its arguments: an LLM repeating the same tool call, or the client retrying a
timed-out request, replays the first answer instead of booking twice.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def _canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def _key(seed: str) -> str:
    return "cm-" + hashlib.sha256(seed.encode()).hexdigest()[:48]


class WriteKeys:
    """Idempotency keys for one call's writes.

    A logical write is identified by the call, the operation, its arguments, and how many
    writes of this call succeeded before it. Repeating the most recent successful write (an
    LLM that calls the same tool twice) or retrying a write whose answer never arrived gets the
    same key, so the mesh replays the first answer. Once another write has succeeded (a cancel,
    a move), the same arguments mean a new request: booking 10:00 again after cancelling it
    books again rather than replaying the cancelled booking.
    """

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self._succeeded = 0
        self._last: tuple[str, str] | None = None  # (fingerprint, key) of the last success

    @staticmethod
    def _fingerprint(operation: str, payload: Any) -> str:
        return hashlib.sha256(f"{operation}\n{_canonical(payload)}".encode()).hexdigest()

    def key_for(self, operation: str, payload: Any) -> str:
        fingerprint = self._fingerprint(operation, payload)
        if self._last is not None and self._last[0] == fingerprint:
            return self._last[1]
        return _key(f"{self.call_id}\n{fingerprint}\n{self._succeeded}")

    def succeeded(self, operation: str, payload: Any, key: str) -> None:
        fingerprint = self._fingerprint(operation, payload)
        if self._last is not None and self._last[0] == fingerprint and self._last[1] == key:
            return  # a replay is not a new write
        self._succeeded += 1
        self._last = (fingerprint, key)

    def fixed(self, name: str) -> str:
        """A key for a write identified by a name alone (an event batch, the call's end)."""
        return _key(f"{self.call_id}\n{name}")
