"""Typed domain errors.

Every message is a sentence an agent can repeat to a caller or act on; ``details`` carries the
machine-readable parts. The HTTP edge maps each class to a status code, nothing here knows HTTP.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(DomainError):
    code = "invalid_input"


class IdempotencyKeyReused(InvalidInput):
    """An idempotency key sent again with a different request (the IETF draft's 422)."""

    code = "idempotency_key_reused"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class Unavailable(Conflict):
    """The resource is held or booked by someone else for (part of) that time."""

    code = "unavailable"


class VerificationRequired(Conflict):
    """A confirm was refused because the call lacks a verification the unit requires."""

    code = "verification_required"


class NegotiationRefused(Conflict):
    code = "negotiation_refused"


class IdempotencyKeyInFlight(Conflict):
    """The first request with this idempotency key is still running (the IETF draft's 409);
    retrying after ``retry_after`` seconds gets its answer."""

    code = "idempotency_key_in_flight"

    def __init__(self, message: str, *, retry_after: int = 1, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class HoldExpired(DomainError):
    code = "hold_expired"


class DependencyUnavailable(DomainError):
    code = "dependency_unavailable"

    def __init__(self, message: str, *, retry_after: int = 2, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class RateLimited(DomainError):
    """A caller is over a rate limit or a quota; the same request may succeed after
    ``retry_after`` seconds (or once the caller lets something go, for a quota)."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 1, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = max(1, int(retry_after))
