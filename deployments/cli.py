"""``callmesh``: start, inspect and stop the mesh on this machine.

``callmesh up`` owns everything it starts: the embedded stores (only when it had to start
them), Ray and Serve. It records them in ``<data_dir>/mesh.json`` and stays in the foreground;
Ctrl-C, or ``callmesh down`` from another terminal, stops exactly those and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from services.embedded import pid_alive
from services.settings import Settings, get_settings

log = logging.getLogger("callmesh")

STATE_FILE = "mesh.json"
DEFAULT_CONFIG = "serve_config.yaml"
HEALTH_TIMEOUT_SECONDS = 180.0
# The tuned path measured in docs/architecture.md; an operator can still turn either off.
THROUGHPUT_FLAGS = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="callmesh", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the stores, Ray and Serve; stay in the foreground")
    up.add_argument("--config", default=DEFAULT_CONFIG, help="Serve config file")
    up.add_argument("--host", default=None, help="API host (default: CALLMESH_API_HOST)")
    up.add_argument("--port", type=int, default=None, help="API port (default: CALLMESH_API_PORT)")
    up.add_argument("--no-demo", action="store_true", help="do not load demo data")
    commands.add_parser("down", help="stop what `callmesh up` started")
    commands.add_parser("status", help="show applications, deployments and replicas")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # One line per health poll is noise; warnings still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = get_settings()
    if args.command == "up":
        sys.exit(up_command(settings, args))
    if args.command == "down":
        sys.exit(down_command(settings))
    sys.exit(status_command(settings))


# -- state file ---------------------------------------------------------------------------------


def state_path(settings: Settings) -> Path:
    return settings.data_dir.expanduser().resolve() / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any] | None:
    path = state_path(settings)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


# -- up -----------------------------------------------------------------------------------------


def up_command(settings: Settings, args: argparse.Namespace) -> int:
    state = read_state(settings)
    if state and pid_alive(int(state["pid"])):
        print(f"callmesh is already running (pid {state['pid']}): {state['api_url']}")
        return 1
    config_path = Path(args.config)
    if not config_path.is_file():
        print(f"no Serve config at {config_path}", file=sys.stderr)
        return 2
    host = args.host or settings.api_host
    port = args.port or settings.api_port

    from deployments.backends import prepare_database, resolve_storage
    from services.embedded import EmbeddedStores

    embedded = EmbeddedStores(settings.data_dir.expanduser().resolve())
    # Stop on the way out only the embedded servers this command had to start.
    started_postgres = settings.database_url is None and not embedded.postgres_running()
    started_redis = settings.redis_url is None and not embedded.redis_running()
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
        "api_url": f"http://{host}:{port}",
        "dashboard_url": f"http://127.0.0.1:{settings.dashboard_port}",
        "metrics_url": f"http://127.0.0.1:{settings.metrics_port}/metrics",
        "started_postgres": started_postgres,
        "started_redis": started_redis,
        "ray_address": None,
    }
    stop = threading.Event()
    try:
        state["ray_address"] = start_mesh(settings, config_path, host=host, port=port)
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
        print("Ctrl-C or `callmesh down` stops the mesh.")
        stop.wait()
        return 0
    finally:
        print("stopping the mesh")
        stop_mesh()
        if started_redis:
            embedded.stop_redis()
        if started_postgres:
            embedded.stop_postgres()
        state_path(settings).unlink(missing_ok=True)


def start_mesh(settings: Settings, config_path: Path, *, host: str, port: int) -> str:
    """Start Ray (dashboard, metrics port) and deploy the Serve config; return Ray's address."""
    import ray
    import yaml
    from ray.serve._private import api as serve_private_api
    from ray.serve.schema import ServeDeploySchema

    ray.init(
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=settings.dashboard_port,
        _metrics_export_port=settings.metrics_port,
        namespace="serve",
    )
    config = ServeDeploySchema.model_validate(yaml.safe_load(config_path.read_text()))
    http_options = config.http_options.model_dump()
    http_options.update(host=host, port=port)
    # What `serve run <config>` does: start Serve with the config's HTTP options, then
    # deploy its applications (the builders run inside the cluster).
    client = serve_private_api.serve_start(
        http_options=http_options,
        global_logging_config=config.logging_config,
    )
    client.deploy_apps(config, _blocking=False)
    return str(ray.get_runtime_context().gcs_address)


def stop_mesh() -> None:
    import ray

    if not ray.is_initialized():
        return
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


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
    if state is None or not pid_alive(int(state["pid"])):
        print("callmesh is not running")
        state_path(settings).unlink(missing_ok=True)
        return 0
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        print(f"callmesh (pid {pid}) is still stopping", file=sys.stderr)
        return 1
    print("callmesh stopped")
    return 0


def status_command(settings: Settings) -> int:
    """Applications, deployments and replicas, as the gateway's /healthz reports them (no
    second Ray driver needed, so it works wherever the API is reachable)."""
    import httpx

    state = read_state(settings)
    if state is None or not pid_alive(int(state["pid"])):
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


if __name__ == "__main__":
    main()
