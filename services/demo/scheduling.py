"""Demo rows for the scheduling service (owned by that service's author)."""

import asyncpg


async def load(conn: asyncpg.Connection) -> None:
    return None
