"""The inventory service's endpoints: units, holds, rate proposals and confirmations."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from agent.mesh.transport import MeshTransport, iso
from agent.mesh_models import Hold, RateAgreement, RentalBooking, Unit


class InventoryEndpoints(MeshTransport):
    async def search_units(
        self,
        *,
        query: str | None = None,
        category: str | None = None,
        max_daily_rate: Decimal | None = None,
        limit: int = 5,
    ) -> list[Unit]:
        return await self._get_list(
            "/inventory/units",
            Unit,
            query=query,
            category=category,
            max_daily_rate=str(max_daily_rate) if max_daily_rate is not None else None,
            limit=limit,
        )

    async def get_unit(self, unit_id: str) -> Unit:
        return await self._get(f"/inventory/units/{unit_id}", Unit)

    async def create_hold(self, *, unit_id: str, start: date | str, end: date | str) -> Hold:
        body = {"unit_id": unit_id, "start": iso(start), "end": iso(end), "call_id": self.call_id}
        return await self._write("create_hold", "/inventory/holds", body, Hold)

    async def propose_rate(self, hold_id: str, rate: Decimal) -> RateAgreement:
        # The mesh takes no key here and counts every offer: sent once, never retried.
        return await self._write(
            "propose_rate",
            f"/inventory/holds/{hold_id}/rate",
            {"rate": str(rate)},
            RateAgreement,
            idempotent=False,
        )

    async def confirm_hold(self, hold_id: str) -> RentalBooking:
        return await self._write(
            "confirm_hold", f"/inventory/holds/{hold_id}/confirm", None, RentalBooking
        )

    async def release_hold(self, hold_id: str) -> None:
        # Releasing a hold that is already gone is not an error: safe to retry.
        await self._send("DELETE", f"/inventory/holds/{hold_id}", retry_safe=True)
