"""The worker's /metrics shows tool latencies recorded in its job processes.

A real worker process (``_metrics_worker.py``: the production ``build_server`` and the
multiprocess setup of ``agent.worker.main``) runs unregistered, with no LiveKit server, and
launches one fake job in a job process of its own; that job's tools time themselves as a
call's tools do. The test reads the worker's Prometheus endpoint over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("_metrics_worker.py")
# A deadline to fail instead of hanging, not a measurement: a job process starts in seconds.
DEADLINE_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _samples(text: str, name: str) -> dict[tuple[str, str], float]:
    """``{(tool, outcome): value}`` of one sample name in an exposition."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[(sample.labels["tool"], sample.labels["outcome"])] = sample.value
    return found


async def _scrape_until_both_tools(url: str, worker: asyncio.subprocess.Process) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    async with httpx.AsyncClient(timeout=5) as client:
        while loop.time() < deadline:
            assert worker.returncode is None, "the worker exited"
            try:
                response = await client.get(url)
            except httpx.TransportError:
                response = None  # not listening yet
            if response is not None and response.status_code == 200:
                text = response.text
                if len(_samples(text, "callmesh_tool_latency_seconds_count")) == 2:
                    return text
            await asyncio.sleep(0.25)
    raise AssertionError("the job's tool latencies never reached /metrics")


async def test_tool_latency_recorded_in_a_job_process_is_served_by_the_worker(tmp_path):
    port = _free_port()
    directory = tmp_path / "metrics"
    env = {
        **os.environ,
        "CALLMESH_AGENT_HOST": "127.0.0.1",
        "CALLMESH_AGENT_METRICS_PORT": str(port),
        "CALLMESH_AGENT_METRICS_DIR": str(directory),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "worker.log").open("wb")
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the job processes go with it
    )
    try:
        text = await _scrape_until_both_tools(f"http://127.0.0.1:{port}/metrics", worker)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        await worker.wait()
        log.close()

    counts = _samples(text, "callmesh_tool_latency_seconds_count")
    assert counts == {("find_customer", "ok"): 1.0, ("hold_unit", "conflict"): 1.0}
    buckets = [
        family
        for family in text_string_to_metric_families(text)
        if family.name == "callmesh_tool_latency_seconds"
    ]
    assert buckets and buckets[0].type == "histogram"
    # Recorded in a process other than the worker's: its own file in the directory.
    writers = {p.stem.rsplit("_", 1)[1] for p in directory.glob("histogram_*.db")}
    assert len(writers - {str(worker.pid)}) >= 1
    # LiveKit's worker metrics, kept in the worker's own process, are served too.
    families = {family.name for family in text_string_to_metric_families(text)}
    assert "lk_agents_active_job_count" in families
