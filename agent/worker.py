"""The production agent worker: ``python -m agent.worker start`` (or ``dev``, ``console``).

One job is one call. The job (or the room) metadata names the flow, e.g. ``{"flow": "rental"}``
or just ``rental``; without one the worker runs ``CALLMESH_DEFAULT_FLOW``. The call is recorded
in the calls service when it starts and ended when the job shuts down, with the session's usage
(STT seconds, LLM prompt/cached/completion tokens, TTS characters) so the mesh can price it.
Each job process builds its ``httpx.AsyncClient`` to the mesh in :func:`prewarm`, before a call
arrives, and lends it to the call's :class:`~agent.mesh.MeshClient`.

Needs LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET, DEEPGRAM_API_KEY, OPENAI_API_KEY,
CARTESIA_API_KEY, and the mesh: CALLMESH_MESH_URL, CALLMESH_API_TOKEN.

Prometheus metrics (``callmesh_tool_latency_seconds`` from every call's process, and LiveKit's
``lk_agents_*``) are served at ``http://CALLMESH_AGENT_HOST:CALLMESH_AGENT_METRICS_PORT/metrics``
(127.0.0.1:9100 by default); see :mod:`agent.metrics`.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx
from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess, cli
from livekit.plugins import cartesia, deepgram, openai, silero

from agent.config import AgentSettings
from agent.flows import FLOWS, build_agent
from agent.lifecycle import end_call, start_call
from agent.mesh import MeshClient, new_http_client
from agent.metrics import use_multiprocess_metrics
from agent.state import CallState
from agent.usage import usage_from_session

log = logging.getLogger(__name__)

_CALL_ID = re.compile(r"[^A-Za-z0-9._:-]")
# The SIP participant attribute LiveKit sets to the caller's number.
SIP_PHONE_ATTRIBUTE = "sip.phoneNumber"


def choose_flow(*metadata: str | None, default: str) -> str:
    """The first flow named by the metadata given (job first, then room), else ``default``.
    Metadata is JSON with a ``flow`` key, or the bare flow name."""
    for text in metadata:
        if not text:
            continue
        name: Any = text.strip()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            name = parsed.get("flow")
        if isinstance(name, str) and name.strip().lower() in FLOWS:
            return name.strip().lower()
    if default not in FLOWS:
        raise ValueError(f"unknown default flow {default!r}; this worker runs {sorted(FLOWS)}")
    return default


def call_id_for(job_id: str) -> str:
    return "lk-" + _CALL_ID.sub("-", job_id)[:120]


def build_session(
    settings: AgentSettings, *, userdata: CallState, vad: silero.VAD | None = None
) -> AgentSession[CallState]:
    """The production pipeline: Deepgram STT, OpenAI LLM, Cartesia TTS, Silero VAD.
    Builds its plugins only (no network until the session starts)."""
    tts_options: dict[str, Any] = {"model": settings.tts_model}
    if settings.tts_voice:
        tts_options["voice"] = settings.tts_voice
    return AgentSession[CallState](
        stt=deepgram.STT(model=settings.stt_model),
        llm=openai.LLM(model=settings.llm_model),
        tts=cartesia.TTS(**tts_options),
        vad=vad if vad is not None else silero.VAD.load(),
        userdata=userdata,
        max_tool_steps=4,
    )


# Where a job process keeps its connection pool to the mesh (``JobProcess.userdata``).
MESH_HTTP = "mesh_http"


def mesh_http(proc: JobProcess, settings: AgentSettings) -> httpx.AsyncClient:
    """The process's one ``httpx.AsyncClient`` to the mesh, lent to every call it serves:
    built by :func:`prewarm` before any call arrives, or here on first use."""
    http: httpx.AsyncClient | None = proc.userdata.get(MESH_HTTP)
    if http is None or http.is_closed:
        http = proc.userdata[MESH_HTTP] = new_http_client(settings)
    return http


async def close_mesh_http(proc: JobProcess) -> None:
    """Close the process's pool (the process built it, so the process closes it)."""
    http: httpx.AsyncClient | None = proc.userdata.pop(MESH_HTTP, None)
    if http is not None:
        await http.aclose()


def mesh_for_call(proc: JobProcess, call_id: str, settings: AgentSettings) -> MeshClient:
    """A call's client over the process's pool: it does not close the pool."""
    return MeshClient(call_id=call_id, settings=settings, client=mesh_http(proc, settings))


def prewarm(proc: JobProcess) -> None:
    # Once per process, before any call arrives: the VAD model, and the mesh's connection
    # pool (building it reads the TLS trust store; no network until the first request).
    proc.userdata["vad"] = silero.VAD.load()
    mesh_http(proc, AgentSettings())


def build_server(settings: AgentSettings) -> AgentServer:
    """LiveKit's server for this worker, with no entrypoint yet: its HTTP endpoints (LiveKit's
    health check, and Prometheus metrics on ``agent_metrics_port``) on ``agent_host``."""
    return AgentServer(
        setup_fnc=prewarm,
        host=settings.agent_host,
        prometheus_port=settings.agent_metrics_port,
    )


server = build_server(AgentSettings())


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    settings = AgentSettings()
    await ctx.connect()
    flow = choose_flow(ctx.job.metadata, ctx.room.metadata, default=settings.default_flow)
    participant = await ctx.wait_for_participant()
    phone = participant.attributes.get(SIP_PHONE_ATTRIBUTE)
    call_id = call_id_for(ctx.job.id)
    mesh = mesh_for_call(ctx.proc, call_id, settings)
    state = CallState(
        call_id=call_id,
        flow=flow,
        mesh=mesh,
        caller_phone=phone,
        channel="sip" if phone else "web",
    )
    log.info("call started", extra={"call_id": call_id, "flow": flow})
    await start_call(state)
    session = build_session(settings, userdata=state, vad=ctx.proc.userdata.get("vad"))

    async def finish(reason: str) -> None:
        summary = await end_call(state, usage=usage_from_session(session.usage))
        if summary is not None:
            log.info(
                "call ended",
                extra={
                    "call_id": call_id,
                    "outcome": summary.outcome,
                    "cost_usd": str(summary.cost.total_usd),
                    "reason": reason,
                },
            )
        await mesh.aclose()
        # livekit ends a job process with its one job (and closes its own http_session()
        # there too): the process's pool goes with it.
        await close_mesh_http(ctx.proc)

    ctx.add_shutdown_callback(finish)
    await session.start(agent=build_agent(flow), room=ctx.room)


def main() -> None:
    # Before the worker starts any process: they all write their metrics where /metrics reads.
    use_multiprocess_metrics(AgentSettings())
    cli.run_app(server)


if __name__ == "__main__":
    main()
