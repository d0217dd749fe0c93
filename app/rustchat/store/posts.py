"""Posts, threads and reactions."""

from __future__ import annotations

from typing import Any

from rustchat.db.pool import Pool
from rustchat.ids import new_id, now_ms
from rustchat.store.common import insert_or_existing

_COLUMNS = "id, channel_id, user_id, root_id, message, create_at, update_at, edit_at, delete_at, file_ids"
_FIELDS = _COLUMNS.split(", ")


def public(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", "channel_id", "user_id", "root_id", "message", "create_at", "update_at", "edit_at", "delete_at")}
    if out["root_id"] is None:
        out["root_id"] = ""
    if out["delete_at"]:
        out["message"] = ""  # the text stays in the database (soft delete) but is no longer served
    out["file_ids"] = [] if out["delete_at"] else list(row.get("file_ids") or [])
    return out


async def create(db: Pool, channel_id: str, user_id: str, message: str, root_id: str | None) -> dict[str, Any]:
    now = now_ms()
    async with db.transaction() as cur:
        await cur.execute(
            f"INSERT INTO posts (id, channel_id, user_id, root_id, message, create_at, update_at)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (new_id(), channel_id, user_id, root_id, message, now, now),
        )
        row = dict(zip(_FIELDS, await cur.fetchone(), strict=True))
        await cur.execute(
            "UPDATE channels SET last_post_at = GREATEST(last_post_at, %s) WHERE id = %s", (now, channel_id)
        )
    return row


class FilesUnavailable(Exception):
    """Some of the file ids are not the author's unattached uploads in the post's channel."""


async def create_with_files(
    db: Pool, channel_id: str, user_id: str, message: str, root_id: str | None, file_ids: list[str]
) -> dict[str, Any]:
    """Like create(), attaching the files in the same transaction: all of them or no post at all.

    Each file must be the author's upload in this channel and not attached yet; a file claimed by
    two posts at once goes to one of them (the row lock decides) and the other fails.
    """
    now = now_ms()
    post_id = new_id()
    async with db.transaction() as cur:
        await cur.execute(
            f"INSERT INTO posts (id, channel_id, user_id, root_id, message, create_at, update_at, file_ids)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (post_id, channel_id, user_id, root_id, message, now, now, file_ids),
        )
        row = dict(zip(_FIELDS, await cur.fetchone(), strict=True))
        await cur.execute(
            "UPDATE files SET post_id = %s WHERE id = ANY(%s) AND channel_id = %s AND user_id = %s"
            " AND post_id IS NULL",
            (post_id, file_ids, channel_id, user_id),
        )
        if cur.rowcount != len(set(file_ids)):
            raise FilesUnavailable(post_id)
        await cur.execute(
            "UPDATE channels SET last_post_at = GREATEST(last_post_at, %s) WHERE id = %s", (now, channel_id)
        )
    return row


async def get(db: Pool, post_id: str) -> dict[str, Any] | None:
    return await db.fetchrow_dict(f"SELECT {_COLUMNS} FROM posts WHERE id = %s", (post_id,))


async def edit(db: Pool, post_id: str, message: str) -> dict[str, Any] | None:
    now = now_ms()
    return await db.fetchrow_dict(
        f"UPDATE posts SET message = %s, update_at = %s, edit_at = %s WHERE id = %s AND delete_at = 0"
        f" RETURNING {_COLUMNS}",
        (message, now, now, post_id),
    )


async def soft_delete(db: Pool, post_id: str) -> dict[str, Any] | None:
    now = now_ms()
    return await db.fetchrow_dict(
        f"UPDATE posts SET delete_at = %s, update_at = %s WHERE id = %s AND delete_at = 0 RETURNING {_COLUMNS}",
        (now, now, post_id),
    )


async def page(
    db: Pool, channel_id: str, *, before: dict[str, Any] | None, since: int | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Newest first. `since` also returns edited and deleted posts so a client can resync."""
    if since is not None:
        rows = await db.fetch_dicts(
            f"SELECT {_COLUMNS} FROM posts WHERE channel_id = %s AND update_at > %s"
            f" ORDER BY create_at DESC, id DESC LIMIT %s",
            (channel_id, since, limit + 1),
        )
    elif before is not None:
        rows = await db.fetch_dicts(
            f"SELECT {_COLUMNS} FROM posts WHERE channel_id = %s AND delete_at = 0"
            f" AND (create_at, id) < (%s, %s) ORDER BY create_at DESC, id DESC LIMIT %s",
            (channel_id, before["create_at"], before["id"], limit + 1),
        )
    else:
        rows = await db.fetch_dicts(
            f"SELECT {_COLUMNS} FROM posts WHERE channel_id = %s AND delete_at = 0"
            f" ORDER BY create_at DESC, id DESC LIMIT %s",
            (channel_id, limit + 1),
        )
    return rows[:limit], len(rows) > limit


async def thread(db: Pool, root_id: str) -> list[dict[str, Any]]:
    return await db.fetch_dicts(
        f"SELECT {_COLUMNS} FROM posts WHERE (id = %s OR root_id = %s) AND delete_at = 0"
        f" ORDER BY create_at, id",
        (root_id, root_id),
    )


async def add_reaction(db: Pool, post_id: str, user_id: str, emoji_name: str) -> tuple[dict[str, Any], bool]:
    return await insert_or_existing(
        db,
        "INSERT INTO reactions (post_id, user_id, emoji_name, create_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING post_id, user_id, emoji_name, create_at",
        (post_id, user_id, emoji_name, now_ms()),
        lambda: db.fetchrow_dict(
            "SELECT post_id, user_id, emoji_name, create_at FROM reactions"
            " WHERE post_id = %s AND user_id = %s AND emoji_name = %s",
            (post_id, user_id, emoji_name),
        ),
    )


async def remove_reaction(db: Pool, post_id: str, user_id: str, emoji_name: str) -> dict[str, Any] | None:
    return await db.fetchrow_dict(
        "DELETE FROM reactions WHERE post_id = %s AND user_id = %s AND emoji_name = %s"
        " RETURNING post_id, user_id, emoji_name, create_at",
        (post_id, user_id, emoji_name),
    )


async def reactions(db: Pool, post_id: str) -> list[dict[str, Any]]:
    return await db.fetch_dicts(
        "SELECT post_id, user_id, emoji_name, create_at FROM reactions WHERE post_id = %s ORDER BY create_at",
        (post_id,),
    )


async def channels_of(db: Pool, post_ids: list[str]) -> dict[str, str]:
    """post id → channel id, for the posts that exist and are not deleted."""
    rows = await db.fetch("SELECT id, channel_id FROM posts WHERE id = ANY(%s) AND delete_at = 0", (post_ids,))
    return {r[0]: r[1] for r in rows}


async def reactions_of(db: Pool, post_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """post id → its reactions (oldest first); every asked id is a key."""
    out: dict[str, list[dict[str, Any]]] = {p: [] for p in post_ids}
    for r in await db.fetch_dicts(
        "SELECT post_id, user_id, emoji_name, create_at FROM reactions WHERE post_id = ANY(%s)"
        " ORDER BY create_at, user_id, emoji_name",
        (post_ids,),
    ):
        out[r["post_id"]].append(r)
    return out
