"""Where the worker serves its metrics, and which directory its processes write them to.
(That a job process's tool latency reaches /metrics is tested with a real worker in
tests/integration/agent/test_worker_metrics.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentSettings
from agent.metrics import MULTIPROC_DIR_ENV, metrics_dir

pytestmark = pytest.mark.unit

_ENV = ("CALLMESH_AGENT_HOST", "CALLMESH_AGENT_METRICS_PORT", "CALLMESH_AGENT_METRICS_DIR")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*_ENV, MULTIPROC_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_metrics_are_served_on_localhost_9100_by_default(clean_env):
    settings = AgentSettings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.agent_host, settings.agent_metrics_port) == ("127.0.0.1", 9100)
    assert settings.agent_metrics_dir is None


def test_the_environment_moves_them(clean_env, tmp_path):
    clean_env.setenv("CALLMESH_AGENT_HOST", "0.0.0.0")
    clean_env.setenv("CALLMESH_AGENT_METRICS_PORT", "9200")
    clean_env.setenv("CALLMESH_AGENT_METRICS_DIR", str(tmp_path))
    settings = AgentSettings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.agent_host, settings.agent_metrics_port) == ("0.0.0.0", 9200)
    assert settings.agent_metrics_dir == tmp_path


def test_the_mesh_metrics_port_is_not_the_agents(clean_env):
    # The mesh's CALLMESH_METRICS_PORT (Ray, 8080) must not move the worker onto it.
    clean_env.setenv("CALLMESH_METRICS_PORT", "8080")
    assert AgentSettings(_env_file=None).agent_metrics_port == 9100  # type: ignore[call-arg]


def test_the_setting_names_the_directory_before_the_environment(tmp_path):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    settings = AgentSettings(_env_file=None, agent_metrics_dir=mine)  # type: ignore[call-arg]
    assert metrics_dir(settings, {MULTIPROC_DIR_ENV: str(theirs)}) == mine
    unset = AgentSettings(_env_file=None)  # type: ignore[call-arg]
    assert metrics_dir(unset, {MULTIPROC_DIR_ENV: str(theirs)}) == Path(theirs)
    assert metrics_dir(unset, {}) is None  # a new temporary directory, one per worker
