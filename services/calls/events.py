"""Checking what agents send: events (one or a batch), and the fields of start and end.

Everything here is pure: it raises :class:`InvalidInput` with a sentence an agent can repeat,
and returns cleaned copies. The service writes nothing until these checks pass for the whole
batch, so a batch is recorded entirely or not at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, TypeAdapter, ValidationError

from services.calls import vocabulary as v
from services.calls.models import Event, Marker, SharedInfo, ToolEvent, UsageEvent
from services.errors import InvalidInput
from services.validation import check_number, clean_text, parse_datetime

# Tool function names and shared-information keys: snake_case words, as the agent code has them.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().-]{2,30}$")

_EVENTS = TypeAdapter(list[Event])
_ONE_EVENT: TypeAdapter[Event] = TypeAdapter(Event)
M = TypeVar("M", bound=BaseModel)


def _words(options: Sequence[str]) -> str:
    return ", ".join(options[:-1]) + " or " + options[-1]


def one_of(value: str | None, options: Sequence[str], *, field: str) -> str:
    """The value if it is one of ``options``; otherwise a sentence listing them."""
    if value not in options:
        raise InvalidInput(
            f"The {field.replace('_', ' ')} must be one of {_words(options)}.",
            field=field,
            allowed=list(options),
        )
    return str(value)


def _from_validation_error(e: ValidationError, what: str) -> InvalidInput:
    first = e.errors(include_url=False, include_input=False)[0]
    location = [str(part) for part in first["loc"] if not isinstance(part, int)]
    # A discriminated union puts the kind in the path ("tool", "latency_ms"); keep the field.
    field = location[-1] if location else what
    if first["type"] == "union_tag_invalid" or first["type"] == "union_tag_not_found":
        return InvalidInput(
            f"Each event needs a kind: one of {_words(('tool', 'shared', 'usage', 'marker'))}.",
            field="kind",
        )
    if first["type"] == "extra_forbidden":
        return InvalidInput(f"The {what} has a field I do not know: {field}.", field=field)
    return InvalidInput(
        f"The {field.replace('_', ' ')} of the {what} is not valid: {first['msg']}.",
        field=field,
    )


def parse_model(model: type[M], value: M | Mapping[str, Any], *, what: str) -> M:
    """A request model from itself or from a JSON object, with a sentence on failure."""
    if isinstance(value, model):
        return value
    if not isinstance(value, Mapping):
        raise InvalidInput(f"The {what} must be a JSON object.", field=what)
    try:
        return model.model_validate(dict(value))
    except ValidationError as e:
        raise _from_validation_error(e, what) from None


def parse_events(value: Any) -> list[Event]:
    """One event or a list of them, from models or JSON objects."""
    if isinstance(value, ToolEvent | SharedInfo | UsageEvent | Marker):
        return [value]
    try:
        if isinstance(value, Mapping):
            return [_ONE_EVENT.validate_python(dict(value))]
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            if not value:
                raise InvalidInput("Send at least one event.", field="events")
            if len(value) > v.MAX_EVENTS_PER_BATCH:
                raise InvalidInput(
                    f"Send at most {v.MAX_EVENTS_PER_BATCH} events at a time.", field="events"
                )
            return _EVENTS.validate_python(list(value))
    except ValidationError as e:
        raise _from_validation_error(e, "event") from None
    raise InvalidInput("An event must be a JSON object, or a list of them.", field="events")


def check_time(
    value: datetime | None, *, field: str, tz: ZoneInfo, now: datetime, earliest: datetime
) -> datetime:
    """A moment of the call: not in the future (beyond clock skew), not before ``earliest``."""
    if value is None:
        return now
    moment = parse_datetime(value, field=field, tz=tz)
    skew = timedelta(seconds=v.CLOCK_SKEW_SECONDS)
    if moment > now + skew:
        raise InvalidInput(f"The {field.replace('_', ' ')} is in the future.", field=field)
    if moment < earliest - skew:
        raise InvalidInput(f"The {field.replace('_', ' ')} is too far in the past.", field=field)
    return moment


def check_phone(value: str | None) -> str | None:
    """A caller's number as digits with an optional leading ``+``; absent is fine (web calls)."""
    text = clean_text(value, field="caller_phone", max_length=32)
    if text is None:
        return None
    if not _PHONE.match(text):
        raise InvalidInput("The caller phone is not a phone number.", field="caller_phone")
    digits = re.sub(r"\D", "", text)
    return ("+" if text.startswith("+") else "") + digits


def _check_name(value: str, *, field: str) -> str:
    if not _NAME.match(value):
        raise InvalidInput(
            f"The {field.replace('_', ' ')} must be a lowercase word like book_appointment.",
            field=field,
        )
    return value


def _count(value: int, *, field: str, maximum: int) -> int:
    return int(check_number(value, field=field, minimum=0, maximum=maximum))


def check_event(event: Event, *, tz: ZoneInfo, now: datetime, started_at: datetime) -> Event:
    """A cleaned copy of one event, its ``at`` filled in; refuses anything out of bounds."""
    at = check_time(event.at, field="event_time", tz=tz, now=now, earliest=started_at)
    if isinstance(event, ToolEvent):
        return ToolEvent(
            name=_check_name(event.name, field="tool_name"),
            latency_ms=check_number(event.latency_ms, field="latency_ms", maximum=v.MAX_LATENCY_MS),
            outcome=one_of(event.outcome, v.TOOL_OUTCOMES, field="tool_outcome"),
            at=at,
        )
    if isinstance(event, SharedInfo):
        return SharedInfo(
            category=one_of(event.category, v.CATEGORIES, field="category"),
            key=_check_name(event.key, field="key"),
            value=str(clean_text(event.value, field="value", max_length=v.MAX_TEXT, required=True)),
            at=at,
        )
    if isinstance(event, UsageEvent):
        prompt = _count(event.llm_prompt_tokens, field="llm_prompt_tokens", maximum=v.MAX_TOKENS)
        cached = _count(event.llm_cached_tokens, field="llm_cached_tokens", maximum=v.MAX_TOKENS)
        if cached > prompt:
            raise InvalidInput(
                "The cached tokens are part of the prompt tokens, so they cannot be more.",
                field="llm_cached_tokens",
            )
        return UsageEvent(
            stt_audio_seconds=check_number(
                event.stt_audio_seconds, field="stt_audio_seconds", maximum=v.MAX_STT_SECONDS
            ),
            llm_prompt_tokens=prompt,
            llm_cached_tokens=cached,
            llm_completion_tokens=_count(
                event.llm_completion_tokens, field="llm_completion_tokens", maximum=v.MAX_TOKENS
            ),
            tts_characters=_count(
                event.tts_characters, field="tts_characters", maximum=v.MAX_TTS_CHARACTERS
            ),
            at=at,
        )
    return Marker(
        marker=one_of(event.marker, v.MARKERS, field="marker"),
        reference=clean_text(event.reference, field="reference", max_length=64),
        at=at,
    )
