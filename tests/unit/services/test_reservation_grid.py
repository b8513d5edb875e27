"""The reservation primitive's pure parts: the grid, hold ids and references."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.errors import InvalidInput, NotFound
from services.reservations import DAY, REFERENCE_ALPHABET, ReservationStore, new_reference

pytestmark = pytest.mark.unit
TZ = ZoneInfo("America/New_York")


def _store() -> ReservationStore:
    return ReservationStore(pool=None, redis=None, tz=TZ)  # type: ignore[arg-type]


def test_half_hour_cells_count_from_the_epoch() -> None:
    start = datetime(2026, 3, 14, 9, 0, tzinfo=TZ)
    cells = _store().cells(start, start + timedelta(hours=2), 1800)
    assert len(cells) == 4
    assert cells[0] == int(start.timestamp()) // 1800
    assert cells == list(range(cells[0], cells[0] + 4))


def test_day_cells_are_local_days_across_a_dst_change() -> None:
    # 2026-03-08 is the US spring-forward day: a 23-hour day is still one cell.
    start = datetime(2026, 3, 7, tzinfo=TZ)
    end = datetime(2026, 3, 10, tzinfo=TZ)
    assert _store().cells(start, end, DAY) == [start.date().toordinal() + i for i in range(3)]


def test_same_instant_in_another_zone_gives_the_same_cells() -> None:
    start = datetime(2026, 3, 14, 13, 30, tzinfo=UTC)
    local = start.astimezone(TZ)
    s = _store()
    assert s.cells(start, start + timedelta(hours=1), 1800) == s.cells(
        local, local + timedelta(hours=1), 1800
    )


@pytest.mark.parametrize(
    ("start", "end", "cell"),
    [
        (datetime(2026, 3, 14, 9, 15, tzinfo=TZ), datetime(2026, 3, 14, 10, tzinfo=TZ), 1800),
        (datetime(2026, 3, 14, 9, tzinfo=TZ), datetime(2026, 3, 14, 9, tzinfo=TZ), 1800),
        (datetime(2026, 3, 14, 10, tzinfo=TZ), datetime(2026, 3, 14, 9, tzinfo=TZ), 1800),
        (datetime(2026, 3, 14, 9), datetime(2026, 3, 14, 10), 1800),
        (datetime(2026, 3, 14, 12, tzinfo=TZ), datetime(2026, 3, 16, tzinfo=TZ), DAY),
        (datetime(2026, 1, 1, tzinfo=TZ), datetime(2028, 1, 1, tzinfo=TZ), DAY),
    ],
)
def test_off_grid_empty_naive_and_huge_ranges_are_refused(start, end, cell) -> None:
    with pytest.raises(InvalidInput):
        _store().cells(start, end, cell)


def test_hold_ids_carry_their_resource_and_refuse_anything_else() -> None:
    assert ReservationStore.parse_hold_id("EXC-201." + "ab" * 12) == ("EXC-201", "ab" * 12)
    for bad in ("", "EXC-201", "EXC-201.xyz", "../etc.passwd", "a b." + "ab" * 12):
        with pytest.raises(NotFound):
            ReservationStore.parse_hold_id(bad)


def test_hold_keys_share_the_resource_hash_tag() -> None:
    s = _store()
    hold_key = s.hold_key("bay-1." + "cd" * 12)
    cell_key = s.cell_keys("bay-1", [42])[0]
    tag = lambda k: k[k.index("{") + 1 : k.index("}")]  # noqa: E731
    assert tag(hold_key) == tag(cell_key) == "r:bay-1"


def test_references_are_readable_aloud() -> None:
    refs = {new_reference() for _ in range(500)}
    assert len(refs) > 490
    assert all(len(r) == 6 and set(r) <= set(REFERENCE_ALPHABET) for r in refs)
    assert not set("01OIS5") & set(REFERENCE_ALPHABET)
