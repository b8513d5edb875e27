"""Demo data: what `callmesh up` loads into an empty database, and what the tests start from.

Each service keeps its own demo rows in a module here; ``load_demo_data`` runs them in
dependency order inside one transaction.
"""

from __future__ import annotations

import asyncpg

from services.demo import calls, inventory, scheduling, verification

__all__ = ["database_is_empty", "load_demo_data"]


async def database_is_empty(conn: asyncpg.Connection) -> bool:
    return not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM bookings)")


async def load_demo_data(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        for module in (scheduling, inventory, verification, calls):
            await module.load(conn)
