"""The stores made ready once, where the applications are built (``callmesh up``,
``serve run``, the test session), before any replica opens them.

With no ``DATABASE_URL`` / ``REDIS_URL`` the embedded servers are started under the data folder
and their URLs are written into the settings each replica receives, so replicas never race to
start servers of their own; the database is migrated, and demo data loaded when asked.
"""

from __future__ import annotations

import fcntl
import logging

from services.db import create_pool
from services.settings import Settings

log = logging.getLogger(__name__)


def resolve_storage(settings: Settings) -> Settings:
    """Settings naming real servers: the configured ones, else the embedded default (started
    here if it is not running). The data folder becomes absolute, since replicas run in
    other working directories."""
    data_dir = settings.data_dir.expanduser().resolve()
    if not settings.uses_embedded_storage:
        return settings.model_copy(update={"data_dir": data_dir})
    from services.embedded import EmbeddedStores

    data_dir.mkdir(parents=True, exist_ok=True)
    # Two builders starting the servers at once (serve deploy builds apps in parallel) would
    # both find them stopped; a lock file in the data folder serialises them.
    with (data_dir / "embedded.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        database_url, redis_url = EmbeddedStores(data_dir).start()
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "database_url": settings.database_url or database_url,
            "redis_url": settings.redis_url or redis_url,
        }
    )


async def prepare_database(settings: Settings, *, load_demo: bool) -> None:
    """Migrate (safe from many processes at once), and load the demo data into an empty
    database if asked."""
    from services.db import migrate
    from services.demo import database_is_empty, load_demo_data

    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        applied = await migrate(pool)
        if applied:
            log.info("applied migrations", extra={"versions": applied})
        if load_demo:
            async with pool.acquire() as conn:
                if await database_is_empty(conn):
                    await load_demo_data(conn)
                    log.info("loaded demo data")
    finally:
        await pool.close()
