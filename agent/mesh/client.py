"""The one client a call's tools use to reach the mesh: typed, short-fused, idempotent."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from livekit.agents import ToolError
from prometheus_client import Histogram

from agent.mesh.calls import CallsEndpoints
from agent.mesh.errors import MeshError
from agent.mesh.inventory import InventoryEndpoints
from agent.mesh.scheduling import SchedulingEndpoints
from agent.mesh.verification import VerificationEndpoints

# Speech budgets: most tools should answer well under a quarter of a second.
TOOL_LATENCY = Histogram(
    "callmesh_tool_latency_seconds",
    "Function tool latency as the agent measured it, end to end, by tool and outcome.",
    ["tool", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)


class MeshClient(SchedulingEndpoints, InventoryEndpoints, VerificationEndpoints, CallsEndpoints):
    """Everything a call's tools ask of the mesh: ``MeshClient(call_id=..., settings=...,
    client=...)``. One per call, not shared between calls; its ``httpx.AsyncClient`` is (pass
    the process's one as ``client=``, see :func:`~agent.mesh.new_http_client`). Without one it
    builds its own and closes it in :meth:`aclose`; a client passed in is left open for
    whoever built it."""

    async def aclose(self) -> None:
        """Send what is left for the calls service, then close the HTTP client if ours."""
        await self._events.settle()
        await self._close_http()

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @asynccontextmanager
    async def tool(self, name: str) -> AsyncIterator[None]:
        """Time a function tool end to end into ``callmesh_tool_latency_seconds`` and report it
        to the calls service. Errors pass through unchanged."""
        began = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except MeshError as e:
            outcome = e.outcome
            raise
        except ToolError:
            outcome = "invalid"  # the flow refused: a stage out of order, a missing detail
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            seconds = time.perf_counter() - began
            TOOL_LATENCY.labels(tool=name, outcome=outcome).observe(seconds)
            self._events.add(
                {
                    "kind": "tool",
                    "name": name,
                    "latency_ms": round(seconds * 1000, 3),
                    "outcome": outcome,
                }
            )
