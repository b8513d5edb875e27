"""Calls from one service application to another, through Serve DeploymentHandles.

Each service is its own application, so a deployment of another application cannot be bound
into this one's graph (Serve allows one FastAPI ingress per application). The handle is looked
up by name on first use instead, which also lets the applications deploy in any order.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from services.errors import DependencyUnavailable, DomainError
from services.inventory import HoldRequest, HoldResponse, ReleaseResult, RentalBooking

log = logging.getLogger(__name__)

# How long a caller waits for another application. Giving up does not cancel the request: it
# may still run to its end on the other side, so a write that timed out has an unknown outcome
# (asked again with the same idempotency key, it answers what happened).
REMOTE_TIMEOUT_SECONDS = 5.0


class RemoteDeployment:
    """A deployment of another application, called by method name."""

    def __init__(
        self,
        *,
        deployment: str,
        app_name: str,
        what: str,
        handle: DeploymentHandle | None = None,
    ) -> None:
        self.deployment = deployment
        self.app_name = app_name
        # Said to a caller when the other side cannot answer: "<what> cannot be checked...".
        self.what = what
        self._handle = handle

    async def call(self, method: str, **kwargs: Any) -> Any:
        """Call ``method`` on a replica. A refusal of the other service is raised as it was;
        anything else (unreachable, failed, timed out) is ``DependencyUnavailable``, which for
        a write means "outcome unknown", not "not done"."""
        try:
            if self._handle is None:
                # Looking a deployment up asks the controller and blocks; not on this loop.
                self._handle = await asyncio.to_thread(
                    serve.get_deployment_handle, self.deployment, self.app_name
                )
            response = getattr(self._handle, method).remote(**kwargs)
            return await asyncio.wait_for(response, timeout=REMOTE_TIMEOUT_SECONDS)
        except TimeoutError as e:
            # Not cancelled on the replica (response.cancel() could cut a write half way):
            # it may still complete.
            log.warning(
                "remote deployment call timed out; its outcome is unknown",
                extra={"deployment": self.deployment, "method": method},
            )
            raise DependencyUnavailable(
                f"{self.what} cannot be checked for a moment; try again shortly."
            ) from e
        except Exception as e:
            # The other service refused (Ray wraps its error; the original is the cause):
            # pass that refusal on as it was raised.
            cause = getattr(e, "cause", e)
            if isinstance(cause, DomainError):
                raise cause from None
            log.warning(
                "remote deployment call failed",
                extra={"deployment": self.deployment, "method": method},
                exc_info=True,
            )
            raise DependencyUnavailable(
                f"{self.what} cannot be checked for a moment; try again shortly."
            ) from e


class RemoteRequirementsChecker:
    """Inventory's ``RequirementsChecker`` answered by the verification application."""

    def __init__(self, remote: RemoteDeployment) -> None:
        self.remote = remote

    async def missing_requirements(
        self, *, call_id: str | None, certification: str | None, min_insurance: Decimal | None
    ) -> list[str]:
        missing: list[str] = await self.remote.call(
            "missing_requirements",
            call_id=call_id,
            certification=certification,
            min_insurance=min_insurance,
        )
        return missing


class RemoteVehicleHolds:
    """Scheduling's ``VehicleHolds`` (test drives) answered by the inventory application.

    Every write carries the idempotency key it is given, so a create or confirm whose answer
    was lost (``DependencyUnavailable``) can be asked again and answers what happened; release
    and cancel need none, asking again is harmless."""

    def __init__(self, remote: RemoteDeployment) -> None:
        self.remote = remote

    async def create_hold(
        self, request: HoldRequest, *, idempotency_key: str | None = None
    ) -> HoldResponse:
        hold: HoldResponse = await self.remote.call(
            "create_hold", request=request, idempotency_key=idempotency_key
        )
        return hold

    async def confirm_hold(
        self, hold_id: str, *, idempotency_key: str | None = None
    ) -> RentalBooking:
        booking: RentalBooking = await self.remote.call(
            "confirm_hold", hold_id=hold_id, idempotency_key=idempotency_key
        )
        return booking

    async def release_hold(self, hold_id: str) -> ReleaseResult:
        released: ReleaseResult = await self.remote.call("release_hold", hold_id=hold_id)
        return released

    async def booking_for_hold(self, hold_id: str) -> RentalBooking | None:
        booking: RentalBooking | None = await self.remote.call("booking_for_hold", hold_id=hold_id)
        return booking

    async def cancel_rental_for_hold(
        self, hold_id: str, reason: str | None = None
    ) -> RentalBooking:
        booking: RentalBooking = await self.remote.call(
            "cancel_rental_for_hold", hold_id=hold_id, reason=reason
        )
        return booking
