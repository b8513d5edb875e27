"""What the mesh refused, as errors the caller can hear.

The mesh answers ``{"error": {"code", "message"}}`` with a sentence written for a caller; each
status becomes a typed :class:`MeshError`, which *is* a livekit ``ToolError``, so a tool that
lets it propagate has the model hear that sentence. Timeouts, a mesh that is down, and a
refused token become a sentence of our own: the caller never hears "401".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx
from livekit.agents import ToolError

log = logging.getLogger(__name__)

UNREACHABLE = (
    "I can't reach our booking system right now. Please give me a moment and I'll try again."
)
TOO_SLOW = "Our booking system is slow to answer right now. Please give me a moment."
_REFUSED = "That request was refused. Could you tell me again what you need?"


class MeshError(ToolError):
    """The mesh refused or could not answer. ``message`` is a sentence the caller can hear;
    ``code`` is the mesh's machine-readable code, ``outcome`` the tool-event outcome."""

    outcome = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        status: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.details: dict[str, Any] = dict(details or {})


class MeshInvalid(MeshError):
    """422 (or 400/413): what the agent sent is not acceptable; the sentence says why."""

    outcome = "invalid"


class MeshNotFound(MeshError):
    outcome = "not_found"


class MeshConflict(MeshError):
    """409: taken, unavailable, verification required, negotiation refused..."""

    outcome = "conflict"


class MeshExpired(MeshConflict):
    """410: the hold expired or was released."""


class MeshUnavailable(MeshError):
    """503, a connection failure, or a 5xx: nothing was decided; trying later may work."""

    outcome = "unavailable"

    def __init__(self, message: str = UNREACHABLE, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class MeshTimeout(MeshUnavailable):
    outcome = "timeout"

    def __init__(self, message: str = TOO_SLOW, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class MeshUnauthorized(MeshUnavailable):
    """401: the worker's token is wrong. An operator problem; the caller hears the generic
    sentence, the log says what happened."""

    outcome = "error"


_BY_STATUS: dict[int, type[MeshError]] = {
    400: MeshInvalid,
    401: MeshUnauthorized,
    404: MeshNotFound,
    409: MeshConflict,
    410: MeshExpired,
    413: MeshInvalid,
    422: MeshInvalid,
}


def error_from_response(response: httpx.Response) -> MeshError:
    """The typed error for a non-2xx answer, carrying the mesh's sentence when it sent one."""
    status = response.status_code
    code, message = "error", ""
    details: dict[str, Any] = {}
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or code)
            message = str(error.get("message") or "")
            details = error.get("details") or {}
    except ValueError:
        pass
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = MeshUnavailable if status >= 500 else MeshInvalid
    if cls is MeshUnauthorized:
        log.error("the mesh refused the agent's token", extra={"status": status})
        return MeshUnauthorized(code=code, status=status)
    if issubclass(cls, MeshUnavailable):
        # A 5xx message is about our side; say the sentence written for callers if there is one.
        return cls(message or UNREACHABLE, code=code, status=status, details=details)
    return cls(message or _REFUSED, code=code, status=status, details=details)
