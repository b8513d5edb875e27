"""Input checks, sentences and provider answers of the verification service, without servers."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.errors import InvalidInput
from services.inventory.requirements import describe_requirements
from services.settings import Settings
from services.verification import (
    Finding,
    HttpProvider,
    RegistryProvider,
    VerificationService,
    inputs,
)
from services.verification.messages import message, spoken_amount, spoken_date
from services.verification.providers import build_provider

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("said", "expected"),
    [("BL-100234", "BL-100234"), (" bl 100234 ", "BL 100234"), ("pol-55001", "POL-55001")],
)
def test_registry_codes_are_upper_cased_and_kept_as_said(said, expected):
    assert inputs.registry_code(said, field="licence_number", example="BL-1") == expected


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "",
        "AB",
        "X" * 40,
        "BL-1002'; DROP TABLE verifications;--",
        "1 OR 1=1",
        "BL\x00100",
        "BL-100234-",
        "BL\n100",
    ],
)
def test_registry_codes_refuse_junk(bad):
    with pytest.raises(InvalidInput) as e:
        inputs.registry_code(bad, field="licence_number", example="BL-100234")
    assert e.value.details["field"] == "licence_number"


def test_states_weight_classes_and_certifications():
    assert inputs.state_code(" tx ") == "TX"
    assert inputs.state_code(None) is None
    for bad in ("Texas", "ZZ", "T"):
        with pytest.raises(InvalidInput):
            inputs.state_code(bad)
    assert inputs.weight_class(" Heavy ") == "heavy"
    for bad_weight in ("huge", "", None, "heavy; --"):
        with pytest.raises(InvalidInput):
            inputs.weight_class(bad_weight)
    assert inputs.certification("Aerial Lift") == "aerial_lift"
    assert inputs.certification("aerial-lift") == "aerial_lift"
    for bad in ("", "x", "1excavator", "excavator'); --", "a" * 41):
        with pytest.raises(InvalidInput):
            inputs.certification(bad)


def test_sites_and_operators_take_ids_names_and_addresses():
    assert inputs.site_reference("1450  Commerce Blvd., Austin TX") == (
        "1450 Commerce Blvd., Austin TX"
    )
    assert inputs.operator_reference("José O'Neil-Brooks") == "José O'Neil-Brooks"
    for bad in ("x; DELETE FROM verifications", "<script>", "a" * 201, "line\nbreak"):
        with pytest.raises(InvalidInput):
            inputs.site_reference(bad)
    for bad in ("Robert'); DROP TABLE operators;--", "", "a" * 121):
        with pytest.raises(InvalidInput):
            inputs.operator_reference(bad)


@pytest.mark.parametrize(
    ("given", "expected"),
    [(1_000_000, "1000000.00"), ("$1,000,000", "1000000.00"), (Decimal("2.5"), "2.50")],
)
def test_amounts(given, expected):
    assert str(inputs.amount(given, field="required_amount")) == expected


@pytest.mark.parametrize("bad", [0, -1, "-5", "1e12", "NaN", "Infinity", "lots", True, None])
def test_amounts_refuse_zero_negative_absurd_and_non_numbers(bad):
    with pytest.raises(InvalidInput):
        inputs.amount(bad, field="required_amount")


def test_finding_facts_are_bounded_scalars():
    finding = Finding.model_validate(
        {"reason": "valid", "facts": {"coverage_amount": 2000000, "expires_on": None}}
    )
    assert finding.facts == {"coverage_amount": "2000000", "expires_on": None}
    assert finding.status == "verified"
    assert Finding(reason="expired").status == "failed"
    for bad in (
        {"reason": "provider_unavailable"},
        {"reason": "verified"},
        {"reason": "valid", "facts": {"x": {"nested": 1}}},
        {"reason": "valid", "facts": {"x": "y" * 201}},
        {"reason": "valid", "facts": {str(i): "v" for i in range(21)}},
    ):
        with pytest.raises(ValidationError):
            Finding.model_validate(bad)


def test_sentences_use_the_facts_and_survive_missing_ones():
    assert spoken_date("2027-03-31") == "March 31, 2027"
    assert spoken_date("not a date") is None
    assert spoken_amount("1000000.00") == "$1,000,000"
    assert spoken_amount("1500.50") == "$1,500.50"
    said = message(
        "insurance",
        "insufficient",
        "POL-55002",
        {"coverage_amount": "500000.00", "required_amount": "1000000.00"},
    )
    assert said == "Policy POL-55002 covers only $500,000, but at least $1,000,000 is required."
    said = message(
        "site_safety",
        "insufficient",
        "SITE-1002",
        {"rated_weight_class": "medium", "requested_weight_class": "heavy"},
    )
    assert (
        said == "Site SITE-1002 is only rated for medium equipment, so it can't take a heavy unit."
    )
    for check in ("business_licence", "site_safety", "operator_certification", "insurance"):
        for reason in ("valid", "expired", "insufficient", "unknown", "mismatch"):
            for requirement in (None, "heavy"):
                text = message(check, reason, "X-1", {}, requirement)  # type: ignore[arg-type]
                assert text.endswith(".") and "None" not in text, text


async def test_nothing_verified_without_a_call_and_fragments_match_inventory():
    service = VerificationService(pool=None, provider=None, settings=Settings())  # type: ignore[arg-type]
    missing = await service.missing_requirements(
        call_id=None, certification="aerial_lift", min_insurance=Decimal("1000000")
    )
    assert missing == describe_requirements(
        certification="aerial_lift", min_insurance=Decimal("1000000")
    )
    assert missing == [
        "an operator certification for aerial lift",
        "insurance coverage of at least $1,000,000",
    ]
    assert (
        await service.missing_requirements(call_id=None, certification=None, min_insurance=None)
        == []
    )
    with pytest.raises(InvalidInput):
        await service.missing_requirements(
            call_id="c1", certification=None, min_insurance=Decimal("-1")
        )


async def test_normalize_contact_uses_the_shared_normaliser():
    service = VerificationService(pool=None, provider=None, settings=Settings())  # type: ignore[arg-type]
    contact = await service.normalize_contact(
        email="John dot Smith at gmail dot com", phone="five five five, one two three, 4567"
    )
    assert contact.model_dump() == {"email": "john.smith@gmail.com", "phone": "+15551234567"}
    assert (await service.normalize_contact(phone="(555) 123-4567")).email is None
    with pytest.raises(InvalidInput):
        await service.normalize_contact()
    with pytest.raises(InvalidInput):
        await service.normalize_contact(email="john at gmail")


async def test_build_provider_follows_settings():
    registry = build_provider(Settings(), pool=None)  # type: ignore[arg-type]
    assert isinstance(registry, RegistryProvider)
    http = build_provider(
        Settings(
            verification_provider="http",
            verification_http_url="http://127.0.0.1:9/",
            verification_breaker_failures=7,
        ),
        pool=None,  # type: ignore[arg-type]
    )
    assert isinstance(http, HttpProvider)
    assert http.breaker.failure_threshold == 7 and http.base_url == "http://127.0.0.1:9"
    await http.aclose()
    with pytest.raises(ValueError):
        build_provider(Settings(verification_provider="http"), pool=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        HttpProvider(base_url="ftp://example.com")
