"""HAProxy in the session's real mesh: its files in a private folder, its access log masked.

The session sets HAProxy up as `callmesh up` does (``deployments.haproxy_files.private_haproxy``):
every path Ray lets us set points into a new /tmp/cmhp-* folder, mode 0700, and the access
log goes to a unix datagram socket there, read by the relay that masks it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import time
from pathlib import Path

import httpx
import pytest

from deployments.haproxy_files import SOCKET_PATH_MAX

from .conftest import Mesh

pytestmark = pytest.mark.integration

LOG_WAIT_SECONDS = 30.0
PHONE = "15551234567"


def _node_dir(mesh: Mesh) -> Path:
    (node_dir,) = [p for p in mesh.haproxy.root.iterdir() if p.is_dir()]
    return node_dir


def test_haproxys_files_live_in_the_private_folder(mesh: Mesh):
    root = mesh.haproxy.root
    node_dir = _node_dir(mesh)
    admin = node_dir / "admin.sock"
    assert root.parent == Path("/tmp")
    assert root.name.startswith("cmhp-")
    assert stat.S_ISSOCK(admin.stat().st_mode)
    for folder in (root, node_dir):
        info = folder.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700, folder
        assert info.st_uid == os.getuid()
    # Ray added its node id, as the length check assumes; HAProxy's temporary name still fits.
    assert len(node_dir.name) == 56
    assert len(os.fsencode(admin)) + len(".4194303.tmp") <= SOCKET_PATH_MAX
    assert not Path("/tmp/haproxy-serve", node_dir.name).exists()
    config = (node_dir / "haproxy.cfg").read_text()
    assert f"stats socket {admin} " in config
    assert f"log {root / 'access.sock'} local0 info" in config
    assert "/tmp/haproxy-serve" not in config
    # The HAProxy that serves the session runs from that config.
    running = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(node_dir / "haproxy.cfg").encode() in cmdline:
            running.append(entry.name)
    assert running


def _lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _lines_with(path: Path, marker: str, count: int) -> list[str]:
    """The lines holding ``marker``, once there are ``count`` of them (HAProxy logs a request
    when it ends) or the wait is over."""
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while True:
        found = [line for line in _lines_of(path) if marker in line]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_the_access_log_keeps_paths_masked_and_drops_query_values(
    mesh: Mesh, anonymous: httpx.AsyncClient
):
    assert mesh.haproxy.relay is not None
    log_path = mesh.haproxy.relay.log_path
    assert log_path == mesh.settings.data_dir / "logs" / "haproxy-access.log"
    marker = f"m{secrets.token_hex(6)}"
    # As an HTTP client sends them: the + of a phone number and the @ percent-encoded; a call
    # id named as LiveKit names a SIP room, the caller's number in it.
    for url in (
        f"/inventory/units/probe-{marker}?phone=%2B{PHONE}&email=jane.doe%40example.com",
        f"/calls/call-_%2B{PHONE}_{marker}",
    ):
        response = await anonymous.get(url)
        assert response.status_code < 500
    lines = await _lines_with(log_path, marker, 2)
    assert len(lines) == 2, lines
    assert f'"GET /inventory/units/probe-{marker}?phone&email HTTP/1.1"' in lines[0]
    assert f'"GET /calls/call-_***67_{marker} HTTP/1.1"' in lines[1]
    text = "\n".join(_lines_of(log_path))
    assert PHONE not in text
    assert "jane.doe" not in text
