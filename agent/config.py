"""The agent worker's own settings.

The agent reaches the mesh over HTTP only, so it reads just what it needs to do that (and to
pick its models) and nothing from :mod:`services.settings`. Environment variables keep the
mesh's names: ``CALLMESH_MESH_URL`` and ``CALLMESH_API_TOKEN``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALLMESH_", env_file=".env", extra="ignore")

    mesh_url: str = "http://127.0.0.1:8000"
    api_token: SecretStr | None = None

    # A tool answers while the caller waits in silence: give up fast and say so.
    mesh_connect_timeout_seconds: float = Field(0.5, gt=0, le=10)
    mesh_timeout_seconds: float = Field(2.0, gt=0, le=30)
    # Retries of one request on a timeout or a 503, with the same Idempotency-Key.
    mesh_retries: int = Field(1, ge=0, le=3)

    # The worker's own HTTP endpoints listen on ``agent_host``: LiveKit's health check and the
    # Prometheus metrics on ``agent_metrics_port`` (0: any free port), gathered from every job
    # process through files in ``agent_metrics_dir`` (default: PROMETHEUS_MULTIPROC_DIR if set,
    # else a new temporary directory). One directory per worker: it is emptied at start.
    agent_host: str = "127.0.0.1"
    agent_metrics_port: int = Field(9100, ge=0, le=65535)
    agent_metrics_dir: Path | None = None

    # The flow when neither the job nor the room names one.
    default_flow: str = "appointment"

    # Models of the production pipeline (the plugins read their API keys from the usual
    # DEEPGRAM_API_KEY, OPENAI_API_KEY and CARTESIA_API_KEY).
    stt_model: str = "nova-3"
    llm_model: str = "gpt-4.1-mini"
    tts_model: str = "sonic-3"
    tts_voice: str | None = None
