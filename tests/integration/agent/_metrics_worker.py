"""A worker built as ``python -m agent.worker`` builds it, with no LiveKit server: it runs
unregistered and launches one fake job, in a job process of its own, whose tools time
themselves through ``MeshClient.tool`` as a call's tools do (the mesh is an httpx mock).

Started by ``test_worker_metrics.py`` (``python tests/integration/agent/_metrics_worker.py``,
settings from the environment); it runs until killed.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from livekit.agents import JobContext

from agent.config import AgentSettings
from agent.mesh import MeshClient, MeshConflict
from agent.metrics import use_multiprocess_metrics
from agent.worker import build_server


def _mesh(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=[])


async def record_tools(ctx: JobContext) -> None:
    """The job: one tool that answers, one the mesh refuses."""
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(_mesh), base_url="http://mesh"
    ) as client:
        mesh = MeshClient(call_id="metrics-job", settings=AgentSettings(), client=client)
        async with mesh.tool("find_customer"):
            pass
        with contextlib.suppress(MeshConflict):
            async with mesh.tool("hold_unit"):
                raise MeshConflict("That unit is already booked.", code="unavailable")
        await mesh.aclose()
    ctx.shutdown("tools recorded")


def main() -> None:
    settings = AgentSettings()
    use_multiprocess_metrics(settings)  # what agent.worker.main() does first
    server = build_server(settings)
    server.setup_fnc = None  # no VAD to load: this job has no audio
    server.rtc_session()(record_tools)

    launched: set[asyncio.Task[None]] = set()

    async def run() -> None:
        @server.once("worker_started")
        def _launch() -> None:
            launched.add(asyncio.ensure_future(server.simulate_job("metrics-room", fake_job=True)))

        await server.run(devmode=True, unregistered=True)

    asyncio.run(run())


if __name__ == "__main__":
    main()
