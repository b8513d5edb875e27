"""The default provider: registry tables in PostgreSQL (``0004_verification.sql``).

Lookups take what a caller says: codes match on their letters and digits (``BL 100234`` finds
``BL-100234``), names and addresses on their words. The key functions live in SQL and build both
the stored keys and the looked-up ones, so the two cannot disagree. Expiry is judged against
today's date in the business time zone; a licence that expires today is still valid today.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg

from services.errors import DependencyUnavailable, InvalidInput
from services.storage import STORE_UNAVAILABLE
from services.verification.models import WEIGHT_CLASSES, Finding, WeightClass

_LICENCE_BY_NUMBER = """
SELECT licence_number, state, business_name, standing, expires_on
  FROM registry_business_licences
 WHERE licence_key = registry_code_key($1)
"""

# An id match wins over an address that happens to share its letters and digits.
_SITE_BY_ID_OR_ADDRESS = """
SELECT site_id, address, rated_weight_class, inspection_expires_on
  FROM registry_job_sites
 WHERE site_key = registry_code_key($1) OR address_key = registry_name_key($1)
 ORDER BY site_key = registry_code_key($1) DESC
 LIMIT 1
"""

# Up to three candidates: one matched by licence id, or several people sharing a name.
_OPERATOR_WITH_CERTIFICATION = """
SELECT o.operator_id, o.name, o.operator_key = registry_code_key($1) AS by_id,
       c.certification, c.level, c.expires_on,
       (SELECT string_agg(h.certification, ', ' ORDER BY h.certification)
          FROM registry_operator_certifications h
         WHERE h.operator_id = o.operator_id) AS held
  FROM registry_operators o
  LEFT JOIN registry_operator_certifications c
         ON c.operator_id = o.operator_id AND c.certification = $2
 WHERE o.operator_key = registry_code_key($1) OR o.name_key = registry_name_key($1)
 ORDER BY by_id DESC, o.operator_id
 LIMIT 3
"""

_POLICY_BY_NUMBER = """
SELECT policy_number, insurer, holder_name, coverage_amount, expires_on
  FROM registry_insurance_policies
 WHERE policy_key = registry_code_key($1)
"""


class RegistryProvider:
    name = "registry"

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        tz: ZoneInfo,
        today: Callable[[], date] | None = None,
    ) -> None:
        self.pool = pool
        self._today = today or (lambda: datetime.now(tz).date())

    async def check_business_licence(self, *, licence_number: str, state: str | None) -> Finding:
        row = await self._fetch(_LICENCE_BY_NUMBER, licence_number)
        if row is None:
            return Finding(reason="unknown", facts={"requested_state": state})
        facts = {
            "licence_number": row["licence_number"],
            "state": row["state"],
            "requested_state": state,
            "business_name": row["business_name"],
            "standing": row["standing"],
            "expires_on": row["expires_on"].isoformat(),
        }
        if state is not None and state != row["state"]:
            return Finding(reason="mismatch", facts=facts)
        if row["expires_on"] < self._today():
            return Finding(reason="expired", facts=facts)
        if row["standing"] != "active":
            return Finding(reason="insufficient", facts=facts)
        return Finding(reason="valid", facts=facts)

    async def check_site_safety(self, *, site: str, weight_class: WeightClass) -> Finding:
        row = await self._fetch(_SITE_BY_ID_OR_ADDRESS, site)
        if row is None:
            return Finding(reason="unknown", facts={"requested_weight_class": weight_class})
        facts = {
            "site_id": row["site_id"],
            "address": row["address"],
            "rated_weight_class": row["rated_weight_class"],
            "requested_weight_class": weight_class,
            "inspection_expires_on": row["inspection_expires_on"].isoformat(),
        }
        if row["inspection_expires_on"] < self._today():
            return Finding(reason="expired", facts=facts)
        rated = WEIGHT_CLASSES.index(row["rated_weight_class"])
        if rated < WEIGHT_CLASSES.index(weight_class):
            return Finding(reason="insufficient", facts=facts)
        return Finding(reason="valid", facts=facts)

    async def check_operator_certification(self, *, operator: str, certification: str) -> Finding:
        rows = await self._fetch_all(_OPERATOR_WITH_CERTIFICATION, operator, certification)
        if not rows:
            return Finding(reason="unknown", facts={"certification": certification})
        if not rows[0]["by_id"] and len(rows) > 1:
            raise InvalidInput(
                "More than one operator has that name; please give the operator's licence id.",
                field="operator",
            )
        row = rows[0]
        facts = {
            "operator_id": row["operator_id"],
            "operator_name": row["name"],
            "certification": certification,
            "level": row["level"],
            "expires_on": row["expires_on"].isoformat() if row["expires_on"] else None,
            "held_certifications": row["held"],
        }
        if row["certification"] is None:
            return Finding(reason="mismatch", facts=facts)
        if row["expires_on"] < self._today():
            return Finding(reason="expired", facts=facts)
        if row["level"] != "full":
            return Finding(reason="insufficient", facts=facts)
        return Finding(reason="valid", facts=facts)

    async def check_insurance(self, *, policy_number: str, required_amount: Decimal) -> Finding:
        row = await self._fetch(_POLICY_BY_NUMBER, policy_number)
        required = str(required_amount)
        if row is None:
            return Finding(reason="unknown", facts={"required_amount": required})
        facts = {
            "policy_number": row["policy_number"],
            "insurer": row["insurer"],
            "holder_name": row["holder_name"],
            "coverage_amount": str(row["coverage_amount"]),
            "required_amount": required,
            "expires_on": row["expires_on"].isoformat(),
        }
        if row["expires_on"] < self._today():
            return Finding(reason="expired", facts=facts)
        if row["coverage_amount"] < required_amount:
            return Finding(reason="insufficient", facts=facts)
        return Finding(reason="valid", facts=facts)

    async def aclose(self) -> None:
        """The pool belongs to whoever made it."""

    async def _fetch(self, sql: str, *args: object) -> asyncpg.Record | None:
        try:
            return await self.pool.fetchrow(sql, *args)
        except STORE_UNAVAILABLE as e:
            raise DependencyUnavailable("The registry can't be reached right now.") from e

    async def _fetch_all(self, sql: str, *args: object) -> list[asyncpg.Record]:
        try:
            return list(await self.pool.fetch(sql, *args))
        except STORE_UNAVAILABLE as e:
            raise DependencyUnavailable("The registry can't be reached right now.") from e
