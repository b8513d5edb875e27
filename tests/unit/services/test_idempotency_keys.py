"""Idempotency-Key values as draft-ietf-httpapi-idempotency-key-header writes them: a
structured-field string ("abc") or, as callmesh has always taken them, bare."""

from __future__ import annotations

import pytest

from services.errors import InvalidInput
from services.idempotency import check_key

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("sent", "key"),
    [
        ('"abc"', "abc"),
        ("abc", "abc"),
        ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ('"' + "k" * 128 + '"', "k" * 128),
        (None, None),
    ],
)
def test_a_quoted_key_is_the_key_inside_the_quotes(sent, key):
    assert check_key(sent) == key


@pytest.mark.parametrize("sent", ['""', '"', '"abc', 'abc"', '"a"b"', "k" * 129, '"a b"'])
def test_anything_else_is_refused(sent):
    with pytest.raises(InvalidInput):
        check_key(sent)
