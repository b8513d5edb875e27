"""What ``callmesh up``, ``callmesh down`` and ``callmesh status`` do.

``up`` starts, in this order, the embedded stores it has to, HAProxy's private folder, a new
local Ray and Serve, records them in the state file and waits in the foreground; whatever it
started it stops on the way out (Ctrl-C, ``down``'s SIGTERM, or a failure while starting).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from deployments.haproxy_files import (
    HAPROXY_ENABLE,
    HAProxyFiles,
    HAProxyPathError,
    private_haproxy,
    remove_leftover_haproxy_dir,
)
from deployments.local_ray import (
    deploy_config,
    exposure_notes,
    init_local_ray,
    stop_mesh,
    url_for,
)
from deployments.mesh_state import (
    process_identity,
    read_state,
    recorded_process,
    signal_process,
    state_path,
)
from services.settings import Settings

log = logging.getLogger("callmesh")

HEALTH_TIMEOUT_SECONDS = 180.0
DOWN_TIMEOUT_SECONDS = 60.0
# The tuned path measured in docs/architecture.md; an operator can still turn either off.
THROUGHPUT_FLAGS = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


# -- up -----------------------------------------------------------------------------------------


def up_command(settings: Settings, args: argparse.Namespace) -> int:
    state = read_state(settings)
    if state and recorded_process(state) == "running":
        print(f"callmesh is already running (pid {state['pid']}): {state['api_url']}")
        return 1
    if state:
        remove_leftover_haproxy_dir(state)
    config_path = Path(args.config)
    if not config_path.is_file():
        print(f"no Serve config at {config_path}", file=sys.stderr)
        return 2
    haproxy_files: contextlib.AbstractContextManager[HAProxyFiles | None] = (
        private_haproxy(settings.data_dir.expanduser().resolve())
        if os.environ.get(HAPROXY_ENABLE, THROUGHPUT_FLAGS[HAPROXY_ENABLE]) == "1"
        else contextlib.nullcontext()
    )
    try:
        # Leaving `with`, after the mesh stopped, stops the access log relay and removes
        # HAProxy's folder.
        with haproxy_files as haproxy:
            return run_mesh(settings, args, config_path, haproxy)
    except HAProxyPathError as exc:
        print(exc, file=sys.stderr)
        return 2


def run_mesh(
    settings: Settings,
    args: argparse.Namespace,
    config_path: Path,
    haproxy: HAProxyFiles | None,
) -> int:
    host = args.host or settings.api_host
    port = args.port or settings.api_port

    from deployments.store_setup import prepare_database, resolve_storage
    from services.embedded import EmbeddedStores

    embedded = EmbeddedStores(settings.data_dir.expanduser().resolve())
    # Stop on the way out only the embedded servers this command had to start.
    started_postgres = settings.database_url is None and not embedded.postgres_running()
    started_redis = settings.redis_url is None and not embedded.redis_running()
    started_ray = False
    stop = threading.Event()
    # From here on anything may fail (a migration, the demo data, Ray): `finally` stops
    # whatever was started by then.
    try:
        settings = resolve_storage(settings)
        asyncio.run(prepare_database(settings, load_demo=not args.no_demo))

        # Replicas, the Serve controller and the config's builders run in processes Ray starts
        # from this one: they inherit the resolved storage and the throughput flags.
        os.environ["DATABASE_URL"] = str(settings.database_url)
        os.environ["REDIS_URL"] = str(settings.redis_url)
        os.environ["CALLMESH_DATA_DIR"] = str(settings.data_dir)
        for name, value in THROUGHPUT_FLAGS.items():
            os.environ.setdefault(name, value)

        state = {
            "pid": os.getpid(),
            "pid_identity": process_identity(os.getpid()),
            "api_url": url_for(host, port),
            "dashboard_url": url_for(host, settings.dashboard_port),
            "metrics_url": url_for(host, settings.metrics_port) + "/metrics",
            "started_postgres": started_postgres,
            "started_redis": started_redis,
            "ray_address": None,
            "haproxy_dir": str(haproxy.root) if haproxy else None,
        }
        init_local_ray(
            host,
            include_dashboard=True,
            dashboard_port=settings.dashboard_port,
            _metrics_export_port=settings.metrics_port,
            namespace="serve",
        )
        started_ray = True
        if haproxy is not None:
            import ray

            haproxy.prepare_node(ray.get_runtime_context().get_node_id())
        state["ray_address"] = deploy_config(config_path, host=host, port=port)
        state_path(settings).write_text(json.dumps(state, indent=2))
        # After ray.init, which installs handlers of its own: Ctrl-C and `callmesh down`
        # (SIGTERM) both end the wait below and run the cleanup in `finally`.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        if not wait_healthy(f"{state['api_url']}/healthz", stop):
            if stop.is_set():
                return 0
            print("the mesh did not become healthy; see the Ray dashboard logs", file=sys.stderr)
            return 1
        print(f"API        {state['api_url']}  (docs: {state['api_url']}/docs)")
        print(f"Dashboard  {state['dashboard_url']}")
        print(f"Metrics    {state['metrics_url']}")
        if haproxy is not None and haproxy.relay is not None:
            print(f"Access log {haproxy.relay.log_path}  (HAProxy, masked)")
        for note in exposure_notes(host):
            print(f"Note       {note}")
        print("Ctrl-C or `callmesh down` stops the mesh.")
        stop.wait()
        return 0
    finally:
        print("stopping what callmesh started")
        # Each step runs even if one before it failed: a Redis that will not die must not
        # leave PostgreSQL running.
        steps = [
            (started_ray, "Ray and Serve", stop_mesh),
            (started_redis, "the embedded Redis", embedded.stop_redis),
            (started_postgres, "the embedded PostgreSQL", embedded.stop_postgres),
        ]
        for started, what, stop_it in steps:
            if not started:
                continue
            try:
                stop_it()
            except Exception:
                log.exception("could not stop %s", what)
                print(f"could not stop {what}; see the log above", file=sys.stderr)
        state_path(settings).unlink(missing_ok=True)


def wait_healthy(url: str, stop: threading.Event) -> bool:
    import httpx

    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    while time.monotonic() < deadline and not stop.is_set():
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        stop.wait(1.0)
    return False


# -- down, status -------------------------------------------------------------------------------


def down_command(settings: Settings) -> int:
    state = read_state(settings)
    running = recorded_process(state) if state is not None else "stopped"
    if state is None or running == "stopped":
        print("callmesh is not running")
        if state is not None:
            remove_leftover_haproxy_dir(state)
        state_path(settings).unlink(missing_ok=True)
        return 0
    pid = int(state["pid"])
    if running == "replaced" or not signal_process(pid, state["pid_identity"], signal.SIGTERM):
        why = (
            "now belongs to another process"
            if state.get("pid_identity")
            else "may belong to another process (the file does not say which process wrote it)"
        )
        print(
            f"pid {pid}, recorded in {state_path(settings)}, {why}; not signalling it. "
            "If a mesh is still running, stop it with Ctrl-C where it runs.",
            file=sys.stderr,
        )
        return 1
    deadline = time.monotonic() + DOWN_TIMEOUT_SECONDS
    while process_identity(pid) == state["pid_identity"] and time.monotonic() < deadline:
        time.sleep(0.2)
    if process_identity(pid) == state["pid_identity"]:
        print(f"callmesh (pid {pid}) is still stopping", file=sys.stderr)
        return 1
    print("callmesh stopped")
    return 0


def status_command(settings: Settings) -> int:
    """Applications, deployments and replicas, as the gateway's /healthz reports them (no
    second Ray driver needed, so it works wherever the API is reachable)."""
    import httpx

    state = read_state(settings)
    if state is None or recorded_process(state) != "running":
        print("callmesh is not running")
        return 3
    print(f"API {state['api_url']}   dashboard {state['dashboard_url']}")
    try:
        response = httpx.get(f"{state['api_url']}/healthz", timeout=10)
        health: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError):
        print("the API does not answer yet")
        return 1
    print(f"postgres: {health.get('postgres')}   redis: {health.get('redis')}")
    applications = health.get("deployments")
    if not isinstance(applications, dict):
        print("deployments: unknown")
        return 1
    for app_name, app in sorted(applications.items()):
        print(f"{app_name}: {app['status']}")
        for dep_name, dep in app["deployments"].items():
            replicas = ", ".join(f"{n} {s}" for s, n in dep["replicas"].items()) or "none"
            print(f"  {dep_name}: {dep['status']} ({replicas})")
    return 0 if response.status_code == 200 else 1
