"""Where `callmesh up` puts HAProxy's files and sends its access log, without starting Ray."""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments import haproxy_files, mesh_commands, mesh_state
from services.settings import Settings

pytestmark = pytest.mark.unit

HAPROXY_VARIABLES = [
    *haproxy_files.HAPROXY_PER_NODE_FILES,
    haproxy_files.HAPROXY_STATE_BASE,
    haproxy_files.HAPROXY_LOG_TARGET,
]


def _ray_haproxy_path_defaults() -> dict[str, str]:
    """Every HAProxy path Ray reads from the environment, with its default, from Ray's source."""
    import ray.serve._private.constants as constants

    source = Path(constants.__file__).read_text()
    return dict(re.findall(r'"(RAY_SERVE_HAPROXY_\w+)",\s*"(/[^"]*)"', source))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No operator overrides, whatever the machine running the tests has set."""
    for name in HAPROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def made_dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """The folders `private_haproxy` creates, recorded so a test can look after they are gone."""
    made: list[Path] = []
    real = tempfile.mkdtemp

    def record(*args: object, **kwargs: object) -> str:
        path = real(*args, **kwargs)  # type: ignore[call-overload]
        made.append(Path(path))
        return str(path)

    monkeypatch.setattr(haproxy_files.tempfile, "mkdtemp", record)
    yield made


def test_every_haproxy_path_ray_reads_goes_to_the_private_folder(tmp_path: Path):
    defaults = _ray_haproxy_path_defaults()
    # Ray 2.60: the config file, admin socket, server state base and file, metrics socket.
    assert len(defaults) >= 5, defaults
    assert all(value.startswith("/tmp/haproxy-serve") for value in defaults.values())
    env = haproxy_files.haproxy_env(tmp_path)
    assert set(defaults) <= set(env)
    for name in defaults:
        assert Path(env[name]).is_relative_to(tmp_path), name
    # The access log goes to a unix datagram socket there, not to syslog on 127.0.0.1:514.
    assert env[haproxy_files.HAPROXY_LOG_TARGET] == str(tmp_path / "access.sock")


def test_socket_paths_are_measured_as_haproxy_and_ray_use_them():
    # Ray: <folder>/<56-character node id>/admin.sock; HAProxy binds "<that>.<pid>.tmp" first.
    root = "/tmp/cmhp-abcd1234"
    sockets = haproxy_files.haproxy_socket_paths(haproxy_files.haproxy_env(Path(root)))
    admin, admin_bytes = sockets[haproxy_files.HAPROXY_ADMIN_SOCKET]
    assert admin == f"{root}/{'n' * 56}/admin.sock"
    assert admin_bytes == len(admin) + len(".4194303.tmp") == 98
    assert (
        sockets[haproxy_files.HAPROXY_METRICS_SOCKET][1]
        == len(f"{root}/{'n' * 56}/metrics.sock")
        == 88
    )
    assert sockets[haproxy_files.HAPROXY_LOG_TARGET] == (f"{root}/access.sock", 30)
    assert haproxy_files.haproxy_path_problems(haproxy_files.haproxy_env(Path(root))) == []


def test_a_socket_path_one_byte_too_long_is_refused():
    fixed = len(f"/{'n' * 56}/admin.sock.4194303.tmp")
    fits = "/" + "d" * (haproxy_files.SOCKET_PATH_MAX - fixed - 1)
    assert (
        haproxy_files.haproxy_path_problems(
            {haproxy_files.HAPROXY_ADMIN_SOCKET: f"{fits}/admin.sock"}
        )
        == []
    )
    problems = haproxy_files.haproxy_path_problems(
        {haproxy_files.HAPROXY_ADMIN_SOCKET: f"{fits}x/admin.sock"}
    )
    assert len(problems) == 1
    assert haproxy_files.HAPROXY_ADMIN_SOCKET in problems[0]
    assert "108 bytes" in problems[0]
    # A log target that is not a path (host:port syslog) has no such limit.
    assert (
        haproxy_files.haproxy_path_problems(
            {haproxy_files.HAPROXY_LOG_TARGET: "10.0.0.1:" + "5" * 200}
        )
        == []
    )


def test_the_private_folder_while_up_and_after(clean_env: None, made_dirs: list[Path], tmp_path):
    with haproxy_files.private_haproxy(tmp_path) as files:
        assert made_dirs == [files.root]
        info = files.root.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == os.getuid()
        assert files.root.parent == Path("/tmp")
        assert files.root.name.startswith("cmhp-")
        for name, value in haproxy_files.haproxy_env(files.root).items():
            assert os.environ[name] == value
        assert haproxy_files.haproxy_path_problems(os.environ) == []
        files.prepare_node("f" * 56)
        assert stat.S_IMODE((files.root / ("f" * 56)).stat().st_mode) == 0o700
        assert files.relay is not None
        assert files.relay.socket_path == files.root / "access.sock"
        assert files.relay.log_path == tmp_path / "logs" / "haproxy-access.log"
        assert files.relay.socket_path.exists()
    assert not files.root.exists()
    assert not any(name in os.environ for name in HAPROXY_VARIABLES)


def test_values_the_operator_set_win(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, made_dirs: list[Path], tmp_path
):
    monkeypatch.setenv(haproxy_files.HAPROXY_ADMIN_SOCKET, "/run/haproxy/admin.sock")
    monkeypatch.setenv(haproxy_files.HAPROXY_LOG_TARGET, "/dev/log")
    with haproxy_files.private_haproxy(tmp_path) as files:
        assert os.environ[haproxy_files.HAPROXY_ADMIN_SOCKET] == "/run/haproxy/admin.sock"
        assert os.environ[haproxy_files.HAPROXY_LOG_TARGET] == "/dev/log"
        assert files.relay is None  # the access log is the operator's to handle
        assert Path(os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]).parent == files.root
    assert os.environ[haproxy_files.HAPROXY_ADMIN_SOCKET] == "/run/haproxy/admin.sock"
    assert "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC" not in os.environ
    assert not made_dirs[0].exists()


def _args(config: Path) -> argparse.Namespace:
    return argparse.Namespace(config=str(config), host=None, port=None, no_demo=False)


def test_up_refuses_a_socket_path_too_long_before_starting_anything(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, made_dirs: list[Path], tmp_path, capsys
):
    config = tmp_path / "serve_config.yaml"
    config.write_text("applications: []\n")
    monkeypatch.delenv(haproxy_files.HAPROXY_ENABLE, raising=False)  # on by default
    monkeypatch.setenv(haproxy_files.HAPROXY_ADMIN_SOCKET, "/" + "d" * 60 + "/admin.sock")

    def run_mesh(*args: object) -> int:
        raise AssertionError("nothing may start")

    monkeypatch.setattr(mesh_commands, "run_mesh", run_mesh)
    settings = Settings(environment="test", data_dir=tmp_path)
    assert mesh_commands.up_command(settings, _args(config)) == 2
    err = capsys.readouterr().err
    assert haproxy_files.HAPROXY_ADMIN_SOCKET in err
    assert "shorter path" in err
    assert not made_dirs[0].exists()


def test_up_runs_the_mesh_inside_the_private_folder(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, made_dirs: list[Path], tmp_path
):
    config = tmp_path / "serve_config.yaml"
    config.write_text("applications: []\n")
    monkeypatch.delenv(haproxy_files.HAPROXY_ENABLE, raising=False)
    seen: dict[str, object] = {}

    def run_mesh(settings, args, config_path, haproxy) -> int:
        seen["root"] = haproxy.root
        seen["mode"] = stat.S_IMODE(haproxy.root.stat().st_mode)
        seen["socket"] = os.environ[haproxy_files.HAPROXY_ADMIN_SOCKET]
        seen["relay"] = haproxy.relay.socket_path.exists()
        return 0

    monkeypatch.setattr(mesh_commands, "run_mesh", run_mesh)
    settings = Settings(environment="test", data_dir=tmp_path)
    assert mesh_commands.up_command(settings, _args(config)) == 0
    root = made_dirs[0]
    assert seen == {"root": root, "mode": 0o700, "socket": f"{root}/admin.sock", "relay": True}
    assert not root.exists()
    assert haproxy_files.HAPROXY_ADMIN_SOCKET not in os.environ


def test_up_without_haproxy_makes_no_folder(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, made_dirs: list[Path], tmp_path
):
    config = tmp_path / "serve_config.yaml"
    config.write_text("applications: []\n")
    monkeypatch.setenv(haproxy_files.HAPROXY_ENABLE, "0")
    seen = []

    def run_mesh(settings, args, config_path, haproxy) -> int:
        seen.append(haproxy)
        return 0

    monkeypatch.setattr(mesh_commands, "run_mesh", run_mesh)
    assert (
        mesh_commands.up_command(Settings(environment="test", data_dir=tmp_path), _args(config))
        == 0
    )
    assert seen == [None]
    assert made_dirs == []


def test_the_folder_of_an_up_that_was_killed_is_removed_later(tmp_path):
    leftover = Path(tempfile.mkdtemp(prefix=haproxy_files.HAPROXY_DIR_PREFIX, dir="/tmp"))
    (leftover / "node").mkdir()
    settings = Settings(environment="test", data_dir=tmp_path)
    dead = {"pid": 2**22 + 7, "api_url": "x", "haproxy_dir": str(leftover)}
    mesh_state.state_path(settings).write_text(json.dumps(dead))
    assert mesh_commands.down_command(settings) == 0
    assert not leftover.exists()


@pytest.mark.parametrize("name", ["not-ours", "cmhp-elsewhere"])
def test_only_a_folder_of_ours_is_removed(tmp_path, name: str):
    other = tmp_path / name
    other.mkdir()
    haproxy_files.remove_leftover_haproxy_dir({"haproxy_dir": str(other)})
    assert other.exists()  # not in /tmp itself, so not one callmesh made
