"""The sentence an agent says for each (check, reason), built from the facts a provider found.

Sentences come from here and never from a provider, so a remote registry cannot put words in the
agent's mouth, and every provider reads the same to a caller. Missing facts leave a sentence
shorter, never wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation

from services.verification.models import CheckKind, Reason

Facts = Mapping[str, str | None]

WHAT: dict[CheckKind, str] = {
    "business_licence": "business licence",
    "site_safety": "job site's safety rating",
    "operator_certification": "operator certification",
    "insurance": "insurance policy",
}


def spoken_date(iso: str | None) -> str | None:
    """``2027-03-31`` as "March 31, 2027"."""
    if not iso:
        return None
    try:
        day = date.fromisoformat(iso)
    except ValueError:
        return None
    return f"{day:%B} {day.day}, {day.year}"


def spoken_amount(text: str | None) -> str | None:
    """``1000000.00`` as "$1,000,000"; cents only when there are some."""
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return f"${value:,.0f}" if value == value.to_integral_value() else f"${value:,.2f}"


def certification_words(name: str | None) -> str:
    return (name or "that").replace("_", " ")


def _until(facts: Facts, key: str = "expires_on") -> str:
    when = spoken_date(facts.get(key))
    return f" until {when}" if when else ""


def _on(facts: Facts, key: str = "expires_on") -> str:
    when = spoken_date(facts.get(key))
    return f" on {when}" if when else ""


def message(
    check: CheckKind, reason: Reason, subject: str, facts: Facts, requirement: str | None = None
) -> str:
    """The sentence for a result. ``requirement`` (the state, weight class, certification or
    amount asked for) stands in when a remote provider does not echo it in its facts."""
    if reason == "provider_unavailable":
        return (
            f"I can't check the {WHAT[check]} right now because the registry is not answering; "
            "please try again in a moment."
        )
    if check == "business_licence":
        return _licence(reason, subject, facts, requirement)
    if check == "site_safety":
        return _site(reason, subject, facts, requirement)
    if check == "operator_certification":
        return _operator(reason, subject, facts, requirement)
    return _insurance(reason, subject, facts, requirement)


def _licence(reason: Reason, subject: str, facts: Facts, requirement: str | None) -> str:
    name = facts.get("business_name")
    held_by = f" for {name}" if name else ""
    if reason == "valid":
        state = facts.get("state")
        where = f" in {state}" if state else ""
        return f"Business licence {subject}{held_by} is valid{where}{_until(facts)}."
    if reason == "expired":
        return f"Business licence {subject}{held_by} expired{_on(facts)}, so it can't be accepted."
    if reason == "insufficient":
        return f"Business licence {subject}{held_by} is suspended, so it can't be accepted."
    if reason == "mismatch":
        state, asked = facts.get("state"), facts.get("requested_state") or requirement
        if state and asked:
            return f"Business licence {subject} is registered in {state}, not {asked}."
        return f"Business licence {subject} does not match the details given."
    return f"I couldn't find business licence {subject} in the registry; please check the number."


def _site(reason: Reason, subject: str, facts: Facts, requirement: str | None) -> str:
    site = facts.get("site_id") or subject
    rated = facts.get("rated_weight_class")
    asked = facts.get("requested_weight_class") or requirement or "that"
    if reason == "valid":
        rating = f"is rated for {rated} equipment, so it " if rated else ""
        return (
            f"Site {site} {rating}can take a {asked} unit; its safety inspection is current"
            f"{_until(facts, 'inspection_expires_on')}."
        )
    if reason == "insufficient":
        if rated:
            return (
                f"Site {site} is only rated for {rated} equipment, so it can't take a {asked} unit."
            )
        return f"Site {site} is not rated for {asked} equipment."
    if reason == "expired":
        return (
            f"The safety inspection for site {site} expired"
            f"{_on(facts, 'inspection_expires_on')}; it needs a new inspection before we can "
            "deliver there."
        )
    if reason == "mismatch":
        return f"Site {site} does not match the details given; please check the address."
    return (
        "I couldn't find that job site in the registry; please give the site id or its full "
        "street address."
    )


def _operator(reason: Reason, subject: str, facts: Facts, requirement: str | None) -> str:
    who = facts.get("operator_name") or subject
    cert = certification_words(facts.get("certification") or requirement)
    if reason == "valid":
        return f"{who} holds a current {cert} certification{_until(facts)}."
    if reason == "expired":
        return (
            f"{who}'s {cert} certification expired{_on(facts)}, so they can't operate this "
            "unit until it is renewed."
        )
    if reason == "insufficient":
        return (
            f"{who} holds only a supervised {cert} certification, so they can't operate this "
            "unit on their own."
        )
    if reason == "mismatch":
        return f"{who} is not certified for {cert}."
    return "I couldn't find that operator in the registry; please give their operator licence id."


def _insurance(reason: Reason, subject: str, facts: Facts, requirement: str | None) -> str:
    covered = spoken_amount(facts.get("coverage_amount"))
    required = spoken_amount(facts.get("required_amount") or requirement)
    if reason == "valid":
        until = _until(facts)
        if not covered:
            return f"Policy {subject} is valid{until}."
        meets = f", which meets the {required} required" if required else ""
        current = f"; it is current{until}" if until else ""
        return f"Policy {subject} covers {covered}{meets}{current}."
    if reason == "insufficient":
        if covered and required:
            return f"Policy {subject} covers only {covered}, but at least {required} is required."
        if required:
            return f"Policy {subject} does not cover the {required} required."
        return f"Policy {subject} does not cover the amount required."
    if reason == "expired":
        return f"Policy {subject} expired{_on(facts)}, so it can't be accepted."
    if reason == "mismatch":
        return f"Policy {subject} does not match the details given."
    return f"I couldn't find insurance policy {subject}; please check the policy number."
