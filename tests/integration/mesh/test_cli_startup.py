"""`callmesh up` that fails while starting stops what it started, and nothing else.

Real embedded PostgreSQL and Redis under a data folder of each test; the failure is a demo
data load that raises after the real migration ran (Ray is never reached).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments import mesh_commands, mesh_state, store_setup
from services.embedded import EmbeddedStores
from services.settings import Settings

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[3] / "serve_config.yaml"
ARGS = argparse.Namespace(config=str(CONFIG), host=None, port=None, no_demo=False)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # One per test, so each starts from no servers. Short: unix socket paths are limited to
    # about 100 bytes.
    path = Path(tempfile.mkdtemp(prefix="cmu-", dir="/tmp"))
    yield path
    EmbeddedStores(path).stop()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def failing_demo_load(monkeypatch: pytest.MonkeyPatch) -> None:
    real = store_setup.prepare_database

    async def migrate_then_fail(settings: Settings, *, load_demo: bool) -> None:
        await real(settings, load_demo=False)
        raise RuntimeError("demo data could not be loaded")

    monkeypatch.setattr(store_setup, "prepare_database", migrate_then_fail)


def _embedded_settings(data_dir: Path) -> Settings:
    # Explicit None: the embedded default, whatever DATABASE_URL / REDIS_URL say.
    return Settings(environment="test", data_dir=data_dir, database_url=None, redis_url=None)


def test_a_failed_start_stops_the_stores_it_started(data_dir: Path, failing_demo_load: None):
    stores = EmbeddedStores(data_dir)
    assert not stores.postgres_running()
    assert not stores.redis_running()
    with pytest.raises(RuntimeError, match="demo data"):
        mesh_commands.up_command(_embedded_settings(data_dir), ARGS)
    # The migration ran: the servers were really up.
    assert (data_dir / "pg" / "postmaster.opts").exists()
    assert not stores.postgres_running()
    assert not stores.redis_running()
    assert not mesh_state.state_path(_embedded_settings(data_dir)).exists()


def test_a_failed_start_leaves_stores_it_did_not_start(data_dir: Path, failing_demo_load: None):
    stores = EmbeddedStores(data_dir)
    stores.start()
    try:
        with pytest.raises(RuntimeError, match="demo data"):
            mesh_commands.up_command(_embedded_settings(data_dir), ARGS)
        assert stores.postgres_running()
        assert stores.redis_running()
    finally:
        stores.stop()


def test_a_redis_that_will_not_stop_does_not_keep_postgres_running(
    data_dir: Path, failing_demo_load: None
):
    stores = EmbeddedStores(data_dir)

    def stuck(self: EmbeddedStores) -> None:
        raise RuntimeError("redis-server did not exit")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EmbeddedStores, "stop_redis", stuck)
        with pytest.raises(RuntimeError, match="demo data"):
            mesh_commands.up_command(_embedded_settings(data_dir), ARGS)
        assert not stores.postgres_running()
        assert not mesh_state.state_path(_embedded_settings(data_dir)).exists()
