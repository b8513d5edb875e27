"""Request and response bodies of the inventory service.

Responses are JSON-friendly: ids are strings, times ISO 8601 with an offset, money a decimal
string with two places (``"325.00"``), so nothing is lost to floating point on the way to a
caller.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

UnitStatus = Literal["AVAILABLE", "RENTED", "MAINTENANCE"]
BookingKind = Literal["rental", "test_drive"]


class Requirements(BaseModel):
    """What a caller must have verified before a unit's hold can be confirmed."""

    certification: str | None = None
    min_insurance: Decimal | None = None

    @property
    def any(self) -> bool:
        return self.certification is not None or self.min_insurance is not None


class Unit(BaseModel):
    unit_id: str
    name: str
    category: str
    description: str
    status: UnitStatus
    daily_rate: Decimal
    max_rate: Decimal
    required_certification: str | None
    min_insurance: Decimal | None
    location: str
    weight_class: Literal["light", "medium", "heavy"] | None
    # 1440: rented by the day; shorter: test drives on that grid.
    cell_minutes: int
    booking_kind: BookingKind

    @property
    def requirements(self) -> Requirements:
        return Requirements(
            certification=self.required_certification, min_insurance=self.min_insurance
        )


class HoldRequest(BaseModel):
    """Hold a unit. Rentals take dates (``end`` is the return date, default: one day);
    test drives take times on the unit's grid (``end`` defaults to one slot)."""

    model_config = ConfigDict(extra="forbid")

    unit_id: str = Field(max_length=200)
    start: str | datetime | date
    end: str | datetime | date | None = None
    call_id: str | None = Field(None, max_length=200)


class HoldResponse(BaseModel):
    hold_id: str
    unit_id: str
    unit_name: str
    kind: BookingKind
    start: datetime
    end: datetime
    expires_at: datetime
    days: int | None
    minutes: int | None
    daily_rate: Decimal
    quoted_total: Decimal
    requires: Requirements
    replayed: bool = False


class RateProposal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate: Decimal


class RateAgreement(BaseModel):
    """An accepted rate, locked to the hold: confirm charges it."""

    hold_id: str
    unit_id: str
    agreed_rate: Decimal
    list_rate: Decimal
    days: int | None
    quoted_total: Decimal
    attempts_used: int
    attempts_left: int


class RentalBooking(BaseModel):
    booking_id: str
    reference: str
    unit_id: str
    unit_name: str
    kind: BookingKind
    status: Literal["confirmed", "cancelled"]
    start: datetime
    end: datetime
    days: int | None
    minutes: int | None
    call_id: str | None
    daily_rate: Decimal
    list_rate: Decimal
    negotiated: bool
    total: Decimal
    created_at: datetime
    cancel_reason: str | None = None
    replayed: bool = False


class ReleaseResult(BaseModel):
    hold_id: str
    released: bool
