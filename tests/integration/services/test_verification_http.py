"""The HTTP provider against a real registry server on 127.0.0.1 that fails on purpose.

The server (Starlette under uvicorn, in a thread) answers each request with the next step of a
script: an answer, a status code, a slow answer, garbage. Assertions count requests and breaker
states; the breaker's clock and the backoff's sleep and random source are injected, so nothing
here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from services.errors import DependencyUnavailable
from services.verification import CircuitBreaker, HttpProvider, VerificationService

pytestmark = pytest.mark.integration

SLOW_SECONDS = 1.0  # how long a "slow" answer takes; the provider's timeout is far shorter
TIMEOUT = 0.1
# A dripping answer sends a byte every DRIP_GAP_SECONDS, far inside any per-read timeout, for
# DRIP_SECONDS in all: far longer than the provider's deadline (DRIP_TIMEOUT) for a request.
DRIP_GAP_SECONDS = 0.05
DRIP_SECONDS = 4.0
DRIP_TIMEOUT = 0.5
# A huge answer: far more than the provider's cap (64 KiB) and than loopback socket buffers.
HUGE_BYTES = 64 * 1024 * 1024
HUGE_CHUNK = 64 * 1024


@dataclass
class FakeRegistry:
    url: str
    plan: list[str] = field(default_factory=list)
    default: str = "valid"
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Bytes of the last streamed answer the server got to hand to its socket.
    sent: int = 0

    def script(self, *steps: str, then: str = "valid") -> None:
        self.plan[:] = steps
        self.default = then
        self.requests.clear()
        self.sent = 0

    def next_step(self) -> str:
        return self.plan.pop(0) if self.plan else self.default


def _app(registry: list[FakeRegistry]) -> Starlette:
    async def verify(request: Request) -> Response:
        fake = registry[0]
        fake.requests.append((request.url.path, await request.json()))
        step = fake.next_step()
        if step == "slow":
            await asyncio.sleep(SLOW_SECONDS)
            return JSONResponse({"reason": "valid"})
        if step.isdigit():
            return JSONResponse({"error": "on purpose"}, status_code=int(step))
        if step == "garbage":
            return PlainTextResponse("<html>gateway</html>")
        if step == "contradiction":
            return JSONResponse({"status": "verified", "reason": "expired"})
        if step == "surrogate":
            body = b'{"reason": "valid", "facts": {"business_name": "Acme \\ud800"}}'
            return Response(body, media_type="application/json")
        if step == "drip":
            return StreamingResponse(_drip(), media_type="application/json")
        if step in ("huge", "huge_declared"):
            # Declared: Content-Length framing; otherwise chunked, the size known only at the end.
            length = {"content-length": str(HUGE_BYTES)} if step == "huge_declared" else None
            return StreamingResponse(_huge(fake), media_type="application/json", headers=length)
        status = "verified" if step == "valid" else "failed"
        facts = {"expires_on": "2031-01-31", "coverage_amount": 2000000}
        return JSONResponse({"status": status, "reason": step, "facts": facts})

    return Starlette(routes=[Route("/registry/{kind}/verify", verify, methods=["POST"])])


async def _drip() -> AsyncIterator[bytes]:
    """A valid answer, one padding byte at a time: no read ever waits long."""
    yield b'{"reason": "valid"'
    for _ in range(int(DRIP_SECONDS / DRIP_GAP_SECONDS)):
        await asyncio.sleep(DRIP_GAP_SECONDS)
        yield b" "
    yield b"}"


async def _huge(fake: FakeRegistry) -> AsyncIterator[bytes]:
    """A valid answer padded to HUGE_BYTES; counts what the server could hand over."""
    head, tail = b'{"reason": "valid", "pad": "', b'"}'
    pad = HUGE_BYTES - len(head) - len(tail)
    fake.sent = 0
    for chunk in (head, *([b"x" * HUGE_CHUNK] * (pad // HUGE_CHUNK)), b"x" * (pad % HUGE_CHUNK)):
        yield chunk  # resumes only once the socket took the previous chunk (flow control)
        fake.sent += len(chunk)
        # Once the client hangs up, uvicorn drops what is sent without waiting: let Starlette's
        # disconnect listener run and stop this stream, so `sent` stops counting there.
        await asyncio.sleep(0)
    yield tail
    fake.sent += len(tail)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRegistry]:
    holder: list[FakeRegistry] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    holder.append(FakeRegistry(url=f"http://127.0.0.1:{port}/registry"))
    config = uvicorn.Config(
        _app(holder), lifespan="off", log_level="warning", ws="none", timeout_graceful_shutdown=2
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake registry did not start")
        time.sleep(0.01)
    yield holder[0]
    uv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def registry(server: FakeRegistry) -> FakeRegistry:
    server.script()
    return server


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _provider(
    registry: FakeRegistry,
    *,
    retries: int = 2,
    failures: int = 5,
    clock: Clock | None = None,
    sleeps: Sleeps | None = None,
    timeout: float = 5.0,
    client: httpx.AsyncClient | None = None,
) -> HttpProvider:
    return HttpProvider(
        base_url=registry.url,
        timeout_seconds=timeout,
        retries=retries,
        breaker=CircuitBreaker(
            failure_threshold=failures, reset_seconds=30, clock=clock or Clock()
        ),
        backoff_base_seconds=0.1,
        backoff_max_seconds=1.0,
        sleep=sleeps or Sleeps(),
        random=lambda: 1.0,  # the ceiling of each jittered wait, so the schedule is exact
        client=client,
    )


async def test_speaks_the_documented_protocol(registry):
    provider = _provider(registry)
    try:
        licence = await provider.check_business_licence(licence_number="BL-1", state="TX")
        await provider.check_site_safety(site="22 Elm St", weight_class="heavy")
        await provider.check_operator_certification(operator="OP-7", certification="forklift")
        await provider.check_insurance(policy_number="POL-1", required_amount=Decimal("1000.50"))
    finally:
        await provider.aclose()
    assert licence.reason == "valid" and licence.facts["coverage_amount"] == "2000000"
    assert registry.requests == [
        ("/registry/licences/verify", {"licence_number": "BL-1", "state": "TX"}),
        ("/registry/sites/verify", {"site": "22 Elm St", "weight_class": "heavy"}),
        ("/registry/operators/verify", {"operator": "OP-7", "certification": "forklift"}),
        ("/registry/insurance/verify", {"policy_number": "POL-1", "required_amount": "1000.50"}),
    ]


async def test_server_errors_are_retried_with_backoff_until_an_answer(registry):
    sleeps = Sleeps()
    provider = _provider(registry, retries=3, sleeps=sleeps)
    registry.script("500", "503", "429", then="expired")
    try:
        finding = await provider.check_business_licence(licence_number="BL-1", state=None)
    finally:
        await provider.aclose()
    assert finding.reason == "expired" and finding.status == "failed"
    assert len(registry.requests) == 4
    assert sleeps.delays == pytest.approx([0.1, 0.2, 0.4])
    assert provider.breaker.state == "closed" and provider.breaker.consecutive_failures == 0


async def test_retries_run_out_into_dependency_unavailable(registry):
    sleeps = Sleeps()
    provider = _provider(registry, retries=2, sleeps=sleeps)
    registry.script(then="502")
    try:
        with pytest.raises(DependencyUnavailable) as e:
            await provider.check_insurance(policy_number="POL-1", required_amount=Decimal(1))
    finally:
        await provider.aclose()
    assert len(registry.requests) == 3 and len(sleeps.delays) == 2
    assert e.value.retry_after >= 1
    assert provider.breaker.consecutive_failures == 3


async def test_a_slow_answer_times_out_and_the_retry_gets_through(registry):
    provider = _provider(registry, retries=1, timeout=TIMEOUT)
    registry.script("slow", then="valid")
    try:
        finding = await provider.check_site_safety(site="SITE-1", weight_class="light")
        registry.script(then="slow")
        with pytest.raises(DependencyUnavailable):
            await provider.check_site_safety(site="SITE-1", weight_class="light")
    finally:
        await provider.aclose()
    assert finding.reason == "valid"
    assert len(registry.requests) == 2  # both attempts of the second check timed out


async def test_an_answer_that_drips_is_cut_at_the_deadline(registry):
    """Each read gets a byte well inside any per-read timeout; the request as a whole still
    ends at the provider's deadline, and so does the retry."""
    provider = _provider(registry, retries=1, timeout=DRIP_TIMEOUT)
    registry.script(then="drip")
    try:
        with pytest.raises(DependencyUnavailable):
            await provider.check_business_licence(licence_number="BL-1", state=None)
        registry.script("drip", then="valid")
        finding = await provider.check_business_licence(licence_number="BL-1", state=None)
    finally:
        await provider.aclose()
    assert finding.reason == "valid"
    assert len(registry.requests) == 2  # the drip, then the retry that got an answer


@pytest.mark.parametrize("answer", ["huge", "huge_declared"])
async def test_a_huge_answer_is_refused_without_reading_it(registry, answer):
    """Refused once past the cap (or at once, when the declared length is over it): the
    server gets to send only what the socket buffers hold, not the whole answer."""
    provider = _provider(registry, retries=3)
    registry.script(then=answer)
    try:
        with pytest.raises(DependencyUnavailable):
            await provider.check_business_licence(licence_number="BL-1", state=None)
    finally:
        await provider.aclose()
    assert len(registry.requests) == 1  # not retried: it would be as big again
    assert registry.sent < HUGE_BYTES // 4


async def test_an_answer_with_a_lone_surrogate_is_refused(registry):
    """JSON may escape half a character ("\\ud800"); no store can take it, so the answer is
    malformed, not a 500 when its facts are audited."""
    provider = _provider(registry, retries=3)
    registry.script(then="surrogate")
    try:
        with pytest.raises(DependencyUnavailable):
            await provider.check_business_licence(licence_number="BL-1", state=None)
    finally:
        await provider.aclose()
    assert len(registry.requests) == 1


@pytest.mark.parametrize("answer", ["404", "422", "garbage", "contradiction"])
async def test_answers_that_would_not_change_are_not_retried(registry, answer):
    provider = _provider(registry, retries=3)
    registry.script(then=answer)
    try:
        with pytest.raises(DependencyUnavailable):
            await provider.check_business_licence(licence_number="BL-1", state=None)
    finally:
        await provider.aclose()
    assert len(registry.requests) == 1


async def test_breaker_opens_refuses_then_a_half_open_trial_closes_it(registry):
    clock = Clock()
    provider = _provider(registry, retries=0, failures=3, clock=clock)
    registry.script(then="500")
    try:
        for _ in range(3):
            with pytest.raises(DependencyUnavailable):
                await provider.check_business_licence(licence_number="BL-1", state=None)
        assert provider.breaker.state == "open"
        assert len(registry.requests) == 3

        # Open: refused at once, the server is not asked.
        with pytest.raises(DependencyUnavailable) as e:
            await provider.check_business_licence(licence_number="BL-1", state=None)
        assert e.value.details["breaker"] == "open" and e.value.retry_after == 30
        assert len(registry.requests) == 3

        # Half-open, and the trial fails: open again, for a full reset period.
        clock.now += 30
        assert provider.breaker.state == "half_open"
        with pytest.raises(DependencyUnavailable):
            await provider.check_business_licence(licence_number="BL-1", state=None)
        assert len(registry.requests) == 4 and provider.breaker.state == "open"
        clock.now += 29
        with pytest.raises(DependencyUnavailable):
            await provider.check_business_licence(licence_number="BL-1", state=None)
        assert len(registry.requests) == 4

        # The registry recovers; the next trial closes the breaker and traffic flows again.
        registry.script(then="valid")
        clock.now += 1
        assert (
            await provider.check_business_licence(licence_number="BL-1", state=None)
        ).reason == ("valid")
        assert provider.breaker.state == "closed"
        await provider.check_business_licence(licence_number="BL-1", state=None)
        assert len(registry.requests) == 2
    finally:
        await provider.aclose()


async def test_half_open_sends_one_trial_while_others_are_refused(registry):
    clock = Clock()
    provider = _provider(registry, retries=0, failures=1, clock=clock)
    registry.script("500", then="valid")
    try:
        with pytest.raises(DependencyUnavailable):
            await provider.check_insurance(policy_number="POL-1", required_amount=Decimal(1))
        clock.now += 30
        outcomes = await asyncio.gather(
            *(
                provider.check_insurance(policy_number="POL-1", required_amount=Decimal(1))
                for _ in range(3)
            ),
            return_exceptions=True,
        )
    finally:
        await provider.aclose()
    refused = [o for o in outcomes if isinstance(o, DependencyUnavailable)]
    assert len(refused) == 2 and all(e.details["breaker"] == "half_open" for e in refused)
    assert len(registry.requests) == 2  # the first failure and the one trial
    assert provider.breaker.state == "closed"


async def test_an_opening_breaker_stops_the_retries(registry):
    sleeps = Sleeps()
    provider = _provider(registry, retries=5, failures=2, sleeps=sleeps)
    registry.script(then="500")
    try:
        with pytest.raises(DependencyUnavailable) as e:
            await provider.check_business_licence(licence_number="BL-1", state=None)
    finally:
        await provider.aclose()
    assert len(registry.requests) == 2
    assert e.value.details["breaker"] == "open"


async def test_an_injected_client_is_left_open_and_an_own_one_is_closed(registry):
    async with httpx.AsyncClient() as client:
        provider = _provider(registry, client=client)
        await provider.check_business_licence(licence_number="BL-1", state=None)
        await provider.aclose()
        assert not client.is_closed
    own = _provider(registry)
    await own.aclose()
    assert own._client.is_closed


async def test_nobody_listening_is_unavailable_not_verified():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connections are refused
        provider = HttpProvider(
            base_url=f"http://127.0.0.1:{port}", retries=1, sleep=Sleeps(), timeout_seconds=2
        )
        try:
            with pytest.raises(DependencyUnavailable):
                await provider.check_business_licence(licence_number="BL-1", state=None)
        finally:
            await provider.aclose()
    assert provider.breaker.consecutive_failures == 2


async def test_the_service_audits_an_unreachable_registry(fresh, registry):
    clock = Clock()
    provider = _provider(registry, retries=1, failures=2, clock=clock)
    service = VerificationService(pool=fresh.pool, provider=provider, settings=fresh.settings())
    registry.script(then="503")
    try:
        with pytest.raises(DependencyUnavailable) as e:
            await service.verify_operator_certification("call-http-1", "OP-7001", "excavator")
        assert e.value.retry_after == 30  # the breaker opened on the second failed attempt
        with pytest.raises(DependencyUnavailable):
            await service.verify_operator_certification("call-http-1", "OP-7001", "excavator")
        assert len(registry.requests) == 2
        registry.script(then="valid")
        clock.now += 30
        verified = await service.verify_operator_certification(
            "call-http-1", "OP-7001", "excavator"
        )
    finally:
        await provider.aclose()
    assert (verified.status, verified.provider) == ("verified", "http")
    assert (
        verified.message
        == "OP-7001 holds a current excavator certification until January 31, 2031."
    )
    rows = await service.list_for_call("call-http-1")
    assert [(r.status, r.reason) for r in rows] == [
        ("failed", "provider_unavailable"),
        ("failed", "provider_unavailable"),
        ("verified", "valid"),
    ]
    assert (
        await service.missing_requirements(
            call_id="call-http-1", certification="excavator", min_insurance=None
        )
        == []
    )
