"""A provider that asks a remote verification registry over HTTP.

The JSON protocol
-----------------
Each check is a ``POST`` of a JSON object to ``{base}/<check>/verify``::

    POST {base}/licences/verify   {"licence_number": "BL-100234", "state": "TX"}
    POST {base}/sites/verify      {"site": "SITE-1001", "weight_class": "heavy"}
    POST {base}/operators/verify  {"operator": "OP-7001", "certification": "excavator"}
    POST {base}/insurance/verify  {"policy_number": "POL-55001", "required_amount": "1000000.00"}

``state`` may be null; ``site`` is an id or a street address; ``operator`` a licence id or a
full name.

and a ``200`` answer is::

    {"reason": "valid" | "expired" | "insufficient" | "unknown" | "mismatch",
     "status": "verified" | "failed",            optional; must agree: verified iff valid
     "facts": {"expires_on": "2027-03-31", ...}}  scalars or null, at most 20

Amounts travel as decimal strings so cents stay exact. The facts the agent's sentences use are
``expires_on`` (ISO date) for every check, ``state``, ``requested_state`` and ``business_name``
for licences, ``site_id``, ``rated_weight_class``, ``requested_weight_class`` and
``inspection_expires_on`` for sites, ``operator_name`` and ``certification`` for operators,
``coverage_amount`` and ``required_amount`` for insurance. The sentence itself is never taken
from the remote.

Failures
--------
A connection error, a timeout, a 5xx or a 429 is retried up to ``verification_http_retries``
times, waiting with exponential backoff and full jitter between attempts. The timeout
(``verification_http_timeout_seconds``) is one deadline for the whole request, from connecting
to the answer's last byte, so a remote that drips bytes cannot hold a check open. Any other
4xx, and a 200 that is not the object above, is not retried: asking again would get the same
answer. The answer is read as it arrives and refused as soon as it passes
``MAX_RESPONSE_BYTES`` (at once when its declared length does). It must not be compressed (a
small compressed body can unpack to any size), and JSON holding half a character (a lone
surrogate escape, which no store can take) is malformed. Every failed request counts towards
the circuit breaker; while it is open no request is sent. When no answer can be had the check
raises :class:`DependencyUnavailable` with ``retry_after``: a remote that is down never reads
as a verified (or as a failed) check.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random as _random
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pydantic_core
from pydantic import ValidationError

from services.errors import DependencyUnavailable
from services.settings import Settings
from services.verification.breaker import CircuitBreaker, backoff_delay
from services.verification.models import Finding, WeightClass

log = logging.getLogger(__name__)

LICENCES_PATH = "/licences/verify"
SITES_PATH = "/sites/verify"
OPERATORS_PATH = "/operators/verify"
INSURANCE_PATH = "/insurance/verify"
MAX_RESPONSE_BYTES = 64 * 1024
# Sent with every request, also through an injected client: identity, so the cap above counts
# the bytes that are parsed.
_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity"}


class _Retryable(Exception):
    """A failed attempt worth repeating (the remote may answer next time)."""


class _Final(Exception):
    """A failed attempt that would fail the same way again."""


class HttpProvider:
    name = "http"

    def __init__(
        self,
        *,
        base_url: str,
        timeout_seconds: float = 2.0,
        retries: int = 2,
        breaker: CircuitBreaker | None = None,
        client: httpx.AsyncClient | None = None,
        backoff_base_seconds: float = 0.1,
        backoff_max_seconds: float = 1.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"verification_http_url must be an http(s) URL, got {base_url!r}")
        if timeout_seconds <= 0 or retries < 0:
            raise ValueError("timeout_seconds > 0 and retries >= 0")
        self.base_url = str(url).rstrip("/")
        self.timeout_seconds = timeout_seconds
        # httpx's timeouts are per phase (each read may take this long); the deadline in
        # _attempt bounds the whole request.
        self.timeout = httpx.Timeout(timeout_seconds)
        self.retries = retries
        self.breaker = breaker or CircuitBreaker(failure_threshold=5, reset_seconds=30.0)
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._sleep = sleep
        self._random = random
        # An injected client belongs to the caller; only one made here is closed here.
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(headers=_HEADERS)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> HttpProvider:
        if not settings.verification_http_url:
            raise ValueError("verification_provider is http but verification_http_url is unset")
        return cls(
            base_url=settings.verification_http_url,
            timeout_seconds=settings.verification_http_timeout_seconds,
            retries=settings.verification_http_retries,
            breaker=CircuitBreaker(
                failure_threshold=settings.verification_breaker_failures,
                reset_seconds=settings.verification_breaker_reset_seconds,
                clock=clock,
            ),
            client=client,
        )

    async def check_business_licence(self, *, licence_number: str, state: str | None) -> Finding:
        return await self._verify(LICENCES_PATH, {"licence_number": licence_number, "state": state})

    async def check_site_safety(self, *, site: str, weight_class: WeightClass) -> Finding:
        return await self._verify(SITES_PATH, {"site": site, "weight_class": weight_class})

    async def check_operator_certification(self, *, operator: str, certification: str) -> Finding:
        return await self._verify(
            OPERATORS_PATH, {"operator": operator, "certification": certification}
        )

    async def check_insurance(self, *, policy_number: str, required_amount: Decimal) -> Finding:
        return await self._verify(
            INSURANCE_PATH,
            {"policy_number": policy_number, "required_amount": str(required_amount)},
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # -- one check, with retries and the breaker ---------------------------------------------

    async def _verify(self, path: str, body: dict[str, Any]) -> Finding:
        url = self.base_url + path
        for attempt in range(self.retries + 1):
            if attempt:
                await self._sleep(
                    backoff_delay(
                        attempt - 1,
                        base_seconds=self.backoff_base_seconds,
                        max_seconds=self.backoff_max_seconds,
                        random=self._random,
                    )
                )
            permit = self.breaker.acquire()
            if permit is None:
                raise self._unavailable(breaker=self.breaker.state)
            try:
                finding = await self._attempt(url, body)
            except _Retryable as e:
                self.breaker.record_failure(permit)
                log.warning(
                    "verification registry attempt failed",
                    extra={"path": path, "attempt": attempt, "error": str(e)},
                )
                continue
            except _Final as e:
                self.breaker.record_failure(permit)
                log.warning(
                    "verification registry refused a request",
                    extra={"path": path, "attempt": attempt, "error": str(e)},
                )
                break
            except BaseException:
                # Cancelled (the caller hung up) or a bug: no verdict on the remote's health.
                self.breaker.abandon(permit)
                raise
            self.breaker.record_success(permit)
            return finding
        raise self._unavailable(breaker=self.breaker.state)

    async def _attempt(self, url: str, body: dict[str, Any]) -> Finding:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                raw = await self._exchange(url, body)
        except TimeoutError as e:
            raise _Retryable("timeout") from e
        except httpx.TimeoutException as e:
            raise _Retryable("timeout") from e
        except httpx.HTTPError as e:
            raise _Retryable(type(e).__name__) from e
        try:
            # pydantic's JSON parser, unlike json.loads, refuses a lone surrogate anywhere.
            answer = pydantic_core.from_json(raw)
            finding = Finding.model_validate(answer)
        except (ValueError, ValidationError) as e:
            raise _Final("malformed answer") from e
        status = answer.get("status")
        if status is not None and status != finding.status:
            raise _Final("status disagrees with reason")
        return finding

    async def _exchange(self, url: str, body: dict[str, Any]) -> bytes:
        """The body of a 200 answer, read no further than MAX_RESPONSE_BYTES."""
        async with self._client.stream(
            "POST", url, json=body, headers=_HEADERS, timeout=self.timeout
        ) as response:
            # Leaving the block unread closes the connection: nothing more is downloaded.
            if response.status_code >= 500 or response.status_code == 429:
                raise _Retryable(f"status {response.status_code}")
            if response.status_code != 200:
                raise _Final(f"status {response.status_code}")
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise _Final("compressed answer")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
                raise _Final("answer too large")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise _Final("answer too large")
                chunks.append(chunk)
            return b"".join(chunks)

    def _unavailable(self, *, breaker: str) -> DependencyUnavailable:
        retry_after = max(1, math.ceil(self.breaker.retry_after())) if breaker != "closed" else 2
        return DependencyUnavailable(
            "The verification registry isn't answering right now; please try again in a moment.",
            retry_after=retry_after,
            breaker=breaker,
        )
