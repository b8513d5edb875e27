"""Rate limits on writes and the quota of live holds per call, against real Redis (both kinds of
backend) and, for the 429, through the real edge in process."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from deployments.api import WRITE, new_api
from services.errors import RateLimited
from services.inventory import HoldRequest, InventoryService
from services.ratelimit import WriteLimiter, client_key
from services.settings import Settings

pytestmark = pytest.mark.integration

TZ = Settings(environment="test").tz
UNIT = "GEN-701"  # requires nothing: a hold confirms without verification
RACERS = 40
QUOTA = 3


def _hold(offset: int, call_id: str = "greedy-call") -> HoldRequest:
    first = datetime.now(TZ).date() + timedelta(days=offset)
    return HoldRequest(
        unit_id=UNIT,
        start=first.isoformat(),
        end=(first + timedelta(days=1)).isoformat(),
        call_id=call_id,
    )


async def _race(svc: InventoryService, offsets: range, call_id: str) -> tuple[list[str], list]:
    async def one(offset: int) -> str | RateLimited:
        try:
            return (await svc.create_hold(_hold(offset, call_id))).hold_id
        except RateLimited as e:
            return e

    results = await asyncio.gather(*(one(o) for o in offsets))
    held = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    return held, refused


async def test_racing_holds_of_one_call_get_exactly_the_quota(fresh):
    svc = InventoryService(
        pool=fresh.pool, redis=fresh.redis, settings=fresh.settings(max_holds_per_call=QUOTA)
    )
    # Every request asks for a different free day: only the quota can refuse them.
    held, refused = await _race(svc, range(10, 10 + RACERS), "greedy-call")
    assert len(held) == QUOTA
    assert len(refused) == RACERS - QUOTA
    error = refused[0]
    assert error.message == "You are holding 3 units already; confirm or release one first."
    assert 1 <= error.retry_after <= fresh.settings().hold_ttl_seconds
    # Another call is not affected by this one's quota.
    other, _ = await _race(svc, range(60, 61), "patient-call")
    assert len(other) == 1


async def test_a_released_or_confirmed_hold_gives_its_place_back(fresh):
    svc = InventoryService(
        pool=fresh.pool, redis=fresh.redis, settings=fresh.settings(max_holds_per_call=2)
    )
    first = await svc.create_hold(_hold(10))
    second = await svc.create_hold(_hold(11))
    with pytest.raises(RateLimited):
        await svc.create_hold(_hold(12))
    await svc.release_hold(first.hold_id)
    third = await svc.create_hold(_hold(12))
    with pytest.raises(RateLimited):
        await svc.create_hold(_hold(13))
    await svc.confirm_hold(second.hold_id)
    await svc.create_hold(_hold(13))
    with pytest.raises(RateLimited):
        await svc.create_hold(_hold(14))
    # A hold that is refused (taken) does not keep a place either.
    await svc.release_hold(third.hold_id)
    taken = await svc.create_hold(_hold(40, call_id="someone-else"))
    with pytest.raises(Exception, match="already booked"):
        await svc.create_hold(_hold(40))
    await svc.create_hold(_hold(41))
    assert taken.hold_id


async def test_a_replayed_hold_takes_no_second_place(fresh):
    svc = InventoryService(
        pool=fresh.pool, redis=fresh.redis, settings=fresh.settings(max_holds_per_call=2)
    )
    first = await svc.create_hold(_hold(10), idempotency_key="same-key")
    again = await svc.create_hold(_hold(10), idempotency_key="same-key")
    assert again.hold_id == first.hold_id and again.replayed
    await svc.create_hold(_hold(11))  # the second place is still free


def _limited_app(stores, *, per_token: int, per_call: int, window: int) -> FastAPI:  # type: ignore[no-untyped-def]
    settings = stores.settings(
        rate_writes_per_token=per_token, rate_writes_per_call=per_call, rate_window_seconds=window
    )
    app = new_api(service="things", title="things", settings=settings)
    app.state.write_limiter = WriteLimiter.from_settings(stores.redis, settings)

    @app.post("/calls/{call_id}/events", status_code=201, dependencies=[WRITE])
    async def event(call_id: str) -> dict[str, str]:
        return {"call_id": call_id}

    @app.get("/calls/{call_id}")
    async def read(call_id: str) -> dict[str, str]:
        return {"call_id": call_id}

    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _window_ends(stores, key: str) -> None:  # type: ignore[no-untyped-def]
    """Until Redis has expired the window's counter (the state, not a clock, decides)."""
    for _ in range(400):
        if not await stores.redis.exists(key):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the window's counter never expired")


async def test_the_write_past_the_call_limit_is_429_until_the_window_ends(fresh):
    limit = 5
    app = _limited_app(fresh, per_token=0, per_call=limit, window=1)
    async with _client(app) as c:
        answers = [(await c.post("/calls/c-1/events")).status_code for _ in range(limit)]
        refused = await c.post("/calls/c-1/events")
        other_call = await c.post("/calls/c-2/events")
        reads = [(await c.get("/calls/c-1")).status_code for _ in range(limit)]
        limiter: WriteLimiter = app.state.write_limiter
        keys, _, _ = limiter.keys(client_key(None, "127.0.0.1"), "c-1")
        await _window_ends(fresh, keys[0])
        after = await c.post("/calls/c-1/events")
    assert answers == [201] * limit
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == {
        "code": "rate_limited",
        "message": "This call has made too many changes in a short time; "
        "please wait 1 second, then try again.",
        "details": {"limit": limit, "scope": "call"},
    }
    assert other_call.status_code == 201  # one call's limit is its own
    assert reads == [200] * limit  # reads are not limited
    assert after.status_code == 201


async def test_the_write_past_the_token_limit_is_429_and_a_refusal_is_not_counted(fresh):
    app = _limited_app(fresh, per_token=3, per_call=0, window=60)
    async with _client(app) as c:
        statuses = [(await c.post(f"/calls/c-{i}/events")).status_code for i in range(5)]
        refused = await c.post("/calls/c-9/events")
    assert statuses == [201, 201, 201, 429, 429]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["details"]["scope"] == "client"
    limiter: WriteLimiter = app.state.write_limiter
    keys, _, _ = limiter.keys(client_key(None, "127.0.0.1"), None)
    assert await fresh.redis.get(keys[0]) == "3"  # refusals do not extend the count


async def test_racing_writes_admit_exactly_the_limit(fresh):
    limiter = WriteLimiter(
        fresh.redis, prefix=fresh.prefix, window_seconds=60, per_client=0, per_call=25
    )

    async def one() -> bool:
        try:
            await limiter.admit(client="race", call_id="c-race")
        except RateLimited:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(200)))
    assert results.count(True) == 25


async def test_a_hold_the_confirm_drops_gives_its_place_back(fresh):
    svc = InventoryService(
        pool=fresh.pool, redis=fresh.redis, settings=fresh.settings(max_holds_per_call=1)
    )
    booked = await svc.create_hold(_hold(10, call_id="first-caller"))
    await svc.confirm_hold(booked.hold_id)
    # Redis loses that unit's cells (PostgreSQL keeps the booking): a hold over it is granted,
    # and its confirm is refused by the exclusion constraint, which drops the hold.
    async for key in fresh.redis.scan_iter(match=f"{fresh.prefix}:{{r:{UNIT}}}:c:*"):
        await fresh.redis.delete(key)
    lost = await svc.create_hold(_hold(10))
    with pytest.raises(Exception, match="booked by someone else"):
        await svc.confirm_hold(lost.hold_id)
    await svc.create_hold(_hold(11))  # the one place is free again
