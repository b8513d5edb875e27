"""Demo registry rows for the verification service.

Every check has a valid, an expired, an insufficient and an unknown case (and a mismatch where
one exists), matching the certifications and insurance minimums of the inventory demo units:

* licences: BL-100234 valid (TX), BL-100871 expired, BL-300112 suspended (insufficient),
  BL-200455 valid in CA (a mismatch when asked for TX); anything else is unknown.
* sites: SITE-1001 heavy, SITE-1002 medium (insufficient for heavy), SITE-1003 light,
  SITE-1004 heavy with a lapsed inspection (expired).
* operators: OP-7001 Maria Gonzalez (excavator, forklift), OP-7002 James Carter (excavator
  expired, aerial_lift), OP-7003 Priya Patel (aerial_lift supervised = insufficient, forklift),
  OP-7004 Dan Brooks (forklift only: a mismatch for excavator).
* policies: POL-55001 $2M, POL-55002 $500k (insufficient for $1M), POL-55003 $1M expired,
  POL-55004 $1M.

Expiry dates are relative to the day the data is loaded, so the cases never age into others.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import asyncpg

_INSERT_LICENCE = """
INSERT INTO registry_business_licences (licence_number, state, business_name, standing, expires_on)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (licence_number) DO NOTHING
"""
_INSERT_SITE = """
INSERT INTO registry_job_sites (site_id, address, rated_weight_class, inspection_expires_on)
VALUES ($1, $2, $3, $4)
ON CONFLICT (site_id) DO NOTHING
"""
_INSERT_OPERATOR = """
INSERT INTO registry_operators (operator_id, name) VALUES ($1, $2)
ON CONFLICT (operator_id) DO NOTHING
"""
_INSERT_CERTIFICATION = """
INSERT INTO registry_operator_certifications (operator_id, certification, level, expires_on)
VALUES ($1, $2, $3, $4)
ON CONFLICT (operator_id, certification) DO NOTHING
"""
_INSERT_POLICY = """
INSERT INTO registry_insurance_policies
       (policy_number, insurer, holder_name, coverage_amount, expires_on)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (policy_number) DO NOTHING
"""

CURRENT, LAPSED = 400, -30  # days from today

# (licence_number, state, business name, standing, expires in days)
LICENCES = [
    ("BL-100234", "TX", "Lone Star Excavating LLC", "active", CURRENT),
    ("BL-100871", "TX", "Gulf Coast Builders Inc", "active", LAPSED),
    ("BL-300112", "TX", "Hill Country Demolition", "suspended", CURRENT),
    ("BL-200455", "CA", "Pacific Lift & Rigging", "active", CURRENT),
]
# (site_id, address, rated weight class, inspection expires in days)
SITES = [
    ("SITE-1001", "1450 Commerce Blvd, Austin TX", "heavy", CURRENT),
    ("SITE-1002", "22 Elm St, Austin TX", "medium", CURRENT),
    ("SITE-1003", "7 Garden Ln, Round Rock TX", "light", CURRENT),
    ("SITE-1004", "9 Harbor Way, Corpus Christi TX", "heavy", LAPSED),
]
OPERATORS = [
    ("OP-7001", "Maria Gonzalez"),
    ("OP-7002", "James Carter"),
    ("OP-7003", "Priya Patel"),
    ("OP-7004", "Dan Brooks"),
]
# (operator_id, certification, level, expires in days)
CERTIFICATIONS = [
    ("OP-7001", "excavator", "full", CURRENT),
    ("OP-7001", "forklift", "full", CURRENT),
    ("OP-7002", "excavator", "full", LAPSED),
    ("OP-7002", "aerial_lift", "full", CURRENT),
    ("OP-7003", "aerial_lift", "supervised", CURRENT),
    ("OP-7003", "forklift", "full", CURRENT),
    ("OP-7004", "forklift", "full", CURRENT),
]
# (policy_number, insurer, holder, coverage, expires in days)
POLICIES = [
    ("POL-55001", "Travelers", "Lone Star Excavating LLC", "2000000", CURRENT),
    ("POL-55002", "Hartford", "Gulf Coast Builders Inc", "500000", CURRENT),
    ("POL-55003", "Liberty Mutual", "Hill Country Demolition", "1000000", LAPSED),
    ("POL-55004", "Zurich", "Pacific Lift & Rigging", "1000000", CURRENT),
]


async def load(conn: asyncpg.Connection) -> None:
    today = date.today()

    def on(days: int) -> date:
        return today + timedelta(days=days)

    await conn.executemany(_INSERT_LICENCE, [(n, s, b, st, on(d)) for n, s, b, st, d in LICENCES])
    await conn.executemany(_INSERT_SITE, [(i, a, w, on(d)) for i, a, w, d in SITES])
    await conn.executemany(_INSERT_OPERATOR, OPERATORS)
    await conn.executemany(
        _INSERT_CERTIFICATION, [(o, c, lv, on(d)) for o, c, lv, d in CERTIFICATIONS]
    )
    await conn.executemany(
        _INSERT_POLICY, [(p, i, h, Decimal(c), on(d)) for p, i, h, c, d in POLICIES]
    )
