"""One definition of "a store is down" for every service: a PostgreSQL that refuses the
connection (too many connections), or a pool with no free connection in time, is a
DependencyUnavailable (503 with Retry-After at the edge) in scheduling, inventory, verification,
calls and analytics alike, never a 500 and never a wait past the proxy's timeout (real
PostgreSQL, both kinds of backend)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from services.analytics import AnalyticsService
from services.calls import CallsService
from services.db import create_pool
from services.errors import DependencyUnavailable
from services.inventory import InventoryService
from services.scheduling import SchedulingService
from services.verification import VerificationService
from services.verification.registry import RegistryProvider

pytestmark = pytest.mark.integration

# Only a bound, so that a request that would wait for ever fails the test instead of hanging it.
NEVER = 30.0


def _reads(pool: asyncpg.Pool, s: Any) -> dict[str, Callable[[], Awaitable[object]]]:
    settings = s.settings()
    return {
        "scheduling": lambda: SchedulingService(
            pool=pool, redis=s.redis, settings=settings
        ).list_service_types(),
        "inventory": lambda: InventoryService(
            pool=pool, redis=s.redis, settings=settings
        ).search_units(),
        "verification": lambda: VerificationService(
            pool=pool, provider=RegistryProvider(pool=pool, tz=settings.tz), settings=settings
        ).list_for_call("call-1"),
        "calls": lambda: CallsService(pool=pool, settings=settings).get_call("call-1"),
        "analytics": lambda: AnalyticsService(pool=pool, settings=settings).summary(
            "2026-01-01", "2026-01-02"
        ),
    }


SERVICES = ["scheduling", "inventory", "verification", "calls", "analytics"]


@pytest.fixture
async def refused(fresh) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose every connection PostgreSQL refuses with too_many_connections (53300): its
    role may open none."""
    role = f"cm_full_{secrets.token_hex(4)}"
    await fresh.pool.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    rest = fresh.database_url.split("://", 1)[1].split("@", 1)[1]
    pool = await create_pool(f"postgresql://{role}@{rest}", min_size=0, max_size=1)
    try:
        yield pool
    finally:
        await pool.close()
        await fresh.pool.execute(f'DROP ROLE "{role}"')


@pytest.mark.parametrize("service", SERVICES)
async def test_too_many_connections_is_a_dependency_error_in_every_service(fresh, refused, service):
    with pytest.raises(DependencyUnavailable) as caught:
        await asyncio.wait_for(_reads(refused, fresh)[service](), NEVER)
    assert caught.value.retry_after > 0


@pytest.mark.parametrize("service", SERVICES)
async def test_a_pool_with_no_free_connection_answers_instead_of_waiting(fresh, service):
    pool = await create_pool(fresh.database_url, min_size=1, max_size=1, acquire_timeout=0.2)
    try:
        async with pool.acquire(timeout=NEVER):  # every connection busy, as under a stall
            with pytest.raises(DependencyUnavailable):
                await asyncio.wait_for(_reads(pool, fresh)[service](), NEVER)
    finally:
        await pool.close()
