"""The LiveKit agent worker: conversation flows whose tools reach the mesh through one HTTP
client. ``python -m agent.worker start`` runs it; :mod:`agent.simulation` runs flows offline."""

from agent.config import AgentSettings
from agent.mesh_client import (
    TOOL_LATENCY,
    MeshClient,
    MeshConflict,
    MeshError,
    MeshExpired,
    MeshInvalid,
    MeshNotFound,
    MeshTimeout,
    MeshUnauthorized,
    MeshUnavailable,
    WriteKeys,
)
from agent.state import CallState, RentalStage

__all__ = [
    "TOOL_LATENCY",
    "AgentSettings",
    "CallState",
    "MeshClient",
    "MeshConflict",
    "MeshError",
    "MeshExpired",
    "MeshInvalid",
    "MeshNotFound",
    "MeshTimeout",
    "MeshUnauthorized",
    "MeshUnavailable",
    "RentalStage",
    "WriteKeys",
]
