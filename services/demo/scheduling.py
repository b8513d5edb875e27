"""Demo rows for the scheduling service: a car dealership's service department and sales desk,
and a small clinic's front desk. Service types and resources only; no bookings, so every test
starts from an empty calendar.
"""

from __future__ import annotations

import asyncpg

# (resource_id, pool, name). Ids are prefixed so they never collide with inventory units, which
# book through the same `bookings` table.
RESOURCES: list[tuple[str, str, str]] = [
    ("svc-bay-1", "service_bay", "Service bay 1"),
    ("svc-bay-2", "service_bay", "Service bay 2"),
    ("svc-bay-3", "service_bay", "Service bay 3"),
    ("sales-desk-1", "sales_desk", "Sales desk"),
    ("clinician-1", "clinician", "Dr. Rivera"),
    ("clinician-2", "clinician", "Dr. Chen"),
]

# (service_type_id, name, description, minutes, min USD, max USD, pool)
SERVICE_TYPES: list[tuple[str, str, str, int, float, float, str]] = [
    ("oil_change", "Oil change", "Oil and filter change.", 30, 49.0, 89.0, "service_bay"),
    (
        "brake_inspection",
        "Brake inspection",
        "Pads, rotors and fluid checked.",
        60,
        0.0,
        150.0,
        "service_bay",
    ),
    (
        "tire_rotation",
        "Tyre rotation",
        "Rotate and balance all four tyres.",
        30,
        25.0,
        60.0,
        "service_bay",
    ),
    (
        "full_service",
        "Full service",
        "Manufacturer's scheduled maintenance.",
        120,
        199.0,
        499.0,
        "service_bay",
    ),
    (
        "test_drive",
        "Test drive",
        "A test drive with a sales advisor.",
        30,
        0.0,
        0.0,
        "sales_desk",
    ),
    (
        "consultation",
        "Consultation",
        "A first visit with a clinician.",
        30,
        80.0,
        150.0,
        "clinician",
    ),
    (
        "physiotherapy",
        "Physiotherapy session",
        "A treatment session.",
        60,
        90.0,
        180.0,
        "clinician",
    ),
]

INSERT_RESOURCE = """
INSERT INTO scheduling_resources (resource_id, pool, name) VALUES ($1, $2, $3)
ON CONFLICT (resource_id) DO NOTHING"""

INSERT_SERVICE_TYPE = """
INSERT INTO service_types
    (service_type_id, name, description, duration_minutes, price_min_usd, price_max_usd,
     resource_pool)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (service_type_id) DO NOTHING"""


async def load(conn: asyncpg.Connection) -> None:
    await conn.executemany(INSERT_RESOURCE, RESOURCES)
    await conn.executemany(INSERT_SERVICE_TYPE, SERVICE_TYPES)
