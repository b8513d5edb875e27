"""The state file ``callmesh up`` writes (``<data_dir>/mesh.json``) and the process it names.

A pid alone does not name a process: the file also records the process's identity (its boot
and start time), so ``down`` never signals, and ``up`` never defers to, a stranger that was
given the same pid later.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Literal

from services.embedded import pid_alive
from services.settings import Settings

STATE_FILE = "mesh.json"


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
