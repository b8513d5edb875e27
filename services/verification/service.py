"""The verification service: checks a rental desk needs before equipment goes out.

Four checks (business licence, job-site safety for a weight class, operator certification,
insurance coverage), each asked of a pluggable provider and *always* recorded in
``verifications`` with its call id, whatever the answer, including "the provider could not be
asked". A confirm of a unit that requires a certification or an insurance minimum asks
:meth:`VerificationService.missing_requirements` what that call has not verified yet.

Inputs are checked before the provider is asked; a refused input changes nothing. A provider
that cannot answer makes the check raise :class:`DependencyUnavailable` (503 with Retry-After),
never a false "verified".
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg

from services import normalize
from services.errors import DependencyUnavailable, InvalidInput
from services.settings import Settings
from services.storage import STORE_UNAVAILABLE
from services.validation import check_id
from services.verification import inputs
from services.verification.messages import certification_words, message
from services.verification.models import (
    CheckKind,
    ContactDetails,
    Finding,
    Reason,
    VerificationResult,
)
from services.verification.providers import VerificationProvider

log = logging.getLogger(__name__)

_RESULT_COLUMNS = """verification_id, call_id, check_kind, subject, requirement, status, reason,
       message, facts, provider, checked_at"""

_INSERT_VERIFICATION = f"""
INSERT INTO verifications (verification_id, call_id, check_kind, subject, requirement, status,
                           reason, message, facts, certification, coverage_amount, provider)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING {_RESULT_COLUMNS}
"""  # noqa: S608 - a constant column list

_VERIFICATIONS_FOR_CALL = f"""
SELECT {_RESULT_COLUMNS}
  FROM verifications
 WHERE call_id = $1
 ORDER BY checked_at, verification_id
 LIMIT $2
"""  # noqa: S608 - a constant column list

# What a call has verified that a confirm can rely on: is the certification among the verified
# ones, and the largest coverage an insurer confirmed.
_VERIFIED_COVERAGE_FOR_CALL = """
SELECT coalesce(bool_or(check_kind = 'operator_certification' AND certification = $2), false)
           AS certified,
       max(coverage_amount) FILTER (WHERE check_kind = 'insurance') AS coverage
  FROM verifications
 WHERE call_id = $1 AND status = 'verified'
"""

MAX_LISTED = 500  # a call with more checks than this is a runaway agent, not a caller


class VerificationService:
    def __init__(
        self, *, pool: asyncpg.Pool, provider: VerificationProvider, settings: Settings
    ) -> None:
        self.pool = pool
        self.provider = provider
        self.settings = settings

    # -- the four checks ----------------------------------------------------------------------

    async def verify_business_licence(
        self, call_id: str, licence_number: str, state: str | None = None
    ) -> VerificationResult:
        """Is the business licence on file (in ``state``, if given), in good standing, current?"""
        call = check_id(call_id, field="call_id")
        number = inputs.registry_code(licence_number, field="licence_number", example="BL-100234")
        state_code = inputs.state_code(state)
        return await self._check(
            "business_licence",
            call_id=call,
            subject=number,
            requirement=state_code,
            ask=lambda: self.provider.check_business_licence(
                licence_number=number, state=state_code
            ),
        )

    async def verify_site_safety(
        self, call_id: str, site_id: str, weight_class: str
    ) -> VerificationResult:
        """Can the job site (its id, or its street address) take a unit of ``weight_class``?"""
        call = check_id(call_id, field="call_id")
        site = inputs.site_reference(site_id)
        weight = inputs.weight_class(weight_class)
        return await self._check(
            "site_safety",
            call_id=call,
            subject=site,
            requirement=weight,
            ask=lambda: self.provider.check_site_safety(site=site, weight_class=weight),
        )

    async def verify_operator_certification(
        self, call_id: str, operator_id: str, certification: str
    ) -> VerificationResult:
        """Does the operator (licence id, or full name) hold ``certification``, current and full?"""
        call = check_id(call_id, field="call_id")
        operator = inputs.operator_reference(operator_id)
        cert = inputs.certification(certification)
        return await self._check(
            "operator_certification",
            call_id=call,
            subject=operator,
            requirement=cert,
            certification=cert,
            ask=lambda: self.provider.check_operator_certification(
                operator=operator, certification=cert
            ),
        )

    async def verify_insurance(
        self, call_id: str, policy_number: str, required_amount: Decimal | float | int | str
    ) -> VerificationResult:
        """Is the policy current, covering at least ``required_amount`` dollars?"""
        call = check_id(call_id, field="call_id")
        policy = inputs.registry_code(policy_number, field="policy_number", example="POL-55001")
        required = inputs.amount(required_amount, field="required_amount")
        return await self._check(
            "insurance",
            call_id=call,
            subject=policy,
            requirement=str(required),
            required_amount=required,
            ask=lambda: self.provider.check_insurance(
                policy_number=policy, required_amount=required
            ),
        )

    async def list_for_call(self, call_id: str) -> list[VerificationResult]:
        """Every check recorded for the call, oldest first."""
        call = check_id(call_id, field="call_id")
        try:
            rows = await self.pool.fetch(_VERIFICATIONS_FOR_CALL, call, MAX_LISTED)
        except STORE_UNAVAILABLE as e:
            raise DependencyUnavailable("Verifications can't be read right now.") from e
        return [_result(row) for row in rows]

    # -- what inventory asks at confirm (services.inventory.requirements.RequirementsChecker) ---

    async def missing_requirements(
        self, *, call_id: str | None, certification: str | None, min_insurance: Decimal | None
    ) -> list[str]:
        """What the unit requires that no *verified* result of the call covers, as fragments
        ("an operator certification for excavator"); empty when everything is covered.

        A verified coverage covers every minimum at or below it ($2M covers a $1M minimum).
        """
        cert = inputs.certification(certification) if certification else None
        minimum: Decimal | None = None
        if min_insurance is not None and min_insurance != 0:
            minimum = inputs.amount(min_insurance, field="min_insurance")
        if cert is None and minimum is None:
            return []
        certified, coverage = False, None
        if call_id:
            call = check_id(call_id, field="call_id")
            try:
                row = await self.pool.fetchrow(_VERIFIED_COVERAGE_FOR_CALL, call, cert)
            except STORE_UNAVAILABLE as e:
                raise DependencyUnavailable("Verifications can't be read right now.") from e
            certified, coverage = row["certified"], row["coverage"]
        missing: list[str] = []
        if cert is not None and not certified:
            missing.append(f"an operator certification for {certification_words(cert)}")
        if minimum is not None and (coverage is None or coverage < minimum):
            missing.append(f"insurance coverage of at least ${minimum:,.0f}")
        return missing

    # -- spoken contact details ---------------------------------------------------------------

    async def normalize_contact(
        self, email: str | None = None, phone: str | None = None
    ) -> ContactDetails:
        """An email address and/or phone number as said or typed, in canonical form."""
        if not (email and email.strip()) and not (phone and phone.strip()):
            raise InvalidInput("Please give an email address or a phone number.", field="email")
        return ContactDetails(
            email=normalize.normalize_email(email) if email and email.strip() else None,
            phone=normalize.normalize_phone(phone) if phone and phone.strip() else None,
        )

    # -- asking and recording -----------------------------------------------------------------

    async def _check(
        self,
        check: CheckKind,
        *,
        call_id: str,
        subject: str,
        requirement: str | None,
        ask: Callable[[], Awaitable[Finding]],
        certification: str | None = None,
        required_amount: Decimal | None = None,
    ) -> VerificationResult:
        try:
            finding = await ask()
        except DependencyUnavailable as e:
            # Recorded too: the audit shows the call asked and why it got no answer.
            verification_id = await self._record_unavailable(
                check, call_id=call_id, subject=subject, requirement=requirement
            )
            raise DependencyUnavailable(
                message(check, "provider_unavailable", subject, {}),
                retry_after=e.retry_after,
                check=check,
                verification_id=verification_id,
            ) from e
        coverage: Decimal | None = None
        if check == "insurance" and required_amount is not None:
            finding, coverage = _credited_coverage(finding, required_amount)
        return await self._record(
            check,
            call_id=call_id,
            subject=subject,
            requirement=requirement,
            reason=finding.reason,
            facts=finding.facts,
            certification=certification if finding.reason == "valid" else None,
            coverage_amount=coverage,
        )

    async def _record(
        self,
        check: CheckKind,
        *,
        call_id: str,
        subject: str,
        requirement: str | None,
        reason: Reason,
        facts: dict[str, str | None],
        certification: str | None = None,
        coverage_amount: Decimal | None = None,
    ) -> VerificationResult:
        status = "verified" if reason == "valid" else "failed"
        try:
            row = await self.pool.fetchrow(
                _INSERT_VERIFICATION,
                uuid.uuid4(),
                call_id,
                check,
                subject,
                requirement,
                status,
                reason,
                message(check, reason, subject, facts, requirement),
                facts,
                certification,
                coverage_amount,
                self.provider.name,
            )
        except STORE_UNAVAILABLE as e:
            # An answer that is not on record would not count at confirm; do not give it.
            raise DependencyUnavailable(
                "Verification results can't be saved right now; please try again in a moment."
            ) from e
        return _result(row)

    async def _record_unavailable(
        self, check: CheckKind, *, call_id: str, subject: str, requirement: str | None
    ) -> str | None:
        try:
            result = await self._record(
                check,
                call_id=call_id,
                subject=subject,
                requirement=requirement,
                reason="provider_unavailable",
                facts={},
            )
        except DependencyUnavailable:
            log.warning("could not record an unavailable provider", extra={"check": check})
            return None
        return result.verification_id


def _credited_coverage(finding: Finding, required: Decimal) -> tuple[Finding, Decimal | None]:
    """The coverage a verified insurance result vouches for, and the finding to record.

    A provider that says "valid" while reporting less coverage than required contradicts itself;
    that is recorded as insufficient rather than trusted.
    """
    if finding.reason != "valid":
        return finding, None
    reported = _decimal(finding.facts.get("coverage_amount"))
    if reported is None:
        return finding, required
    if reported < required:
        return Finding(reason="insufficient", facts=finding.facts), None
    return finding, reported


def _decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _result(row: asyncpg.Record) -> VerificationResult:
    facts: dict[str, Any] = row["facts"]
    return VerificationResult(
        verification_id=str(row["verification_id"]),
        call_id=row["call_id"],
        check=row["check_kind"],
        subject=row["subject"],
        requirement=row["requirement"],
        status=row["status"],
        reason=row["reason"],
        message=row["message"],
        facts=facts,
        provider=row["provider"],
        checked_at=row["checked_at"],
    )
