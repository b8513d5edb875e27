"""Masks personal data in log records: phone numbers, email addresses and licence numbers.

Log messages are static text and personal data travels in structured fields (``extra=``), so
the filter masks fields by name (``phone``, ``email``, ``licence_number``...) and, as a safety
net, any phone-, email- or licence-shaped text in the message, its arguments and string fields.
It is a handler filter so that it sees every record a handler writes, whichever logger it came
from. A traceback is text too: an exception's message may quote what a client sent (asyncpg's
does), so the filter formats it once, masked, into ``exc_text``, which every formatter (the
standard one, Ray's JSON one) writes instead of formatting ``exc_info`` again.
"""

from __future__ import annotations

import logging
import re
from typing import Any

# Query strings arrive percent-encoded (an access log writes the request line as sent):
# %40 is "@", %2B "+", %20 or "+" a space. A token may start after an escape (%20, %3A...)
# as it may after a space.
_TOKEN_START = r"(?:(?<![\w.+%-])|(?<=%[0-9A-Fa-f]{2}))"
_EMAIL = re.compile(_TOKEN_START + r"([\w.+-])(?:[\w.+-]|%2[BbEe])*(@|%40)([\w-]+(?:\.[\w-]+)+)")
# Seven or more digits, optionally with a leading + and spaces, dots, dashes or brackets
# (also percent-encoded); an ISO date (2026-11-23) or the tail of a UUID is not a phone number.
_PHONE_SEPARATOR = r"(?:[\s().+-]|%(?:20|28|29|2[BbDdEe]))"
# An underscore is a boundary: a LiveKit SIP room (a call id) is named "call-_+15551234567_x".
_PHONE = re.compile(
    r"(?:(?<![^\W_]|[%-])|(?<=%[0-9A-Fa-f]{2}))(?!\d{4}-\d{2}-\d{2})(?:\+|%2[Bb])?"
    rf"(?:{_PHONE_SEPARATOR}*\d){{7,15}}(?![^\W_])"
)
# Licence-shaped: one to three capitals, then 6 to 14 digits, in groups joined by dashes
# (BL-100234, A1234567, D1234-5678, A123-456-78-901-0, "BL 100234"); a lowercase prefix only
# with a dash (bl-100234). A whole token only, never a part of a hold id, UUID or call id.
# Fewer digits are ids, not licences: GEN-701, OP-7001, SITE-1001, POL-55001, a booking
# reference (6 letters and digits). All-digit licences are phone-shaped.
_LICENCE = re.compile(
    r"(?:(?<![\w.%-])|(?<=%[0-9A-Fa-f]{2}))"
    r"(?:[A-Z]{1,3}[ -]?|[A-Za-z]{1,3}-)\d+(?:-\d+)*(?![\w-])"
)
_LICENCE_DIGITS = range(6, 15)
# A UK driving licence: surname (5), birth date (6), initials (2), a digit, 2 check letters.
_UK_LICENCE = re.compile(r"(?<![\w.-])[A-Z9]{5}\d{6}[A-Z9]{2}\d[A-Z]{2}(?![\w-])")
_SENSITIVE_KEY = re.compile(r"phone|e_?mail|licen[cs]e|caller_id|ssn|passport", re.IGNORECASE)
# A query parameter (?phone=..., &email=...): named like personal data, its whole value is
# masked whatever its shape or encoding, as a named field is.
_QUERY_PARAM = re.compile(r"(?<=[?&;])([^=&;\s\"#?]+)=([^&;\s\"#]*)")
# Attributes every LogRecord has; everything else came in through ``extra=``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_TRACEBACKS = logging.Formatter()
# A lone surrogate (a client's JSON "\ud800") cannot be written as UTF-8: the handler would
# drop the whole record with a "Logging error". It is written as U+FFFD instead.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def mask_text(text: str) -> str:
    """``john.smith@gmail.com`` -> ``j***@gmail.com``; ``+1 (555) 123-4567`` -> ``***67``;
    ``BL-100234`` -> ``***34``; percent-encoded too: ``?phone=%2B15551234567`` ->
    ``?phone=***67``, ``q=jane%40x.org`` -> ``q=j***%40x.org``."""
    text = _SURROGATE.sub("\ufffd", text)
    text = _QUERY_PARAM.sub(_mask_query_param, text)
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***{m.group(2)}{m.group(3)}", text)
    text = _UK_LICENCE.sub(lambda m: "***" + m.group(0)[-2:], text)
    text = _LICENCE.sub(_mask_licence, text)
    return _PHONE.sub(lambda m: "***" + re.sub(r"\D", "", m.group(0))[-2:], text)


def _mask_query_param(match: re.Match[str]) -> str:
    key, value = match.group(1), match.group(2)
    if not value or not _SENSITIVE_KEY.search(key):
        return match.group(0)
    return f"{key}={_mask_named(value)}"


def _mask_named(text: str) -> str:
    # A named personal value hides all but a short tail, whatever its shape.
    return "***" + text[-2:] if len(text) > 4 else "***"


def _mask_licence(match: re.Match[str]) -> str:
    token = match.group(0)
    if sum(ch.isdigit() for ch in token) not in _LICENCE_DIGITS:
        return token
    return "***" + re.sub(r"[\W_]", "", token)[-2:]


def mask_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if _SENSITIVE_KEY.search(key):
        return _mask_named(str(value))
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, BaseException):
        # Logged as "%s" of the exception, whose message may quote the input.
        return mask_text(str(value))
    if isinstance(value, dict):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    return value


class PersonalDataFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_text(record.msg)
        if isinstance(record.args, dict):
            record.args = {k: mask_value(str(k), v) for k, v in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(mask_value("", a) for a in record.args)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_FIELDS:
                setattr(record, key, mask_value(key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


_FILTER = PersonalDataFilter()


def install(*logger_names: str) -> None:
    """Put the filter on every handler of the root logger and of the named loggers (Serve's
    own logger writes the access log through handlers of its own). Safe to call twice."""
    for name in ("", "ray", "ray.serve", *logger_names):
        for handler in logging.getLogger(name).handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
