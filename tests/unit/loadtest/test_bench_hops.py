"""bench_hops starts Ray as `callmesh up` does: HAProxy's files in a private folder and its
access log through the masking relay, never Ray's world-enterable /tmp/haproxy-serve or syslog.
Checked without starting Ray."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from deployments import haproxy_files
from loadtest import bench_hops

pytestmark = pytest.mark.unit

HAPROXY_VARIABLES = [
    *haproxy_files.HAPROXY_PER_NODE_FILES,
    haproxy_files.HAPROXY_STATE_BASE,
    haproxy_files.HAPROXY_LOG_TARGET,
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in HAPROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_with_the_haproxy_ingress_every_path_goes_to_a_private_folder_removed_after(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(haproxy_files.HAPROXY_ENABLE, "1")
    with bench_hops._haproxy_files() as haproxy:
        assert haproxy is not None and haproxy.relay is not None
        root = haproxy.root
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        for name in HAPROXY_VARIABLES:
            assert Path(os.environ[name]).is_relative_to(root), name
        access_log = haproxy.relay.log_path
        assert access_log.parent.is_dir()
    assert not root.exists()
    assert not access_log.parent.parent.exists()  # the scratch data folder
    assert not any(name in os.environ for name in HAPROXY_VARIABLES)


def test_without_the_haproxy_ingress_nothing_is_set_up(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(haproxy_files.HAPROXY_ENABLE, "0")
    with bench_hops._haproxy_files() as haproxy:
        assert haproxy is None
        assert not any(name in os.environ for name in HAPROXY_VARIABLES)
