"""Where a verification's answer comes from: a small Protocol, and the factory that picks one.

A provider answers each check with a :class:`Finding` or raises :class:`DependencyUnavailable`
when it cannot; it writes nothing and phrases nothing (the service records and phrases). The two
implementations sit side by side: :class:`RegistryProvider` (tables in PostgreSQL, the default)
and :class:`HttpProvider` (a remote registry, with timeouts, retries and a circuit breaker).
Inputs arrive already checked and normalised by the service.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

import asyncpg

from services.settings import Settings
from services.verification.http_provider import HttpProvider
from services.verification.models import Finding, WeightClass
from services.verification.registry import RegistryProvider


class VerificationProvider(Protocol):
    # Recorded with every result, so the audit says who vouched for it.
    name: str

    async def check_business_licence(self, *, licence_number: str, state: str | None) -> Finding:
        """Is the licence on file, in that state if one is given, in good standing, current?"""
        ...

    async def check_site_safety(self, *, site: str, weight_class: WeightClass) -> Finding:
        """Is the site (id or address) inspected and rated for at least that weight class?"""
        ...

    async def check_operator_certification(self, *, operator: str, certification: str) -> Finding:
        """Does the operator (licence id or name) hold that certification, in full and current?"""
        ...

    async def check_insurance(self, *, policy_number: str, required_amount: Decimal) -> Finding:
        """Is the policy current and covering at least the amount?"""
        ...

    async def aclose(self) -> None:
        """Release what the provider opened itself (never what it was handed)."""
        ...


def build_provider(settings: Settings, pool: asyncpg.Pool) -> VerificationProvider:
    """The provider ``settings.verification_provider`` names."""
    if settings.verification_provider == "http":
        return HttpProvider.from_settings(settings)
    return RegistryProvider(pool=pool, tz=settings.tz)
