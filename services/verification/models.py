"""What the verification service is asked and what it answers; answers are HTTP response bodies.

A provider answers a check with a :class:`Finding` (a reason code and the facts it found); the
service turns that into a :class:`VerificationResult`, adding the sentence the agent says, and
stores it. ``status`` is derived from ``reason`` and never taken from a provider, so nothing but
``valid`` can ever read as verified.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CheckKind = Literal["business_licence", "site_safety", "operator_certification", "insurance"]
Status = Literal["verified", "failed"]
# What a provider may conclude about a subject.
FindingReason = Literal["valid", "expired", "insufficient", "unknown", "mismatch"]
# ...and what the service records when the provider could not be asked.
Reason = Literal["valid", "expired", "insufficient", "unknown", "mismatch", "provider_unavailable"]
WeightClass = Literal["light", "medium", "heavy"]
WEIGHT_CLASSES: tuple[WeightClass, ...] = ("light", "medium", "heavy")  # lightest first

# A provider's facts are bounded: a remote registry is not trusted to send essays.
MAX_FACTS = 20
MAX_FACT_LENGTH = 200


class Finding(BaseModel):
    """A provider's answer to one check: a reason code and what it found (dates, amounts...).

    Facts are strings (ISO dates, decimal amounts as ``"1000000.00"``) so money stays exact and
    the body stays plain JSON.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    reason: FindingReason
    facts: dict[str, str | None] = Field(default_factory=dict)

    @field_validator("facts", mode="before")
    @classmethod
    def _scalar_facts(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if len(value) > MAX_FACTS:
            raise ValueError(f"at most {MAX_FACTS} facts")
        facts: dict[str, str | None] = {}
        for key, fact in value.items():
            if not isinstance(key, str) or len(key) > 64:
                raise ValueError("fact names are short strings")
            if isinstance(fact, dict | list):
                raise ValueError("facts are scalars")
            text = None if fact is None else str(fact)
            if text is not None and len(text) > MAX_FACT_LENGTH:
                raise ValueError("a fact is too long")
            facts[key] = text
        return facts

    @property
    def status(self) -> Status:
        return "verified" if self.reason == "valid" else "failed"


class VerificationResult(BaseModel):
    """One recorded check, as the agent and the audit see it."""

    verification_id: str
    call_id: str
    check: CheckKind
    # The licence, site, operator or policy as the caller gave it (trimmed).
    subject: str
    # What was asked of it: a state, a weight class, a certification, an amount; None if nothing.
    requirement: str | None
    status: Status
    reason: Reason
    # A sentence the agent can say to the caller as it is.
    message: str
    facts: dict[str, str | None]
    provider: str
    checked_at: datetime

    @property
    def verified(self) -> bool:
        return self.status == "verified"


class ContactDetails(BaseModel):
    """A caller's email address and phone number in canonical form (lower case, E.164)."""

    email: str | None = None
    phone: str | None = None
