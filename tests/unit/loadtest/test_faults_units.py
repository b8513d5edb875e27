"""The fault suite's pure parts: which answers break the error contract, the flags, the table."""

from __future__ import annotations

import pytest

from loadtest import httpload
from loadtest.faults import (
    CHECKS,
    FAULTS,
    TIMED_OUT,
    Answer,
    Check,
    FaultResult,
    parse_args,
    table,
    unacceptable,
)

pytestmark = pytest.mark.unit


def _answer(status: int, retry_after: bool = False) -> Answer:
    return Answer(t=0.0, name="confirm", status=status, retry_after=retry_after)


@pytest.mark.parametrize("status", [200, 201, 204, 404, 409, 410, 422, 429])
def test_successes_and_client_errors_are_acceptable(status: int) -> None:
    assert unacceptable(_answer(status)) is None


def test_a_503_is_acceptable_only_with_retry_after() -> None:
    assert unacceptable(_answer(503, retry_after=True)) is None
    assert unacceptable(_answer(503)) == "503 without Retry-After"


@pytest.mark.parametrize(
    ("status", "why"),
    [
        (500, "500"),
        (502, "502"),
        (504, "504"),
        (httpload.NETWORK_ERROR, "connection failed"),
        (TIMED_OUT, "no answer within 35 s"),
    ],
)
def test_other_server_errors_lost_connections_and_timeouts_are_not(status: int, why: str) -> None:
    assert unacceptable(_answer(status, retry_after=True)) == why


def test_every_fault_runs_by_default_in_order_and_unknown_ones_are_refused() -> None:
    assert parse_args([]).faults == list(FAULTS)
    assert parse_args(["--faults", "pg-restart, redis-pause"]).faults == [
        "pg-restart",
        "redis-pause",
    ]
    with pytest.raises(SystemExit):
        parse_args(["--faults", "redis-pause,disk-full"])


def _result(**failed: str) -> FaultResult:
    checks = {c: Check(c not in failed, failed.get(c, "fine")) for c in CHECKS}
    return FaultResult(
        fault="redis-down",
        action="stopped",
        seconds=20.0,
        requests=100,
        per_s=5.0,
        statuses={"201": 100},
        confirmed=50,
        recovered_after_s=2.5,
        unacceptable={},
        samples=[],
        checks=checks,
    )


def test_a_fault_fails_when_any_check_fails_and_the_table_says_which_and_why() -> None:
    good, bad = _result(), _result(errors_actionable="3 x 500")
    assert good.ok and not bad.ok
    text = table([good, bad])
    rows = text.splitlines()
    assert "FAIL" not in rows[2] and rows[3].count("FAIL") == 1
    assert rows[-1] == "redis-down errors_actionable: 3 x 500"
