"""What counts as a running process when the embedded servers are stopped or looked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.embedded import EmbeddedStores, pid_alive

pytestmark = pytest.mark.unit

READS_UNTIL_CLOSED = [sys.executable, "-c", "import sys; sys.stdin.read()"]


def test_a_running_process_is_alive_and_a_reaped_one_is_not():
    child = subprocess.Popen(READS_UNTIL_CLOSED, stdin=subprocess.PIPE)
    try:
        assert pid_alive(child.pid)
    finally:
        child.communicate(b"")
    assert not pid_alive(child.pid)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are read from /proc")
def test_a_zombie_counts_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Returns once the child has exited, without reaping it: it is a zombie now.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert not pid_alive(child.pid)
    finally:
        child.wait()


def test_a_redis_pidfile_naming_another_process_is_not_a_running_redis(tmp_path: Path):
    # A Redis that was killed leaves its pidfile; the pid may go to an unrelated process later.
    stores = EmbeddedStores(tmp_path)
    stores.redis_dir.mkdir()
    other = subprocess.Popen(READS_UNTIL_CLOSED, stdin=subprocess.PIPE)
    try:
        stores.redis_pidfile.write_text(f"{other.pid}\n")
        assert not stores.redis_running()
        stores.stop_redis(grace_seconds=0.1)
        assert other.poll() is None  # neither SIGTERM nor SIGKILL reached it
    finally:
        other.kill()
        other.wait()
