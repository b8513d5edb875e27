"""One worker process, one connection pool: the calls a job process serves reach the mesh over
the process's ``httpx.AsyncClient`` (here two calls, one after the other, over one TCP
connection to a real local HTTP server), and a call's client never closes it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from livekit.agents import JobExecutorType, JobProcess

from agent.config import AgentSettings
from agent.worker import close_mesh_http, mesh_for_call, mesh_http

pytestmark = pytest.mark.integration


@dataclass
class CountingServer:
    """A minimal HTTP/1.1 keep-alive server that answers ``[]`` to everything and counts the
    TCP connections it accepted, with the requests each carried."""

    connections: list[list[str]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests: list[str] = []
        self.connections.append(requests)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode().split("\r\n")
                headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
                await reader.readexactly(int(headers.get("content-length", "0")))
                method, target, _ = lines[0].split(" ")
                requests.append(f"{method} {target}")
                body = json.dumps([]).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[CountingServer, str]]:
    counting = CountingServer()
    listening = await asyncio.start_server(counting.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield counting, f"http://127.0.0.1:{port}"


async def test_two_calls_of_one_process_share_its_client_and_one_connection(server):
    counting, url = server
    settings = AgentSettings(mesh_url=url, api_token=None)
    proc = JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)
    http = mesh_http(proc, settings)  # what prewarm builds before any call arrives
    for call_id in ("call-a", "call-b"):
        mesh = mesh_for_call(proc, call_id, settings)
        async with mesh.tool("list_service_types"):
            assert await mesh.list_service_types() == []
        await mesh.flush_events()
        await mesh.aclose()
        assert mesh._client is http
        assert not http.is_closed  # a call's client leaves the process's pool open
    assert mesh_http(proc, settings) is http
    assert len(counting.connections) == 1
    assert counting.connections[0] == [
        "GET /scheduling/service-types",
        "POST /calls/call-a/events",
        "GET /scheduling/service-types",
        "POST /calls/call-b/events",
    ]
    await close_mesh_http(proc)
    assert http.is_closed
