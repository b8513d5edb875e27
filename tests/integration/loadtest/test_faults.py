"""The fault suite's short form, and the check on holds in Redis against a real Redis.

The short form starts its own Redis, PostgreSQL and mesh (``callmesh up``), as ``make faults``
does, and runs three quick faults, one per kind of thing that breaks: Redis stalled, every
PostgreSQL connection terminated, a Serve replica killed. Each check of each fault is a test.
It starts Ray: run it under the machine's Ray lock, as tests/integration/mesh.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from loadtest.faults import CHECKS, FaultResult, holds_within_ttl, parse_args, run_suite

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("CALLMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SHORT_FAULTS = ("redis-pause", "pg-terminate", "replica-kill")


# -- holds_within_ttl on the shared Redis, under a prefix of this test's own ----------------------


@pytest.fixture
async def prefixed(require_servers: None) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    redis = aioredis.from_url(REDIS_URL, decode_responses=True)
    prefix = f"f{secrets.token_hex(4)}"
    yield redis, prefix
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        await redis.delete(key)
    await redis.aclose()


async def test_holds_and_cells_that_expire_within_their_ttl_pass(
    prefixed: tuple[aioredis.Redis, str],
) -> None:
    redis, prefix = prefixed
    now_ms = int(time.time() * 1000)
    await redis.hset(f"{prefix}:{{r:U1}}:h:a", mapping={"expires_ms": now_ms + 60_000})
    await redis.pexpire(f"{prefix}:{{r:U1}}:h:a", 60_000)
    await redis.set(f"{prefix}:{{r:U1}}:c:1", "H:a", px=60_000)
    await redis.set(f"{prefix}:{{r:U1}}:c:2", "P:b", px=20_000)
    await redis.set(f"{prefix}:{{r:U1}}:c:3", "B:c")  # booked cells are not holds
    check = await holds_within_ttl(REDIS_URL, prefix, hold_ttl_s=300)
    assert check.ok, check.detail
    assert check.detail.startswith("3 hold keys")


@pytest.mark.parametrize(
    ("value", "px"),
    [("H:a", None), ("P:b", None), ("H:a", 900_000)],
    ids=["held-no-expiry", "pending-no-expiry", "held-past-ttl"],
)
async def test_a_cell_held_without_expiry_or_beyond_the_ttl_fails(
    prefixed: tuple[aioredis.Redis, str], value: str, px: int | None
) -> None:
    redis, prefix = prefixed
    await redis.set(f"{prefix}:{{r:U1}}:c:1", value, px=px)
    check = await holds_within_ttl(REDIS_URL, prefix, hold_ttl_s=300)
    assert not check.ok and "1 of 1 hold keys" in check.detail


async def test_a_hold_still_there_long_past_its_expiry_fails(
    prefixed: tuple[aioredis.Redis, str],
) -> None:
    redis, prefix = prefixed
    key = f"{prefix}:{{r:U1}}:h:a"
    await redis.hset(key, mapping={"expires_ms": int(time.time() * 1000) - 120_000})
    await redis.pexpire(key, 60_000)
    check = await holds_within_ttl(REDIS_URL, prefix, hold_ttl_s=300)
    assert not check.ok and "past expiry" in check.detail


# -- the short form ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FaultResult]:
    logs: Path = tmp_path_factory.mktemp("faults")
    args = parse_args(
        [
            *("--faults", ",".join(SHORT_FAULTS), "--seconds-per-fault", "8"),
            *("--connections", "8", "--rate", "150", "--units", "100", "--log-dir", str(logs)),
        ]
    )
    return {r.fault: r for r in run_suite(args)}


# Failing today, each for a reason outside the suite (docs/reliability.md, "Fault suite"). Not
# strict: whether the killed replica had a request in flight depends on timing.
KNOWN_FAILING = {
    ("replica-kill", "errors_actionable"): (
        "requests in flight to a killed replica end with the connection closed, no answer"
    ),
}


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        pytest.param(
            f,
            c,
            marks=[pytest.mark.xfail(reason=KNOWN_FAILING[f, c], strict=False)]
            if (f, c) in KNOWN_FAILING
            else [],
        )
        for f in SHORT_FAULTS
        for c in CHECKS
    ],
)
def test_after_each_quick_fault_every_check_holds(
    short_run: dict[str, FaultResult], fault: str, check: str
) -> None:
    result = short_run[fault]
    assert result.requests > 0 and result.confirmed > 0, result.action
    assert result.checks[check].ok, f"{result.action}: {result.checks[check].detail}"


def test_the_load_kept_booking_during_the_short_run(short_run: dict[str, FaultResult]) -> None:
    assert list(short_run) == list(SHORT_FAULTS)
    assert all(r.statuses.get("201", 0) > 0 for r in short_run.values())
