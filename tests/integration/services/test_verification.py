"""The verification service over the registry in PostgreSQL (both kinds of backend).

Every registry case of every check, the audit row each one leaves, what a confirm would be told
is missing, and inputs that are refused without writing anything.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.errors import DependencyUnavailable, InvalidInput
from services.verification import (
    Finding,
    RegistryProvider,
    VerificationResult,
    VerificationService,
    WeightClass,
)

pytestmark = pytest.mark.integration

CALL = "call-verify-1"


def _service(stores: Any, **provider_kw: Any) -> VerificationService:
    settings = stores.settings()
    provider = RegistryProvider(pool=stores.pool, tz=settings.tz, **provider_kw)
    return VerificationService(pool=stores.pool, provider=provider, settings=settings)


async def _audit_rows(stores: Any, call_id: str = CALL) -> list[dict[str, Any]]:
    rows = await stores.pool.fetch(
        """SELECT verification_id::text, check_kind, status, reason, message, facts,
                  certification, coverage_amount, provider
             FROM verifications WHERE call_id = $1 ORDER BY checked_at""",
        call_id,
    )
    return [dict(r) for r in rows]


LICENCE, SITE, OPERATOR, INSURANCE = (
    "verify_business_licence",
    "verify_site_safety",
    "verify_operator_certification",
    "verify_insurance",
)
# (method, arguments after call_id, reason, facts that must be reported)
CASES: list[tuple[str, tuple[Any, ...], str, dict[str, str]]] = [
    (LICENCE, ("BL-100234", "TX"), "valid", {"business_name": "Lone Star Excavating LLC"}),
    (LICENCE, ("BL-100234",), "valid", {"state": "TX"}),
    (LICENCE, ("BL-100871",), "expired", {"state": "TX"}),
    (LICENCE, ("BL-300112", "TX"), "insufficient", {"standing": "suspended"}),
    (LICENCE, ("BL-200455", "TX"), "mismatch", {"state": "CA"}),
    (LICENCE, ("BL-999999",), "unknown", {}),
    (SITE, ("SITE-1001", "heavy"), "valid", {"rated_weight_class": "heavy"}),
    (SITE, ("SITE-1002", "medium"), "valid", {"rated_weight_class": "medium"}),
    (SITE, ("SITE-1002", "light"), "valid", {"rated_weight_class": "medium"}),
    (SITE, ("SITE-1002", "heavy"), "insufficient", {"rated_weight_class": "medium"}),
    (SITE, ("SITE-1003", "medium"), "insufficient", {"rated_weight_class": "light"}),
    (SITE, ("SITE-1004", "light"), "expired", {"site_id": "SITE-1004"}),
    (SITE, ("SITE-4040", "light"), "unknown", {}),
    (OPERATOR, ("OP-7001", "excavator"), "valid", {"operator_name": "Maria Gonzalez"}),
    (OPERATOR, ("OP-7002", "excavator"), "expired", {"level": "full"}),
    (OPERATOR, ("OP-7003", "aerial_lift"), "insufficient", {"level": "supervised"}),
    (OPERATOR, ("OP-7004", "excavator"), "mismatch", {"held_certifications": "forklift"}),
    (OPERATOR, ("OP-0000", "forklift"), "unknown", {}),
    (INSURANCE, ("POL-55001", 1_000_000), "valid", {"coverage_amount": "2000000.00"}),
    (INSURANCE, ("POL-55004", "1000000"), "valid", {"coverage_amount": "1000000.00"}),
    (INSURANCE, ("POL-55002", 1_000_000), "insufficient", {"coverage_amount": "500000.00"}),
    (INSURANCE, ("POL-55003", 500_000), "expired", {"coverage_amount": "1000000.00"}),
    (INSURANCE, ("POL-00000", 500_000), "unknown", {"required_amount": "500000.00"}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "args", "reason", "facts"), CASES)
async def test_each_registry_case_is_answered_and_audited(fresh, method, args, reason, facts):
    service = _service(fresh)
    result: VerificationResult = await getattr(service, method)(CALL, *args)
    assert result.reason == reason
    assert result.status == ("verified" if reason == "valid" else "failed")
    assert result.verified is (reason == "valid")
    assert facts.items() <= result.facts.items()
    assert result.message.endswith(".") and "None" not in result.message
    assert result.provider == "registry" and result.call_id == CALL
    if reason in ("valid", "expired") and "expires_on" in result.facts:
        assert date.fromisoformat(result.facts["expires_on"] or "")
    rows = await _audit_rows(fresh)
    assert len(rows) == 1
    row = rows[0]
    assert (row["verification_id"], row["status"], row["reason"], row["message"]) == (
        result.verification_id,
        result.status,
        reason,
        result.message,
    )
    assert row["facts"] == result.facts
    # The listing returns exactly what was recorded, as JSON-friendly values.
    listed = await service.list_for_call(CALL)
    assert [r.model_dump() for r in listed] == [result.model_dump()]
    body = result.model_dump(mode="json")
    assert isinstance(body["checked_at"], str) and isinstance(body["verification_id"], str)


async def test_sentences_say_what_was_found(fresh):
    service = _service(fresh)
    site = await service.verify_site_safety(CALL, "SITE-1002", "heavy")
    assert site.message == (
        "Site SITE-1002 is only rated for medium equipment, so it can't take a heavy unit."
    )
    policy = await service.verify_insurance(CALL, "POL-55002", 1_000_000)
    assert policy.message == (
        "Policy POL-55002 covers only $500,000, but at least $1,000,000 is required."
    )
    licence = await service.verify_business_licence(CALL, "BL-200455", "TX")
    assert licence.message == "Business licence BL-200455 is registered in CA, not TX."
    operator = await service.verify_operator_certification(CALL, "OP-7004", "excavator")
    assert operator.message == "Dan Brooks is not certified for excavator."


async def test_lookups_accept_what_a_caller_says(fresh):
    service = _service(fresh)
    assert (await service.verify_business_licence(CALL, "bl 100234", "tx")).reason == "valid"
    assert (await service.verify_insurance(CALL, "pol55001", "$1,000,000")).reason == "valid"
    by_address = await service.verify_site_safety(CALL, "1450 commerce blvd.,  Austin, TX", "HEAVY")
    assert (by_address.reason, by_address.facts["site_id"]) == ("valid", "SITE-1001")
    by_name = await service.verify_operator_certification(CALL, "maria  GONZALEZ", "Excavator")
    assert (by_name.reason, by_name.facts["operator_id"]) == ("valid", "OP-7001")
    lift = await service.verify_operator_certification(CALL, "op 7002", "aerial lift")
    assert (lift.reason, lift.requirement) == ("valid", "aerial_lift")
    assert len(await _audit_rows(fresh)) == 5


async def test_expiry_is_judged_against_today(fresh):
    later = date.today() + timedelta(days=500)
    service = _service(fresh, today=lambda: later)
    result = await service.verify_business_licence(CALL, "BL-100234")
    assert result.reason == "expired"
    assert "expired on" in result.message


async def test_two_operators_with_one_name_need_the_licence_id(fresh):
    await fresh.pool.execute(
        "INSERT INTO registry_operators (operator_id, name) VALUES ('OP-7999', 'Dan Brooks')"
    )
    service = _service(fresh)
    with pytest.raises(InvalidInput) as e:
        await service.verify_operator_certification(CALL, "Dan Brooks", "forklift")
    assert "licence id" in e.value.message
    assert await _audit_rows(fresh) == []
    assert (await service.verify_operator_certification(CALL, "OP-7004", "forklift")).verified


BAD_REQUESTS: list[tuple[str, tuple[Any, ...]]] = [
    (LICENCE, ("bad call id!", "BL-100234")),
    (LICENCE, ("", "BL-100234")),
    (LICENCE, (CALL, "BL-100234'; DROP TABLE verifications; --")),
    (LICENCE, (CALL, "B" * 60)),
    (LICENCE, (CALL, "BL-100234", "Texas")),
    (LICENCE, (CALL, "BL\x07100234")),
    (SITE, (CALL, "SITE-1001", "enormous")),
    (SITE, (CALL, "SITE-1001 OR 1=1", "heavy")),
    (SITE, (CALL, "x" * 300, "heavy")),
    (OPERATOR, (CALL, "OP-7001", "excavator; DELETE FROM x")),
    (OPERATOR, (CALL, "Bob'); DROP TABLE registry_operators;--", "forklift")),
    (INSURANCE, (CALL, "POL-55001", -1_000_000)),
    (INSURANCE, (CALL, "POL-55001", 0)),
    (INSURANCE, (CALL, "POL-55001", 10**15)),
    (INSURANCE, (CALL, "POL-55001", "a lot")),
    (INSURANCE, (CALL, "POL-55001", float("nan"))),
]  # fmt: skip


async def test_refused_inputs_change_nothing(fresh):
    service = _service(fresh)
    for method, args in BAD_REQUESTS:
        with pytest.raises(InvalidInput):
            await getattr(service, method)(*args)
    assert await fresh.pool.fetchval("SELECT count(*) FROM verifications") == 0
    assert await fresh.pool.fetchval("SELECT count(*) FROM registry_operators") == 4
    with pytest.raises(InvalidInput):
        await service.list_for_call("no spaces allowed")


async def test_missing_requirements_counts_only_verified_results_of_that_call(fresh):
    service = _service(fresh)
    one_million = Decimal("1000000")

    async def missing(
        call_id: str | None = CALL, cert: str | None = "excavator", minimum=one_million
    ):
        return await service.missing_requirements(
            call_id=call_id, certification=cert, min_insurance=minimum
        )

    nothing = [
        "an operator certification for excavator",
        "insurance coverage of at least $1,000,000",
    ]
    assert await missing() == nothing
    assert await missing(cert=None, minimum=None) == []

    # Failed checks cover nothing: an expired certification, an insufficient policy.
    await service.verify_operator_certification(CALL, "OP-7002", "excavator")
    await service.verify_insurance(CALL, "POL-55002", one_million)
    # A certification for another kind of unit covers nothing either.
    await service.verify_operator_certification(CALL, "OP-7004", "forklift")
    assert await missing() == nothing

    # Another call's verified results are that call's alone.
    await service.verify_operator_certification("call-other", "OP-7001", "excavator")
    await service.verify_insurance("call-other", "POL-55001", one_million)
    assert await missing() == nothing
    assert await missing(call_id="call-other") == []

    await service.verify_operator_certification(CALL, "OP-7001", "excavator")
    assert await missing() == ["insurance coverage of at least $1,000,000"]
    assert await missing(cert="forklift") == ["insurance coverage of at least $1,000,000"]

    # $2M verified against a $500k requirement still covers a $1M minimum, but not $3M.
    await service.verify_insurance(CALL, "POL-55001", 500_000)
    assert await missing() == []
    assert await missing(minimum=Decimal("2000000")) == []
    assert await missing(minimum=Decimal("3000000")) == [
        "insurance coverage of at least $3,000,000"
    ]
    assert await missing(cert="aerial_lift", minimum=None) == [
        "an operator certification for aerial lift"
    ]
    assert await missing(call_id=None) == nothing
    assert await missing(call_id="", cert="excavator", minimum=None) == [nothing[0]]


class _DownProvider:
    name = "stub"

    def __init__(self) -> None:
        self.calls = 0

    async def _down(self, **_: Any) -> Finding:
        self.calls += 1
        raise DependencyUnavailable("The registry is down.", retry_after=7)

    check_business_licence = check_site_safety = _down
    check_operator_certification = check_insurance = _down

    async def aclose(self) -> None:
        pass


async def test_an_unavailable_provider_is_refused_and_audited_never_verified(fresh):
    provider = _DownProvider()
    service = VerificationService(pool=fresh.pool, provider=provider, settings=fresh.settings())
    with pytest.raises(DependencyUnavailable) as e:
        await service.verify_insurance(CALL, "POL-55001", 1_000_000)
    assert e.value.retry_after == 7
    assert "try again" in e.value.message
    weights: list[WeightClass] = ["heavy"]
    with pytest.raises(DependencyUnavailable):
        await service.verify_site_safety(CALL, "SITE-1001", weights[0])
    rows = await _audit_rows(fresh)
    assert [(r["check_kind"], r["status"], r["reason"], r["provider"]) for r in rows] == [
        ("insurance", "failed", "provider_unavailable", "stub"),
        ("site_safety", "failed", "provider_unavailable", "stub"),
    ]
    assert e.value.details["verification_id"] == rows[0]["verification_id"]
    assert await service.missing_requirements(
        call_id=CALL, certification=None, min_insurance=Decimal("1")
    ) == ["insurance coverage of at least $1"]
    assert provider.calls == 2


class _ContradictoryProvider(_DownProvider):
    async def check_insurance(self, **_: Any) -> Finding:  # type: ignore[override]
        return Finding(reason="valid", facts={"coverage_amount": "250000"})


async def test_a_valid_answer_with_too_little_coverage_is_recorded_insufficient(fresh):
    service = VerificationService(
        pool=fresh.pool, provider=_ContradictoryProvider(), settings=fresh.settings()
    )
    result = await service.verify_insurance(CALL, "POL-1234", 1_000_000)
    assert (result.status, result.reason) == ("failed", "insufficient")
    assert await service.missing_requirements(
        call_id=CALL, certification=None, min_insurance=Decimal("250000")
    ) == ["insurance coverage of at least $250,000"]
