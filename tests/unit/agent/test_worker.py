"""The production worker builds its pipeline from settings with no network, picks the flow
from job/room metadata, and turns the session's usage into what the calls service prices."""

from __future__ import annotations

import httpx
import pytest
from livekit.agents import AgentSession, JobExecutorType, JobProcess
from livekit.agents.metrics import (
    AgentSessionUsage,
    LLMModelUsage,
    STTModelUsage,
    TTSModelUsage,
)
from livekit.plugins import cartesia, deepgram, openai

from agent.config import AgentSettings
from agent.flows import AppointmentDesk, RentalDesk, build_agent
from agent.mesh import MeshClient
from agent.mesh_models import Usage
from agent.state import CallState
from agent.usage import usage_from_session, usage_since
from agent.worker import (
    MESH_HTTP,
    build_session,
    call_id_for,
    choose_flow,
    close_mesh_http,
    prewarm,
    server,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def dummy_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "CARTESIA_API_KEY"):
        monkeypatch.setenv(name, "dummy")


async def test_the_session_is_built_from_the_production_plugins(dummy_keys):
    settings = AgentSettings(llm_model="gpt-4.1-mini", stt_model="nova-3", tts_model="sonic-3")
    mesh = MeshClient(call_id="c1", settings=settings)
    state = CallState(call_id="c1", flow="rental", mesh=mesh)
    session = build_session(settings, userdata=state, vad=None)
    try:
        assert isinstance(session, AgentSession)
        assert isinstance(session.stt, deepgram.STT) and session.stt.model == "nova-3"
        assert isinstance(session.llm, openai.LLM) and session.llm.model == "gpt-4.1-mini"
        assert isinstance(session.tts, cartesia.TTS) and session.tts.model == "sonic-3"
        assert session.vad is not None  # loaded from the plugin's bundled model, no network
        assert session.userdata is state
    finally:
        await mesh.aclose()


async def test_prewarm_builds_the_process_pool_to_the_mesh_before_any_call():
    proc = JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)
    prewarm(proc)
    http = proc.userdata[MESH_HTTP]
    assert isinstance(http, httpx.AsyncClient) and not http.is_closed
    await close_mesh_http(proc)
    assert http.is_closed and MESH_HTTP not in proc.userdata


def test_the_worker_registers_its_entrypoint_and_prewarm():
    assert server._entrypoint_fnc is not None
    assert server.setup_fnc is not None


@pytest.mark.parametrize(
    ("job", "room", "flow"),
    [
        ('{"flow": "rental"}', "", "rental"),
        ("rental", '{"flow": "appointment"}', "rental"),
        ("", '{"flow": "rental"}', "rental"),
        ('{"flow": "karaoke"}', "", "appointment"),
        ("not json at all", None, "appointment"),
        ("", "", "appointment"),
    ],
)
def test_the_flow_comes_from_job_then_room_metadata(job, room, flow):
    assert choose_flow(job, room, default="appointment") == flow


def test_an_unknown_default_flow_is_refused():
    with pytest.raises(ValueError, match="unknown default flow"):
        choose_flow(None, default="karaoke")


def test_flows_build_their_agents():
    assert isinstance(build_agent("appointment"), AppointmentDesk)
    assert isinstance(build_agent("rental"), RentalDesk)


def test_call_ids_are_valid_for_the_mesh():
    assert call_id_for("AJ_abc/def 1") == "lk-AJ_abc-def-1"


def test_usage_adds_up_every_model_and_reports_only_what_is_new():
    usage = AgentSessionUsage(
        model_usage=[
            STTModelUsage(provider="deepgram", model="nova-3", audio_duration=61.5),
            LLMModelUsage(
                provider="openai",
                model="gpt",
                input_tokens=1200,
                input_cached_tokens=800,
                output_tokens=90,
            ),
            LLMModelUsage(provider="openai", model="mini", input_tokens=100, output_tokens=10),
            TTSModelUsage(provider="cartesia", model="sonic-3", characters_count=420),
        ]
    )
    total = usage_from_session(usage)
    assert total == Usage(
        stt_audio_seconds=61.5,
        llm_prompt_tokens=1300,
        llm_cached_tokens=800,
        llm_completion_tokens=100,
        tts_characters=420,
    )
    reported = Usage(stt_audio_seconds=60, llm_prompt_tokens=1000, tts_characters=400)
    assert usage_since(total, reported) == Usage(
        stt_audio_seconds=1.5,
        llm_prompt_tokens=300,
        llm_cached_tokens=800,
        llm_completion_tokens=100,
        tts_characters=20,
    )
    assert usage_since(total, total).empty
