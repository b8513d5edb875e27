"""Redis access: the client, and Lua scripts loaded once and re-loaded on NOSCRIPT."""

from __future__ import annotations

import hashlib
from enum import IntEnum
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError


def create_redis(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=5,
        health_check_interval=30,
        max_connections=256,
    )


class LuaScript:
    """A script from ``services/lua``, run by EVALSHA.

    The SHA is computed locally, so the first call costs no round trip; a server that does not
    know the script (first use, restart, SCRIPT FLUSH, failover) answers NOSCRIPT and the script
    is loaded and the call repeated once.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (resources.files("services") / "lua" / f"{name}.lua").read_text("utf-8")
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, client: aioredis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


# The status each script answers with (the first element of a list reply, or the reply
# itself), as its header in services/lua documents it. Read replies through these, never as
# bare numbers; tests/unit/services/test_lua_scripts.py keeps both sides in step.


class ReserveReply(IntEnum):
    """reserve.lua: ``{status, ...}``."""

    TAKEN = 0  # {0, n, marker}: the n-th cell is someone else's
    RESERVED = 1  # {1, token}
    REPLAYED = 2  # {2, token}: the idempotency key's first hold
    KEY_REUSED = 4  # {4}: the key was used for a different request


class ClaimReply(IntEnum):
    """claim.lua: ``{status, ...}``."""

    CELL_LOST = -1  # {-1, n}: the n-th cell is no longer the holder's
    NO_HOLD = 0  # {0}
    CLAIMED = 1  # {1, field, value, ...}
    UNDER_WAY = 3  # {3, field, value, ...}: an earlier confirm's claim, handed over


class NegotiateReply(IntEnum):
    """negotiate.lua: ``{code, attempts, floor, max, agreed, start_ms, end_ms, kind}``."""

    NO_HOLD = 0
    ACCEPTED = 1
    CONFIRMING = 3
    LOCKED = 4
    NO_ATTEMPTS_LEFT = 5
    BELOW_FLOOR = 6
    ABOVE_MAXIMUM = 7


class ReleaseReply(IntEnum):
    """release.lua: the number of cells freed, or this."""

    REFUSED = -1  # a confirm of the hold is under way


class UnclaimReply(IntEnum):
    """unclaim.lua."""

    DROPPED = 0
    RESTORED = 1


class EpochReply(IntEnum):
    """epoch.lua."""

    NOT_OURS = 0  # the rebuild lock is no longer this rebuilder's
    DONE = 1


class CallHoldsReply(IntEnum):
    """call_holds.lua: ``{status, live, ...}``."""

    FULL = 0  # {0, live, ms until the earliest live hold expires}
    TAKEN = 1  # {1, live}


class RateWindowReply(IntEnum):
    """rate_window.lua: ``{0, 0}`` admitted, else ``{i, ms}`` with i the first full key's
    position (1-based)."""

    ADMITTED = 0


# Each script's replies, by script name (finalize.lua answers a count only).
REPLIES: dict[str, type[IntEnum]] = {
    "reserve": ReserveReply,
    "claim": ClaimReply,
    "negotiate": NegotiateReply,
    "release": ReleaseReply,
    "unclaim": UnclaimReply,
    "epoch": EpochReply,
    "call_holds": CallHoldsReply,
    "rate_window": RateWindowReply,
}
