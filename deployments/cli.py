"""``callmesh``: start, inspect and stop the mesh on this machine.

``callmesh up`` owns everything it starts: the embedded stores (only when it had to start
them), Ray (always a new local cluster, never one it finds running) and Serve. It records them
in ``<data_dir>/mesh.json`` and stays in the foreground; Ctrl-C, or ``callmesh down`` from
another terminal, stops exactly those and nothing else. Every listener Ray lets it place binds
to ``--host`` (127.0.0.1 unless told otherwise). HAProxy's files and sockets live in a folder
of its own, mode 0700, removed on the way out; HAProxy's access log goes, masked, to
``<data_dir>/logs/haproxy-access.log`` (see :func:`private_haproxy`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from deployments.haproxy_log import AccessLogRelay
from services.embedded import pid_alive
from services.settings import Settings, get_settings

log = logging.getLogger("callmesh")

STATE_FILE = "mesh.json"
DEFAULT_CONFIG = "serve_config.yaml"
HEALTH_TIMEOUT_SECONDS = 180.0
DOWN_TIMEOUT_SECONDS = 60.0
# The tuned path measured in docs/architecture.md; an operator can still turn either off.
THROUGHPUT_FLAGS = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}

LOOPBACK = "127.0.0.1"
LOOPBACK_HOSTS = frozenset({LOOPBACK, "localhost", "::1"})
ALL_INTERFACES = frozenset({"0.0.0.0", "::", "*"})
# Ray reads this once, when it is first imported. At 0 Ray takes the loopback address as the
# node's address (as it does on macOS and Windows); its GCS, raylet, workers, agents and
# metrics export then listen on 127.0.0.1 only. Otherwise they listen on every interface.
RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Each Serve replica's inter-deployment gRPC server listens on every interface whatever the
# host: ray/serve/_private/replica.py binds it to "[::]:0" in `_on_initialized`.
# HAProxy's stats page and Prometheus exporter listen on every interface whatever the host:
# Ray's template binds them without an address (ray/serve/_private/haproxy_templates.py,
# `bind :{{ config.metrics_port }}` in `frontend prometheus` and `bind *:{{ config.stats_port }}`
# in `listen stats`) and Ray reads only their ports from the environment.
HAPROXY_STATS_PORT = ("RAY_SERVE_HAPROXY_STATS_PORT", 8404)
HAPROXY_METRICS_PORT = ("RAY_SERVE_HAPROXY_METRICS_PORT", 9101)

# HAProxy's files. Ray's defaults put them in /tmp/haproxy-serve/<node_id>/, a folder any local
# user can enter, with an admin socket at `mode 666 level admin expose-fd listeners` (Ray's
# template): anyone could reconfigure HAProxy or take its listening sockets. `callmesh up` points
# every path Ray reads from the environment (ray/serve/_private/constants.py) into a folder of
# its own, mode 0700. Ray's HAProxyManager adds the node id to each: <dir>/<node_id>/<name>.
HAPROXY_ENABLE = "RAY_SERVE_ENABLE_HA_PROXY"
HAPROXY_PER_NODE_FILES = {
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",  # also 500.http, the router's Lua
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",  # also HAProxy's stdout/stderr files
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",  # Ray's per-request metrics
}
HAPROXY_ADMIN_SOCKET = "RAY_SERVE_HAPROXY_SOCKET_PATH"
HAPROXY_METRICS_SOCKET = "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"
HAPROXY_STATE_BASE = "RAY_SERVE_HAPROXY_SERVER_STATE_BASE"  # a folder; Ray adds the node id
# Used as given (no node id): any target HAProxy's `log` takes; a path is a unix datagram socket.
HAPROXY_LOG_TARGET = "RAY_SERVE_HAPROXY_LOG_TARGET"
ACCESS_LOG_SOCKET = "access.sock"
ACCESS_LOG_FILE = Path("logs") / "haproxy-access.log"
# Short on purpose (not $TMPDIR, not the data folder): a unix socket path holds 107 bytes
# (sun_path is 108 with its NUL), and HAProxy first binds its admin socket as
# "<path>.<pid>.tmp" (src/sock_unix.c, "limit usually 97").
HAPROXY_DIR_PARENT = "/tmp"
HAPROXY_DIR_PREFIX = "cmhp-"
SOCKET_PATH_MAX = 107
RAY_NODE_ID_CHARS = 56  # 28 bytes in hex
PID_DIGITS_MAX = 7  # Linux pids stay below 2**22


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="callmesh", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the stores, Ray and Serve; stay in the foreground")
    up.add_argument("--config", default=DEFAULT_CONFIG, help="Serve config file")
    up.add_argument(
        "--host", default=None, help="address to listen on (default: CALLMESH_API_HOST)"
    )
    up.add_argument("--port", type=int, default=None, help="API port (default: CALLMESH_API_PORT)")
    up.add_argument("--no-demo", action="store_true", help="do not load demo data")
    commands.add_parser("down", help="stop what `callmesh up` started")
    commands.add_parser("status", help="show applications, deployments and replicas")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # One line per health poll is noise; warnings still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = get_settings()
    except ValidationError as exc:
        sys.exit(settings_refused(exc))
    if args.command == "up":
        sys.exit(up_command(settings, args))
    if args.command == "down":
        sys.exit(down_command(settings))
    sys.exit(status_command(settings))


def settings_refused(exc: ValidationError) -> int:
    """Print why the settings were refused, one line each, and the exit status (2)."""
    print("callmesh: the settings are not valid:", file=sys.stderr)
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        print(f"  {where + ': ' if where else ''}{message}", file=sys.stderr)
    return 2


# -- state file and the process it names --------------------------------------------------------


def state_path(settings: Settings) -> Path:
    return settings.data_dir.expanduser().resolve() / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any] | None:
    path = state_path(settings)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


def process_identity(pid: int) -> str | None:
    """What tells this process apart from a later one given the same pid: on Linux the boot
    and its start time in clock ticks since boot, elsewhere its start time as ``ps`` prints it.
    None when there is no such process (a zombie counts as gone)."""
    if not Path("/proc/self/stat").exists():
        return _ps_start_time(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    # The command name (field 2) may hold spaces and parentheses: count after the last ")".
    fields = stat.rsplit(")", 1)[1].split()
    state, start_ticks = fields[0], fields[19]
    if state in ("Z", "X"):
        return None
    return f"{boot}:{start_ticks}"


def _ps_start_time(pid: int) -> str | None:
    try:
        out = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


ProcessState = Literal["running", "stopped", "replaced"]


def recorded_process(state: dict[str, Any]) -> ProcessState:
    """Whether the ``callmesh up`` a state file names still runs: ``replaced`` when its pid is
    alive but belongs to another process (the pid was reused, or the file predates the
    identity record and cannot prove it)."""
    pid = int(state["pid"])
    if not pid_alive(pid):
        return "stopped"
    recorded = state.get("pid_identity")
    current = process_identity(pid)
    if current is None:
        return "stopped"
    return "running" if recorded == current else "replaced"


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


# -- HAProxy's folder and access log ------------------------------------------------------------


class HAProxyPathError(ValueError):
    """A socket path HAProxy would need is longer than a unix socket path may be."""


@dataclass
class HAProxyFiles:
    """The private folder HAProxy's files live in, and the relay of its access log (None when
    the operator sent the access log elsewhere)."""

    root: Path
    relay: AccessLogRelay | None

    def prepare_node(self, node_id: str) -> None:
        """Create the node's folder before Ray does (Ray's would have the umask's mode): 0700
        like its parent. Call after ``ray.init``, before Serve starts HAProxy."""
        (self.root / node_id).mkdir(mode=0o700, exist_ok=True)


def haproxy_env(root: Path) -> dict[str, str]:
    """The environment that puts every HAProxy path Ray reads into ``root``, and HAProxy's
    access log onto a unix datagram socket there."""
    env = {name: str(root / file) for name, file in HAPROXY_PER_NODE_FILES.items()}
    env[HAPROXY_STATE_BASE] = str(root)
    env[HAPROXY_LOG_TARGET] = str(root / ACCESS_LOG_SOCKET)
    return env


def haproxy_socket_paths(environ: Mapping[str, str]) -> dict[str, tuple[str, int]]:
    """Each unix socket HAProxy or Ray will bind or send to, for the paths ``environ`` names:
    variable -> (the path, as Ray derives it for a node; the bytes it needs)."""
    node_id = "n" * RAY_NODE_ID_CHARS
    sockets: dict[str, tuple[str, int]] = {}
    for name, suffix in (
        (HAPROXY_ADMIN_SOCKET, f".{'9' * PID_DIGITS_MAX}.tmp"),
        (HAPROXY_METRICS_SOCKET, ""),
    ):
        if environ.get(name):
            folder, file = os.path.split(environ[name])
            path = os.path.join(folder, node_id, file)
            sockets[name] = (path, len(os.fsencode(path + suffix)))
    target = environ.get(HAPROXY_LOG_TARGET, "")
    if target.startswith("/"):
        sockets[HAPROXY_LOG_TARGET] = (target, len(os.fsencode(target)))
    return sockets


def haproxy_path_problems(environ: Mapping[str, str]) -> list[str]:
    """Why HAProxy or Ray could not bind or reach a socket ``environ`` names: empty if none."""
    return [
        f"{name} makes HAProxy use the unix socket {path}: {size} bytes with the node id Ray "
        f"adds (and, for the admin socket, HAProxy's temporary name), over the "
        f"{SOCKET_PATH_MAX} a unix socket path may hold; set {name} to a shorter path"
        for name, (path, size) in haproxy_socket_paths(environ).items()
        if size > SOCKET_PATH_MAX
    ]


@contextlib.contextmanager
def private_haproxy(data_dir: Path) -> Iterator[HAProxyFiles]:
    """A new folder for HAProxy's files, mode 0700, named in the environment of the Ray
    processes to come (set before ``ray.init``), and the relay that writes HAProxy's access
    log, masked, to ``<data_dir>/logs/haproxy-access.log``. A variable the operator already
    set wins. On the way out (after Ray stopped): the relay stops, the folder and the
    variables set here are removed. :class:`HAProxyPathError` if a socket path is too long."""
    root = Path(tempfile.mkdtemp(prefix=HAPROXY_DIR_PREFIX, dir=HAPROXY_DIR_PARENT))
    applied: dict[str, str] = {}
    try:
        for name, value in haproxy_env(root).items():
            if name not in os.environ:
                os.environ[name] = applied[name] = value
        problems = haproxy_path_problems(os.environ)
        if problems:
            raise HAProxyPathError("; ".join(problems))
        relay = None
        if HAPROXY_LOG_TARGET in applied:
            relay = AccessLogRelay(root / ACCESS_LOG_SOCKET, data_dir / ACCESS_LOG_FILE)
            relay.start()
        else:
            log.warning(
                "HAProxy's access log goes to RAY_SERVE_HAPROXY_LOG_TARGET=%s, unmasked",
                os.environ[HAPROXY_LOG_TARGET],
            )
        try:
            yield HAProxyFiles(root, relay)
        finally:
            if relay is not None:
                relay.stop()
    finally:
        for name, value in applied.items():
            if os.environ.get(name) == value:
                del os.environ[name]
        shutil.rmtree(root, ignore_errors=True)


def remove_leftover_haproxy_dir(state: dict[str, Any]) -> None:
    """Remove the HAProxy folder a `callmesh up` that no longer runs recorded and could not
    remove (it was killed): only a folder of ours, by name, place and owner."""
    recorded = state.get("haproxy_dir")
    if not recorded:
        return
    path = Path(recorded)
    if path.parent != Path(HAPROXY_DIR_PARENT) or not path.name.startswith(HAPROXY_DIR_PREFIX):
        return
    try:
        info = path.lstat()
    except OSError:
        return
    if path.is_symlink() or not path.is_dir() or info.st_uid != os.getuid():
        return
    shutil.rmtree(path, ignore_errors=True)


def url_for(host: str, port: int) -> str:
    """Where a client on this machine reaches a listener bound to ``host``."""
    if host in ALL_INTERFACES:
        host = LOOPBACK
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def ray_bind_options(host: str) -> dict[str, Any]:
    """The ``ray.init`` arguments that put Ray's own listeners on ``host``: the dashboard's
    address, and the node address that Ray's gRPC servers, agents and metrics export bind to
    (the loopback address binds them to 127.0.0.1 only; any other binds most of them to every
    interface, which Ray offers no way to narrow)."""
    if host in ALL_INTERFACES:
        return {"dashboard_host": host}
    if host in LOOPBACK_HOSTS:
        return {"dashboard_host": LOOPBACK, "_node_ip_address": LOOPBACK}
    return {"dashboard_host": host, "_node_ip_address": host}


def init_local_ray(host: str, **options: Any) -> None:
    """Start a new local Ray whose listeners bind to ``host`` (see :func:`ray_bind_options`).

    ``address="local"``: never attach to a cluster found through ``RAY_ADDRESS`` or a
    ``ray start``; shutting that one down on the way out would not be ours to do."""
    bind = ray_bind_options(host)
    node_ip = bind.get("_node_ip_address")
    if node_ip == LOOPBACK:
        os.environ[RAY_CLUSTER_ENV] = "0"  # for every process Ray starts from this one
        from ray._private import ray_constants

        # This process may have imported Ray before the variable was set (a test session).
        ray_constants.ENABLE_RAY_CLUSTER = False
    import ray

    ray.init(address="local", **bind, **options)
    actual = ray.util.get_node_ip_address()
    wanted = _is_loopback(actual) if node_ip == LOOPBACK else node_ip in (None, actual)
    if not wanted:
        ray.shutdown()
        raise RuntimeError(f"Ray took {actual} as this node's address, not {node_ip}")


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def deploy_config(config_path: Path, *, host: str, port: int) -> str:
    """Start Serve on ``host:port`` and deploy the Serve config; return Ray's address."""
    import ray
    import yaml
    from ray.serve._private import api as serve_private_api
    from ray.serve.schema import ServeDeploySchema

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


def exposure_notes(host: str) -> list[str]:
    """What listens beyond ``host`` although asked not to: nothing Ray can be told about."""
    if host in ALL_INTERFACES:
        return []
    notes = [
        "each Serve replica's inter-deployment gRPC port listens on every interface "
        "(Ray binds it to [::]:0 and has no setting for it; Ray's token auth guards it)"
    ]
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        stats, metrics = (
            int(os.environ.get(n) or p) for n, p in (HAPROXY_STATS_PORT, HAPROXY_METRICS_PORT)
        )
        notes.append(
            f"HAProxy's stats page (:{stats}) and Prometheus exporter (:{metrics}) listen on "
            "every interface; Ray has no setting for their address"
        )
    return notes


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


def signal_process(pid: int, identity: str, signum: int) -> bool:
    """Send ``signum`` to ``pid`` only if it is still the process ``identity`` names; False
    (and no signal) otherwise. On Linux a pidfd pins the process between check and signal."""
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        if process_identity(pid) != identity:
            return False
        if pidfd is None:
            os.kill(pid, signum)
        else:
            signal.pidfd_send_signal(pidfd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


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


if __name__ == "__main__":
    main()
