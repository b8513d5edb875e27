"""What every service replica sets up for itself (masked logs, its stores, its metrics) and
the one skeleton every service deployment class shares."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from ray import serve

from deployments import logmask
from deployments.gc_tuning import settle_heap
from deployments.handles import RemoteDeployment
from deployments.metrics import RayMetrics
from deployments.replica_stores import Backends
from services import reconcile
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


def service_deployment(name: str) -> Any:
    """``@serve.deployment`` with the mesh's defaults, for a :class:`ServiceReplica` subclass
    (under ``@serve.ingress()``); serve_config.yaml overrides them per deployment."""
    return serve.deployment(
        name=name,
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
        autoscaling_config=autoscaling(),
        ray_actor_options=ACTOR_OPTIONS,
    )


class ServiceReplica:
    """One replica of a service application: opens its stores, builds the service and its
    FastAPI app, runs its background work, and closes it all when Serve stops it.

    Not a deployment itself: each service subclasses it under ``@serve.deployment(name=...)``
    and ``@serve.ingress()`` (Serve needs a deployment name per application, and the ingress
    is built per replica by ``__serve_build_asgi_app__``: docs/architecture.md). A subclass
    names its app builder in ``api``, builds ``self.service`` in :meth:`open_service`; the
    methods it adds are what other applications call by DeploymentHandle.
    """

    context: ReplicaContext
    service: Any
    # The module's ``build_<service>_api(settings, *, service, metrics)``.
    api: staticmethod[..., FastAPI]

    # Serve awaits the constructor; ``peer`` is the application this one calls, if any.
    async def __init__(self, settings: Settings, peer: RemoteDeployment | None = None) -> None:  # type: ignore[misc]
        self.context = await ReplicaContext.open(settings)
        self._background: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.open_service(peer)

    def open_service(self, peer: RemoteDeployment | None) -> None:
        raise NotImplementedError

    def build_api(self) -> FastAPI:
        return self.api(self.context.settings, service=self.service, metrics=self.context.metrics)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self.context.limit_writes(self.build_api())

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` until the replica stops (then it is cancelled)."""
        self._background.append(asyncio.create_task(work))

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        """Await ``close`` when the replica stops, before its stores close."""
        self._closers.append(close)

    def watch_reconcile(self) -> None:
        """Rebuild Redis's booked cells from PostgreSQL now and after any loss of Redis data."""
        backends = self.context.backends
        watcher = reconcile.watch(
            pool=backends.pool, redis=backends.redis, settings=self.context.settings
        )
        self.on_close(watcher.stop)

    async def __del__(self) -> None:
        for close in self._closers:
            await close()
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.context.close()
