"""The collector settings a serving process takes once it has started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from deployments.gc_tuning import THRESHOLDS, settle_heap

pytestmark = pytest.mark.unit


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_settling_freezes_what_exists_and_makes_collections_rarer(restored_gc: None) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == THRESHOLDS
    assert THRESHOLDS[0] > 700  # CPython's default young threshold
