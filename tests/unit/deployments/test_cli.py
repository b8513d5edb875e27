"""The callmesh command's bookkeeping, without starting anything."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deployments import mesh_commands, mesh_state
from services.settings import Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def _settings(tmp_path) -> Settings:
    return Settings(environment="test", data_dir=tmp_path)


def test_down_and_status_when_nothing_runs(tmp_path, capsys):
    settings = _settings(tmp_path)
    assert mesh_commands.down_command(settings) == 0
    assert mesh_commands.status_command(settings) == 3
    assert capsys.readouterr().out.count("not running") == 2


def test_a_stale_state_file_is_not_a_running_mesh(tmp_path):
    settings = _settings(tmp_path)
    # A pid far above pid_max: no such process.
    mesh_state.state_path(settings).write_text(json.dumps({"pid": 2**22 + 7, "api_url": "x"}))
    assert mesh_commands.down_command(settings) == 0
    assert not mesh_state.state_path(settings).exists()


def test_up_refuses_while_another_up_is_alive(tmp_path, capsys):
    settings = _settings(tmp_path)
    mesh_state.state_path(settings).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "pid_identity": mesh_state.process_identity(os.getpid()),
                "api_url": "http://127.0.0.1:8000",
            }
        )
    )
    args = argparse.Namespace(config="serve_config.yaml", host=None, port=None, no_demo=False)
    assert mesh_commands.up_command(settings, args) == 1
    assert "already running" in capsys.readouterr().out


def test_up_needs_a_config_file(tmp_path, capsys):
    args = argparse.Namespace(
        config=str(tmp_path / "missing.yaml"), host=None, port=None, no_demo=False
    )
    assert mesh_commands.up_command(_settings(tmp_path), args) == 2


# -- the recorded process: a pid is not enough ---------------------------------------------------


@pytest.fixture
def sleeper():
    """A process that stands in for `callmesh up` (or for a stranger that reused its pid)."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def _record(settings: Settings, pid: int, identity: str | None) -> None:
    state = {"pid": pid, "api_url": "http://127.0.0.1:8000", "dashboard_url": "x"}
    if identity is not None:
        state["pid_identity"] = identity
    mesh_state.state_path(settings).write_text(json.dumps(state))


def test_process_identity_tells_processes_apart(sleeper):
    mine = mesh_state.process_identity(os.getpid())
    assert mine is not None
    assert mesh_state.process_identity(os.getpid()) == mine
    assert mesh_state.process_identity(sleeper.pid) not in (None, mine)
    assert mesh_state.process_identity(2**22 + 7) is None


def test_down_stops_the_process_it_recorded(tmp_path, sleeper, capsys):
    settings = _settings(tmp_path)
    _record(settings, sleeper.pid, mesh_state.process_identity(sleeper.pid))
    assert mesh_state.recorded_process(mesh_state.read_state(settings) or {}) == "running"
    assert mesh_commands.down_command(settings) == 0
    assert sleeper.wait() == -signal.SIGTERM
    assert "callmesh stopped" in capsys.readouterr().out


@pytest.mark.parametrize("identity", ["another-boot:12345", None], ids=["reused", "unrecorded"])
def test_down_refuses_to_signal_a_process_that_reused_the_pid(
    tmp_path, sleeper, capsys, identity: str | None
):
    settings = _settings(tmp_path)
    _record(settings, sleeper.pid, identity)
    assert mesh_commands.down_command(settings) == 1
    assert sleeper.poll() is None  # not signalled
    err = capsys.readouterr().err
    assert f"pid {sleeper.pid}" in err
    assert "not signalling it" in err


def test_signal_process_checks_identity_first(sleeper):
    assert not mesh_state.signal_process(sleeper.pid, "another-boot:12345", signal.SIGTERM)
    assert sleeper.poll() is None
    assert mesh_state.signal_process(
        sleeper.pid, mesh_state.process_identity(sleeper.pid) or "", signal.SIGTERM
    )
    assert sleeper.wait() == -signal.SIGTERM


def test_a_reused_pid_is_not_a_running_mesh(tmp_path, sleeper, capsys):
    settings = _settings(tmp_path)
    _record(settings, sleeper.pid, "another-boot:12345")
    assert mesh_commands.status_command(settings) == 3
    args = argparse.Namespace(
        config=str(tmp_path / "missing.yaml"), host=None, port=None, no_demo=False
    )
    # Not "already running": up goes on (and stops here, at the missing config).
    assert mesh_commands.up_command(settings, args) == 2
    assert "already running" not in capsys.readouterr().out


def test_up_in_production_without_a_token_refuses_to_start_with_a_sentence(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CALLMESH_") and k != "PYTHONPATH"
    }
    env |= {
        "CALLMESH_ENVIRONMENT": "production",
        "CALLMESH_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [sys.executable, "-c", "from deployments.cli import main; main(['up'])"],
        cwd=tmp_path,  # no .env of the repository
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "CALLMESH_ENVIRONMENT=production needs CALLMESH_API_TOKEN" in done.stderr
    assert not (tmp_path / "data").exists()  # nothing was started
