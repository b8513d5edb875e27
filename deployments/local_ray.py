"""A new local Ray and Serve for this machine, and where their listeners bind.

Every listener Ray lets us place binds to the host asked for (127.0.0.1 unless told
otherwise); :func:`exposure_notes` names those Ray offers no setting for.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
LOOPBACK_HOSTS = frozenset({LOOPBACK, "localhost", "::1"})
ALL_INTERFACES = frozenset({"0.0.0.0", "::", "*"})
# Ray reads this once, when it is first imported. At 0 Ray takes the loopback address as the
# node's address (as it does on macOS and Windows); its GCS, raylet, workers, agents and
# metrics export then listen on 127.0.0.1 only. Otherwise they listen on every interface.
RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Each Serve replica's inter-deployment gRPC server listens on every interface whatever the
# host: ray/serve/_private/replica.py binds it to "[::]:0" in `_on_initialized`.
# HAProxy's stats page and Prometheus exporter listen on every interface whatever the host:
# Ray's template binds them without an address (ray/serve/_private/haproxy_templates.py,
# `bind :{{ config.metrics_port }}` in `frontend prometheus` and `bind *:{{ config.stats_port }}`
# in `listen stats`) and Ray reads only their ports from the environment.
HAPROXY_STATS_PORT = ("RAY_SERVE_HAPROXY_STATS_PORT", 8404)
HAPROXY_METRICS_PORT = ("RAY_SERVE_HAPROXY_METRICS_PORT", 9101)


def url_for(host: str, port: int) -> str:
    """Where a client on this machine reaches a listener bound to ``host``."""
    if host in ALL_INTERFACES:
        host = LOOPBACK
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def ray_bind_options(host: str) -> dict[str, Any]:
    """The ``ray.init`` arguments that put Ray's own listeners on ``host``: the dashboard's
    address, and the node address that Ray's gRPC servers, agents and metrics export bind to
    (the loopback address binds them to 127.0.0.1 only; any other binds most of them to every
    interface, which Ray offers no way to narrow)."""
    if host in ALL_INTERFACES:
        return {"dashboard_host": host}
    if host in LOOPBACK_HOSTS:
        return {"dashboard_host": LOOPBACK, "_node_ip_address": LOOPBACK}
    return {"dashboard_host": host, "_node_ip_address": host}


def init_local_ray(host: str, **options: Any) -> None:
    """Start a new local Ray whose listeners bind to ``host`` (see :func:`ray_bind_options`).

    ``address="local"``: never attach to a cluster found through ``RAY_ADDRESS`` or a
    ``ray start``; shutting that one down on the way out would not be ours to do."""
    bind = ray_bind_options(host)
    node_ip = bind.get("_node_ip_address")
    if node_ip == LOOPBACK:
        os.environ[RAY_CLUSTER_ENV] = "0"  # for every process Ray starts from this one
        from ray._private import ray_constants

        # This process may have imported Ray before the variable was set (a test session).
        ray_constants.ENABLE_RAY_CLUSTER = False
    import ray

    ray.init(address="local", **bind, **options)
    actual = ray.util.get_node_ip_address()
    wanted = _is_loopback(actual) if node_ip == LOOPBACK else node_ip in (None, actual)
    if not wanted:
        ray.shutdown()
        raise RuntimeError(f"Ray took {actual} as this node's address, not {node_ip}")


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def deploy_config(config_path: Path, *, host: str, port: int) -> str:
    """Start Serve on ``host:port`` and deploy the Serve config; return Ray's address."""
    import ray
    import yaml
    from ray.serve._private import api as serve_private_api
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(config_path.read_text()))
    http_options = config.http_options.model_dump()
    http_options.update(host=host, port=port)
    # What `serve run <config>` does: start Serve with the config's HTTP options, then
    # deploy its applications (the builders run inside the cluster).
    client = serve_private_api.serve_start(
        http_options=http_options,
        global_logging_config=config.logging_config,
    )
    client.deploy_apps(config, _blocking=False)
    return str(ray.get_runtime_context().gcs_address)


def exposure_notes(host: str) -> list[str]:
    """What listens beyond ``host`` although asked not to: nothing Ray can be told about."""
    if host in ALL_INTERFACES:
        return []
    notes = [
        "each Serve replica's inter-deployment gRPC port listens on every interface "
        "(Ray binds it to [::]:0 and has no setting for it; Ray's token auth guards it)"
    ]
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        stats, metrics = (
            int(os.environ.get(n) or p) for n, p in (HAPROXY_STATS_PORT, HAPROXY_METRICS_PORT)
        )
        notes.append(
            f"HAProxy's stats page (:{stats}) and Prometheus exporter (:{metrics}) listen on "
            "every interface; Ray has no setting for their address"
        )
    return notes


def stop_mesh() -> None:
    import ray

    if not ray.is_initialized():
        return
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
