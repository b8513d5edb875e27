"""A circuit breaker and a backoff schedule for calling a remote registry.

The breaker keeps a struggling registry from being hammered and keeps callers from waiting on
one that is down: after ``failure_threshold`` consecutive failures it *opens* and refuses at
once; after ``reset_seconds`` it lets exactly one trial request through (*half-open*); that
trial's success closes it, its failure opens it again for another ``reset_seconds``.

Every request takes a :class:`Permit` and hands it back with its outcome. A permit from before
the last change of state is stale and its outcome ignored, so a slow request that started while
the breaker was closed cannot close a breaker that has since opened.

Clock and random source are injectable so tests step through states without sleeping.
"""

from __future__ import annotations

import math
import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class Permit:
    generation: int
    trial: bool


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_seconds <= 0:
            raise ValueError("failure_threshold >= 1 and reset_seconds > 0")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        # Bumped on every change of state; permits carry the generation they were issued in.
        self._generation = 0

    @property
    def state(self) -> BreakerState:
        """The state a request arriving now would see."""
        if self._state == "open" and self._clock() - self._opened_at >= self.reset_seconds:
            return "half_open"
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_after(self) -> float:
        """Seconds until a request may be let through again (0 when one would be now)."""
        if self._state == "open":
            return max(0.0, self.reset_seconds - (self._clock() - self._opened_at))
        if self._state == "half_open" and self._trial_in_flight:
            return self.reset_seconds  # if the trial fails the wait starts over
        return 0.0

    def acquire(self) -> Permit | None:
        """A permit to make one request, or None if the breaker refuses it now."""
        if self.state == "half_open" and self._state == "open":
            self._move("half_open")
        if self._state == "closed":
            return Permit(self._generation, trial=False)
        if self._state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return Permit(self._generation, trial=True)
        return None

    def record_success(self, permit: Permit) -> None:
        if permit.generation != self._generation:
            return
        if self._state == "half_open" and permit.trial:
            self._move("closed")
        elif self._state == "closed":
            self._failures = 0

    def record_failure(self, permit: Permit) -> None:
        if permit.generation != self._generation:
            return
        if self._state == "half_open" and permit.trial:
            self._open()
        elif self._state == "closed":
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()

    def abandon(self, permit: Permit) -> None:
        """The request was cancelled before it had an outcome: let another trial through."""
        if permit.generation == self._generation and permit.trial:
            self._trial_in_flight = False

    def _open(self) -> None:
        self._move("open")
        self._opened_at = self._clock()

    def _move(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._trial_in_flight = False
        if state == "closed":
            self._failures = 0


def backoff_delay(
    attempt: int,
    *,
    base_seconds: float,
    max_seconds: float,
    random: Callable[[], float] = _random.random,
) -> float:
    """The wait before retry number ``attempt`` (0 for the first retry): "full jitter".

    Uniform between 0 and ``min(max_seconds, base_seconds * 2**attempt)``, so many clients that
    failed together do not retry together.
    """
    if attempt < 0:
        raise ValueError("attempt >= 0")
    ceiling = min(max_seconds, base_seconds * math.pow(2, min(attempt, 62)))
    return random() * ceiling
