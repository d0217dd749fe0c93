"""Files: metadata rows, bytes in PostgreSQL large objects.

Large objects are written and read with the server-side SQL functions (`lo_create`, `lo_put`,
`lo_get`) because aiopg has no large-object API; each call moves one chunk, so no file is ever
held whole in memory. Writing happens in one transaction with the row insert: a failed upload
leaves neither row nor bytes behind. Reading takes a pool connection per chunk, so a slow
download never holds one for long.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from rustchat.db.pool import Pool
from rustchat.ids import new_id, now_ms

_COLUMNS = "id, channel_id, user_id, post_id, name, declared_type, detected_type, size, lo_oid, create_at"

READ_CHUNK = 256 * 1024


def public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "channel_id", "user_id", "post_id", "name", "declared_type",
                                "detected_type", "size", "create_at")}


async def create(
    db: Pool,
    *,
    channel_id: str,
    user_id: str,
    name: str,
    declared_type: str,
    detected_type: str,
    chunks: AsyncIterator[bytes],
) -> dict[str, Any]:
    """Store the bytes `chunks` yields as a new large object and insert the row; one transaction."""
    async with db.transaction() as cur:
        await cur.execute("SELECT lo_create(0)")
        (oid,) = await cur.fetchone()
        size = 0
        async for chunk in chunks:
            if chunk:
                await cur.execute("SELECT lo_put(%s::oid, %s, %s)", (oid, size, chunk))
                size += len(chunk)
        await cur.execute(
            f"INSERT INTO files (id, channel_id, user_id, name, declared_type, detected_type, size, lo_oid, create_at)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (new_id(), channel_id, user_id, name, declared_type, detected_type, size, oid, now_ms()),
        )
        names = [col.name for col in cur.description]
        row = dict(zip(names, await cur.fetchone(), strict=True))
    return row


async def get(db: Pool, file_id: str) -> dict[str, Any] | None:
    """The file with `post_deleted` (its post was deleted) for the permission check."""
    cols = ", ".join(f"f.{c}" for c in _COLUMNS.split(", "))
    return await db.fetchrow_dict(
        f"SELECT {cols}, COALESCE(p.delete_at, 0) <> 0 AS post_deleted"
        f" FROM files f LEFT JOIN posts p ON p.id = f.post_id WHERE f.id = %s",
        (file_id,),
    )


async def read(db: Pool, oid: int, size: int, chunk: int = READ_CHUNK) -> AsyncIterator[bytes]:
    """The large object's bytes, `chunk` at a time."""
    offset = 0
    while offset < size:
        data = await db.fetchval("SELECT lo_get(%s::oid, %s, %s)", (oid, offset, min(chunk, size - offset)))
        if not data:
            break
        yield bytes(data)
        offset += len(data)
