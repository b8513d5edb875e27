"""What the agent reads from the mesh's answers: the HTTP contract, as the agent sees it.

The agent never imports :mod:`services`; these models name only the fields the flows use and
ignore the rest, so the mesh can add fields without breaking a running worker. Money arrives
as a decimal string (inventory) or a number (scheduling, calls) and is kept as ``Decimal``.
"""

from __future__ import annotations

import datetime as dt
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- scheduling ---------------------------------------------------------------------------------


class ServiceType(_Answer):
    service_type: str
    name: str
    description: str = ""
    duration_minutes: int
    price_min_usd: Decimal
    price_max_usd: Decimal


class Slot(_Answer):
    start: datetime
    end: datetime


class SlotList(_Answer):
    date: dt.date
    service_type: str
    slots: list[Slot]
    next_open_date: dt.date | None = None


class Customer(_Answer):
    customer_id: str
    phone: str
    name: str | None = None
    preferred_time_of_day: str | None = None
    preferred_weekdays: list[str] = Field(default_factory=list)


class Appointment(_Answer):
    appointment_id: str
    reference: str
    status: str
    service_type: str
    service_name: str
    start: datetime
    end: datetime
    price_min_usd: Decimal
    price_max_usd: Decimal
    phone: str
    customer_name: str | None = None


class Callback(_Answer):
    callback_id: str
    scheduled_for: datetime
    status: str


# -- inventory ----------------------------------------------------------------------------------


class Unit(_Answer):
    unit_id: str
    name: str
    category: str
    description: str = ""
    status: str
    daily_rate: Decimal
    max_rate: Decimal
    required_certification: str | None = None
    min_insurance: Decimal | None = None
    location: str = ""
    weight_class: str | None = None


class Requirements(_Answer):
    certification: str | None = None
    min_insurance: Decimal | None = None


class Hold(_Answer):
    hold_id: str
    unit_id: str
    unit_name: str
    start: datetime
    end: datetime
    expires_at: datetime
    days: int | None = None
    daily_rate: Decimal
    quoted_total: Decimal
    requires: Requirements = Field(default_factory=Requirements)
    replayed: bool = False


class RateAgreement(_Answer):
    hold_id: str
    agreed_rate: Decimal
    list_rate: Decimal
    days: int | None = None
    quoted_total: Decimal
    attempts_left: int


class RentalBooking(_Answer):
    booking_id: str
    reference: str
    unit_id: str
    unit_name: str
    status: str
    start: datetime
    end: datetime
    days: int | None = None
    daily_rate: Decimal
    total: Decimal
    negotiated: bool = False
    replayed: bool = False


# -- verification -------------------------------------------------------------------------------


class Verification(_Answer):
    verification_id: str
    check: str
    status: str
    reason: str
    # A sentence the agent can say as it is.
    message: str

    @property
    def verified(self) -> bool:
        return self.status == "verified"


# -- calls --------------------------------------------------------------------------------------


class Call(_Answer):
    call_id: str
    flow: str


class CallCost(_Answer):
    total_usd: Decimal
    components: dict[str, Decimal] = Field(default_factory=dict)


class CallSummary(_Answer):
    call_id: str
    flow: str
    outcome: str
    booked: bool
    booking_references: list[str] = Field(default_factory=list)
    duration_seconds: float
    cost: CallCost
    summary: str


class Usage(_Answer):
    """Usage since the last report: the body of a usage event, and what the worker sends."""

    stt_audio_seconds: float = 0.0
    llm_prompt_tokens: int = 0
    llm_cached_tokens: int = 0
    llm_completion_tokens: int = 0
    tts_characters: int = 0

    @property
    def empty(self) -> bool:
        return not any(self.model_dump().values())
