"""Redis access: the client, and Lua scripts loaded once and re-loaded on NOSCRIPT."""

from __future__ import annotations

import hashlib
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
