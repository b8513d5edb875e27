"""The LiveKit agent worker: conversation flows whose tools reach the mesh through one HTTP
client (:mod:`agent.mesh`, whose ``__all__`` names the client's whole API).
``python -m agent.worker start`` runs it; :mod:`agent.simulation` runs flows offline."""

from agent.config import AgentSettings
from agent.mesh import MeshClient, MeshError
from agent.state import CallState, RentalStage

__all__ = ["AgentSettings", "CallState", "MeshClient", "MeshError", "RentalStage"]
