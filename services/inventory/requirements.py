"""What a confirm asks of the verification service, behind a small Protocol.

The verification service implements :class:`RequirementsChecker`; inventory never imports it, so
either can change its insides, and a test can hand in a double.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol


class RequirementsChecker(Protocol):
    async def missing_requirements(
        self, *, call_id: str | None, certification: str | None, min_insurance: Decimal | None
    ) -> list[str]:
        """Sentence fragments naming what the call has not verified; empty when all is met."""
        ...


def describe_requirements(*, certification: str | None, min_insurance: Decimal | None) -> list[str]:
    """Everything a unit requires, as the fragments a checker would return when nothing is met."""
    missing: list[str] = []
    if certification:
        missing.append(f"an operator certification for {certification.replace('_', ' ')}")
    if min_insurance is not None:
        missing.append(f"insurance coverage of at least ${min_insurance:,.0f}")
    return missing


def spoken_list(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
