"""The verification service's endpoints: licence, site safety, operator, insurance."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agent.mesh.transport import MeshTransport
from agent.mesh_models import Verification


class VerificationEndpoints(MeshTransport):
    async def _verify(self, path: str, body: dict[str, Any]) -> Verification:
        # Each check is audited once per request; a retry after a timeout only adds an audit row.
        response = await self._send(
            "POST", path, json_body={"call_id": self.call_id, **body}, retry_safe=True
        )
        return Verification.model_validate_json(response.content)

    async def verify_business_licence(
        self, licence_number: str, state: str | None = None
    ) -> Verification:
        body: dict[str, Any] = {"licence_number": licence_number}
        if state:
            body["state"] = state
        return await self._verify("/verification/business-licence", body)

    async def verify_site_safety(self, site_id: str, weight_class: str) -> Verification:
        return await self._verify(
            "/verification/site-safety", {"site_id": site_id, "weight_class": weight_class}
        )

    async def verify_operator_certification(
        self, operator_id: str, certification: str
    ) -> Verification:
        return await self._verify(
            "/verification/operator-certification",
            {"operator_id": operator_id, "certification": certification},
        )

    async def verify_insurance(self, policy_number: str, required_amount: Decimal) -> Verification:
        return await self._verify(
            "/verification/insurance",
            {"policy_number": policy_number, "required_amount": str(required_amount)},
        )
