"""Personal data is masked in log records, by field name and by shape."""

from __future__ import annotations

import io
import logging

import pytest

from deployments.logmask import PersonalDataFilter, mask_text, mask_value

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("call from +1 (555) 123-4567 today", "123-4567", "***67"),
        ("email john.smith@gmail.com please", "john.smith", "j***@gmail.com"),
        ("reach 5551234567 or jane@x.org", "5551234567", "***67"),
    ],
)
def test_mask_text_hides_phones_and_emails(text: str, hidden: str, kept: str):
    masked = mask_text(text)
    assert hidden not in masked
    assert kept in masked


@pytest.mark.parametrize(
    "text",
    [
        "booking on 2026-11-23 for unit-42",
        "hold bay-1.0123456789abcdef01234567",
        "took 12 ms",
        "booking 550e8400-e29b-41d4-a716-446655440000",
    ],
)
def test_mask_text_leaves_dates_ids_and_numbers(text: str):
    assert mask_text(text) == text


def test_named_fields_are_masked_whatever_their_shape():
    assert mask_value("licence_number", "CDL-A-99812") == "***12"
    assert mask_value("license", "X1") == "***"
    assert mask_value("customer_phone", "+15551234567") == "***67"
    assert mask_value("email", "a@b.co") == "***co"
    assert mask_value("unit_id", "unit-1") == "unit-1"
    assert mask_value("count", 3) == 3


def test_filter_masks_message_args_and_extra_fields():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s phone=%(phone)s lic=%(licence_number)s"))
    handler.addFilter(PersonalDataFilter())
    logger = logging.getLogger("test.logmask")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "caller %s gave email",
            "555-867-5309",
            extra={"phone": "+1 555 867 5309", "licence_number": "D1234-5678"},
        )
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "867-5309" not in out
    assert "867 5309" not in out
    assert "D1234-5678" not in out
    assert "lic=***78" in out
