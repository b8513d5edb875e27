"""Checks on what a caller (through an agent) asks to verify.

Each refusal is an :class:`InvalidInput` with a sentence the agent can repeat, raised before any
provider is asked or any row written. Registry codes are matched by their letters and digits
only, so "BL 100234" and "bl-100234" both find BL-100234; the subject is kept as said.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from services.errors import InvalidInput
from services.validation import clean_text
from services.verification.models import WEIGHT_CLASSES, WeightClass

# Letters and digits with spaces or dashes between them, as licence and policy numbers are read.
_CODE = re.compile(r"^[A-Z0-9](?:[A-Z0-9 -]*[A-Z0-9])?$")
_CODE_MIN, _CODE_MAX = 3, 32
# Names and street addresses: letters of any script, digits and the punctuation they use.
_NAME = re.compile(r"^\w[\w .,'&-]*$")
_ADDRESS = re.compile(r"^\w[\w .,'#/&-]*$")
_CERTIFICATION = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
MAX_AMOUNT = Decimal("100000000")  # $100M: above any coverage a rental desk asks for
_CENTS = Decimal("0.01")

US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ "
    "NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR GU VI AS MP".split()
)


def registry_code(value: str | None, *, field: str, example: str) -> str:
    """A licence or policy number: 3 to 32 letters and digits, spaces and dashes between."""
    what = field.replace("_", " ")
    text = clean_text(value, field=field, max_length=48, required=True)
    assert text is not None
    code = re.sub(r"\s+", " ", text.upper())
    alnum = sum(ch.isalnum() for ch in code)
    if not _CODE.match(code) or not _CODE_MIN <= alnum <= _CODE_MAX:
        raise InvalidInput(
            f"The {what} should be {_CODE_MIN} to {_CODE_MAX} letters and digits, like {example}.",
            field=field,
        )
    return code


def state_code(value: str | None) -> str | None:
    text = clean_text(value, field="state", max_length=20)
    if text is None:
        return None
    code = text.upper().replace(".", "")
    if code not in US_STATES:
        raise InvalidInput("The state should be a two-letter code, like TX or CA.", field="state")
    return code


def site_reference(value: str | None) -> str:
    """A job site's id (``SITE-1001``) or its street address."""
    text = clean_text(value, field="site", max_length=200, required=True)
    assert text is not None
    text = re.sub(r"\s+", " ", text)
    if not _ADDRESS.match(text):
        raise InvalidInput(
            "Please give the job site's id or its street address, like 1450 Commerce Blvd, "
            "Austin TX.",
            field="site",
        )
    return text


def operator_reference(value: str | None) -> str:
    """An operator's licence id (``OP-7001``) or full name."""
    text = clean_text(value, field="operator", max_length=120, required=True)
    assert text is not None
    text = re.sub(r"\s+", " ", text)
    if not _NAME.match(text):
        raise InvalidInput(
            "Please give the operator's licence id or their full name.", field="operator"
        )
    return text


def weight_class(value: str | None) -> WeightClass:
    text = (clean_text(value, field="weight_class", max_length=20) or "").lower()
    for known in WEIGHT_CLASSES:
        if text == known:
            return known
    raise InvalidInput("The weight class should be light, medium or heavy.", field="weight_class")


def certification(value: str | None) -> str:
    """A certification name as inventory spells it: ``aerial lift`` becomes ``aerial_lift``."""
    text = clean_text(value, field="certification", max_length=40, required=True)
    assert text is not None
    name = re.sub(r"[\s-]+", "_", text.lower())
    if not _CERTIFICATION.match(name):
        raise InvalidInput(
            "The certification should be a name like excavator, aerial lift or forklift.",
            field="certification",
        )
    return name


def amount(value: Any, *, field: str) -> Decimal:
    """A positive dollar amount up to $100M, to the cent."""
    what = field.replace("_", " ")
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"The {what} must be an amount in dollars.", field=field)
    try:
        number = Decimal(str(value).strip().replace(",", "").removeprefix("$"))
    except InvalidOperation:
        raise InvalidInput(f"The {what} must be an amount in dollars.", field=field) from None
    if not number.is_finite():
        raise InvalidInput(f"The {what} must be an amount in dollars.", field=field)
    if number <= 0 or number > MAX_AMOUNT:
        raise InvalidInput(
            f"The {what} must be more than $0 and at most ${MAX_AMOUNT:,.0f}.", field=field
        )
    return number.quantize(_CENTS)
