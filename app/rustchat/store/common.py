"""Helpers shared by the store modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rustchat.db.pool import Pool
from rustchat.errors import conflict


async def insert_or_existing(
    db: Pool, insert_sql: str, params: Sequence[Any], existing: Callable[[], Awaitable[dict[str, Any] | None]]
) -> tuple[dict[str, Any], bool]:
    """Run an `INSERT … ON CONFLICT DO NOTHING RETURNING …`; on conflict return the row already
    there. Returns (row, created), so repeating a request is harmless."""
    row = await db.fetchrow_dict(insert_sql, params)
    if row is not None:
        return row, True
    found = await existing()
    if found is None:  # removed again between the two statements
        raise conflict("api.concurrent_change", "The resource changed concurrently; try again")
    return found, False
