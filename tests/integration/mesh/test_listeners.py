"""What the session's mesh listens on: 127.0.0.1, as `callmesh up` binds it by default.

Every TCP listener of every process Ray started for the mesh (its GCS, raylet, workers and
agents, the Serve replicas, HAProxy) is read from /proc. The exceptions Ray offers no setting
for are named one by one (see ``deployments.local_ray``): HAProxy's stats page and Prometheus
exporter, and one inter-deployment gRPC port per Serve replica.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from deployments.local_ray import HAPROXY_METRICS_PORT, HAPROXY_STATS_PORT

pytestmark = pytest.mark.integration

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


@dataclass(frozen=True)
class Listener:
    pid: int
    name: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    return children


def ray_processes() -> set[int]:
    """The processes Ray started from this one (its GCS, raylet, dashboard and log monitor,
    and through the raylet every worker, agent, replica and HAProxy), not other children of
    the test session."""
    children = _children()
    found: set[int] = set()
    todo = []
    for child in children.get(os.getpid(), []):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"/ray/" in cmdline:
            todo.append(child)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    # Four host-order 32-bit words.
    address = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return address.ipv4_mapped or address


def _listening_sockets() -> dict[str, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """Socket inode -> (address, port) of every TCP listener in this network namespace."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN:
                host, port = local.split(":")
                sockets[inode] = (_address(host), int(port, 16))
    return sockets


def listeners_of(pids: set[int]) -> list[Listener]:
    sockets = _listening_sockets()
    found = []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue  # gone meanwhile
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in sockets:
                address, port = sockets[target[8:-1]]
                found.append(Listener(pid, name, address, port))
    return found


def test_the_scan_sees_listeners_and_their_addresses():
    with socket.socket() as local, socket.socket() as everywhere:
        local.bind(("127.0.0.1", 0))
        everywhere.bind(("0.0.0.0", 0))
        for s in (local, everywhere):
            s.listen()
        ports = {s.getsockname()[1]: s.getsockname()[0] for s in (local, everywhere)}
        mine = listeners_of({os.getpid()})
    assert {item.port: str(item.address) for item in mine if item.port in ports} == ports
    assert [item.address.is_loopback for item in mine if item.port in ports].count(True) == 1


def test_nothing_the_mesh_started_listens_beyond_loopback(mesh):
    listeners = listeners_of(ray_processes())
    api_port = urlsplit(mesh.url).port
    # The scan sees the mesh: its API (HAProxy) and Ray's own servers.
    assert any(item.port == api_port for item in listeners), listeners
    assert any(item.name == "gcs_server" for item in listeners), listeners
    haproxy_ports = {
        int(os.environ.get(name) or default)
        for name, default in (HAPROXY_STATS_PORT, HAPROXY_METRICS_PORT)
    }
    exposed = [item for item in listeners if not item.address.is_loopback]
    unexplained = [
        item
        for item in exposed
        if not (item.name == "haproxy" and item.port in haproxy_ports)
        and not item.name.startswith("ray::ServeRepli")
    ]
    assert unexplained == []
    # A replica's one inter-deployment gRPC port (bound to [::]:0 by Ray), nothing more.
    replicas = [item.pid for item in exposed if item.name.startswith("ray::ServeRepli")]
    assert len(replicas) == len(set(replicas)), exposed
