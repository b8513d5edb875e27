"""A test drive's saga when the inventory side fails: after every failure there are both
halves (the sales-desk appointment and the car's booking) or neither; and a cancelled or moved
test drive has both halves cancelled or moved, or both as they were.

The inventory side is the real ``InventoryService`` over the real PostgreSQL and Redis (both
backends), reached through the real ``RemoteVehicleHolds`` and ``RemoteDeployment``; only the
Ray handle under them is a double, which can lose a request, answer it as a timeout after it
ran, or hold it in flight until the test lets it go.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict, deque
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from deployments.handles import RemoteDeployment, RemoteVehicleHolds
from services.errors import (
    Conflict,
    DependencyUnavailable,
    HoldExpired,
    IdempotencyKeyInFlight,
    Unavailable,
)
from services.inventory import HoldRequest, InventoryService
from services.scheduling import BookRequest, SchedulingService, TestDriveRequest
from services.scheduling.drives import retries as scheduling_module

pytestmark = pytest.mark.integration

TZ = ZoneInfo("America/New_York")
CAR = "VEH-CIVIC-01"


class Crash(BaseException):
    """The scheduling process dying mid-saga: nothing after it runs in that process."""


class FaultyHandle:
    """A DeploymentHandle double: ``handle.<method>.remote(**kwargs)`` runs the method on the
    real inventory service, unless a fault was planned for that call:

    * ``"lost"``: the request never reaches inventory (an actor died, no replica).
    * ``"late"``: inventory does it, but the answer comes after the caller stopped waiting.
    * ``"in_flight"``: the caller stops waiting at once; inventory does it when the test
      calls :meth:`land`.
    * ``"crash"``: inventory does it, then the calling process dies.
    * ``"die"``: the calling process dies before the request leaves.
    * ``"down"`` (as the default): every call from now on is lost.
    """

    def __init__(self, inventory: InventoryService) -> None:
        self.inventory = inventory
        self.plans: dict[str, deque[str]] = defaultdict(deque)
        self.default = "ok"
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._gate = asyncio.Event()
        self.landed: list[asyncio.Task[Any]] = []

    def plan(self, method: str, *faults: str) -> None:
        self.plans[method].extend(faults)

    async def land(self) -> list[Any]:
        """Let the requests held in flight run, and return what each answered."""
        self._gate.set()
        return await asyncio.gather(*self.landed, return_exceptions=True)

    def __getattr__(self, method: str) -> Any:
        fake = self

        class _Method:
            def remote(self, **kwargs: Any) -> Any:
                fake.calls.append((method, kwargs))
                plans = fake.plans[method]
                fault = plans.popleft() if plans else fake.default
                return fake._answer(method, kwargs, fault)

        return _Method()

    async def _answer(self, method: str, kwargs: dict[str, Any], fault: str) -> Any:
        run = getattr(self.inventory, method)
        if fault in ("lost", "down"):
            raise RuntimeError("no replica of Inventory answered")
        if fault == "late":
            await run(**kwargs)
            raise TimeoutError  # what asyncio.wait_for raises when the answer is too slow
        if fault == "in_flight":

            async def later() -> Any:
                await self._gate.wait()
                return await run(**kwargs)

            self.landed.append(asyncio.ensure_future(later()))
            raise TimeoutError
        if fault == "crash":
            await run(**kwargs)
            raise Crash
        if fault == "die":
            raise Crash
        return await run(**kwargs)


class FlakyCancels(SchedulingService):
    """Scheduling whose appointment cancel fails while ``failing`` is set (PostgreSQL refusing
    that one write); everything else is the real service."""

    failing = False

    async def cancel_appointment(self, *args: Any, **kwargs: Any) -> Any:
        if self.failing:
            raise DependencyUnavailable("Scheduling is unavailable for a moment; try again.")
        return await super().cancel_appointment(*args, **kwargs)


@pytest.fixture(autouse=True)
def _no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduling_module, "TEST_DRIVE_RETRY_PAUSES", (0.0, 0.0, 0.0))


def _mesh(s, cls: type[SchedulingService] = SchedulingService):
    settings = s.settings()
    inventory = InventoryService(pool=s.pool, redis=s.redis, settings=settings)
    handle = FaultyHandle(inventory)
    remote = RemoteDeployment(
        deployment="Inventory",
        app_name="inventory",
        what="Vehicles",
        handle=handle,  # type: ignore[arg-type]
    )
    scheduling = cls(
        pool=s.pool, redis=s.redis, settings=settings, vehicles=RemoteVehicleHolds(remote)
    )
    return scheduling, inventory, handle


def _weekday_at(hour: int, minute: int = 0) -> datetime:
    day: date = datetime.now(TZ).date() + timedelta(days=3)
    while day.weekday() > 4:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


def _request(start: datetime, phone: str = "+15552220177") -> TestDriveRequest:
    return TestDriveRequest(phone=phone, vehicle_unit_id=CAR, start=start, name="Sam Lee")


async def _halves(pool) -> tuple[int, int]:
    """Confirmed test-drive appointments, and confirmed test-drive car bookings."""
    appointments = await pool.fetchval(
        """SELECT count(*) FROM appointments a JOIN bookings b USING (booking_id)
            WHERE a.service_type_id = 'test_drive' AND b.status = 'confirmed'"""
    )
    cars = await pool.fetchval(
        "SELECT count(*) FROM bookings WHERE kind = 'test_drive' AND status = 'confirmed'"
    )
    return appointments, cars


async def _car_is_free(inventory: InventoryService, start: datetime) -> bool:
    try:
        hold = await inventory.create_hold(HoldRequest(unit_id=CAR, start=start))
    except Unavailable:
        return False
    await inventory.release_hold(hold.hold_id)
    return True


def _keys(handle: FaultyHandle, method: str) -> list[str | None]:
    return [kw.get("idempotency_key") for m, kw in handle.calls if m == method]


async def test_a_confirm_that_timed_out_but_happened_is_learned_and_the_drive_stands(fresh):
    scheduling, inventory, handle = _mesh(fresh)
    handle.plan("confirm_hold", "late")
    drive = await scheduling.book_test_drive(_request(_weekday_at(10)))
    assert await _halves(fresh.pool) == (1, 1)
    car = await inventory.get_booking(drive.vehicle_booking_id)
    assert car.status == "confirmed"
    # Asked again with the same key, which answered the booking the first confirm made.
    first, second = _keys(handle, "confirm_hold")
    assert first is not None and first == second


async def test_a_confirm_that_never_arrived_books_neither(fresh):
    scheduling, inventory, handle = _mesh(fresh)
    handle.plan("confirm_hold", "lost", "lost", "lost")
    start = _weekday_at(10)
    with pytest.raises(DependencyUnavailable):
        await scheduling.book_test_drive(_request(start))
    assert await _halves(fresh.pool) == (0, 0)
    assert await _car_is_free(inventory, start)  # its hold was let go, not left to lapse
    reason = await fresh.pool.fetchval(
        "SELECT cancel_reason FROM bookings WHERE kind = 'appointment' AND status = 'cancelled'"
    )
    assert reason == "the test-drive car could not be booked"


async def test_a_confirm_landing_after_the_rollback_cannot_book_the_car(fresh):
    """The first confirm is still on its way when the caller gives up; the rollback lets the
    hold go first, so when that confirm lands it finds no hold and books nothing."""
    scheduling, _, handle = _mesh(fresh)
    handle.plan("confirm_hold", "in_flight", "lost", "lost")
    with pytest.raises(DependencyUnavailable):
        await scheduling.book_test_drive(_request(_weekday_at(11)))
    (late,) = await handle.land()
    assert isinstance(late, HoldExpired)
    assert await _halves(fresh.pool) == (0, 0)


async def test_a_car_booked_while_inventory_went_quiet_keeps_its_appointment(fresh):
    """The confirm happened but no answer came, and inventory then stopped answering: whether
    the car is booked cannot be learned, so the appointment is kept (both halves), the caller
    is told to try again, and that retry, with the same key, answers the test drive."""
    scheduling, _, handle = _mesh(fresh)
    handle.plan("create_hold", "ok")
    handle.plan("confirm_hold", "late")
    handle.default = "down"
    request = _request(_weekday_at(13, 30))
    with pytest.raises(DependencyUnavailable):
        await scheduling.book_test_drive(request, idempotency_key="td-quiet")
    assert await _halves(fresh.pool) == (1, 1)

    handle.default = "ok"
    drive = await scheduling.book_test_drive(request, idempotency_key="td-quiet")
    assert await _halves(fresh.pool) == (1, 1)
    assert drive.vehicle_unit_id == CAR
    assert drive == await scheduling.book_test_drive(request, idempotency_key="td-quiet")


async def test_an_unreachable_inventory_leaves_the_attempt_to_the_sweep(fresh):
    """The confirm never arrived and inventory stays unreachable: nothing can be undone
    safely, so the appointment waits; once inventory answers, the sweep lets the car's hold
    go and cancels the appointment."""
    scheduling, inventory, handle = _mesh(fresh)
    handle.default = "down"
    handle.plan("create_hold", "ok")
    start = _weekday_at(13)
    with pytest.raises(DependencyUnavailable):
        await scheduling.book_test_drive(_request(start))
    assert await _halves(fresh.pool) == (1, 0)  # unsettled until inventory answers
    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 0

    handle.default = "ok"
    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 1
    assert await _halves(fresh.pool) == (0, 0)
    assert await _car_is_free(inventory, start)
    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 0  # settled once


async def test_a_failed_appointment_cancel_still_lets_the_car_go(fresh):
    scheduling, inventory, handle = _mesh(fresh, FlakyCancels)
    assert isinstance(scheduling, FlakyCancels)
    handle.plan("confirm_hold", "lost", "lost", "lost")
    scheduling.failing = True
    start = _weekday_at(14)
    with pytest.raises(DependencyUnavailable):
        await scheduling.book_test_drive(_request(start))
    assert await _car_is_free(inventory, start)  # the car's undo ran despite the cancel
    assert await _halves(fresh.pool) == (1, 0)  # the appointment waits for the sweep

    scheduling.failing = False
    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 1
    assert await _halves(fresh.pool) == (0, 0)


async def test_a_refused_confirm_with_a_failing_cancel_tells_the_caller_why(fresh):
    """The car was taken under us (inventory refused the confirm): the caller hears that,
    even though cancelling the appointment has to wait for the sweep."""
    scheduling, _, _ = _mesh(fresh, FlakyCancels)
    assert isinstance(scheduling, FlakyCancels)
    start = _weekday_at(15)
    await fresh.pool.execute(
        """INSERT INTO bookings (booking_id, resource_id, during, kind, reference)
           VALUES ($1, $2, tstzrange($3, $4), 'test_drive', 'LOST02')""",
        uuid.uuid4(),
        CAR,
        start,
        start + timedelta(minutes=30),
    )
    scheduling.failing = True
    with pytest.raises(Unavailable):
        await scheduling.book_test_drive(_request(start))
    scheduling.failing = False
    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 1
    assert await _halves(fresh.pool) == (0, 1)  # only the row that was already there


async def test_a_hold_whose_answer_was_lost_is_asked_for_again_not_placed_twice(fresh):
    scheduling, _, handle = _mesh(fresh)
    handle.plan("create_hold", "late")
    drive = await scheduling.book_test_drive(_request(_weekday_at(9)))
    assert drive.vehicle_unit_id == CAR
    first, second = _keys(handle, "create_hold")
    assert first is not None and first == second
    assert await _halves(fresh.pool) == (1, 1)


async def test_a_crash_after_the_car_was_booked_is_answered_by_the_retry(fresh):
    scheduling, _, handle = _mesh(fresh)
    handle.plan("confirm_hold", "crash")
    request = _request(_weekday_at(15, 30))
    with pytest.raises(Crash):
        await scheduling.book_test_drive(request, idempotency_key="td-crash-1")
    assert await _halves(fresh.pool) == (1, 1)
    drive = await scheduling.book_test_drive(request, idempotency_key="td-crash-1")
    assert await _halves(fresh.pool) == (1, 1)
    booked = await fresh.pool.fetchval(
        "SELECT booking_id::text FROM bookings WHERE kind = 'test_drive' AND status = 'confirmed'"
    )
    assert drive.vehicle_booking_id == booked


async def test_a_crash_before_the_confirm_is_undone_by_the_retry_which_books_again(fresh):
    scheduling, _, handle = _mesh(fresh)
    handle.plan("confirm_hold", "die")  # after the appointment, before the car's confirm
    request = _request(_weekday_at(16))
    with pytest.raises(Crash):
        await scheduling.book_test_drive(request, idempotency_key="td-crash-2")
    assert await _halves(fresh.pool) == (1, 0)

    drive = await scheduling.book_test_drive(request, idempotency_key="td-crash-2")
    assert await _halves(fresh.pool) == (1, 1)
    assert drive.appointment.status == "confirmed"
    cancelled = await fresh.pool.fetchval(
        "SELECT count(*) FROM bookings WHERE kind = 'appointment' AND status = 'cancelled'"
    )
    assert cancelled == 1  # the first attempt's appointment, undone before booking again


async def test_a_key_whose_attempt_was_rolled_back_can_try_again(fresh):
    scheduling, _, handle = _mesh(fresh)
    handle.plan("confirm_hold", "lost", "lost", "lost")
    request = _request(_weekday_at(10, 30))
    with pytest.raises(DependencyUnavailable):
        await scheduling.book_test_drive(request, idempotency_key="td-again")
    drive = await scheduling.book_test_drive(request, idempotency_key="td-again")
    assert await _halves(fresh.pool) == (1, 1)
    assert drive == await scheduling.book_test_drive(request, idempotency_key="td-again")
    # The second attempt's steps had keys of their own.
    keys = _keys(handle, "confirm_hold")
    assert len(set(keys)) == 2


async def test_a_caller_that_goes_away_does_not_stop_the_rollback(fresh):
    """The HTTP client hangs up (Serve cancels the handler) while the car is being let go:
    the rollback still ends, and a retry with the key, refused as in flight (409 with
    Retry-After) until it did, then books afresh."""
    scheduling, _, handle = _mesh(fresh)
    handle.plan("confirm_hold", "in_flight", "lost", "lost")
    releasing, gate = asyncio.Event(), asyncio.Event()
    release = handle.inventory.release_hold

    async def slow_release(hold_id: str) -> Any:
        releasing.set()
        await gate.wait()
        return await release(hold_id)

    handle.inventory.release_hold = slow_release  # type: ignore[method-assign]
    request = _request(_weekday_at(11, 30))
    call = asyncio.ensure_future(scheduling.book_test_drive(request, idempotency_key="td-gone"))
    await asyncio.wait_for(releasing.wait(), timeout=30)  # a deadline to fail, not a measure
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    with pytest.raises(IdempotencyKeyInFlight):  # the rollback still runs
        await scheduling.book_test_drive(request, idempotency_key="td-gone")
    gate.set()
    for _ in range(600):  # a bound to fail on, not a measure
        try:
            drive = await scheduling.book_test_drive(request, idempotency_key="td-gone")
            break
        except IdempotencyKeyInFlight:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the rollback never ended")
    (late,) = await handle.land()
    assert isinstance(late, HoldExpired)  # the first confirm found its hold let go
    assert await _halves(fresh.pool) == (1, 1)
    first = await fresh.pool.fetchval(
        """SELECT count(*) FROM bookings
            WHERE kind = 'appointment' AND status = 'cancelled' AND cancel_reason = $1""",
        "the test-drive car could not be booked",
    )
    assert first == 1 and drive.appointment.status == "confirmed"


# -- cancelling and moving a booked test drive ------------------------------------------------


async def _car_starts(pool) -> list[datetime]:
    rows = await pool.fetch(
        """SELECT lower(during) AS starts FROM bookings
            WHERE resource_id = $1 AND status = 'confirmed' ORDER BY lower(during)""",
        CAR,
    )
    return [r["starts"] for r in rows]


async def _desk_start(scheduling: SchedulingService, appointment_id: str) -> datetime | None:
    """When the appointment is, or None once cancelled."""
    appointment = await scheduling.get_appointment(appointment_id)
    return appointment.start if appointment.status == "confirmed" else None


async def test_a_cancel_while_inventory_is_down_changes_nothing_and_finishes_later(fresh):
    scheduling, inventory, handle = _mesh(fresh)
    start = _weekday_at(10)
    drive = await scheduling.book_test_drive(_request(start))
    aid = drive.appointment.appointment_id
    handle.default = "down"
    with pytest.raises(DependencyUnavailable) as refused:
        await scheduling.cancel_appointment(aid, "sold my old car", idempotency_key="cx-1")
    assert "finishes on its own" in refused.value.message
    assert await _halves(fresh.pool) == (1, 1)  # the desk is untouched while the car is
    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 0
    with pytest.raises(Conflict):  # a test drive being cancelled is not moved meanwhile
        await scheduling.reschedule_appointment(aid, _weekday_at(15))

    handle.default = "ok"
    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 1
    assert await _halves(fresh.pool) == (0, 0)
    assert await _car_is_free(inventory, start)
    # The caller asking again hears the cancelled appointment.
    again = await scheduling.cancel_appointment(aid, "sold my old car", idempotency_key="cx-1")
    assert again.status == "cancelled" and again.cancel_reason == "sold my old car"


async def test_a_cancel_that_died_after_the_car_is_finished_by_the_retry(fresh):
    scheduling, _, handle = _mesh(fresh)
    drive = await scheduling.book_test_drive(_request(_weekday_at(11)))
    aid = drive.appointment.appointment_id
    handle.plan("cancel_rental_for_hold", "crash")  # the car is cancelled, then the process dies
    with pytest.raises(Crash):
        await scheduling.cancel_appointment(aid, "too far to drive", idempotency_key="cx-2")
    assert await _halves(fresh.pool) == (1, 0)

    cancelled = await scheduling.cancel_appointment(aid, "too far to drive", idempotency_key="cx-2")
    assert cancelled.status == "cancelled"
    assert await _halves(fresh.pool) == (0, 0)
    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 0  # nothing left


async def test_a_half_done_cancel_is_finished_by_the_sweep(fresh):
    scheduling, _, handle = _mesh(fresh)
    drive = await scheduling.book_test_drive(_request(_weekday_at(11, 30)))
    handle.plan("cancel_rental_for_hold", "crash")
    with pytest.raises(Crash):
        await scheduling.cancel_appointment(drive.appointment.appointment_id, "ill")
    assert await _halves(fresh.pool) == (1, 0)
    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 1
    assert await _halves(fresh.pool) == (0, 0)
    reason = await fresh.pool.fetchval(
        "SELECT cancel_reason FROM bookings WHERE kind = 'appointment' AND status = 'cancelled'"
    )
    assert reason == "ill"


async def test_a_move_whose_new_car_was_never_confirmed_keeps_both_at_the_old_time(fresh):
    scheduling, inventory, handle = _mesh(fresh)
    old, new = _weekday_at(10), _weekday_at(14)
    drive = await scheduling.book_test_drive(_request(old))
    aid = drive.appointment.appointment_id
    handle.plan("confirm_hold", "lost", "lost", "lost")
    with pytest.raises(DependencyUnavailable):
        await scheduling.reschedule_appointment(aid, new)
    assert await _desk_start(scheduling, aid) == old
    assert await _car_starts(fresh.pool) == [old]
    assert await _car_is_free(inventory, new)  # its hold was let go, not left to lapse
    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 0


async def test_a_move_whose_new_car_was_confirmed_late_keeps_both_at_the_old_time(fresh):
    """The desk is taken at the new time, and the new car's confirm landed after its caller
    stopped waiting: the move is undone, the late booking of the car cancelled."""
    scheduling, inventory, handle = _mesh(fresh)
    old, new = _weekday_at(10), _weekday_at(14, 30)
    drive = await scheduling.book_test_drive(_request(old))
    await scheduling.book_appointment(
        BookRequest(phone="+15552220999", service_type="test_drive", start=new)
    )
    handle.plan("confirm_hold", "late")
    with pytest.raises(Unavailable):
        await scheduling.reschedule_appointment(drive.appointment.appointment_id, new)
    assert await _desk_start(scheduling, drive.appointment.appointment_id) == old
    assert await _car_starts(fresh.pool) == [old]
    assert await _car_is_free(inventory, new)


async def test_a_move_that_died_after_the_desk_moved_is_finished_by_the_sweep(fresh):
    scheduling, inventory, handle = _mesh(fresh)
    old, new = _weekday_at(10), _weekday_at(15)
    drive = await scheduling.book_test_drive(_request(old))
    aid = drive.appointment.appointment_id
    handle.plan("release_hold", "die")  # the old car was about to be let go
    with pytest.raises(Crash):
        await scheduling.reschedule_appointment(aid, new)
    assert await _desk_start(scheduling, aid) == new
    assert await _car_starts(fresh.pool) == [old, new]  # booked at both, never at neither

    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 1
    assert await _desk_start(scheduling, aid) == new
    assert await _car_starts(fresh.pool) == [new]
    assert await _car_is_free(inventory, old)


async def test_a_move_that_died_before_the_desk_moved_is_undone_by_the_sweep(fresh):
    scheduling, inventory, handle = _mesh(fresh)
    old, new = _weekday_at(10), _weekday_at(15, 30)
    drive = await scheduling.book_test_drive(_request(old))
    aid = drive.appointment.appointment_id
    handle.plan("confirm_hold", "crash")  # the new car is booked, then the process dies
    with pytest.raises(Crash):
        await scheduling.reschedule_appointment(aid, new)
    assert await _car_starts(fresh.pool) == [old, new]

    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 1
    assert await _desk_start(scheduling, aid) == old
    assert await _car_starts(fresh.pool) == [old]
    assert await _car_is_free(inventory, new)


async def test_a_retry_of_a_move_that_died_half_way_settles_it_and_moves(fresh):
    scheduling, _, handle = _mesh(fresh)
    old, new = _weekday_at(10), _weekday_at(16)
    drive = await scheduling.book_test_drive(_request(old))
    aid = drive.appointment.appointment_id
    handle.plan("confirm_hold", "crash")
    with pytest.raises(Crash):
        await scheduling.reschedule_appointment(aid, new, idempotency_key="mv-crash")
    moved = await scheduling.reschedule_appointment(aid, new, idempotency_key="mv-crash")
    assert moved.start == new
    assert await _car_starts(fresh.pool) == [new]
    assert await _halves(fresh.pool) == (1, 1)
    assert moved == await scheduling.reschedule_appointment(aid, new, idempotency_key="mv-crash")
    # The retry's car steps had keys of their own (the first attempt's hold was undone).
    assert len(set(_keys(handle, "confirm_hold")[1:])) == 2


async def test_a_cancel_after_a_move_died_half_way_leaves_nothing_booked(fresh):
    scheduling, inventory, handle = _mesh(fresh)
    old, new = _weekday_at(9), _weekday_at(13)
    drive = await scheduling.book_test_drive(_request(old))
    aid = drive.appointment.appointment_id
    handle.plan("confirm_hold", "crash")
    with pytest.raises(Crash):
        await scheduling.reschedule_appointment(aid, new)
    await scheduling.cancel_appointment(aid, "no longer needed")
    assert await scheduling.settle_test_drives(older_than=timedelta(0)) == 1
    assert await _halves(fresh.pool) == (0, 0)
    assert await _car_is_free(inventory, old) and await _car_is_free(inventory, new)


async def test_a_cancel_racing_a_move_follows_the_car_the_move_took(fresh):
    """The move switches the appointment to its new car between the cancel letting the old
    car go and cancelling the desk: the cancel notices and lets the new car go too."""
    scheduling, inventory, _ = _mesh(fresh)
    old, new = _weekday_at(10), _weekday_at(14)
    drive = await scheduling.book_test_drive(_request(old))
    aid = drive.appointment.appointment_id
    confirming, go_on, moved = asyncio.Event(), asyncio.Event(), asyncio.Event()
    confirm, cancel_car = inventory.confirm_hold, inventory.cancel_rental_for_hold

    async def paused_confirm(hold_id: str, idempotency_key: str | None = None) -> Any:
        confirming.set()
        await go_on.wait()
        return await confirm(hold_id, idempotency_key=idempotency_key)

    async def cancel_once_the_move_is_done(hold_id: str, reason: str | None = None) -> Any:
        if not go_on.is_set():
            go_on.set()  # the move confirms its new car and moves the desk meanwhile
            await moved.wait()
        return await cancel_car(hold_id, reason)

    inventory.confirm_hold = paused_confirm  # type: ignore[method-assign]
    inventory.cancel_rental_for_hold = cancel_once_the_move_is_done  # type: ignore[method-assign]
    move = asyncio.ensure_future(scheduling.reschedule_appointment(aid, new))
    move.add_done_callback(lambda _: moved.set())
    await asyncio.wait_for(confirming.wait(), timeout=30)  # a deadline to fail, not a measure
    cancelled = await scheduling.cancel_appointment(aid, "never mind")
    assert (await move).start == new
    assert cancelled.status == "cancelled" and cancelled.start == new
    assert await _halves(fresh.pool) == (0, 0)
    assert await _car_is_free(inventory, old) and await _car_is_free(inventory, new)
