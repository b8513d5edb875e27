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
        # A LiveKit SIP room name, used as the call id: the caller's number between underscores.
        ("call call-_+15551234567_AbCd ended", "15551234567", "call-_***67_AbCd"),
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


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("licence BL-100234 is valid", "100234", "licence ***34 is valid"),  # the demo registry
        ("checked (BL-300112).", "300112", "checked (***12)."),
        ("said BL 200455, TX", "200455", "said ***55, TX"),  # as read aloud, normalised
        ("said bl-100871", "100871", "said ***71"),
        ("/verification/licences/BL-100234", "100234", "/verification/licences/***34"),
        ("DL A1234567 (CA)", "1234567", "DL ***67 (CA)"),  # letter + 7 digits
        ("DL D1234-5678", "1234-5678", "DL ***78"),
        ("DL A123-456-78-901-0 (FL)", "456-78-901", "DL ***10 (FL)"),  # letter + 12 digits
        ("DL A123-4567-8901 (IL)", "4567-8901", "DL ***01 (IL)"),
        ("licence MORGA657054SM9IJ", "MORGA657054", "licence ***IJ"),  # UK driving licence
        ("CDL 99812345 on file", "99812345", "***45 on file"),
    ],
)
def test_mask_text_hides_licence_shaped_tokens(text: str, hidden: str, kept: str):
    masked = mask_text(text)
    assert hidden not in masked
    assert masked == kept


@pytest.mark.parametrize(
    "text",
    [
        "unit GEN-701 is on hold",  # unit ids: a few digits
        "units EXC-201, BML-402 and PAS-951",
        "site SITE-1004, operator OP-7003, policy POL-55002",
        "hold GEN-701.0123456789abcdef01234567",  # a hold id: unit id, dot, hex token
        "hold EXC-201.a12345678901234567890123",  # a hex token that looks letter + digits
        "booking reference K7QX3A",  # references: 6 letters and digits
        "booking reference A34679",
        "request a1234567-e29b-41d4-a716-446655440000",  # a UUID segment is not a token
        "request A1234567-E29B-41D4-A716-446655440000",
        "call demo-2026-11-23-01 ended",
        "idempotency key demo-book-1",
        "in 123456 bytes",  # a lowercase word and a number
        "POST /inventory/holds 201 12.3ms",
        "starts 2026-11-23T10:00:00Z",
        "Ray 2.60.0 at 127.0.0.1:8265",
        "licence CDL-A-99812",  # too few digits to tell from an id; named fields catch it
    ],
)
def test_mask_text_leaves_ids_that_are_not_licences(text: str):
    assert mask_text(text) == text


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        # Query strings as an access log writes them: percent-encoded, "+" for a space.
        ("/customers?phone=%2B15551234567", "15551234567", "/customers?phone=***67"),
        ("/customers?phone=+15551234567&x=1", "15551234567", "/customers?phone=***67&x=1"),
        ("/calls?q=%2B15551234567", "15551234567", "/calls?q=***67"),
        ("/calls?q=call%20%2B1%20555%20123%204567", "123%204567", "/calls?q=call%20***67"),
        ("/calls?q=%2B1%20%28555%29%20123%2D4567", "%28555%29", "/calls?q=***67"),
        ("/calls?q=555+123+4567", "555+123", "/calls?q=***67"),
        ("/calls?q=john.smith%40gmail.com", "john.smith", "/calls?q=j***%40gmail.com"),
        ("/calls?q=john%2Bwork%40gmail.com&k=v", "work", "/calls?q=j***%40gmail.com&k=v"),
        ("/calls?q=mail%3Ajohn%40gmail.com", "john", "/calls?q=mail%3Aj***%40gmail.com"),
        ("/calls?q=op%20BL-100234", "100234", "/calls?q=op%20***34"),
        # Named like personal data: the whole value, whatever its shape.
        ("/x?customer_email=jane%40x.org&n=2", "jane", "/x?customer_email=***rg&n=2"),
        ("/x?caller_id=12345", "12345", "/x?caller_id=***45"),
    ],
)
def test_mask_text_hides_percent_encoded_phones_and_emails(text: str, hidden: str, kept: str):
    masked = mask_text(text)
    assert hidden not in masked
    assert masked == kept


@pytest.mark.parametrize(
    "text",
    [
        "GET /scheduling/slots?date=2026-11-23&service_type=oil_change HTTP/1.1",
        "/inventory/holds?start=2026-11-23T10%3A00%3A00%2B00%3A00&end=2026-11-24T10%3A00Z",
        "/inventory/units?query=excavator%20200&category=heavy",
        "/inventory/units?query=GEN-701%20and%20OP-7003",
        "/x?progress=100%25%20done&n=42",
        "/x?phone=",  # nothing to hide
    ],
)
def test_mask_text_leaves_encoded_queries_without_personal_data(text: str):
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


def test_filter_masks_a_licence_in_free_text():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s | %(detail)s"))
    handler.addFilter(PersonalDataFilter())
    logger = logging.getLogger("test.logmask.licence")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "checked %s for unit GEN-701",
            "BL-100234",
            extra={"detail": {"said": "my licence is A1234567", "unit_id": "GEN-701"}},
        )
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "100234" not in out
    assert "1234567" not in out
    assert out.startswith("checked ***34 for unit GEN-701 | ")
    assert "'unit_id': 'GEN-701'" in out


def _captured(logger_name: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(PersonalDataFilter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.propagate = False
    return logger, stream, handler


def test_filter_masks_the_traceback_of_a_logged_exception():
    # As asyncpg words a refused argument: its message quotes the value sent.
    logger, stream, handler = _captured("test.logmask.traceback")
    try:
        try:
            raise ValueError(
                "invalid input for query argument $2: 'jane.doe@example.com, +1 555 867 5309'"
            )
        except ValueError:
            logger.exception("unhandled error", extra={"path": "/scheduling/appointments"})
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "Traceback (most recent call last)" in out
    assert "ValueError: invalid input for query argument $2" in out
    assert "jane.doe" not in out
    assert "867 5309" not in out
    assert "j***@example.com" in out
    assert "***09" in out


def test_filter_masks_a_chained_traceback_and_the_stack():
    logger, stream, handler = _captured("test.logmask.chain")
    try:
        try:
            try:
                raise KeyError("BL-100234")
            except KeyError as e:
                raise RuntimeError("lookup of 5551234567 failed") from e
        except RuntimeError:
            logger.error("lookup failed", exc_info=True, stack_info=True)
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "The above exception was the direct cause" in out
    assert "Stack (most recent call last)" in out
    assert "100234" not in out
    assert "5551234567" not in out


def test_filter_masks_an_exception_given_as_an_argument():
    logger, stream, handler = _captured("test.logmask.arg")
    try:
        logger.warning("provider failed: %s", OSError("no answer for +15551234567"))
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "provider failed: no answer for ***67\n"


def test_every_handler_writes_the_masked_traceback():
    """The masked text is cached on the record, so a second handler (with or without the
    filter) does not format the raw exception again."""
    logger, first, handler = _captured("test.logmask.two")
    second = io.StringIO()
    plain = logging.StreamHandler(second)
    logger.addHandler(plain)
    try:
        try:
            raise ValueError("caller jane.doe@example.com")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(plain)
    assert "jane.doe" not in first.getvalue()
    assert "jane.doe" not in second.getvalue()
    assert "j***@example.com" in second.getvalue()


def test_a_lone_surrogate_is_written_not_dropped():
    """A UTF-8 stream cannot take "\ud800": without the filter the handler drops the record
    ("--- Logging error ---"); with it the record is written, the character replaced."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(PersonalDataFilter())
    logger = logging.getLogger("test.logmask.surrogate")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("notes 'gate \ud800'")
        except ValueError:
            logger.exception("unhandled error for %s", "gate \udfff")
    finally:
        logger.removeHandler(handler)
    out = raw.getvalue().decode("utf-8")
    assert out.startswith("unhandled error for gate \ufffd\n")
    assert "ValueError: notes 'gate \ufffd'" in out
