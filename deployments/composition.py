"""The one place the services are built from :class:`Settings` and the stores: each alone
(a mesh replica builds its own, with handles to the applications it calls) or all of them in
one process (the single-process benchmark, the agent integration tests), where inventory
asks verification directly instead of over a DeploymentHandle."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from services.analytics import AnalyticsService
from services.calls import CallsService
from services.inventory import InventoryService, RequirementsChecker
from services.scheduling import SchedulingService, VehicleHolds
from services.settings import Settings
from services.verification import VerificationService, build_provider


def verification_service(settings: Settings, pool: asyncpg.Pool) -> VerificationService:
    """Its provider is closed with ``service.provider.aclose()``."""
    provider = build_provider(settings, pool)
    return VerificationService(pool=pool, provider=provider, settings=settings)


def inventory_service(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    requirements: RequirementsChecker | None = None,
) -> InventoryService:
    return InventoryService(pool=pool, redis=redis, settings=settings, requirements=requirements)


def scheduling_service(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    vehicles: VehicleHolds | None = None,
) -> SchedulingService:
    return SchedulingService(pool=pool, redis=redis, settings=settings, vehicles=vehicles)


def calls_service(settings: Settings, pool: asyncpg.Pool) -> CallsService:
    return CallsService(pool=pool, settings=settings)


def analytics_service(settings: Settings, pool: asyncpg.Pool) -> AnalyticsService:
    return AnalyticsService(pool=pool, settings=settings)


@dataclass(frozen=True)
class Services:
    """Every service, wired in one process."""

    verification: VerificationService
    inventory: InventoryService
    scheduling: SchedulingService
    calls: CallsService
    analytics: AnalyticsService

    async def aclose(self) -> None:
        await self.verification.provider.aclose()


def build_services(settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis) -> Services:
    verification = verification_service(settings, pool)
    return Services(
        verification=verification,
        # In the mesh: RemoteRequirementsChecker over a handle to the verification app.
        inventory=inventory_service(settings, pool, redis, requirements=verification),
        scheduling=scheduling_service(settings, pool, redis),
        calls=calls_service(settings, pool),
        analytics=analytics_service(settings, pool),
    )
