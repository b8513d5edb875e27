"""Verification: business licences, job-site safety, operator certifications and insurance for the
equipment-rental desk, each asked of a pluggable provider and audited per call; and spoken
email/phone normalisation.
"""

from services.verification.breaker import BreakerState, CircuitBreaker, Permit, backoff_delay
from services.verification.http_provider import HttpProvider
from services.verification.models import (
    WEIGHT_CLASSES,
    CheckKind,
    ContactDetails,
    Finding,
    Reason,
    Status,
    VerificationResult,
    WeightClass,
)
from services.verification.providers import VerificationProvider, build_provider
from services.verification.registry import RegistryProvider
from services.verification.service import VerificationService

__all__ = [
    "WEIGHT_CLASSES",
    "BreakerState",
    "CheckKind",
    "CircuitBreaker",
    "ContactDetails",
    "Finding",
    "HttpProvider",
    "Permit",
    "Reason",
    "RegistryProvider",
    "Status",
    "VerificationProvider",
    "VerificationResult",
    "VerificationService",
    "WeightClass",
    "backoff_delay",
    "build_provider",
]
