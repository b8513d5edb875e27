"""Holds/s and confirmed bookings/s through the mesh and through the same service code in one
uvicorn process, in one run, with p50/p99 and the ratio mesh/single (issue 3).

    python -m loadtest.bench --seconds 15 --connections 64          # or: make bench
    python -m loadtest.bench --only single --seconds 5 --json
    python -m loadtest.bench --overload --connections 1000 --seconds 20   # issue 7, below

What one run does:

1. A scratch database on the PostgreSQL server of ``--pg-admin`` (dropped afterwards; or the
   database of ``--database-url``, left in place), migrated, with bench-only units that require
   nothing: ``BENCH-H0001``.. for the holds scenario and ``BENCH-C0001``.. for bookings, so
   holds measure the mesh, not contention. A fresh Redis key prefix (``--redis-url``).
2. The mesh the way users start it: ``callmesh up`` in a subprocess (which sets the two Serve
   throughput flags), waited for until it serves a unit; ``callmesh down`` after.
3. The single process: ``uvicorn loadtest.single_process:app`` (one worker) against the same
   stores.
4. Against each, with ``--connections`` keep-alive clients (closed loop, :mod:`loadtest.httpload`):
   *holds*: ``POST /inventory/holds`` over units x days, each request a cell no one holds;
   *bookings*: each client holds then confirms; bookings/s is confirms answered 201 per second.
   Then :func:`loadtest.invariant.check` on the bookings reported confirmed.
5. A table (scenario, target, req/s, p50, p99, errors, mesh/single) or ``--json``; the client's
   own CPU, the server's and the whole machine's during each measured window.

``--overload`` instead starts the mesh twice, load shedding off then on, and floods each with
``--connections`` clients sending holds back to back (:mod:`loadtest.overload`): p50/p99 of the
answered requests, what was shed by status, socket errors, and /healthz right after.

The client shares the machine's cores with the server; its CPU is reported so it can be
subtracted mentally. Compare the numbers of one run as ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from loadtest import httpload, overload
from loadtest.invariant import check
from loadtest.overload import OverloadResult

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get(
    "CALLMESH_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# Issue 3's targets on the 2-core machine.
TARGET_HOLDS_PER_S = 2000.0
TARGET_BOOKINGS_PER_S = 1000.0
TARGET_P99_MS = 50.0
TARGET_MESH_RATIO = 0.5

# Rentals start from the day after tomorrow (no time-zone edge at "today") and must end within
# the service's 365-day horizon.
FIRST_DAY_AHEAD = 2
DAYS = 360
HOLD_PREFIX = "BENCH-H"
BOOK_PREFIX = "BENCH-C"
MESH_START_TIMEOUT_S = 240.0


# -- bench units and cells ----------------------------------------------------------------------

INSERT_BENCH_UNITS = """
INSERT INTO units (unit_id, name, category, description, daily_rate, max_rate, location)
SELECT $1 || lpad(g::text, 4, '0'), 'Bench unit ' || $1 || g, 'bench',
       'A unit that exists for the benchmark and requires nothing.', 100, 150, 'Bench yard'
  FROM generate_series(1, $2::int) g
ON CONFLICT (unit_id) DO NOTHING"""

DELETE_BENCH_RENTALS = "DELETE FROM rentals WHERE unit_id LIKE 'BENCH-%'"
DELETE_BENCH_BOOKINGS = "DELETE FROM bookings WHERE resource_id LIKE 'BENCH-%'"
DELETE_BENCH_UNITS = "DELETE FROM units WHERE unit_id LIKE 'BENCH-%'"


def unit_id(prefix: str, n: int) -> str:
    return f"{prefix}{n + 1:04d}"


class Cells:
    """Hands out (unit, day) cells in order, units first, so consecutive requests hit different
    units and no two requests of a run ask for the same cell until every cell was used."""

    def __init__(self, prefix: str, units: int, first_day: date) -> None:
        self.prefix = prefix
        self.units = units
        self.first_day = first_day
        self.next = 0

    @property
    def capacity(self) -> int:
        return self.units * DAYS

    def take(self) -> tuple[str, str]:
        i = self.next % self.capacity
        self.next += 1
        day = self.first_day + timedelta(days=i // self.units)
        return unit_id(self.prefix, i % self.units), day.isoformat()


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Latency:
    count: int
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]

    @classmethod
    def of(cls, stats: httpload.Stats | None) -> Latency:
        if stats is None or not stats.latencies:
            return cls(0, float("nan"), float("nan"), {})
        return cls(
            count=len(stats.latencies),
            p50_ms=round(stats.percentile(50) * 1000, 1),
            p99_ms=round(stats.percentile(99) * 1000, 1),
            statuses={str(k): v for k, v in sorted(stats.statuses.items())},
        )


@dataclass
class ScenarioResult:
    side: str  # mesh | single
    scenario: str  # holds | bookings
    seconds: float
    connections: int
    per_s: float  # holds answered 201, or confirms answered 201, per second
    p50_ms: float  # of the request the scenario is named for (hold, or confirm)
    p99_ms: float
    errors: int  # answers that are not 201, and failed requests, of every request sent
    requests: dict[str, Latency] = field(default_factory=dict)
    client_cores: float = 0.0  # CPU the load generator used, in cores
    server_cores: float = 0.0  # the server's processes (uvicorn, or Ray and its children)
    machine_cores: float = 0.0  # every process on the machine
    top_processes: list[tuple[str, float]] = field(default_factory=list)
    invariant: dict[str, Any] | None = None
    replicas: dict[str, int] | None = None


def _cpu_total() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [float(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def _descendants(root: int) -> dict[int, tuple[str, float]]:
    """pid -> (name, CPU seconds so far) of ``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        rest = stat[stat.rindex(")") + 2 :].split()
        ppid, utime, stime = int(rest[1]), float(rest[11]), float(rest[12])
        children.setdefault(ppid, []).append(int(entry))
        name = cmd[:80] or stat[stat.index("(") + 1 : stat.rindex(")")]
        info[int(entry)] = (name, (utime + stime) / tick)
    out: dict[int, tuple[str, float]] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in info:
            out[pid] = info[pid]
        stack.extend(children.get(pid, []))
    return out


class CpuWindow:
    """CPU used by this process, by a server's process tree and by the machine, between
    :meth:`start` and :meth:`stop`."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.client0 = time.process_time()
        self.machine0 = _cpu_total()
        self.procs0 = _descendants(self.server_pid) if self.server_pid else {}

    def stop(self, result: ScenarioResult | OverloadResult) -> None:
        wall = time.perf_counter() - self.t0
        result.client_cores = round((time.process_time() - self.client0) / wall, 2)
        busy1, total1 = _cpu_total()
        busy0, total0 = self.machine0
        ncpu = os.cpu_count() or 1
        result.machine_cores = round((busy1 - busy0) / max(total1 - total0, 1) * ncpu, 2)
        if self.server_pid:
            procs1 = _descendants(self.server_pid)
            used = [
                (name, (cpu - self.procs0[pid][1]) / wall)
                for pid, (name, cpu) in procs1.items()
                if pid in self.procs0
            ]
            result.server_cores = round(sum(c for _, c in used), 2)
            used.sort(key=lambda x: -x[1])
            result.top_processes = [(n, round(c, 2)) for n, c in used[:6] if c >= 0.01]


# -- the two scenarios --------------------------------------------------------------------------


async def drive(
    base_url: str,
    scenario: str,
    cells: Cells,
    *,
    seconds: float,
    connections: int,
    headers: dict[str, str],
    cpu: CpuWindow | None = None,
    warmup_seconds: float = 0.0,
    side: str = "",
) -> tuple[ScenarioResult, list[uuid.UUID]]:
    """Run one scenario for ``seconds`` (after an unrecorded warm-up) and return its result
    and the booking ids answered 201."""
    confirmed: list[uuid.UUID] = []
    call_ids = [f"bench-{secrets.token_hex(4)}" for _ in range(connections)]

    async def holds(conn: httpload.Connection, rec: httpload.Recorder, i: int) -> None:
        unit, day = cells.take()
        body = {"unit_id": unit, "start": day, "call_id": call_ids[i // 1_000_000]}
        await rec.timed("hold", conn, "POST", "/inventory/holds", body)

    async def bookings(conn: httpload.Connection, rec: httpload.Recorder, i: int) -> None:
        unit, day = cells.take()
        body = {"unit_id": unit, "start": day, "call_id": call_ids[i // 1_000_000]}
        held = await rec.timed("hold", conn, "POST", "/inventory/holds", body)
        if held.status != 201:
            return
        hold_id = held.json()["hold_id"]
        done = await rec.timed("confirm", conn, "POST", f"/inventory/holds/{hold_id}/confirm")
        if done.status == 201:
            confirmed.append(uuid.UUID(done.json()["booking_id"]))

    fn = holds if scenario == "holds" else bookings
    if warmup_seconds > 0:
        await httpload.run_closed_loop(
            base_url, fn, connections=connections, duration_seconds=warmup_seconds, headers=headers
        )
        confirmed.clear()
    if cpu is not None:
        cpu.start()
    recorder, elapsed = await httpload.run_closed_loop(
        base_url, fn, connections=connections, duration_seconds=seconds, headers=headers
    )
    main = "hold" if scenario == "holds" else "confirm"
    requests = {name: Latency.of(stats) for name, stats in recorder.by_name.items()}
    lat = requests.get(main, Latency.of(None))
    ok = lat.statuses.get("201", 0)
    errors = sum(n for r in requests.values() for s, n in r.statuses.items() if s != "201")
    result = ScenarioResult(
        side=side,
        scenario=scenario,
        seconds=round(elapsed, 2),
        connections=connections,
        per_s=round(ok / elapsed, 1),
        p50_ms=lat.p50_ms,
        p99_ms=lat.p99_ms,
        errors=errors,
        requests=requests,
    )
    if cpu is not None:
        cpu.stop(result)
    return result, confirmed


# -- the bench database -------------------------------------------------------------------------


@dataclass
class BenchStores:
    database_url: str
    redis_url: str
    redis_prefix: str
    units: int
    scratch_db: str | None  # created here, dropped at the end


async def prepare_stores(args: argparse.Namespace) -> BenchStores:
    from services.db import create_pool, migrate

    scratch = None
    database_url = args.database_url
    if not database_url:
        scratch = f"callmesh_bench_{os.getpid()}_{secrets.token_hex(3)}"
        admin = await asyncpg.connect(args.pg_admin)
        try:
            await admin.execute(f'CREATE DATABASE "{scratch}"')
        finally:
            await admin.close()
        database_url = args.pg_admin.rsplit("/", 1)[0] + "/" + scratch
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await migrate(pool)
        for prefix in (HOLD_PREFIX, BOOK_PREFIX):
            await pool.execute(INSERT_BENCH_UNITS, prefix, args.units)
    finally:
        await pool.close()
    return BenchStores(
        database_url=database_url,
        redis_url=args.redis_url,
        redis_prefix=f"bench{secrets.token_hex(4)}",
        units=args.units,
        scratch_db=scratch,
    )


async def forget_holds(stores: BenchStores, unit_prefix: str) -> int:
    """Delete the Redis keys of one set of bench units (its holds), so the next run of the
    holds scenario finds every cell free again."""
    from services.kv import create_redis

    redis = create_redis(stores.redis_url)
    n = 0
    try:
        batch: list[str] = []
        async for key in redis.scan_iter(
            match=f"{stores.redis_prefix}:{{r:{unit_prefix}*", count=5000
        ):
            batch.append(key)
            if len(batch) >= 5000:
                n += await redis.delete(*batch)
                batch = []
        if batch:
            n += await redis.delete(*batch)
    finally:
        await redis.aclose()
    return n


async def check_invariant(stores: BenchStores, booking_ids: list[uuid.UUID]) -> dict[str, Any]:
    conn = await asyncpg.connect(stores.database_url)
    try:
        report = await check(conn, booking_ids)
    finally:
        await conn.close()
    return {
        "ok": report.ok,
        "confirmed_answers": report.confirmed_answers,
        "overlaps": len(report.overlaps),
        "missing_rows": len(report.missing),
    }


async def cleanup_stores(stores: BenchStores, pg_admin: str) -> None:
    await forget_holds(stores, "")  # every key of the bench prefix
    if stores.scratch_db:
        admin = await asyncpg.connect(pg_admin)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{stores.scratch_db}" WITH (FORCE)')
        finally:
            await admin.close()
        return
    conn = await asyncpg.connect(stores.database_url)
    try:
        async with conn.transaction():
            await conn.execute(DELETE_BENCH_RENTALS)
            await conn.execute(DELETE_BENCH_BOOKINGS)
            await conn.execute(DELETE_BENCH_UNITS)
    finally:
        await conn.close()


# -- the two servers ----------------------------------------------------------------------------


def _server_env(stores: BenchStores, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": stores.redis_url,
        "CALLMESH_REDIS_PREFIX": stores.redis_prefix,
        "CALLMESH_DATA_DIR": str(data_dir),
        # The bench measures capacity: its clients hold thousands of cells per call and write
        # far past any per-caller limit, so the quotas are off (the overload run sets its own).
        "CALLMESH_MAX_HOLDS_PER_CALL": "0",
        "CALLMESH_RATE_WRITES_PER_TOKEN": "0",
        "CALLMESH_RATE_WRITES_PER_CALL": "0",
        # Direct-ingress replicas drain 30 s on shutdown; nothing is in flight when we stop.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    }


def _callmesh() -> list[str]:
    script = Path(sys.executable).with_name("callmesh")
    return [str(script)] if script.exists() else [sys.executable, "-m", "deployments.cli"]


async def _wait_serving(
    url: str, proc: subprocess.Popen[bytes], within_s: float, headers: dict[str, str]
) -> None:
    """Until the inventory answers for a bench unit (the gateway's /healthz can be up first)."""
    deadline = time.monotonic() + within_s
    probe = f"/inventory/units/{unit_id(HOLD_PREFIX, 0)}"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before serving")
        conn = httpload.Connection(url, headers)
        try:
            health = await conn.request("GET", "/healthz")
            unit = await conn.request("GET", probe)
            if health.status == 200 and unit.status == 200:
                return
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            await conn.close()
        await asyncio.sleep(1.0)
    raise TimeoutError(f"{url} did not serve {probe} within {within_s:.0f} s")


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextmanager
def mesh_server(
    stores: BenchStores,
    port: int,
    log: Path,
    headers: dict[str, str],
    config: Path = REPO / "serve_config.yaml",
    extra_env: dict[str, str] | None = None,
    up_args: tuple[str, ...] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    data_dir = Path(tempfile.mkdtemp(prefix="cmbench-"))
    env = {**_server_env(stores, data_dir), **(extra_env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*_callmesh(), "up", "--config", str(config), "--port", str(port), *up_args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            asyncio.run(
                _wait_serving(f"http://127.0.0.1:{port}", proc, MESH_START_TIMEOUT_S, headers)
            )
            yield proc
        finally:
            # `callmesh down` waits until `up` is gone, and a child that exited stays a zombie
            # (still "alive" to down) until this process reaps it: wait for both side by side.
            down = subprocess.Popen(
                [*_callmesh(), "down"],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                _stop(proc, 30)
            down.wait(30)
            shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def single_server(
    stores: BenchStores,
    port: int,
    log: Path,
    headers: dict[str, str],
    extra_env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    data_dir = Path(tempfile.mkdtemp(prefix="cmbench-"))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "loadtest.single_process:app"),
                *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
                *("--no-access-log", "--log-level", "warning"),
            ],
            cwd=REPO,
            env={**_server_env(stores, data_dir), **(extra_env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            asyncio.run(_wait_serving(f"http://127.0.0.1:{port}", proc, 60, headers))
            yield proc
        finally:
            _stop(proc, 30)
            shutil.rmtree(data_dir, ignore_errors=True)


def _replicas(url: str, headers: dict[str, str]) -> dict[str, int] | None:
    """Running replicas per mesh deployment, from the gateway's /healthz."""

    async def read() -> dict[str, int] | None:
        conn = httpload.Connection(url, headers)
        try:
            body = (await conn.request("GET", "/healthz")).json()
        finally:
            await conn.close()
        apps = body.get("deployments")
        if not isinstance(apps, dict):
            return None
        return {
            dep: int(info.get("replicas", {}).get("RUNNING", 0))
            for app in apps.values()
            for dep, info in app.get("deployments", {}).items()
            if "replicas" in info
        } or None

    try:
        return asyncio.run(read())
    except (OSError, ValueError, asyncio.IncompleteReadError):
        return None


# -- one side -----------------------------------------------------------------------------------


def run_side(
    side: str,
    url: str,
    server_pid: int | None,
    stores: BenchStores,
    book_cells: Cells,
    args: argparse.Namespace,
    headers: dict[str, str],
) -> list[ScenarioResult]:
    """Both scenarios against one running server; the invariant after the bookings."""
    first = datetime.now(ZoneInfo("America/New_York")).date() + timedelta(days=FIRST_DAY_AHEAD)
    results = []
    for scenario in ("holds", "bookings"):
        cells = Cells(HOLD_PREFIX, stores.units, first) if scenario == "holds" else book_cells
        result, confirmed = httpload.run(
            drive(
                url,
                scenario,
                cells,
                seconds=args.seconds,
                connections=args.connections,
                headers=headers,
                cpu=CpuWindow(server_pid),
                warmup_seconds=args.warmup,
                side=side,
            )
        )
        if scenario == "holds":
            asyncio.run(forget_holds(stores, HOLD_PREFIX))
        else:
            result.invariant = asyncio.run(check_invariant(stores, confirmed))
        if side == "mesh":
            result.replicas = _replicas(url, headers)
        results.append(result)
        _progress(result)
    return results


def _progress(r: ScenarioResult) -> None:
    print(
        f"  {r.side:6s} {r.scenario:8s} {r.per_s:8.1f}/s  p50 {r.p50_ms} ms  p99 {r.p99_ms} ms"
        f"  errors {r.errors}  cores: client {r.client_cores} server {r.server_cores}"
        f" machine {r.machine_cores}",
        file=sys.stderr,
        flush=True,
    )
    for name, cores in r.top_processes:
        print(f"      {cores:5.2f} cores  {name}", file=sys.stderr, flush=True)


# -- report -------------------------------------------------------------------------------------


def _target(scenario: str) -> str:
    per_s = TARGET_HOLDS_PER_S if scenario == "holds" else TARGET_BOOKINGS_PER_S
    return f">= {per_s:,.0f}/s, p99 <= {TARGET_P99_MS:.0f} ms"


def _met(r: ScenarioResult) -> bool:
    per_s = TARGET_HOLDS_PER_S if r.scenario == "holds" else TARGET_BOOKINGS_PER_S
    return r.per_s >= per_s and r.p99_ms <= TARGET_P99_MS


def ratios(results: list[ScenarioResult]) -> dict[str, float]:
    by = {(r.side, r.scenario): r for r in results}
    out = {}
    for scenario in ("holds", "bookings"):
        mesh, single = by.get(("mesh", scenario)), by.get(("single", scenario))
        if mesh and single and single.per_s > 0:
            out[scenario] = round(mesh.per_s / single.per_s, 2)
    return out


def table(results: list[ScenarioResult]) -> str:
    ratio = ratios(results)
    head = (
        f"{'scenario':16s} {'target':26s} {'req/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} "
        f"{'errors':>6s} {'met':>4s} {'mesh/single':>11s}  {'hold p50/p99 ms':>15s}  "
        f"{'cores client/server/machine':>27s}  invariant"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        name = f"{r.side} {'holds' if r.scenario == 'holds' else 'bookings'}"
        rt = ratio.get(r.scenario)
        ratio_text = (
            f"{rt:.2f}{' ok' if rt >= TARGET_MESH_RATIO else ' <0.5'}"
            if (rt is not None and r.side == "mesh")
            else ""
        )
        hold = r.requests.get("hold")
        hold_text = f"{hold.p50_ms}/{hold.p99_ms}" if (hold and r.scenario == "bookings") else ""
        inv = r.invariant
        inv_text = (
            ""
            if inv is None
            else (
                f"ok ({inv['confirmed_answers']} rows)"
                if inv["ok"]
                else f"VIOLATED ({inv['overlaps']} overlaps, {inv['missing_rows']} missing)"
            )
        )
        lines.append(
            f"{name:16s} {_target(r.scenario):26s} {r.per_s:8.1f} {r.p50_ms:7.1f} "
            f"{r.p99_ms:7.1f} {r.errors:6d} {'yes' if _met(r) else 'no':>4s} {ratio_text:>11s}  "
            f"{hold_text:>15s}  "
            f"{f'{r.client_cores}/{r.server_cores}/{r.machine_cores}':>27s}  {inv_text}"
        )
    return "\n".join(lines)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# -- main ---------------------------------------------------------------------------------------


OVERLOAD_SIDES = {"off": ("shedding off", 0), "on": ("shedding on", None)}


def run_overload(args: argparse.Namespace) -> tuple[dict[str, Any], list[OverloadResult]]:
    """The mesh twice, shedding off then on, each flooded with ``--connections`` clients."""
    headers = {}
    if token := os.environ.get("CALLMESH_API_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    logs = Path(args.log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    load_before = _load()
    stores = asyncio.run(prepare_stores(args))
    first = datetime.now(ZoneInfo("America/New_York")).date() + timedelta(days=FIRST_DAY_AHEAD)
    results: list[OverloadResult] = []
    url = f"http://127.0.0.1:{args.mesh_port}"
    try:
        for name in args.overload_sides.split(","):
            side, limit = OVERLOAD_SIDES[name]
            env = {} if limit is None else {"CALLMESH_ADMISSION_MAX_IN_FLIGHT": str(limit)}
            print(f"starting the mesh, {side} (load {_load()})", file=sys.stderr, flush=True)
            server = mesh_server(
                stores, args.mesh_port, logs / f"mesh-overload-{name}.log", headers,
                Path(args.serve_config), extra_env=env,
                # Bench units only; a second `up` on one database cannot load the demo again
                # (its demo calls are keyed by date and collide).
                up_args=("--no-demo",),
            )  # fmt: skip
            clients = ("straight back",) if limit == 0 else ("straight back", "Retry-After")
            with server as proc:
                for client in clients:
                    result = OverloadResult(
                        side=side,
                        client=client,
                        admission_max_in_flight=limit,
                        connections=args.connections,
                        seconds=args.seconds,
                    )
                    cells = Cells(HOLD_PREFIX, stores.units, first)
                    httpload.run(
                        overload.flood(
                            url,
                            cells.take,
                            result,
                            headers=headers,
                            warmup_seconds=args.warmup,
                            cpu=CpuWindow(proc.pid),
                        )
                    )
                    results.append(result)
                    line = overload.table([result]).splitlines()[-1]
                    print(line, file=sys.stderr, flush=True)
                    asyncio.run(forget_holds(stores, HOLD_PREFIX))
    finally:
        asyncio.run(cleanup_stores(stores, args.pg_admin))
    report = {
        "mode": "overload",
        "seconds": args.seconds,
        "connections": args.connections,
        "warmup_seconds": args.warmup,
        "serve_config": args.serve_config,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": _load(),
        "results": [asdict(r) for r in results],
    }
    return report, results


def run_bench(args: argparse.Namespace) -> tuple[dict[str, Any], list[ScenarioResult]]:
    headers = {}
    if token := os.environ.get("CALLMESH_API_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    logs = Path(args.log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    load_before = _load()
    stores = asyncio.run(prepare_stores(args))
    first = datetime.now(ZoneInfo("America/New_York")).date() + timedelta(days=FIRST_DAY_AHEAD)
    # One sequence of booking cells for the whole run: confirmed rows stay in PostgreSQL.
    book_cells = Cells(BOOK_PREFIX, stores.units, first)
    results: list[ScenarioResult] = []
    try:
        sides = ("mesh", "single") if args.only is None else (args.only,)
        for side in sides:
            print(f"starting {side} (load {_load()})", file=sys.stderr, flush=True)
            if side == "mesh":
                server = mesh_server(
                    stores, args.mesh_port, logs / "mesh.log", headers, Path(args.serve_config)
                )
                url = f"http://127.0.0.1:{args.mesh_port}"
            else:
                server = single_server(stores, args.single_port, logs / "single.log", headers)
                url = f"http://127.0.0.1:{args.single_port}"
            with server as proc:
                results += run_side(side, url, proc.pid, stores, book_cells, args, headers)
    finally:
        asyncio.run(cleanup_stores(stores, args.pg_admin))
    report = {
        "seconds": args.seconds,
        "connections": args.connections,
        "warmup_seconds": args.warmup,
        "units_per_scenario": args.units,
        "serve_config": args.serve_config,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": _load(),
        "results": [asdict(r) for r in results],
        "ratio_mesh_over_single": ratios(results),
        "invariant_ok": all(r.invariant["ok"] for r in results if r.invariant is not None),
    }
    return report, results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--connections", type=int, default=64, help="concurrent clients")
    parser.add_argument("--only", choices=("mesh", "single"), help="run one side only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds first")
    parser.add_argument("--units", type=int, default=500, help="bench units per scenario")
    parser.add_argument("--pg-admin", default=PG_ADMIN, help="where to create the scratch db")
    parser.add_argument("--database-url", help="use this database instead of a scratch one")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--mesh-port", type=int, default=8000)
    parser.add_argument(
        "--serve-config",
        default=str(REPO / "serve_config.yaml"),
        help="the Serve config `callmesh up` deploys (to measure a sizing change)",
    )
    parser.add_argument("--single-port", type=int, default=8001)
    parser.add_argument(
        "--overload",
        action="store_true",
        help="flood the mesh (shedding off, then on) instead of the mesh/single comparison",
    )
    parser.add_argument(
        "--overload-sides", default="off,on", help="which overload sides to run, in order"
    )
    parser.add_argument("--log-dir", default=str(REPO / ".callmesh" / "bench"))
    args = parser.parse_args(argv)
    if args.units < 1 or args.units > 9999:
        parser.error("--units must be between 1 and 9999")
    if not set(args.overload_sides.split(",")) <= set(OVERLOAD_SIDES):
        parser.error("--overload-sides is a comma-separated list of: off, on")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.overload:
        return _main_overload(args)
    report, results = run_bench(args)
    # With --json the JSON goes to stdout and the table to stderr, so one run gives both.
    out = sys.stderr if args.json else sys.stdout
    print(
        f"{args.connections} connections, {args.seconds:g} s per run "
        f"(+{args.warmup:g} s warm-up), {report['cpus']} CPUs, "
        f"load {report['load_before']} before / {report['load_after']} after",
        file=out,
    )
    print(table(results), file=out)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0 if report["invariant_ok"] else 1


def _main_overload(args: argparse.Namespace) -> int:
    report, results = run_overload(args)
    out = sys.stderr if args.json else sys.stdout
    print(
        f"overload: {args.connections} connections, {args.seconds:g} s per side "
        f"(+{args.warmup:g} s warm-up), {report['cpus']} CPUs, "
        f"load {report['load_before']} before / {report['load_after']} after",
        file=out,
    )
    print(overload.table(results), file=out)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
