"""The worker's Prometheus metrics, gathered from every process it runs.

LiveKit runs each call (a job) in a process of its own, and a call's tools time themselves into
``callmesh_tool_latency_seconds`` there, so a plain prometheus_client registry would keep those
values in the job process, out of the worker's reach. prometheus_client's multiprocess mode
fixes that: every process writes its values to files in one directory named by
``PROMETHEUS_MULTIPROC_DIR``, job processes inherit the variable, and the worker's ``/metrics``
(LiveKit's endpoint on ``prometheus_port``) merges the files with a ``MultiProcessCollector``.
A finished call's values stay counted: its process's files remain until the worker restarts.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import values

from agent.config import AgentSettings

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir(settings: AgentSettings, environ: Mapping[str, str]) -> Path | None:
    """The directory the settings or the environment name, or None (make a new one)."""
    if settings.agent_metrics_dir is not None:
        return settings.agent_metrics_dir
    named = environ.get(MULTIPROC_DIR_ENV)
    return Path(named) if named else None


def use_multiprocess_metrics(settings: AgentSettings) -> Path:
    """Put this process, and every process it starts from now on, in multiprocess mode, and
    return the directory. The worker's main process calls it once, before the worker starts
    (which empties the directory)."""
    directory = metrics_dir(settings, os.environ)
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="callmesh-agent-metrics-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_DIR_ENV] = str(directory)
    _file_backed_from_now_on()
    return directory


def _file_backed_from_now_on() -> None:
    # prometheus_client picks in-memory or file-backed values once, when it is first imported,
    # and the worker's main process imported it (livekit.agents defines its metrics at import)
    # before its settings were read. From here on every new value is file-backed: LiveKit's own
    # worker metrics (created when first labelled) and tools run in this process (the console
    # runs its job here). Job processes import prometheus_client afresh, the variable set.
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()
