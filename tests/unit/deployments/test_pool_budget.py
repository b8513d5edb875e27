"""Every replica of serve_config.yaml at its max_replicas, each with a full pool, must fit in
PostgreSQL's default max_connections, with room left for superusers, migrations and
operators."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.settings import Settings

pytestmark = pytest.mark.unit

CONFIG = Path(__file__).resolve().parents[3] / "serve_config.yaml"
PG_DEFAULT_MAX_CONNECTIONS = 100
PG_SUPERUSER_RESERVED = 3  # superuser_reserved_connections' default
# Connections outside the replicas' pools: each application's builder migrates over a pool
# of 2 (deployments.store_setup.prepare_database) while replicas start, plus operators (psql,
# callmesh tools) and the test-drive sweep's spare.
HEADROOM = 20


def _pool_max(overrides: dict[str, object]) -> int:
    default = Settings.model_fields["pg_pool_max"].default
    return int(overrides.get("pg_pool_max", default))  # type: ignore[call-overload]


def test_every_replica_at_its_maximum_fits_in_postgres_default_max_connections():
    config = yaml.safe_load(CONFIG.read_text())
    opened = 0
    for app in config["applications"]:
        overrides = (app.get("args") or {}).get("settings") or {}
        for deployment in app["deployments"]:
            replicas = deployment["autoscaling_config"]["max_replicas"]
            opened += replicas * _pool_max(overrides)
    budget = PG_DEFAULT_MAX_CONNECTIONS - PG_SUPERUSER_RESERVED - HEADROOM
    assert opened <= budget, f"{opened} connections at max_replicas, budget {budget}"
