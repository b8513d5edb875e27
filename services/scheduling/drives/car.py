"""The saga's steps on the demo car, in inventory (reached through ``VehicleHolds``): hold it,
confirm it, learn its fate, let it go, free it. Each carries its idempotency key, so asking
again answers what happened."""

from __future__ import annotations

import asyncio
import logging

from services.errors import Conflict, DependencyUnavailable, HoldExpired, NotFound
from services.inventory import HoldRequest, HoldResponse, RentalBooking
from services.scheduling.drives.attempts import DriveAttempt
from services.scheduling.drives.retries import (
    BOOK_UNKNOWN,
    CHANGE_UNWIRED,
    MOVE_UNKNOWN,
    retry_pauses,
    unknown_error,
    until_known,
)
from services.scheduling.vehicles import VehicleHolds

log = logging.getLogger(__name__)


class Car:
    """Inventory's demo cars, None where the dealership desk is not wired (then every step is
    refused as unavailable)."""

    def __init__(self, vehicles: VehicleHolds | None) -> None:
        self.vehicles = vehicles

    def holds(self, message: str = BOOK_UNKNOWN) -> VehicleHolds:
        if self.vehicles is None:
            raise DependencyUnavailable(message)
        return self.vehicles

    async def hold(self, attempt: DriveAttempt, request: HoldRequest) -> HoldResponse:
        """Hold the car; a hold whose answer was lost is asked for again with the same key,
        which returns that same hold."""
        vehicles = self.holds()
        # A refusal means nothing was held; if a hold was placed after all while the outcome
        # stayed unknown, it lapses at its TTL.
        return await until_known(
            lambda: vehicles.create_hold(request, idempotency_key=attempt.step_key("car-hold")),
            step="car hold",
            facts={"attempt": attempt.key},
        )

    async def confirm(self, attempt: DriveAttempt, hold_id: str) -> RentalBooking:
        """Confirm the car's hold. An answer that never came (a timeout: the confirm may still
        have happened) is asked for again with the same key, which returns that booking, or
        confirms now if the first never ran. A refusal is final."""
        vehicles = self.holds()
        return await until_known(
            lambda: vehicles.confirm_hold(hold_id, idempotency_key=attempt.step_key("car-confirm")),
            step="car confirm",
            facts={"attempt": attempt.key, "hold_id": hold_id},
        )

    async def fate(self, attempt: DriveAttempt, hold_id: str) -> RentalBooking | None:
        """Whether the car ended up booked (its booking) or certainly not (None), making sure
        no confirm still in flight can book it later. Raises DependencyUnavailable when
        inventory cannot tell."""
        vehicles = self.holds()
        unknown: Exception | None = None
        for pause in retry_pauses():
            await asyncio.sleep(pause)
            try:
                released = await vehicles.release_hold(hold_id)
            except Conflict as e:
                unknown = e  # a confirm of this hold is under way: ask again once it ended
                continue
            except Exception as e:
                unknown = e
                continue
            if released.released:
                return None  # the hold is gone and was no booking: nothing can confirm it now
            # The hold was already gone (confirmed, released or lapsed): confirming it now only
            # looks up the booking made from it.
            try:
                return await vehicles.confirm_hold(
                    hold_id, idempotency_key=attempt.step_key("car-confirm")
                )
            except HoldExpired:
                return None
            except Exception as e:
                unknown = e
        raise unknown_error(unknown)

    async def let_go(self, attempt: DriveAttempt, hold_id: str) -> None:
        try:
            await self.holds().release_hold(hold_id)
        except Exception:
            # The hold lapses at its TTL; the caller's answer is the error being raised.
            log.warning(
                "could not release a test-drive car hold",
                extra={"attempt": attempt.key, "hold_id": hold_id},
                exc_info=True,
            )
        else:
            log.info(
                "test-drive car hold let go", extra={"attempt": attempt.key, "hold_id": hold_id}
            )

    async def booking(self, hold_id: str) -> RentalBooking | None:
        """The rental booked from the car's hold, or None if it never became one."""
        vehicles = self.holds(CHANGE_UNWIRED)
        return await until_known(
            lambda: vehicles.booking_for_hold(hold_id),
            step="car lookup",
            facts={"hold_id": hold_id},
            message=MOVE_UNKNOWN,
        )

    async def free(self, attempt: DriveAttempt, hold_id: str, reason: str) -> None:
        """Make sure no rental stands on a car hold: let the hold go (then no confirm still on
        its way can book it) or, if it is gone, cancel the rental booked from it, if any.
        Idempotent. Raises DependencyUnavailable while inventory cannot tell."""
        vehicles = self.holds(CHANGE_UNWIRED)
        facts = {"attempt": attempt.key, "hold_id": hold_id}
        unknown: Exception | None = None
        for pause in retry_pauses():
            await asyncio.sleep(pause)
            try:
                if (await vehicles.release_hold(hold_id)).released:
                    log.info("test-drive car hold let go", extra=facts)
                    return
                await vehicles.cancel_rental_for_hold(hold_id, reason[:300])
            except NotFound:
                return  # the hold lapsed or was let go: it never became a booking
            except Conflict as e:
                unknown = e  # a confirm of this hold is under way: ask again once it ended
            except Exception as e:
                unknown = e
            else:
                log.info("test-drive car booking cancelled", extra=facts)
                return
            log.warning("test-drive car: could not free it yet", extra=facts)
        raise unknown_error(unknown)
