"""The inventory's fields of a hold's Redis hash (services.reservations.HoldHash ``extra``): the
unit's rates, requirements and name, stored with the hold so that negotiation and confirm never
re-read the unit. negotiate.lua reads ``floor_cents``, ``max_cents``, ``attempts`` and
``agreed_cents`` by these names."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from services.inventory.models import Requirements
from services.reservations import Hold

# The explicit kind of an inventory hold: the hash's ``holder`` field.
HOLDER = "inventory"


@dataclass(frozen=True, slots=True)
class UnitTerms:
    unit_name: str
    floor_cents: int
    max_cents: int
    certification: str | None = None
    min_insurance: Decimal | None = None
    attempts: int = 0  # proposals counted by negotiate.lua
    agreed_cents: int | None = None  # the rate negotiate.lua locked to the hold
    quota_slot: str | None = None  # the hold's slot of the call's quota (HoldQuota)

    def to_fields(self) -> dict[str, str]:
        fields = {
            "holder": HOLDER,
            "unit_name": self.unit_name,
            "floor_cents": str(self.floor_cents),
            "max_cents": str(self.max_cents),
            "certification": self.certification or "",
            "min_insurance": str(self.min_insurance) if self.min_insurance is not None else "",
            "attempts": str(self.attempts),
        }
        if self.agreed_cents is not None:
            fields["agreed_cents"] = str(self.agreed_cents)
        if self.quota_slot is not None:
            fields["quota_slot"] = self.quota_slot
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> UnitTerms | None:
        """The terms, or None when the hold is not an inventory hold."""
        # Holds placed before the holder field (live at most hold_ttl_seconds after an
        # upgrade) are known by their rates.
        if fields.get("holder") != HOLDER and "floor_cents" not in fields:
            return None
        return cls(
            unit_name=fields.get("unit_name", ""),
            floor_cents=int(fields["floor_cents"]),
            max_cents=int(fields["max_cents"]),
            certification=fields.get("certification") or None,
            min_insurance=Decimal(fields["min_insurance"]) if fields.get("min_insurance") else None,
            attempts=int(fields.get("attempts") or 0),
            agreed_cents=int(fields["agreed_cents"]) if fields.get("agreed_cents") else None,
            quota_slot=fields.get("quota_slot") or None,
        )

    @classmethod
    def of(cls, hold: Hold) -> UnitTerms | None:
        return cls.from_fields(hold.fields)

    def name(self, hold: Hold) -> str:
        return self.unit_name or hold.resource_id

    @property
    def requirements(self) -> Requirements:
        return Requirements(certification=self.certification, min_insurance=self.min_insurance)
