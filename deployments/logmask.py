"""Masks personal data in log records: phone numbers, email addresses and licence numbers.

Log messages are static text and personal data travels in structured fields (``extra=``), so
the filter masks fields by name (``phone``, ``email``, ``licence_number``...) and, as a safety
net, any phone-, email- or licence-shaped text in the message, its arguments and string fields.
It is a handler filter so that it sees every record a handler writes, whichever logger it came
from.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@([\w-]+(?:\.[\w-]+)+)")
# Seven or more digits, optionally with a leading + and spaces, dots, dashes or brackets; an
# ISO date (2026-11-23) or the tail of a UUID is not a phone number.
_PHONE = re.compile(r"(?<![\w-])(?!\d{4}-\d{2}-\d{2})\+?(?:[\s().-]*\d){7,15}(?![\w])")
# Licence-shaped: one to three capitals, then 6 to 14 digits, in groups joined by dashes
# (BL-100234, A1234567, D1234-5678, A123-456-78-901-0, "BL 100234"); a lowercase prefix only
# with a dash (bl-100234). A whole token only, never a part of a hold id, UUID or call id.
# Fewer digits are ids, not licences: GEN-701, OP-7001, SITE-1001, POL-55001, a booking
# reference (6 letters and digits). All-digit licences are phone-shaped.
_LICENCE = re.compile(r"(?<![\w.-])(?:[A-Z]{1,3}[ -]?|[A-Za-z]{1,3}-)\d+(?:-\d+)*(?![\w-])")
_LICENCE_DIGITS = range(6, 15)
# A UK driving licence: surname (5), birth date (6), initials (2), a digit, 2 check letters.
_UK_LICENCE = re.compile(r"(?<![\w.-])[A-Z9]{5}\d{6}[A-Z9]{2}\d[A-Z]{2}(?![\w-])")
_SENSITIVE_KEY = re.compile(r"phone|e_?mail|licen[cs]e|caller_id|ssn|passport", re.IGNORECASE)
# Attributes every LogRecord has; everything else came in through ``extra=``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def mask_text(text: str) -> str:
    """``john.smith@gmail.com`` -> ``j***@gmail.com``; ``+1 (555) 123-4567`` -> ``***67``;
    ``BL-100234`` -> ``***34``."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    text = _UK_LICENCE.sub(lambda m: "***" + m.group(0)[-2:], text)
    text = _LICENCE.sub(_mask_licence, text)
    return _PHONE.sub(lambda m: "***" + re.sub(r"\D", "", m.group(0))[-2:], text)


def _mask_licence(match: re.Match[str]) -> str:
    token = match.group(0)
    if sum(ch.isdigit() for ch in token) not in _LICENCE_DIGITS:
        return token
    return "***" + re.sub(r"[\W_]", "", token)[-2:]


def mask_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if _SENSITIVE_KEY.search(key):
        # A named personal field hides all but a short tail, whatever its shape.
        text = str(value)
        return "***" + text[-2:] if len(text) > 4 else "***"
    if isinstance(value, str):
        return mask_text(value)
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
        return True


_FILTER = PersonalDataFilter()


def install(*logger_names: str) -> None:
    """Put the filter on every handler of the root logger and of the named loggers (Serve's
    own logger writes the access log through handlers of its own). Safe to call twice."""
    for name in ("", "ray", "ray.serve", *logger_names):
        for handler in logging.getLogger(name).handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
