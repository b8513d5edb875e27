"""The agent's client for the mesh, one module per concept.

* **Errors the caller can hear** (:mod:`.errors`): each refusal is a typed :class:`MeshError`,
  a livekit ``ToolError`` carrying the mesh's sentence.
* **No double booking on a retry** (:mod:`.keys`): writes carry an ``Idempotency-Key`` from
  the call, the operation and its arguments, so a repeat replays the first answer.
* **Speech-sized timeouts** (:mod:`.transport`): 2 s by default, retried only where a retry
  cannot write twice, over one ``httpx.AsyncClient`` per worker process
  (:func:`new_http_client`).
* **The endpoints**, by service (:mod:`.scheduling`, :mod:`.inventory`, :mod:`.verification`,
  :mod:`.calls`), gathered in :class:`MeshClient` (:mod:`.client`), one per call.
* **Measured** (:meth:`MeshClient.tool`): a tool's time goes into the Prometheus histogram
  ``callmesh_tool_latency_seconds`` {tool, outcome} and, batched off the tool's path by
  :mod:`.outbox`, to the calls service as a tool event.
"""

from agent.mesh.client import TOOL_LATENCY, MeshClient
from agent.mesh.errors import (
    MeshConflict,
    MeshError,
    MeshExpired,
    MeshInvalid,
    MeshNotFound,
    MeshTimeout,
    MeshUnauthorized,
    MeshUnavailable,
    error_from_response,
)
from agent.mesh.keys import WriteKeys
from agent.mesh.outbox import MAX_EVENTS_PER_BATCH
from agent.mesh.transport import new_http_client

__all__ = [
    "MAX_EVENTS_PER_BATCH",
    "TOOL_LATENCY",
    "MeshClient",
    "MeshConflict",
    "MeshError",
    "MeshExpired",
    "MeshInvalid",
    "MeshNotFound",
    "MeshTimeout",
    "MeshUnauthorized",
    "MeshUnavailable",
    "WriteKeys",
    "error_from_response",
    "new_http_client",
]
