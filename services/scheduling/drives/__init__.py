"""Dealership test drives: a saga over the sales desk (an appointment, booked through the
appointment desk) and a demo car (a hold and its confirm in inventory, through
``VehicleHolds``), booked, moved and cancelled together or not at all.

One concept a module: ``attempts`` (an attempt's key and the records that log it), ``car``
(the steps on the car), ``booking``, ``changes`` (moving and cancelling), ``sweep``, and
``retries`` (asking a step again while its outcome is unknown). The design, step by step:
``docs/test-drives.md``.
"""

from services.scheduling.drives.booking import TEST_DRIVE
from services.scheduling.drives.desk import AppointmentDesk
from services.scheduling.drives.retries import run_to_end
from services.scheduling.drives.saga import TestDrives

__all__ = ["TEST_DRIVE", "AppointmentDesk", "TestDrives", "run_to_end"]
