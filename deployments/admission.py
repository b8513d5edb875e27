"""Load shedding at the edge of each replica: a cap on the requests it runs at once.

Past the cap a request is answered 503 with ``Retry-After`` before any work is done, so the
requests the replica did admit keep their latency and the rest learn at once to come back,
instead of all of them waiting in a queue that has no bound (Serve's replica queue in front of
``max_ongoing_requests`` has none by default, and its own ``max_queued_requests`` answers plain
text, not our error shape). The replica's event loop is single-threaded: a plain counter is
exact, no lock.
"""

from __future__ import annotations

import json

# Never shed: an orchestrator must see the replica alive while it is busy.
EXEMPT_PATHS = frozenset({"/healthz", "/-/healthz", "/-/routes"})


class AdmissionGate:
    """Counts the requests in flight; :meth:`enter` refuses the one past ``limit``."""

    __slots__ = ("in_flight", "limit", "shed")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0 (0 admits everything)")
        self.limit = limit
        self.in_flight = 0
        self.shed = 0  # refused since start

    def enter(self) -> bool:
        """Admit one request (and count it until :meth:`leave`), or refuse it."""
        if self.limit and self.in_flight >= self.limit:
            self.shed += 1
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1


def shed_message(retry_after: int) -> str:
    return (
        "The service is at capacity right now; please try again in "
        f"{retry_after} second{'s' if retry_after != 1 else ''}."
    )


def shed_response(retry_after: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of the 503, built once per replica (the refusal costs no JSON work)."""
    body = json.dumps(
        {"error": {"code": "overloaded", "message": shed_message(retry_after)}}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    return headers, body
