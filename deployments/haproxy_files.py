"""HAProxy's files, sockets and access log, in a folder of their own.

Ray's defaults put HAProxy's files where any local user can reach them; ``callmesh up`` (and
the benchmarks and test sessions that start Ray as it does) points every path Ray reads into a
new folder, mode 0700, removed on the way out, and relays HAProxy's access log, masked, to
``<data_dir>/logs/haproxy-access.log`` (see :func:`private_haproxy`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployments.haproxy_log import AccessLogRelay

log = logging.getLogger("callmesh")

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
