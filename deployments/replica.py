"""What every service replica sets up for itself: masked logs, its stores, its metrics."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from deployments import logmask
from deployments.gc_tuning import settle_heap
from deployments.metrics import RayMetrics
from deployments.replica_stores import Backends
from services.ratelimit import WriteLimiter
from services.settings import Settings

# Handlers await Redis and PostgreSQL; one replica keeps many requests in flight. The
# autoscaler adds replicas when a replica averages more than TARGET_ONGOING in flight.
# Far above the edge's admission limit (Settings.admission_max_in_flight): Serve queues what is
# past this without bound, before the edge can shed it (docs/reliability.md).
MAX_ONGOING_REQUESTS = 1024
TARGET_ONGOING_REQUESTS = 64
# Two cores for the whole mesh: replicas ask for a sliver, they mostly wait on I/O.
NUM_CPUS = 0.1


@dataclass
class ReplicaContext:
    settings: Settings
    backends: Backends
    metrics: RayMetrics

    @classmethod
    async def open(cls, settings: Settings) -> ReplicaContext:
        logmask.install()
        context = cls(
            settings=settings, backends=await Backends.open(settings), metrics=RayMetrics()
        )
        settle_heap()
        return context

    def limit_writes(self, app: FastAPI) -> FastAPI:
        """Install the shared write rate limits on one of this replica's apps."""
        app.state.write_limiter = WriteLimiter.from_settings(self.backends.redis, self.settings)
        return app

    async def close(self) -> None:
        await self.backends.close()


def autoscaling(*, max_replicas: int = 2) -> dict[str, int]:
    """Defaults for ``autoscaling_config``; serve_config.yaml overrides them per deployment."""
    return {
        "min_replicas": 1,
        "max_replicas": max_replicas,
        "target_ongoing_requests": TARGET_ONGOING_REQUESTS,
    }


ACTOR_OPTIONS: dict[str, float] = {"num_cpus": NUM_CPUS}
