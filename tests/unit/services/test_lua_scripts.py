"""The Lua scripts' headers: each states the KEYS and ARGV it reads, and its return values.

The header is the only place a reader of the Python caller learns what a script expects, so a
script that reads a key or argument its header does not name (or names one it no longer reads)
is a contract gone stale.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from services.kv import REPLIES

pytestmark = pytest.mark.unit

_FOLDER = resources.files("services") / "lua"
SCRIPTS = sorted(p.name for p in _FOLDER.iterdir() if p.name.endswith(".lua"))
_INDEX = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
_OPEN_ENDED = re.compile(r"\b(KEYS|ARGV)\[(\d+)\.\.\]")


def _header_and_body(name: str) -> tuple[str, str]:
    lines = (_FOLDER / name).read_text("utf-8").splitlines()
    end = next(i for i, line in enumerate(lines) if not line.startswith("--"))
    return "\n".join(lines[:end]), "\n".join(lines[end:])


def test_every_script_is_checked() -> None:
    assert SCRIPTS == [
        "call_holds.lua",
        "claim.lua",
        "epoch.lua",
        "finalize.lua",
        "mark_booked.lua",
        "negotiate.lua",
        "rate_window.lua",
        "release.lua",
        "reserve.lua",
        "unclaim.lua",
    ]


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_header_names_exactly_the_keys_and_arguments_the_script_reads(name: str) -> None:
    header, body = _header_and_body(name)
    documented = {(kind, int(n)) for kind, n in _INDEX.findall(header)}
    open_from = {kind: int(n) for kind, n in _OPEN_ENDED.findall(header)}
    read = {(kind, int(n)) for kind, n in _INDEX.findall(body)}
    undocumented = {(kind, n) for kind, n in read - documented if n < open_from.get(kind, n + 1)}
    stale = documented - read
    assert undocumented == set(), f"{name} reads {sorted(undocumented)} without naming them"
    assert stale == set(), f"{name} names {sorted(stale)} it never reads"
    assert ("KEYS", 1) in documented or "KEYS" in open_from
    assert re.search(r"^-- Returns ", header, re.MULTILINE), f"{name} states no return values"


# A status a script answers with: the first element of a list reply (`return {1, token}`,
# `table.insert(fields, 1, 3)`) or a bare number (`return -1`).
_LEADING = re.compile(
    r"return \{\s*(-?\d+)\b|table\.insert\(\w+, 1, (-?\d+)\)|return (-?\d+)\s*$", re.MULTILINE
)


def test_every_script_with_statuses_has_named_replies() -> None:
    counts = {"finalize", "mark_booked"}  # these two return how many cells they wrote
    assert set(REPLIES) == {name.removesuffix(".lua") for name in SCRIPTS} - counts


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_the_named_replies_are_the_statuses_the_script_returns(name: str) -> None:
    """Python reads a script's replies through its IntEnum (services.kv): every status the
    script returns has a name, every name is a status it returns, and its header states each."""
    header, body = _header_and_body(f"{name}.lua")
    named = {int(member) for member in REPLIES[name]}
    returned = {int(next(g for g in m if g)) for m in _LEADING.findall(body)}
    assert returned == named, f"{name}.lua returns {sorted(returned)}, named {sorted(named)}"
    returns = header.split("-- Returns ", 1)[1]
    for status in named:
        assert re.search(rf"(?<![\w-]){status}(?![\w])", returns), (
            f"{name}.lua's header does not state {status}"
        )


def test_the_reserve_script_has_no_reply_without_a_fingerprint() -> None:
    """A replay is answered only for a record that carries the request's fingerprint: the
    branch for records from before fingerprints (`return {2, prior}`) is gone."""
    _, body = _header_and_body("reserve.lua")
    assert "return {2, prior}" not in body
    assert body.count("return {2,") == 1
