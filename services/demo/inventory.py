"""Demo rows for the inventory service: an equipment-rental yard and a dealership's demo cars.

Some units require nothing (projector, PA system, generators, compressor, demo cars) and confirm
with no verification; others require an operator certification and/or an insurance minimum
(excavators, boom lifts, forklifts). One excavator is in MAINTENANCE and cannot be held.
Certification names match the verification service's: excavator, aerial_lift, forklift.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

_INSERT_UNIT = """
INSERT INTO units (unit_id, name, category, description, status, daily_rate, max_rate,
                   required_certification, min_insurance, location, weight_class, cell_minutes)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (unit_id) DO NOTHING
"""

_YARD = "North Yard, 1200 Industrial Pkwy"
_SOUTH = "South Yard, 88 Quarry Rd"
_EVENTS = "Event Store, 40 Market St"
_SHOWROOM = "Showroom, 500 Auto Mall Dr"
DAY_MINUTES = 1440
TEST_DRIVE_MINUTES = 30

# (unit_id, name, category, description, status, daily_rate, max_rate, certification,
#  min_insurance, location, weight_class, cell_minutes)
UNITS: list[tuple[str, str, str, str, str, str, str, str | None, str | None, str, str | None, int]]
UNITS = [
    ("EXC-201", "Kubota KX040 mini excavator", "excavator",
     "4-ton mini excavator with 24 inch bucket, thumb and rubber tracks; fits through a gate.",
     "AVAILABLE", "325.00", "395.00", "excavator", "1000000", _YARD, "medium", DAY_MINUTES),
    ("EXC-202", "CAT 320 hydraulic excavator", "excavator",
     "20-ton tracked excavator for site work, trenching and demolition; delivered by lowboy.",
     "AVAILABLE", "890.00", "1050.00", "excavator", "2000000", _SOUTH, "heavy", DAY_MINUTES),
    ("EXC-203", "Bobcat E20 compact excavator", "excavator",
     "2-ton compact excavator with retractable undercarriage for tight spaces.",
     "MAINTENANCE", "260.00", "310.00", "excavator", "500000", _YARD, "light", DAY_MINUTES),
    ("SKS-301", "Bobcat S650 skid steer loader", "skid_steer",
     "Skid steer with bucket and pallet forks for grading, loading and moving material.",
     "AVAILABLE", "295.00", "350.00", None, "500000", _YARD, "medium", DAY_MINUTES),
    ("BML-401", "Genie Z-45 articulating boom lift", "boom_lift",
     "45 ft articulating boom lift, 4WD diesel, reaches up and over obstacles.",
     "AVAILABLE", "375.00", "450.00", "aerial_lift", "1000000", _SOUTH, "heavy", DAY_MINUTES),
    ("BML-402", "JLG 600S telescopic boom lift", "boom_lift",
     "60 ft telescopic boom lift for high outdoor work, 500 lb platform.",
     "AVAILABLE", "520.00", "620.00", "aerial_lift", "1000000", _SOUTH, "heavy", DAY_MINUTES),
    ("SCL-501", "Genie GS-1930 electric scissor lift", "scissor_lift",
     "19 ft electric scissor lift for indoor work; non-marking tires, fits through doorways.",
     "AVAILABLE", "145.00", "175.00", "aerial_lift", None, _YARD, "light", DAY_MINUTES),
    ("FRK-601", "Toyota 8FGU25 warehouse forklift", "forklift",
     "5,000 lb propane forklift with side shift for warehouse and dock work.",
     "AVAILABLE", "210.00", "255.00", "forklift", "500000", _YARD, "medium", DAY_MINUTES),
    ("FRK-602", "JCB 930 rough terrain forklift", "forklift",
     "8,000 lb rough terrain forklift for lumber and block on uneven job sites.",
     "AVAILABLE", "340.00", "410.00", "forklift", "1000000", _SOUTH, "heavy", DAY_MINUTES),
    ("GEN-701", "Towable 25 kW diesel generator", "generator",
     "Quiet towable generator for job sites and outdoor events, 24 hours on a tank.",
     "AVAILABLE", "120.00", "150.00", None, None, _YARD, "medium", DAY_MINUTES),
    ("GEN-702", "Honda EU3000 portable inverter generator", "generator",
     "3 kW quiet inverter generator for tools, food trucks and camping.",
     "AVAILABLE", "55.00", "70.00", None, None, _EVENTS, "light", DAY_MINUTES),
    ("CMP-801", "Doosan 185 CFM tow-behind air compressor", "compressor",
     "Diesel air compressor for jackhammers, nail guns and sandblasting.",
     "AVAILABLE", "135.00", "165.00", None, None, _YARD, "medium", DAY_MINUTES),
    ("PRJ-901", "Epson 5000 lumen laser projector", "projector",
     "Bright laser projector with 10 ft tripod screen and HDMI cables for presentations.",
     "AVAILABLE", "85.00", "105.00", None, None, _EVENTS, "light", DAY_MINUTES),
    ("PAS-951", "Bose L1 PA system with wireless mics", "pa_system",
     "1,000 W portable PA with two wireless microphones and a mixer for speeches and parties.",
     "AVAILABLE", "95.00", "120.00", None, None, _EVENTS, "light", DAY_MINUTES),
    ("VEH-CIVIC-01", "2025 Honda Civic Sport demo car", "demo_vehicle",
     "Sedan demo car for test drives: 2.0 L, CVT, Apple CarPlay; about 20 minutes per drive.",
     "AVAILABLE", "0.00", "0.00", None, None, _SHOWROOM, None, TEST_DRIVE_MINUTES),
    ("VEH-RAV4-01", "2025 Toyota RAV4 Hybrid XLE demo car", "demo_vehicle",
     "Hybrid SUV demo car for test drives, all-wheel drive.",
     "AVAILABLE", "0.00", "0.00", None, None, _SHOWROOM, None, TEST_DRIVE_MINUTES),
    ("VEH-F150-01", "2025 Ford F-150 Lariat demo truck", "demo_vehicle",
     "Pickup truck demo for test drives: 3.5 L EcoBoost, towing package.",
     "AVAILABLE", "0.00", "0.00", None, None, _SHOWROOM, None, TEST_DRIVE_MINUTES),
]  # fmt: skip


async def load(conn: asyncpg.Connection) -> None:
    await conn.executemany(
        _INSERT_UNIT,
        [
            (
                unit_id, name, category, description, status, Decimal(rate), Decimal(max_rate),
                cert, Decimal(ins) if ins else None, location, weight, cell_minutes,
            )
            for (
                unit_id, name, category, description, status, rate, max_rate, cert, ins,
                location, weight, cell_minutes,
            ) in UNITS
        ],
    )  # fmt: skip
