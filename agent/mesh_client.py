"""The one client the agent's tools use to reach the mesh: typed, short-fused, idempotent.

One :class:`MeshClient` per call. Many can share one ``httpx.AsyncClient`` (pass ``client=``;
whoever creates a client closes it). What it does for every flow:

* **Errors the caller can hear.** The mesh answers ``{"error": {"code", "message"}}`` with a
  sentence written for a caller; each status becomes a typed :class:`MeshError`, which *is* a
  livekit ``ToolError``, so a tool that lets it propagate has the model hear that sentence.
  Timeouts, a mesh that is down, and a refused token become a sentence of our own: the
  caller never hears "401".
* **No double booking on a retry.** Every write that may be repeated carries an
  ``Idempotency-Key`` derived from the call, the operation and its arguments (see
  :class:`WriteKeys`): an LLM repeating the same tool call, or this client retrying a timed-out
  request, replays the first answer instead of booking twice.
* **Speech-sized timeouts.** A tool answers while the caller waits, so requests give up after
  ``mesh_timeout_seconds`` (2 s by default) and retry at most ``mesh_retries`` times, only where
  a retry cannot write twice.
* **Measured.** :meth:`MeshClient.tool` times a whole tool into the Prometheus histogram
  ``callmesh_tool_latency_seconds`` {tool, outcome} and reports it to the calls service as a
  tool event, batched off the tool's path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from livekit.agents import ToolError
from prometheus_client import Histogram
from pydantic import BaseModel, TypeAdapter

from agent.config import AgentSettings
from agent.mesh_models import (
    Appointment,
    Call,
    Callback,
    CallSummary,
    Customer,
    Hold,
    RateAgreement,
    RentalBooking,
    ServiceType,
    SlotList,
    Unit,
    Usage,
    Verification,
)

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

# Speech budgets: most tools should answer well under a quarter of a second.
TOOL_LATENCY = Histogram(
    "callmesh_tool_latency_seconds",
    "Function tool latency as the agent measured it, end to end, by tool and outcome.",
    ["tool", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)

MAX_EVENTS_PER_BATCH = 200  # the calls service's own limit
_RETRY_PAUSE_SECONDS = 0.1
_UNREACHABLE = (
    "I can't reach our booking system right now. Please give me a moment and I'll try again."
)
_TOO_SLOW = "Our booking system is slow to answer right now. Please give me a moment."


# -- errors -------------------------------------------------------------------------------------


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

    def __init__(self, message: str = _UNREACHABLE, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class MeshTimeout(MeshUnavailable):
    outcome = "timeout"

    def __init__(self, message: str = _TOO_SLOW, **kwargs: Any) -> None:
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
        return cls(message or _UNREACHABLE, code=code, status=status, details=details)
    if not message:
        message = "That request was refused. Could you tell me again what you need?"
    return cls(message, code=code, status=status, details=details)


# -- idempotency keys ---------------------------------------------------------------------------


def _canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


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
        seed = f"{self.call_id}\n{fingerprint}\n{self._succeeded}"
        return "cm-" + hashlib.sha256(seed.encode()).hexdigest()[:48]

    def succeeded(self, operation: str, payload: Any, key: str) -> None:
        fingerprint = self._fingerprint(operation, payload)
        if self._last is not None and self._last[0] == fingerprint and self._last[1] == key:
            return  # a replay is not a new write
        self._succeeded += 1
        self._last = (fingerprint, key)

    def fixed(self, name: str) -> str:
        """A key for a write identified by a name alone (an event batch, the call's end)."""
        seed = f"{self.call_id}\n{name}"
        return "cm-" + hashlib.sha256(seed.encode()).hexdigest()[:48]


# -- the client ---------------------------------------------------------------------------------


def _iso(value: date | datetime | str) -> str:
    return value.isoformat() if isinstance(value, date | datetime) else str(value)


class MeshClient:
    """Everything a call's tools ask of the mesh. Not shared between calls; its
    ``httpx.AsyncClient`` may be."""

    def __init__(
        self,
        *,
        call_id: str,
        settings: AgentSettings | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings or AgentSettings()
        self.call_id = call_id
        self.keys = WriteKeys(call_id)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            base_url=self.settings.mesh_url,
            timeout=httpx.Timeout(
                self.settings.mesh_timeout_seconds,
                connect=self.settings.mesh_connect_timeout_seconds,
            ),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )
        headers = {"Accept": "application/json"}
        if self.settings.api_token is not None:
            headers["Authorization"] = f"Bearer {self.settings.api_token.get_secret_value()}"
        self._headers = headers
        self._timeout = httpx.Timeout(
            self.settings.mesh_timeout_seconds, connect=self.settings.mesh_connect_timeout_seconds
        )
        # Tool events and usage for the calls service: frozen batches, each with its own key.
        self._pending: list[dict[str, Any]] = []
        self._outbox: deque[tuple[str, list[dict[str, Any]]]] = deque()
        self._batches = 0
        self._flush_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        """Send what is left for the calls service, then close the HTTP client if ours."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- measurement ----------------------------------------------------------------------------

    @asynccontextmanager
    async def tool(self, name: str) -> AsyncIterator[None]:
        """Time a function tool end to end into ``callmesh_tool_latency_seconds`` and report it
        to the calls service. Errors pass through unchanged."""
        began = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except MeshError as e:
            outcome = e.outcome
            raise
        except ToolError:
            outcome = "invalid"  # the flow refused: a stage out of order, a missing detail
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            seconds = time.perf_counter() - began
            TOOL_LATENCY.labels(tool=name, outcome=outcome).observe(seconds)
            self._pending.append(
                {
                    "kind": "tool",
                    "name": name,
                    "latency_ms": round(seconds * 1000, 3),
                    "outcome": outcome,
                }
            )
            self._flush_soon()

    # -- the wire ---------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        key: str | None = None,
        retry_safe: bool,
    ) -> httpx.Response:
        headers = dict(self._headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempts = 1 + (self.settings.mesh_retries if retry_safe else 0)
        error: MeshError = MeshUnavailable()
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(_RETRY_PAUSE_SECONDS)
            try:
                response = await self._client.request(
                    method,
                    path,
                    json=json_body,
                    params=query or None,
                    headers=headers,
                    timeout=self._timeout,
                )
            except httpx.TimeoutException:
                log.warning("mesh request timed out", extra={"path": path, "attempt": attempt})
                error = MeshTimeout()
                continue
            except httpx.TransportError:
                log.warning("mesh unreachable", extra={"path": path, "attempt": attempt})
                error = MeshUnavailable()
                continue
            if response.is_success:
                return response
            error = error_from_response(response)
            # The first request with this key (one that timed out here) is still running on
            # the mesh: asked again, the mesh gives its answer once it ended.
            in_flight = error.code == "idempotency_key_in_flight"
            if not (
                in_flight or (isinstance(error, MeshUnavailable) and response.status_code >= 500)
            ):
                break
        raise error

    async def _get(self, path: str, model: type[M], **params: Any) -> M:
        response = await self._send("GET", path, params=params, retry_safe=True)
        return model.model_validate_json(response.content)

    async def _get_list(self, path: str, model: type[M], **params: Any) -> list[M]:
        response = await self._send("GET", path, params=params, retry_safe=True)
        return TypeAdapter(list[model]).validate_json(response.content)  # type: ignore[valid-type]

    async def _lookup(self, path: str, body: dict[str, Any]) -> httpx.Response:
        # A read sent as a POST so what it is keyed by (a phone number) stays out of URLs:
        # safe to retry, and it takes no idempotency key.
        return await self._send("POST", path, json_body=body, retry_safe=True)

    async def _write(
        self,
        operation: str,
        path: str,
        body: dict[str, Any] | None,
        model: type[M],
        *,
        idempotent: bool = True,
    ) -> M:
        """POST a write. With ``idempotent`` it carries a key from :class:`WriteKeys` and may
        be retried; without it (the mesh takes no key for it) it is sent once."""
        key = self.keys.key_for(operation, {"path": path, "body": body}) if idempotent else None
        response = await self._send("POST", path, json_body=body, key=key, retry_safe=idempotent)
        answer = model.model_validate_json(response.content)
        if key is not None:
            self.keys.succeeded(operation, {"path": path, "body": body}, key)
        return answer

    # -- scheduling -------------------------------------------------------------------------------

    async def list_service_types(self) -> list[ServiceType]:
        return await self._get_list("/scheduling/service-types", ServiceType)

    async def list_slots(self, *, day: date | str, service_type: str) -> SlotList:
        return await self._get(
            "/scheduling/slots", SlotList, date=_iso(day), service_type=service_type
        )

    async def find_customer(self, phone: str) -> Customer | None:
        """The customer with that phone number, or None for a first-time caller."""
        try:
            response = await self._lookup("/scheduling/customers/lookup", {"phone": phone})
        except MeshNotFound:
            return None
        return Customer.model_validate_json(response.content)

    async def list_appointments(self, phone: str) -> list[Appointment]:
        response = await self._lookup("/scheduling/appointments/lookup", {"phone": phone})
        return TypeAdapter(list[Appointment]).validate_json(response.content)

    async def book_appointment(
        self,
        *,
        phone: str,
        service_type: str,
        start: datetime | str,
        name: str | None = None,
        notes: str | None = None,
    ) -> Appointment:
        body = {
            "phone": phone,
            "service_type": service_type,
            "start": _iso(start),
            "name": name,
            "notes": notes,
            "call_id": self.call_id,
        }
        return await self._write(
            "book_appointment",
            "/scheduling/appointments",
            {k: v for k, v in body.items() if v is not None},
            Appointment,
        )

    async def reschedule_appointment(
        self, appointment_id: str, start: datetime | str
    ) -> Appointment:
        return await self._write(
            "reschedule_appointment",
            f"/scheduling/appointments/{appointment_id}/reschedule",
            {"start": _iso(start)},
            Appointment,
        )

    async def cancel_appointment(self, appointment_id: str, reason: str) -> Appointment:
        return await self._write(
            "cancel_appointment",
            f"/scheduling/appointments/{appointment_id}/cancel",
            {"reason": reason},
            Appointment,
        )

    async def schedule_callback(
        self, *, phone: str, reason: str, preferred_time: datetime | str | None = None
    ) -> Callback:
        body: dict[str, Any] = {"phone": phone, "reason": reason, "call_id": self.call_id}
        if preferred_time is not None:
            body["preferred_time"] = _iso(preferred_time)
        return await self._write("schedule_callback", "/scheduling/callbacks", body, Callback)

    # -- inventory --------------------------------------------------------------------------------

    async def search_units(
        self,
        *,
        query: str | None = None,
        category: str | None = None,
        max_daily_rate: Decimal | None = None,
        limit: int = 5,
    ) -> list[Unit]:
        return await self._get_list(
            "/inventory/units",
            Unit,
            query=query,
            category=category,
            max_daily_rate=str(max_daily_rate) if max_daily_rate is not None else None,
            limit=limit,
        )

    async def get_unit(self, unit_id: str) -> Unit:
        return await self._get(f"/inventory/units/{unit_id}", Unit)

    async def create_hold(self, *, unit_id: str, start: date | str, end: date | str) -> Hold:
        body = {"unit_id": unit_id, "start": _iso(start), "end": _iso(end), "call_id": self.call_id}
        return await self._write("create_hold", "/inventory/holds", body, Hold)

    async def propose_rate(self, hold_id: str, rate: Decimal) -> RateAgreement:
        # The mesh takes no key here and counts every offer: sent once, never retried.
        return await self._write(
            "propose_rate",
            f"/inventory/holds/{hold_id}/rate",
            {"rate": str(rate)},
            RateAgreement,
            idempotent=False,
        )

    async def confirm_hold(self, hold_id: str) -> RentalBooking:
        return await self._write(
            "confirm_hold", f"/inventory/holds/{hold_id}/confirm", None, RentalBooking
        )

    async def release_hold(self, hold_id: str) -> None:
        # Releasing a hold that is already gone is not an error: safe to retry.
        await self._send("DELETE", f"/inventory/holds/{hold_id}", retry_safe=True)

    # -- verification -----------------------------------------------------------------------------

    async def _verify(self, path: str, body: dict[str, Any]) -> Verification:
        # Each check is audited once per request; a retry after a timeout only adds an audit row.
        response = await self._send(
            "POST", path, json_body={"call_id": self.call_id, **body}, retry_safe=True
        )
        return Verification.model_validate_json(response.content)

    async def verify_business_licence(
        self, licence_number: str, state: str | None = None
    ) -> Verification:
        body: dict[str, Any] = {"licence_number": licence_number}
        if state:
            body["state"] = state
        return await self._verify("/verification/business-licence", body)

    async def verify_site_safety(self, site_id: str, weight_class: str) -> Verification:
        return await self._verify(
            "/verification/site-safety", {"site_id": site_id, "weight_class": weight_class}
        )

    async def verify_operator_certification(
        self, operator_id: str, certification: str
    ) -> Verification:
        return await self._verify(
            "/verification/operator-certification",
            {"operator_id": operator_id, "certification": certification},
        )

    async def verify_insurance(self, policy_number: str, required_amount: Decimal) -> Verification:
        return await self._verify(
            "/verification/insurance",
            {"policy_number": policy_number, "required_amount": str(required_amount)},
        )

    # -- calls ------------------------------------------------------------------------------------

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

    def share(self, *, category: str, key: str, value: str) -> None:
        """File something the caller told us under a category (sent with the next batch)."""
        self._pending.append({"kind": "shared", "category": category, "key": key, "value": value})
        self._flush_soon()

    def mark(self, marker: str, reference: str | None = None) -> None:
        """A milestone: ``booked`` (with its reference), ``transferred``, ``callback_scheduled``."""
        event: dict[str, Any] = {"kind": "marker", "marker": marker}
        if reference:
            event["reference"] = reference
        self._pending.append(event)
        self._flush_soon()

    def add_usage(self, usage: Usage) -> None:
        if not usage.empty:
            self._pending.append({"kind": "usage", **usage.model_dump()})

    def _flush_soon(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_quietly())

    async def _flush_quietly(self) -> None:
        try:
            await self.flush_events()
        except MeshError:
            pass  # kept in the outbox; the next flush or the call's end sends it

    async def flush_events(self) -> None:
        """Send every buffered event. A batch keeps its key until it is accepted, so a batch
        sent twice is recorded once. Raises the last MeshError if something stays unsent."""
        async with self._flush_lock:
            while self._pending:
                batch = self._pending[:MAX_EVENTS_PER_BATCH]
                del self._pending[:MAX_EVENTS_PER_BATCH]
                self._outbox.append((self.keys.fixed(f"events-{self._batches}"), batch))
                self._batches += 1
            while self._outbox:
                key, batch = self._outbox[0]
                try:
                    await self._send(
                        "POST",
                        f"/calls/{self.call_id}/events",
                        json_body=batch,
                        key=key,
                        retry_safe=True,
                    )
                except MeshError:
                    log.warning("call events not recorded yet", extra={"call_id": self.call_id})
                    raise
                self._outbox.popleft()

    async def end_call(
        self, *, outcome: str, usage: Usage | None = None, summary: str | None = None
    ) -> CallSummary:
        """Report the last usage, end the call, and return its summary and priced cost. Ending
        twice returns the first answer."""
        if usage is not None:
            self.add_usage(usage)
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        try:
            await self.flush_events()
        except MeshError:
            pass  # the end still counts; the summary lacks what could not be sent
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
