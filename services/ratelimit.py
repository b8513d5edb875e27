"""Rate limits on writes and the quota of live holds per call, kept in Redis so every
replica shares them.

Both are one script each, so a write pays one Redis round trip for its limits, and holding
pays one more for the call's quota. A limiter that cannot reach Redis lets the write through:
the write itself needs Redis or PostgreSQL and answers 503 on its own if they are down, and a
limiter outage must not become a write outage.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.errors import RateLimited
from services.kv import CallHoldsReply, LuaScript, RateWindowReply
from services.settings import Settings

log = logging.getLogger(__name__)

_window = LuaScript("rate_window")
_call_holds = LuaScript("call_holds")


def client_key(token: str | None, address: str | None) -> str:
    """Who a write counts against: its bearer token (hashed: the key must not hold the secret),
    else the client's address."""
    if token:
        return "t" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return "a" + (address or "unknown")


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


def _spoken(seconds: int) -> str:
    return f"{seconds} second{'s' if seconds != 1 else ''}"


class WriteLimiter:
    """Writes per client (token) and per call in a fixed window of ``window_seconds``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        window_seconds: int,
        per_client: int,
        per_call: int,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.window_ms = window_seconds * 1000
        self.per_client = per_client
        self.per_call = per_call

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, settings: Settings) -> WriteLimiter:
        return cls(
            redis,
            prefix=settings.redis_prefix,
            window_seconds=settings.rate_window_seconds,
            per_client=settings.rate_writes_per_token,
            per_call=settings.rate_writes_per_call,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.per_client or self.per_call)

    def keys(self, client: str, call_id: str | None) -> tuple[list[str], list[int], list[str]]:
        """Counter keys, their limits, and what each counts ("client" or "call")."""
        # One hash tag per client: a call's counter sits with its client's (Cluster-valid).
        tag = f"{self.prefix}:{{rl:{client}}}"
        keys, limits, kinds = [], [], []
        if self.per_client:
            keys.append(f"{tag}:w")
            limits.append(self.per_client)
            kinds.append("client")
        if self.per_call and call_id:
            keys.append(f"{tag}:c:{call_id}")
            limits.append(self.per_call)
            kinds.append("call")
        return keys, limits, kinds

    async def admit(self, *, client: str, call_id: str | None = None) -> None:
        """Count one write, or raise :class:`RateLimited` when it is over a limit."""
        keys, limits, kinds = self.keys(client, call_id)
        if not keys:
            return
        try:
            over, ms = await _window(self.redis, keys, [self.window_ms, *limits])
        except RedisError:
            log.warning("rate limiter unavailable; write let through")
            return
        if int(over) == RateWindowReply.ADMITTED:
            return
        wait = _seconds(int(ms))
        if kinds[int(over) - 1] == "call":
            raise RateLimited(
                "This call has made too many changes in a short time; "
                f"please wait {_spoken(wait)}, then try again.",
                retry_after=wait,
                limit=self.per_call,
                scope="call",
            )
        raise RateLimited(
            f"Too many changes from this client; please wait {_spoken(wait)}, then try again.",
            retry_after=wait,
            limit=self.per_client,
            scope="client",
        )


class HoldQuota:
    """At most ``max_per_call`` live holds per call, taken atomically before the hold."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str, max_per_call: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.max_per_call = max_per_call

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, settings: Settings) -> HoldQuota:
        return cls(redis, prefix=settings.redis_prefix, max_per_call=settings.max_holds_per_call)

    @property
    def enabled(self) -> bool:
        return self.max_per_call > 0

    def key(self, call_id: str) -> str:
        return f"{self.prefix}:{{callholds:{call_id}}}"

    async def take(self, call_id: str, *, ttl_seconds: int) -> str | None:
        """A slot id for one more hold of the call (to store with the hold and give back when
        it ends), or raise :class:`RateLimited`. None when the quota is off or unreachable."""
        if not self.enabled:
            return None
        slot = secrets.token_hex(8)
        now = int(time.time() * 1000)
        try:
            reply = await _call_holds(
                self.redis,
                [self.key(call_id)],
                [now, self.max_per_call, slot, now + ttl_seconds * 1000],
            )
        except RedisError:
            # The hold itself needs Redis and will answer 503 if it is really gone.
            log.warning("hold quota unavailable; hold let through")
            return None
        if int(reply[0]) == CallHoldsReply.TAKEN:
            return slot
        live = int(reply[1])
        raise RateLimited(
            f"You are holding {live} unit{'s' if live != 1 else ''} already; "
            "confirm or release one first.",
            retry_after=_seconds(int(reply[2])),
            limit=self.max_per_call,
            scope="holds_per_call",
        )

    async def give_back(self, call_id: str, slot: str) -> None:
        """The hold ended (released, confirmed, or never placed): free its slot."""
        try:
            await self.redis.zrem(self.key(call_id), slot)
        except RedisError:
            # The slot then lapses with the hold's TTL: the call waits at worst that long.
            log.warning("hold quota unavailable; slot left to expire")
