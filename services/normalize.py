"""Phone numbers and email addresses as people type them or say them to a voice agent.

Speech-to-text hands us "five five five, one two three, four five six seven" or "john dot smith
at gmail dot com"; a web form hands us "(555) 123-4567". Both must land on one canonical form
(E.164 for phones, a lower-case address for email) so that a caller is found again by the number
they gave last time. Pure functions, no I/O; every refusal is a sentence the agent can say.
"""

from __future__ import annotations

import re
import unicodedata

from services.errors import InvalidInput

__all__ = ["normalize_email", "normalize_phone"]

# Longer than any phone number or address anyone reads out; refuses pasted essays early.
_MAX_INPUT = 300

_UNITS = {
    "zero": 0, "oh": 0, "o": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 2, "thirty": 3, "forty": 4, "fourty": 4, "fifty": 5, "sixty": 6, "seventy": 7,
    "eighty": 8, "ninety": 9,
}  # fmt: skip
_REPEATS = {"double": 2, "triple": 3}
# Words people wrap around a number; anything else is a word we did not understand.
_PHONE_FILLER = {
    "my", "number", "phone", "is", "it", "its", "it's", "the", "area", "code", "cell",
    "mobile", "home", "work", "call", "me", "at", "on", "and", "then", "uh", "um", "er", "ah",
    "dash", "hyphen", "dot", "point", "space", "a", "that's", "thats", "country", "okay", "ok",
    "so", "yes", "yeah", "sure", "number's", "please", "thanks", "thank", "you",
}  # fmt: skip
_PHONE_TOKEN = re.compile(r"\+|\d|[a-z']+")
_PHONE_ALLOWED = re.compile(r"^[0-9a-z' ()+.,/-]*$")

_ASK_FOR_TEN = "I need the full ten-digit number, including the area code."


def _phone_digits(text: str) -> tuple[str, bool]:
    """The digits said or typed, and whether the number was given in international form."""
    tokens = _PHONE_TOKEN.findall(text)
    digits: list[str] = []
    international = False
    repeat = 1
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == "+" or token == "plus":
            if digits or international:
                raise InvalidInput(
                    "I could not make out that number; please say it one digit at a time.",
                    field="phone",
                )
            international = True
            continue
        if token in _REPEATS:
            repeat = _REPEATS[token]
            continue
        if token.isdigit():
            digits.append(token * repeat)
        elif token in _UNITS:
            digits.append(str(_UNITS[token]) * repeat)
        elif token in _TEENS:
            digits.append(str(_TEENS[token]))
        elif token in _TENS:
            # "twenty three" is 23, a lone "twenty" is 20.
            if i < len(tokens) and tokens[i] in _UNITS and tokens[i] not in ("oh", "o", "zero"):
                digits.append(f"{_TENS[token]}{_UNITS[tokens[i]]}")
                i += 1
            else:
                digits.append(f"{_TENS[token]}0")
        elif token == "hundred" and digits:
            digits.append("00")  # "eight hundred" as in 1-800
        elif token == "thousand" and digits:
            digits.append("000")
        elif token in _PHONE_FILLER:
            pass
        else:
            raise InvalidInput(
                "I could not make out that number; please say it one digit at a time.",
                field="phone",
            )
        if token not in _REPEATS:
            repeat = 1
    return "".join(digits), international


def _check_nanp(national: str) -> str:
    """A North American number of ten digits; returns it in E.164."""
    if len(national) < 10:
        raise InvalidInput(_ASK_FOR_TEN, field="phone")
    if len(national) > 10:
        raise InvalidInput(
            "That number has too many digits; please say the ten-digit number, including the "
            "area code.",
            field="phone",
        )
    if national[0] in "01":
        raise InvalidInput(
            "That area code does not look right; an area code never starts with 0 or 1.",
            field="phone",
        )
    # The numbering plan also forbids an exchange starting with 1, but the fictional numbers
    # everyone demonstrates with (555-123-4567) use one, so only a leading 0 is refused here.
    if national[3] == "0":
        raise InvalidInput(
            "That number does not look right; after the area code it never starts with 0.",
            field="phone",
        )
    return "+1" + national


def normalize_phone(text: str, *, default_country: str = "1") -> str:
    """E.164 (``+15551234567``) from any typed or spoken form of a phone number.

    Numbers without ``+``/``00``/"plus" are national numbers of ``default_country``; for North
    America that is ten digits, or eleven with a leading 1.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("Please tell me the phone number.", field="phone")
    if not re.fullmatch(r"[1-9]\d{0,2}", default_country):
        raise ValueError(f"default_country must be a country calling code, got {default_country!r}")
    cleaned = unicodedata.normalize("NFKC", text).strip().lower()
    if len(cleaned) > _MAX_INPUT or not _PHONE_ALLOWED.match(cleaned):
        raise InvalidInput(
            "I could not make out that number; please say it one digit at a time.", field="phone"
        )
    digits, international = _phone_digits(cleaned)
    if not international and digits.startswith("00"):
        international, digits = True, digits[2:]  # the European way of dialling out
    if not digits:
        raise InvalidInput(_ASK_FOR_TEN, field="phone")
    if international:
        if digits.startswith("1"):
            return _check_nanp(digits[1:])
        if digits[0] == "0" or not 8 <= len(digits) <= 15:
            raise InvalidInput(
                "That international number does not look right; please say it again with the "
                "country code.",
                field="phone",
            )
        return "+" + digits
    if default_country == "1":
        if len(digits) == 11 and digits[0] == "1":
            digits = digits[1:]
        return _check_nanp(digits)
    # Elsewhere a national number often starts with a trunk 0 that is dropped after the code.
    national = digits[1:] if digits.startswith("0") else digits
    full = default_country + national
    if not 8 <= len(full) <= 15:
        raise InvalidInput(
            "That number does not look complete; please say the whole number again.",
            field="phone",
        )
    return "+" + full


# -- email ------------------------------------------------------------------------------------

_EMAIL_WORDS = {
    "at": "@", "dot": ".", "period": ".", "point": ".", "underscore": "_", "dash": "-",
    "hyphen": "-", "minus": "-", "plus": "+", "dotcom": ".com", "dotnet": ".net",
    "dotorg": ".org",
}  # fmt: skip
_EMAIL_DIGITS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
# Words that only describe how the next letters are written.
_EMAIL_IGNORED = {"capital", "uppercase", "upper", "lowercase", "lower", "case", "letter"}
_EMAIL_PHRASES = (
    (re.compile(r"\bat (?:sign|symbol)\b"), " @ "),
    (re.compile(r"\bunder score\b"), " _ "),
    (re.compile(r"\ball (?:one word|lower ?case)\b|\bno spaces\b"), " "),
)
_EMAIL_LEAD = re.compile(
    r"^(?:(?:my|the|our)\s+)?(?:e-?mail(?:\s+address)?\s+is|it'?s|it is|that'?s|that is)\s+"
)
_LOCAL = re.compile(r"^[a-z0-9](?:[a-z0-9._%+'-]*[a-z0-9_+-])?$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_TLD = re.compile(r"^[a-z]{2,24}$")
_EMAIL_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_ASK_FOR_EMAIL = (
    "I did not catch a complete email address; please spell it out, like john dot smith at "
    "gmail dot com."
)


def normalize_email(text: str) -> str:
    """A lower-case address from a typed or spoken one ("john dot smith at gmail dot com").

    A domain without its ending ("at gmail") is refused rather than guessed.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("Please tell me the email address.", field="email")
    cleaned = unicodedata.normalize("NFKC", text).strip().lower()
    if len(cleaned) > _MAX_INPUT or _EMAIL_CONTROL.search(cleaned):
        raise InvalidInput(_ASK_FOR_EMAIL, field="email")
    cleaned = _EMAIL_LEAD.sub("", cleaned)
    for pattern, replacement in _EMAIL_PHRASES:
        cleaned = pattern.sub(replacement, cleaned)
    # Commas and spaces are pauses between spoken pieces, never part of an address.
    tokens = [t for t in re.split(r"[\s,;]+", cleaned) if t]
    pieces: list[str] = []
    repeat = 1
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token in _REPEATS:
            repeat = _REPEATS[token]
            continue
        if token in _EMAIL_IGNORED:
            continue
        if token in _TEENS:
            # "nineteen eighty five" is 1985, as in phone numbers.
            pieces.append(str(_TEENS[token]))
            repeat = 1
            continue
        if token in _TENS:
            # "eighty four" is 84 and a lone "eighty" is 80, as in phone numbers.
            unit = "0"
            if i < len(tokens) and tokens[i] in _EMAIL_DIGITS:
                unit = _EMAIL_DIGITS[tokens[i]]
                i += 1
            pieces.append(f"{_TENS[token]}{unit}")
            continue
        piece = _EMAIL_WORDS.get(token) or _EMAIL_DIGITS.get(token) or token
        pieces.append(piece * repeat if len(piece) == 1 else piece)
        repeat = 1
    address = "".join(pieces).strip(".")
    return _validate_email(address)


def _validate_email(address: str) -> str:
    if address.count("@") != 1:
        raise InvalidInput(_ASK_FOR_EMAIL, field="email")
    local, domain = address.split("@")
    if not local or len(local) > 64 or not _LOCAL.match(local) or ".." in local:
        raise InvalidInput(
            "The part of the email address before the at sign does not look right; please "
            "spell it out.",
            field="email",
        )
    labels = domain.split(".")
    if len(labels) < 2:
        raise InvalidInput(
            "I need the whole email address, including the ending, like gmail dot com.",
            field="email",
        )
    if len(domain) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidInput(
            "The part of the email address after the at sign does not look right; please spell "
            "it out.",
            field="email",
        )
    if not _TLD.match(labels[-1]):
        raise InvalidInput(
            "I need the whole email address, including the ending, like gmail dot com.",
            field="email",
        )
    if len(address) > 254:
        raise InvalidInput(_ASK_FOR_EMAIL, field="email")
    return address
