"""A lean closed-loop HTTP/1.1 load generator for the benchmarks.

Python HTTP clients cost more CPU per request than the mesh spends serving it, and on a 2-core
machine the client shares the cores with the server. This one keeps N keep-alive connections
on raw asyncio streams and does the least work per request, so the numbers describe the
server. Each connection runs one scenario coroutine that sends a request, waits for the answer
and sends the next (closed loop: concurrency = connections).

Measured against a trivial server on the 2-core machine (docs/benchmarks.md): about 20 µs of
client CPU per request on uvloop (37 µs on asyncio's default loop), against 75 µs (94 µs) for
aiohttp, which this module replaced in every benchmark. :func:`run` uses uvloop when it is
installed. A request that fails on the wire is recorded with status 0, never raised.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
# What a failed request (refused, reset, closed mid-answer) is recorded as.
NETWORK_ERROR = 0
_WIRE_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._host_line = f"Host: {self.host}:{self.port}\r\n{self.extra}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        for attempt in (0, 1):
            if self.writer is None:
                await self._connect()
            assert self.reader is not None and self.writer is not None
            payload = b"" if body is None else json.dumps(body).encode()
            head = (
                f"{method} {path} HTTP/1.1\r\n{self._host_line}"
                + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
                + (
                    f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                    if body is not None
                    else ""
                )
                + "\r\n"
            )
            try:
                self.writer.write(head.encode() + payload)
                return await self._read_response()
            except (ConnectionError, asyncio.IncompleteReadError):
                # The server closed an idle keep-alive connection: reconnect once.
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _read_response(self) -> Response:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, body, headers)


@dataclass
class Stats:
    """Latencies of one kind of request, in seconds, and how each ended."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def add(self, seconds: float, status: int) -> None:
        self.latencies.append(seconds)
        self.statuses[status] += 1

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Recorder:
    def __init__(self) -> None:
        self.by_name: dict[str, Stats] = {}

    async def timed(
        self,
        name: str,
        conn: Connection,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        t0 = time.perf_counter()
        try:
            resp = await conn.request(method, path, body, headers)
        except _WIRE_ERRORS:
            await conn.close()  # the next request reconnects
            resp = Response(NETWORK_ERROR, b"")
        self.by_name.setdefault(name, Stats()).add(time.perf_counter() - t0, resp.status)
        return resp


Scenario = Callable[[Connection, Recorder, int], Awaitable[None]]


async def run_closed_loop(
    base_url: str,
    scenario: Scenario,
    *,
    connections: int,
    duration_seconds: float,
    headers: dict[str, str] | None = None,
) -> tuple[Recorder, float]:
    """Run ``scenario(conn, recorder, i)`` repeatedly on each connection for the duration."""
    recorder = Recorder()
    deadline = time.perf_counter() + duration_seconds

    async def worker(n: int) -> None:
        conn = Connection(base_url, headers)
        i = 0
        try:
            while time.perf_counter() < deadline:
                await scenario(conn, recorder, n * 1_000_000 + i)
                i += 1
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(connections)))
    return recorder, time.perf_counter() - started


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (half the client CPU per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
