"""Demo rows for the inventory service (owned by that service's author)."""

import asyncpg


async def load(conn: asyncpg.Connection) -> None:
    return None
