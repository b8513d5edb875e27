"""Where `callmesh up`'s Ray listens, and that it is always a new local cluster, without
starting Ray."""

from __future__ import annotations

import os

import pytest

from deployments import local_ray

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", {"dashboard_host": "127.0.0.1", "_node_ip_address": "127.0.0.1"}),
        ("localhost", {"dashboard_host": "127.0.0.1", "_node_ip_address": "127.0.0.1"}),
        ("10.1.2.3", {"dashboard_host": "10.1.2.3", "_node_ip_address": "10.1.2.3"}),
        ("0.0.0.0", {"dashboard_host": "0.0.0.0"}),
    ],
)
def test_ray_binds_where_the_api_does(host: str, expected: dict[str, str]):
    assert local_ray.ray_bind_options(host) == expected


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("0.0.0.0", 8265, "http://127.0.0.1:8265"),
        ("::1", 8080, "http://[::1]:8080"),
        ("10.1.2.3", 8000, "http://10.1.2.3:8000"),
    ],
)
def test_urls_are_reachable_from_this_machine(host: str, port: int, url: str):
    assert local_ray.url_for(host, port) == url


def test_exposure_notes_name_what_ray_cannot_bind(monkeypatch):
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "18404")
    monkeypatch.delenv("RAY_SERVE_HAPROXY_METRICS_PORT", raising=False)
    notes = " ".join(local_ray.exposure_notes("127.0.0.1"))
    assert ":18404" in notes
    assert ":9101" in notes
    assert "gRPC" in notes
    assert local_ray.exposure_notes("0.0.0.0") == []
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    assert "HAProxy" not in " ".join(local_ray.exposure_notes("127.0.0.1"))


class _Stop(Exception):
    pass


def test_ray_is_always_a_new_local_cluster_on_loopback(monkeypatch):
    import ray
    from ray._private import ray_constants

    # An existing cluster named by the environment must not be joined (nor later shut down).
    monkeypatch.setenv("RAY_ADDRESS", "10.9.9.9:6379")
    monkeypatch.setenv(local_ray.RAY_CLUSTER_ENV, "1")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    calls: list[dict[str, object]] = []

    def record(**kwargs: object) -> None:
        calls.append(kwargs)
        raise _Stop

    monkeypatch.setattr(ray, "init", record)
    with pytest.raises(_Stop):
        local_ray.init_local_ray("127.0.0.1", namespace="serve")
    assert calls == [
        {
            "address": "local",
            "dashboard_host": "127.0.0.1",
            "_node_ip_address": "127.0.0.1",
            "namespace": "serve",
        }
    ]
    # Ray's processes, and this one, take the loopback address as the node's.
    assert os.environ[local_ray.RAY_CLUSTER_ENV] == "0"
    assert ray_constants.ENABLE_RAY_CLUSTER is False
