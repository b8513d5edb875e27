"""`make test` on a machine without the PostgreSQL and Redis servers: the tests that need them
fail with one sentence saying what is missing, where it was looked for and how to start it.
A pytest in a subprocess, pointed at a port where nothing listens; it reaches no server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# A small module whose tests run once against the servers and once against the embedded
# default; only the server ones are selected.
SERVER_BACKED = ("tests/integration/loadtest/test_invariant.py", "-k", "server")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound, never listening, and held until
    the test ends so nothing else takes it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def _pytest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in {**os.environ, **env}.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tests_that_need_the_servers_fail_with_one_sentence_when_they_are_missing(
    closed_port: int,
) -> None:
    redis_url = f"redis://127.0.0.1:{closed_port}/0"
    run = _pytest(
        *SERVER_BACKED,
        env={
            "CALLMESH_TEST_PG_ADMIN": f"postgresql://postgres:secret@127.0.0.1:{closed_port}/db",
            "CALLMESH_TEST_REDIS_URL": redis_url,
        },
    )
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "2 errors" in out
    assert (
        "These tests need a PostgreSQL and a Redis server, but "
        f"no PostgreSQL answered at postgresql://postgres:***@127.0.0.1:{closed_port}/db "
        "(CALLMESH_TEST_PG_ADMIN; ConnectionRefusedError) and "
        f"no Redis answered at {redis_url} (CALLMESH_TEST_REDIS_URL; ConnectionError): "
        "start them as .ci/run does (PostgreSQL on 127.0.0.1:5432"
    ) in out
    assert "or name running ones in CALLMESH_TEST_PG_ADMIN / CALLMESH_TEST_REDIS_URL" in out
    # One sentence per test, not a wall of tracebacks; and no password in the output.
    assert "Traceback" not in out and "site-packages" not in out
    assert "secret" not in out
