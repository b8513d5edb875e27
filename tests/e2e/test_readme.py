"""Follow the README on a clean clone: `make run`, the "Try it" commands, `make down`.

This is what a new user does, so it runs what they run: a fresh clone of the repository, a
fresh virtualenv made by the Makefile, the mesh on the embedded default (no DATABASE_URL /
REDIS_URL), and the README's own shell block, extracted from README.md and run by bash.

It is part of ``make test`` (about 90 s here: a virtualenv from pip's cache, Ray's start), so
a green CI proves the README works on a clean clone. It needs ports 8000, 8265 and 8080 free
(stop a running ``make run`` first); ``CALLMESH_E2E=0`` skips it, with that reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("CALLMESH_E2E") == "0", reason="CALLMESH_E2E=0 skips the README run"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
API = "http://127.0.0.1:8000"
UP_TIMEOUT_SECONDS = 600  # a fresh virtualenv plus Ray's start on 2 cores


def readme_block(heading: str) -> str:
    """The first ```sh block after a README heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"no sh block under '## {heading}'"
    return match.group(1)


def _get(path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(API + path, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    taken = [port for port in (8000, 8265, 8080) if _port_in_use(port)]
    if taken:
        pytest.fail(f"ports {taken} are taken: stop whatever serves them (make down?) and rerun")
    where = tmp_path_factory.mktemp("readme") / "callmesh"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(where)], check=True)
    yield where
    shutil.rmtree(where, ignore_errors=True)


def _port_in_use(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def mesh(clone: Path) -> Iterator[Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHON"] = sys.executable if sys.version_info[:2] == (3, 11) else "python3.11"
    log = (clone / "make-run.log").open("w")
    proc = subprocess.Popen(
        ["make", "run"],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + UP_TIMEOUT_SECONDS
    try:
        while True:
            printed = (clone / "make-run.log").read_text(errors="replace")
            if "Ctrl-C or `callmesh down` stops the mesh." in printed:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"make run did not come up:\n{printed[-4000:]}")
            time.sleep(2)
        yield clone
    finally:
        down = subprocess.run(
            ["make", "down"], cwd=clone, env=env, capture_output=True, text=True, timeout=180
        )
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"make run did not stop after make down:\n{down.stdout}{down.stderr}")
        log.close()


def test_make_run_prints_where_everything_is(mesh: Path) -> None:
    printed = (mesh / "make-run.log").read_text()
    for line in (
        "API        http://127.0.0.1:8000",
        "Dashboard  http://127.0.0.1:8265",
        "Metrics    http://127.0.0.1:8080",
    ):
        assert line in printed
    status, body = _get("/healthz")
    assert status == 200, body
    health = json.loads(body)
    assert health["postgres"] == "ok" and health["redis"] == "ok", health
    assert (mesh / ".callmesh" / "pg").is_dir(), "expected the embedded PostgreSQL"


def test_the_readme_try_it_block_runs_as_written(mesh: Path) -> None:
    script = "set -euo pipefail\n" + readme_block("Try it")
    done = subprocess.run(
        ["bash", "-c", script], cwd=mesh, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    assert '"error"' not in out, out
    assert '"reference"' in out  # the appointment and the rental were confirmed
    assert '"total_usd"' in out  # the call ended with its cost
    assert '"slots"' in out and '"service_type"' in out
    # The confirmed rental (the block's last booking; the appointment's comes first) is a row
    # the API can read back.
    bookings = re.findall(r'"booking_id":\s*"([0-9a-f-]{36})"', out)
    assert len(bookings) >= 2, out
    status, body = _get(f"/inventory/bookings/{bookings[-1]}")
    assert status == 200, body
    assert json.loads(body)["unit_id"] == "GEN-701"


def test_status_lists_the_applications(mesh: Path) -> None:
    done = subprocess.run(
        [str(mesh / ".venv" / "bin" / "callmesh"), "status"],
        cwd=mesh,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for app in ("inventory", "scheduling", "verification", "calls", "analytics"):
        assert app in done.stdout, done.stdout
