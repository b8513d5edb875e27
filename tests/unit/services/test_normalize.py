"""Spoken and typed phone numbers and email addresses, to one canonical form or a clear refusal."""

from __future__ import annotations

import pytest

from services.errors import InvalidInput
from services.normalize import normalize_email, normalize_phone

pytestmark = pytest.mark.unit

PHONES_VALID = [
    ("(555) 123-4567", "+15551234567"),
    ("555.123.4567", "+15551234567"),
    ("555-123-4567", "+15551234567"),
    ("5551234567", "+15551234567"),
    ("+1 555 123 4567", "+15551234567"),
    ("1-555-123-4567", "+15551234567"),
    ("1 (555) 123 4567", "+15551234567"),
    ("+44 20 7946 0958", "+442079460958"),
    ("0044 20 7946 0958", "+442079460958"),
    ("+49 30 901820", "+4930901820"),
    ("five five five, one two three, four five six seven", "+15551234567"),
    ("Five Five Five. One Two Three. Four Five Six Seven.", "+15551234567"),
    ("five five five one two three four five six oh", "+15551234560"),
    ("five five five one two three four five six o", "+15551234560"),
    ("five five five one two three four five six zero", "+15551234560"),
    ("double five five, one two three, four five six seven", "+15551234567"),
    ("triple seven, two one two, four five six seven", "+17772124567"),
    ("555 one two three 45 sixty seven", "+15551234567"),
    ("five five five one twenty three forty five sixty seven", "+15551234567"),
    ("plus four four two oh seven nine four six oh nine five eight", "+442079460958"),
    ("plus one five five five one two three four five six seven", "+15551234567"),
    ("one eight hundred five five five one two one two", "+18005551212"),
    ("my number is 555 123 4567", "+15551234567"),
    ("area code 212, then 555 0199", "+12125550199"),
    ("uh, it's two one two, five five five, oh one nine nine", "+12125550199"),
    ("\uff15\uff15\uff15 123 4567", "+15551234567"),  # full-width digits from some keyboards
    ("plus one (555) 212-4439", "+15552124439"),
    ("+1-555-212-4439", "+15552124439"),
    ("001 555 212 4439", "+15552124439"),
    ("Five-Five-Five, Two-One-Two, Four-Four-Three-Nine", "+15552124439"),
    ("five fifty five, two twelve, forty four thirty nine", "+15552124439"),
    ("triple five, two one two, four four three nine", "+15552124439"),
    ("five five five, two one two, double four three nine", "+15552124439"),
    ("nine one seven, five five five, oh one oh oh", "+19175550100"),
    ("five five five two one two forty four hundred", "+15552124400"),
    ("sure, my cell is five five five, two one two, four four three nine", "+15552124439"),
    ("my number's five five five, two one two, four four three nine", "+15552124439"),
    ("five five five two one two four four three nine, thank you", "+15552124439"),
    ("+33 1 42 68 53 00", "+33142685300"),
    ("oh oh four four, two oh, seven nine four six, oh nine five eight", "+442079460958"),
]

PHONES_INVALID = [
    ("", "phone number"),
    ("   ", "phone number"),
    ("555 1234", "ten-digit"),
    ("five five five one two three", "ten-digit"),
    ("555 123 45678", "too many"),
    ("(055) 123-4567", "area code"),
    ("(155) 123-4567", "area code"),
    ("1 055 123 4567", "area code"),
    ("555 023 4567", "after the area code"),
    ("+44 12", "international"),
    ("+0 555 123 4567", "international"),
    ("+9234567890123456", "international"),
    ("call me maybe", "one digit at a time"),
    ("555-123-4567; DROP TABLE customers", "one digit at a time"),
    ("555\x00123\x004567", "one digit at a time"),
    ("555 plus 123 4567", "one digit at a time"),
    ("1" * 400, "one digit at a time"),
]


@pytest.mark.parametrize(("spoken", "e164"), PHONES_VALID)
def test_phone_numbers_become_e164(spoken: str, e164: str) -> None:
    assert normalize_phone(spoken) == e164


@pytest.mark.parametrize(("spoken", "hint"), PHONES_INVALID)
def test_phone_numbers_that_cannot_be_right_are_refused(spoken: str, hint: str) -> None:
    with pytest.raises(InvalidInput) as err:
        normalize_phone(spoken)
    assert hint in err.value.message
    assert err.value.details["field"] == "phone"
    assert err.value.message.endswith(".")


def test_a_national_number_of_another_country_drops_its_trunk_zero() -> None:
    assert normalize_phone("020 7946 0958", default_country="44") == "+442079460958"
    assert normalize_phone("+1 555 123 4567", default_country="44") == "+15551234567"


def test_the_area_code_message_is_the_one_the_brief_asks_for() -> None:
    with pytest.raises(InvalidInput) as err:
        normalize_phone("123 4567")
    assert err.value.message == "I need the full ten-digit number, including the area code."


EMAILS_VALID = [
    ("john dot smith at gmail dot com", "john.smith@gmail.com"),
    ("John.Smith@Gmail.com", "john.smith@gmail.com"),
    ("  john.smith@gmail.com  ", "john.smith@gmail.com"),
    ("john . smith @ gmail . com", "john.smith@gmail.com"),
    ("j o h n at gmail dot com", "john@gmail.com"),
    ("J O H N at G M A I L dot C O M", "john@gmail.com"),
    ("capital J o h n at gmail dot com", "john@gmail.com"),
    ("mary underscore jones at yahoo dot co dot uk", "mary_jones@yahoo.co.uk"),
    ("mary under score jones at yahoo dot com", "mary_jones@yahoo.com"),
    ("bob dash lee at outlook dot com", "bob-lee@outlook.com"),
    ("bob hyphen lee at outlook dot com", "bob-lee@outlook.com"),
    ("bob plus news at outlook dot com", "bob+news@outlook.com"),
    ("bob at sign outlook dot com", "bob@outlook.com"),
    ("bob at symbol outlook dot com", "bob@outlook.com"),
    ("my email is bob at example dot org", "bob@example.org"),
    ("it's bob at example dot org", "bob@example.org"),
    ("jane doe eighty four at example dot com", "janedoe84@example.com"),
    ("jane seven seven at example dot com", "jane77@example.com"),
    ("jane double seven at example dot com", "jane77@example.com"),
    ("double l at x dot io", "ll@x.io"),
    ("a, b, c at mail dot example dot com", "abc@mail.example.com"),
    ("support at my-shop dot com", "support@my-shop.com"),
    ("o dot reilly at example period com", "o.reilly@example.com"),
    ("info at example dotcom", "info@example.com"),
    ("room twenty at example dot com", "room20@example.com"),
    # A stray pause word at either end is a speech artefact, not part of the address.
    ("dot john at gmail dot com.", "john@gmail.com"),
    ("j o h n underscore doe at yahoo dot co dot uk", "john_doe@yahoo.co.uk"),
    ("jane nineteen eighty five at gmail dot com", "jane1985@gmail.com"),
    ("kim thirteen at example dot com", "kim13@example.com"),
    ("j dot doe one nine eight five at gmail dot com", "j.doe1985@gmail.com"),
    ("first dot last at mail dot example dot org", "first.last@mail.example.org"),
    ("that's sam at example dot net", "sam@example.net"),
    ("my email address is sam at example dot net", "sam@example.net"),
    ("sam at example dot n e t", "sam@example.net"),
    ("sam all one word at example dot com", "sam@example.com"),
    ("sam at example dot com dot au", "sam@example.com.au"),
    ("sam, dot, jones, at, example, dot, com", "sam.jones@example.com"),
    ("Sam.Jones+work@Example.co.uk", "sam.jones+work@example.co.uk"),
]

EMAILS_INVALID = [
    ("", "email address"),
    ("john at gmail", "ending"),
    ("john smith", "complete email address"),
    ("john at at gmail dot com", "complete email address"),
    ("john@@gmail.com", "complete email address"),
    ("at gmail dot com", "before the at sign"),
    ("john dot dot smith at gmail dot com", "before the at sign"),
    ("john at dash gmail dot com", "after the at sign"),
    ("john at gmail dot c", "ending"),
    ("john at gmail dot 123", "ending"),
    ("john<script>@gmail.com", "before the at sign"),
    ("john@gmail.com'; drop table customers;--", "after the at sign"),
    ("john\x00@gmail.com", "complete email address"),
    ("a" * 70 + "@gmail.com", "before the at sign"),
    ("x" * 400, "complete email address"),
]


@pytest.mark.parametrize(("spoken", "address"), EMAILS_VALID)
def test_email_addresses_are_normalised(spoken: str, address: str) -> None:
    assert normalize_email(spoken) == address


@pytest.mark.parametrize(("spoken", "hint"), EMAILS_INVALID)
def test_email_addresses_that_cannot_be_right_are_refused(spoken: str, hint: str) -> None:
    with pytest.raises(InvalidInput) as err:
        normalize_email(spoken)
    assert hint in err.value.message
    assert err.value.details["field"] == "email"


def test_an_unfinished_domain_is_not_guessed() -> None:
    with pytest.raises(InvalidInput) as err:
        normalize_email("john dot smith at gmail")
    assert "gmail dot com" in err.value.message
