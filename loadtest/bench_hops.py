"""How many holds per second the mesh serves through one hop versus two, with and without
Ray Serve's throughput flags. The numbers behind docs/architecture.md.

Each run starts its own Ray (the flags are read when Serve's processes start), deploys two
applications over the real Redis reserve script, and drives both from one client process:

* ``/direct``: the proxy routes a hold straight to the replica that runs it (one hop).
* ``/via``: an ingress replica forwards the hold by DeploymentHandle to another (two hops).

Run: ``python -m loadtest.bench_hops --seconds 15 --connections 64`` (Redis from
``REDIS_URL``, default 127.0.0.1:6379). Compare the numbers of one run as ratios; the
absolute values depend on what else the machine is doing.

Ray starts as ``callmesh up`` starts it: a new local cluster on 127.0.0.1 and, with the HAProxy
ingress on, HAProxy's files in a private folder (mode 0700) and its access log masked into a
scratch folder, both removed after the run (:func:`deployments.haproxy_files.private_haproxy`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import FastAPI

from deployments.haproxy_files import HAPROXY_ENABLE, HAProxyFiles, private_haproxy
from deployments.local_ray import init_local_ray
from loadtest import httpload

_FLAGS = (HAPROXY_ENABLE, "RAY_SERVE_THROUGHPUT_OPTIMIZED")


def _build_apps(redis_url: str, max_ongoing: int) -> list[tuple[Any, str, str]]:
    from ray import serve
    from ray.serve.handle import DeploymentHandle

    from services.kv import create_redis
    from services.reservations import DAY, ReservationStore

    async def hold(store: ReservationStore) -> str:
        # A fresh resource per request: the benchmark measures the mesh, not contention.
        start = datetime.combine(
            datetime.now(UTC).date() + timedelta(days=30), datetime.min.time(), store.tz
        )
        hold = await store.reserve_cells(
            resource_id=f"bench-{secrets.token_hex(6)}",
            start=start,
            end=start + timedelta(days=1),
            cell_seconds=DAY,
            kind="rental",
            ttl_seconds=30,
        )
        return hold.hold_id

    direct_api = FastAPI()

    @serve.deployment(max_ongoing_requests=max_ongoing, ray_actor_options={"num_cpus": 0.25})
    @serve.ingress(direct_api)
    class Holds:
        def __init__(self) -> None:
            # The bench reserves cells only, which never touches PostgreSQL.
            self.store = ReservationStore(
                pool=None,  # type: ignore[arg-type]
                redis=create_redis(redis_url),
                tz=ZoneInfo("America/New_York"),
                prefix="bench",
            )

        @direct_api.post("/holds", status_code=201)
        async def http_hold(self) -> dict[str, str]:
            return {"hold_id": await hold(self.store)}

    # Serve allows one FastAPI ingress per application, so the far side of a hop is plain.
    @serve.deployment(max_ongoing_requests=max_ongoing, ray_actor_options={"num_cpus": 0.25})
    class HoldsBackend:
        def __init__(self) -> None:
            self.store = ReservationStore(
                pool=None,  # type: ignore[arg-type]
                redis=create_redis(redis_url),
                tz=ZoneInfo("America/New_York"),
                prefix="bench",
            )

        async def hold(self) -> str:
            return await hold(self.store)

    via_api = FastAPI()

    @serve.deployment(max_ongoing_requests=max_ongoing, ray_actor_options={"num_cpus": 0.25})
    @serve.ingress(via_api)
    class Forwarder:
        def __init__(self, holds: DeploymentHandle) -> None:
            self.holds = holds

        @via_api.post("/holds", status_code=201)
        async def http_hold(self) -> dict[str, str]:
            return {"hold_id": await self.holds.hold.remote()}

    return [
        (Holds.bind(), "direct", "/direct"),  # type: ignore[attr-defined]
        (Forwarder.bind(HoldsBackend.bind()), "via", "/via"),  # type: ignore[attr-defined]
    ]


async def _drive(
    url: str, seconds: float, connections: int, bodies: list[dict[str, str]] | None = None
) -> dict[str, float]:
    """POST ``url`` from ``connections`` keep-alive clients (:mod:`loadtest.httpload`, the one
    load generator of the benchmarks) for ``seconds``, after 50 warm-up requests."""
    parts = urlsplit(url)
    base, path = f"{parts.scheme}://{parts.netloc}", parts.path
    # Against the real inventory a taken day (409) is a hold answered too.
    answered = (201, 409) if bodies else (201,)
    ok: list[float] = []
    errors = 0
    sent = 0

    async def hold(conn: httpload.Connection, rec: httpload.Recorder, _: int) -> None:
        nonlocal sent, errors
        body = bodies[sent % len(bodies)] if bodies else {}
        sent += 1
        resp = await rec.timed("hold", conn, "POST", path, body)
        if rec is not warm_recorder:
            if resp.status in answered:
                ok.append(rec.by_name["hold"].latencies[-1])
            else:
                errors += 1

    warm_recorder = httpload.Recorder()
    warm = httpload.Connection(base)
    try:
        for _ in range(50):  # warm up the route and the replicas' connections
            await hold(warm, warm_recorder, 0)
    finally:
        await warm.close()
    _, elapsed = await httpload.run_closed_loop(
        base, hold, connections=connections, duration_seconds=seconds
    )
    ok.sort()
    return {
        "holds_per_s": round(len(ok) / elapsed, 1),
        "p50_ms": round(statistics.median(ok) * 1000, 1) if ok else 0.0,
        "p99_ms": round(ok[int(len(ok) * 0.99)] * 1000, 1) if ok else 0.0,
        "errors": errors,
    }


@contextlib.contextmanager
def _haproxy_files() -> Iterator[HAProxyFiles | None]:
    """With the HAProxy ingress on (this run's environment), what ``callmesh up`` sets up before
    Ray starts: HAProxy's private folder and the relay of its access log, here into a scratch
    data folder. Everything is removed on the way out, after Ray stopped."""
    if os.environ.get(HAPROXY_ENABLE) != "1":
        yield None
        return
    data_dir = Path(tempfile.mkdtemp(prefix="cmhops-"))
    try:
        with private_haproxy(data_dir) as haproxy:
            yield haproxy
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _one_run(seconds: float, connections: int, max_ongoing: int, port: int) -> dict[str, Any]:
    import ray
    from ray import serve

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    with _haproxy_files() as haproxy:
        # A new local Ray on 127.0.0.1, never a cluster found through RAY_ADDRESS (the
        # serve.shutdown() below would stop someone else's Serve).
        init_local_ray("127.0.0.1", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            if haproxy is not None:
                haproxy.prepare_node(ray.get_runtime_context().get_node_id())
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            for app, name, prefix in _build_apps(redis_url, max_ongoing):
                serve.run(app, name=name, route_prefix=prefix)
            time.sleep(2)  # let the proxy learn both routes
            result: dict[str, Any] = {f: os.environ.get(f, "0") for f in _FLAGS}
            for name in ("direct", "via"):
                url = f"http://127.0.0.1:{port}/{name}/holds"
                result[name] = httpload.run(_drive(url, seconds, connections))
            return result
        finally:
            serve.shutdown()
            ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--max-ongoing", type=int, default=256)
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument(
        "--url",
        help="instead: drive POST <url>/inventory/holds of a running mesh (callmesh up)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.url:
        print(json.dumps(httpload.run(_drive_mesh(args.url, args.seconds, args.connections))))
        return
    if args.child:
        print(json.dumps(_one_run(args.seconds, args.connections, args.max_ongoing, args.port)))
        return
    for flags in ("0", "1"):
        env = {**os.environ, **dict.fromkeys(_FLAGS, flags)}
        out = subprocess.run(
            [sys.executable, "-m", "loadtest.bench_hops", "--child", *_pass_on(args)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        print(lines[-1] if lines else f"run with flags={flags} failed:\n{out.stderr[-3000:]}")


async def _drive_mesh(url: str, seconds: float, connections: int) -> dict[str, float]:
    """Holds of every demo unit that needs nothing, day after day, through the real mesh."""
    units = ["GEN-701", "GEN-702", "CMP-801", "PRJ-901", "PAS-951", "SKS-301"]
    first = datetime.now(UTC).date() + timedelta(days=1)
    bodies = [
        {"unit_id": unit, "start": (first + timedelta(days=d)).isoformat()}
        for d in range(360)
        for unit in units
    ]
    return await _drive(f"{url.rstrip('/')}/inventory/holds", seconds, connections, bodies)


def _pass_on(args: argparse.Namespace) -> list[str]:
    return [
        "--seconds",
        str(args.seconds),
        "--connections",
        str(args.connections),
        "--max-ongoing",
        str(args.max_ongoing),
        "--port",
        str(args.port),
    ]


if __name__ == "__main__":
    main()
