"""Inventory: rental equipment and demo vehicles, ranked search, holds with a TTL, negotiation
within server-side price bounds, confirm with verification requirements, and rentals."""

from services.inventory.models import (
    BookingKind,
    HoldRequest,
    HoldResponse,
    RateAgreement,
    RateProposal,
    ReleaseResult,
    RentalBooking,
    Requirements,
    Unit,
    UnitStatus,
)
from services.inventory.requirements import RequirementsChecker
from services.inventory.service import (
    HORIZON_DAYS,
    MAX_TEST_DRIVE_MINUTES,
    InventoryService,
    UnitInMaintenance,
)

__all__ = [
    "HORIZON_DAYS",
    "MAX_TEST_DRIVE_MINUTES",
    "BookingKind",
    "HoldRequest",
    "HoldResponse",
    "InventoryService",
    "RateAgreement",
    "RateProposal",
    "ReleaseResult",
    "RentalBooking",
    "Requirements",
    "RequirementsChecker",
    "Unit",
    "UnitInMaintenance",
    "UnitStatus",
]
