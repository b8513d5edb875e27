"""The HTTP edge every application shares: error mapping, the bearer token, the body limit,
the request metric.

Services raise the typed errors of :mod:`services.errors` and know nothing of HTTP; this module
is the one place that turns them into status codes and the body
``{"error": {"code": "...", "message": "..."}}``. Nothing a client sends may produce a 500.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.admission import EXEMPT_PATHS, AdmissionGate, shed_response
from deployments.metrics import Metrics
from services.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    HoldExpired,
    InvalidInput,
    NotFound,
    RateLimited,
)
from services.ratelimit import WriteLimiter, client_key

log = logging.getLogger(__name__)

# Most specific first: Unavailable and VerificationRequired are Conflicts.
ERROR_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (InvalidInput, 422),
    (NotFound, 404),
    (HoldExpired, 410),
    (Conflict, 409),
    (RateLimited, 429),
    (DependencyUnavailable, 503),
)
# Status codes Starlette/FastAPI raise themselves (unknown route, wrong method...).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    503: "unavailable",
}
_OUTCOMES = {
    401: "unauthorized",
    404: "not_found",
    409: "conflict",
    410: "expired",
    429: "rate_limited",
    503: "unavailable",
}
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def status_for(error: DomainError) -> int:
    for cls, status in ERROR_STATUS:
        if isinstance(error, cls):
            return status
    # A DomainError no class above claims still describes the request, not a server fault.
    return 400


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    status = status_for(exc)
    headers = None
    # Any refusal that says when to try again (a store down, a twin still in flight) says it.
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers = {"Retry-After": str(retry_after)}
    if isinstance(exc, DependencyUnavailable):
        log.warning("dependency unavailable", extra={"code": exc.code, "path": request.url.path})
    elif isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    return error_response(status, exc.code, exc.message, exc.details or None, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Name the fields at fault, never echo what was sent: it may be personal data.
    problems = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
            "problem": err["msg"],
        }
        for err in exc.errors()
    ]
    first = problems[0] if problems else {"field": "", "problem": "invalid"}
    message = (
        f"The {first['field'] or 'request body'} is not valid: {first['problem']}."
        if first["field"]
        else "The request body is not valid JSON of the expected shape."
    )
    return error_response(422, "invalid_input", message, {"errors": problems})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot decode (not UTF-8): bad input, as any other.
        return error_response(
            422, "invalid_input", "The request body is not valid JSON of the expected shape."
        )
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else "The request was refused."
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, message, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


# -- the bearer token ---------------------------------------------------------------------------


def token_matches(expected: SecretStr | None, given: str | None) -> bool:
    """True when no token is configured, or ``given`` is it (constant-time compare)."""
    if expected is None:
        return True
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


# Documents the scheme in OpenAPI; auto_error=False so the 401 below has our error shape.
_bearer = HTTPBearer(auto_error=False, description="CALLMESH_API_TOKEN, when it is set.")


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Route dependency for every mutating route: 401 without the configured bearer token, 429
    past the write rate limits (one Redis round trip, when a limiter is installed)."""
    expected: SecretStr | None = getattr(request.app.state, "api_token", None)
    given = credentials.credentials if credentials is not None else None
    if not token_matches(expected, given):
        raise HTTPException(
            status_code=401,
            detail="A valid bearer token is required for this request.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # After the token: a caller without it is told 401, never counted against a limit.
    limiter: WriteLimiter | None = getattr(request.app.state, "write_limiter", None)
    if limiter is not None and limiter.enabled:
        client = client_key(given, request.client.host if request.client else None)
        call_id = request.path_params.get("call_id")
        await limiter.admit(client=client, call_id=call_id if isinstance(call_id, str) else None)


# -- ASGI middleware ----------------------------------------------------------------------------


class EdgeMiddleware:
    """Outermost layer of each application: sheds load past ``max_in_flight`` requests at once
    (503 with Retry-After, :mod:`deployments.admission`), refuses bodies over the limit (413),
    turns anything unexpected into a generic 500 (the traceback goes to the log, never to the
    client), and times every request into ``callmesh_service_request_seconds``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        max_body_bytes: int,
        metrics: Metrics | None = None,
        max_in_flight: int = 0,
        retry_after_seconds: int = 1,
    ) -> None:
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.gate = AdmissionGate(max_in_flight)
        self._shed_headers, self._shed_body = shed_response(retry_after_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        if scope["path"] not in EXEMPT_PATHS:
            if not self.gate.enter():
                await self._shed(send, began)
                return
            try:
                await self._serve(scope, receive, send, began)
            finally:
                self.gate.leave()
            return
        await self._serve(scope, receive, send, began)

    async def _shed(self, send: Send, began: float) -> None:
        # The body is left unread: the server discards it and keeps the connection, so a
        # refused client does not reconnect (a reconnect storm is what overloads the proxy).
        await send({"type": "http.response.start", "status": 503, "headers": self._shed_headers})
        await send({"type": "http.response.body", "body": self._shed_body})
        if self.metrics is not None:
            self.metrics.observe_request(
                service=self.service,
                operation="shed",
                outcome="shed",
                seconds=time.perf_counter() - began,
            )

    async def _serve(self, scope: Scope, receive: Receive, send: Send, began: float) -> None:
        status = 500
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started = True
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                await _send_too_large(send_tracking, self.max_body_bytes)
                # Drain nothing: the connection is answered before the body is read.
                return
            await self.app(scope, self._limited(receive), send_tracking)
        except Exception:
            log.exception("unhandled error", extra={"path": scope.get("path", "")})
            if not started:
                response = error_response(
                    500, "internal", "Something went wrong on our side; please try again."
                )
                await response(scope, receive, send_tracking)
        finally:
            if self.metrics is not None:
                self.metrics.observe_request(
                    service=self.service,
                    operation=_operation(scope),
                    outcome=outcome_for(status),
                    seconds=time.perf_counter() - began,
                )

    def _limited(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body_bytes

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # FastAPI re-raises an HTTPException from body reading as is.
                    raise HTTPException(status_code=413, detail=_too_large_text(limit))
            return message

        return receive_limited


def _too_large_text(limit: int) -> str:
    return f"The request body is larger than {limit} bytes."


async def _send_too_large(send: Callable[[Message], Awaitable[None]], limit: int) -> None:
    body = json.dumps({"error": {"code": "too_large", "message": _too_large_text(limit)}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _operation(scope: Scope) -> str:
    # The route's function name: low cardinality, unlike the raw path with its ids.
    route = scope.get("route")
    name = getattr(route, "name", None)
    return str(name) if name else "unmatched"


def outcome_for(status: int) -> str:
    if status < 400:
        return "ok"
    if status in _OUTCOMES:
        return _OUTCOMES[status]
    if status < 500:
        return "invalid"
    return "error"


def is_write(method: str) -> bool:
    return method.upper() in _WRITE_METHODS
