"""The callmesh command's bookkeeping, without starting anything."""

from __future__ import annotations

import json
import os

import pytest

from deployments import cli
from services.settings import Settings

pytestmark = pytest.mark.unit


def _settings(tmp_path) -> Settings:
    return Settings(environment="test", data_dir=tmp_path)


def test_down_and_status_when_nothing_runs(tmp_path, capsys):
    settings = _settings(tmp_path)
    assert cli.down_command(settings) == 0
    assert cli.status_command(settings) == 3
    assert capsys.readouterr().out.count("not running") == 2


def test_a_stale_state_file_is_not_a_running_mesh(tmp_path):
    settings = _settings(tmp_path)
    # A pid far above pid_max: no such process.
    cli.state_path(settings).write_text(json.dumps({"pid": 2**22 + 7, "api_url": "x"}))
    assert cli.down_command(settings) == 0
    assert not cli.state_path(settings).exists()


def test_up_refuses_while_another_up_is_alive(tmp_path, capsys):
    settings = _settings(tmp_path)
    cli.state_path(settings).write_text(
        json.dumps({"pid": os.getpid(), "api_url": "http://127.0.0.1:8000"})
    )
    args = cli.argparse.Namespace(config="serve_config.yaml", host=None, port=None, no_demo=False)
    assert cli.up_command(settings, args) == 1
    assert "already running" in capsys.readouterr().out


def test_up_needs_a_config_file(tmp_path, capsys):
    args = cli.argparse.Namespace(
        config=str(tmp_path / "missing.yaml"), host=None, port=None, no_demo=False
    )
    assert cli.up_command(_settings(tmp_path), args) == 2
