"""The real mesh, in process, for agent sessions: every application's FastAPI app over the
``fresh`` fixture's PostgreSQL and Redis, behind one ASGI dispatcher by path prefix, reached by
the agent's own :class:`MeshClient` through ``httpx.ASGITransport``. No Ray (the apps are the
ones the deployments serve), no mocks of the stores. The API token is set, so every write the
agent sends must carry it.

Sessions run a :class:`~agent.simulation.ScriptedLLM` (SIMULATION) in text mode.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import httpx
import pytest
from livekit.agents import AgentSession
from livekit.agents.voice.run_result import RunResult
from starlette.types import ASGIApp, Receive, Scope, Send

from agent.config import AgentSettings
from agent.flows import build_agent
from agent.lifecycle import start_call
from agent.mesh import MeshClient
from agent.simulation import Rule, ScriptedLLM
from agent.state import CallState
from deployments.calls import build_calls_api
from deployments.composition import build_services
from deployments.inventory import build_inventory_api
from deployments.scheduling import build_scheduling_api
from deployments.verification import build_verification_api
from services.settings import Settings

API_TOKEN = f"agent-{secrets.token_hex(8)}"


class PrefixDispatcher:
    """Routes ``/inventory/...`` to the inventory app and so on, as the Serve proxy does: the
    prefix becomes the app's ``root_path``."""

    def __init__(self, apps: Mapping[str, ASGIApp]) -> None:
        self.apps = dict(apps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        for prefix, app in self.apps.items():
            if path == prefix or path.startswith(prefix + "/"):
                await app({**scope, "root_path": prefix}, receive, send)
                return
        raise AssertionError(f"no application serves {path}")


@dataclass
class Mesh:
    http: httpx.AsyncClient
    settings: Settings
    agent_settings: AgentSettings
    stores: object

    def client(self, call_id: str | None = None) -> MeshClient:
        return MeshClient(
            call_id=call_id or f"sim-{secrets.token_hex(6)}",
            settings=self.agent_settings,
            client=self.http,
        )


@pytest.fixture
async def mesh(fresh) -> AsyncIterator[Mesh]:
    # One in-process app stands for every replica of a service, and these tests run hundreds
    # of calls at once through it: the per-replica admission limit is off here.
    settings: Settings = fresh.settings(api_token=API_TOKEN, admission_max_in_flight=0)
    services = build_services(settings, fresh.pool, fresh.redis)
    apps = {
        "/inventory": build_inventory_api(settings, service=services.inventory),
        "/scheduling": build_scheduling_api(settings, service=services.scheduling),
        "/verification": build_verification_api(settings, service=services.verification),
        "/calls": build_calls_api(settings, service=services.calls),
    }
    agent_settings = AgentSettings(
        mesh_url="http://mesh",
        api_token=API_TOKEN,
        # Many sessions share two busy cores in these tests; production keeps 2 s.
        mesh_timeout_seconds=30,
    )
    transport = httpx.ASGITransport(app=PrefixDispatcher(apps))
    # The token too: the tests' own reads (a call's detail, the audit) answer personal data.
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://mesh",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as http:
        yield Mesh(http, settings, agent_settings, fresh)
    await services.aclose()


class Sim:
    """Helpers for SIMULATED calls over the in-process mesh (a fixture: test modules cannot
    import each other under --import-mode=importlib)."""

    ISO_IN_PARENS = re.compile(r"\((\d{4}-\d{2}-\d{2}T[^)]+)\)")

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    @asynccontextmanager
    async def call(
        self, flow: str, rules: Sequence[Rule], *, call_id: str | None = None
    ) -> AsyncIterator[tuple[AgentSession[CallState], CallState]]:
        """The flow's real Agent and tools, a ScriptedLLM, text in and out."""
        client = self.mesh.client(call_id)
        state = CallState(call_id=client.call_id, flow=flow, mesh=client, channel="web")
        assert await start_call(state)
        try:
            async with (
                ScriptedLLM(rules) as llm,
                AgentSession[CallState](
                    llm=llm, vad=None, userdata=state, max_tool_steps=4
                ) as session,
            ):
                await session.start(build_agent(flow))
                yield session, state
        finally:
            await client.aclose()

    @staticmethod
    def said(result: RunResult) -> str:
        """Everything the agent said in one run, as one string."""
        return " ".join(
            e.item.text_content or ""
            for e in result.events
            if e.type == "message" and e.item.role == "assistant"
        )

    def business_day(self, *, at_least: int = 2) -> date:
        """A weekday (open all day) at least ``at_least`` days ahead."""
        settings = self.mesh.settings
        day = datetime.now(settings.tz).date() + timedelta(days=at_least)
        while day.weekday() >= 5 or day in settings.closed_dates:
            day += timedelta(days=1)
        return day


@pytest.fixture
def sim(mesh: Mesh) -> Sim:
    return Sim(mesh)
