"""The circuit breaker's state machine and the backoff schedule, on an injected clock."""

from __future__ import annotations

import pytest

from services.verification import CircuitBreaker, backoff_delay

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, failures: int = 3, reset: float = 30.0) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=failures, reset_seconds=reset, clock=clock)


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        permit = breaker.acquire()
        assert permit is not None
        breaker.record_failure(permit)


def test_opens_after_consecutive_failures_only():
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 2)
    permit = breaker.acquire()
    assert permit is not None
    breaker.record_success(permit)  # a success in between resets the count
    assert breaker.consecutive_failures == 0
    _fail(breaker, 2)
    assert breaker.state == "closed"
    _fail(breaker, 1)
    assert breaker.state == "open"
    assert breaker.acquire() is None
    assert breaker.retry_after() == 30.0


def test_half_open_lets_one_trial_through_and_its_success_closes():
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 29.9
    assert breaker.state == "open" and breaker.acquire() is None
    assert breaker.retry_after() == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.state == "half_open"
    trial = breaker.acquire()
    assert trial is not None and trial.trial
    assert breaker.acquire() is None  # only one trial at a time
    breaker.record_success(trial)
    assert breaker.state == "closed"
    assert breaker.acquire() is not None


def test_failed_trial_opens_again_for_a_full_reset_period():
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 30
    trial = breaker.acquire()
    assert trial is not None
    breaker.record_failure(trial)
    assert breaker.state == "open"
    clock.now += 29
    assert breaker.acquire() is None
    clock.now += 1
    assert breaker.acquire() is not None


def test_stale_permits_do_not_change_the_state():
    clock = Clock()
    breaker = _breaker(clock, failures=1)
    slow = breaker.acquire()
    assert slow is not None
    _fail(breaker, 1)
    assert breaker.state == "open"
    breaker.record_success(slow)  # started before the breaker opened: no evidence now
    assert breaker.state == "open"
    clock.now += 30
    trial = breaker.acquire()
    assert trial is not None
    breaker.record_failure(slow)
    assert breaker.state == "half_open"
    breaker.record_success(trial)
    assert breaker.state == "closed"


def test_abandoned_trial_lets_another_trial_through():
    clock = Clock()
    breaker = _breaker(clock, failures=1)
    _fail(breaker, 1)
    clock.now += 30
    trial = breaker.acquire()
    assert trial is not None and breaker.acquire() is None
    breaker.abandon(trial)
    assert breaker.state == "half_open"
    assert breaker.acquire() is not None


def test_refuses_nonsense_configuration():
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0, reset_seconds=1)
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=1, reset_seconds=0)


def test_backoff_ceiling_doubles_up_to_the_cap():
    ceilings = [
        backoff_delay(n, base_seconds=0.1, max_seconds=1.0, random=lambda: 1.0) for n in range(6)
    ]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_is_full_jitter_between_zero_and_the_ceiling():
    assert backoff_delay(3, base_seconds=0.1, max_seconds=1.0, random=lambda: 0.0) == 0.0
    assert backoff_delay(3, base_seconds=0.1, max_seconds=1.0, random=lambda: 0.25) == (
        pytest.approx(0.2)
    )
    # A huge attempt number neither overflows nor exceeds the cap.
    assert backoff_delay(10_000, base_seconds=0.1, max_seconds=2.0, random=lambda: 0.5) == 1.0
    with pytest.raises(ValueError):
        backoff_delay(-1, base_seconds=0.1, max_seconds=1.0)
