"""The wire under every endpoint: the shared ``httpx.AsyncClient``, headers, speech-sized
timeouts, and retries only where a retry cannot write twice.

A tool answers while the caller waits, so requests give up after ``mesh_timeout_seconds``
(2 s by default) and are retried at most ``mesh_retries`` times: a timeout, a connection
failure, a 5xx, or a write whose first request (with the same key) is still running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from agent.config import AgentSettings
from agent.mesh.errors import MeshError, MeshTimeout, MeshUnavailable, error_from_response
from agent.mesh.keys import WriteKeys

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_RETRY_PAUSE_SECONDS = 0.1


def _timeout(settings: AgentSettings) -> httpx.Timeout:
    return httpx.Timeout(
        settings.mesh_timeout_seconds, connect=settings.mesh_connect_timeout_seconds
    )


def new_http_client(settings: AgentSettings) -> httpx.AsyncClient:
    """The connection pool to the mesh. Build one per worker process and pass it to every
    :class:`~agent.mesh.MeshClient` there (``client=``); whoever builds it closes it. Building
    it touches no network, so a process can build it before its first call arrives."""
    return httpx.AsyncClient(
        base_url=settings.mesh_url,
        timeout=_timeout(settings),
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
    )


def iso(value: date | datetime | str) -> str:
    return value.isoformat() if isinstance(value, date | datetime) else str(value)


class MeshTransport:
    """One call's requests to the mesh over an ``httpx.AsyncClient`` it may share: built here
    when none is given (and then closed by :meth:`_close_http`), else the caller's to close."""

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
        self._client = client or new_http_client(self.settings)
        headers = {"Accept": "application/json"}
        if self.settings.api_token is not None:
            headers["Authorization"] = f"Bearer {self.settings.api_token.get_secret_value()}"
        self._headers = headers
        self._timeout = _timeout(self.settings)

    async def _close_http(self) -> None:
        if self._own_client:
            await self._client.aclose()

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
