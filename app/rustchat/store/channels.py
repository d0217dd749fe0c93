"""Channels (public, private, direct) and channel membership."""

from __future__ import annotations

from typing import Any

import psycopg2.errors

from rustchat.db.pool import Pool
from rustchat.errors import conflict
from rustchat.ids import new_id, now_ms
from rustchat.store.common import insert_or_existing

_COLUMNS = "id, team_id, name, display_name, type, creator_id, create_at, update_at, delete_at, last_post_at"
_FIELDS = _COLUMNS.split(", ")


def _row(values: tuple) -> dict[str, Any]:
    return dict(zip(_FIELDS, values, strict=True))


async def create(db: Pool, team_id: str, name: str, display_name: str, ctype: str, creator_id: str) -> dict[str, Any]:
    now = now_ms()
    channel_id = new_id()
    try:
        async with db.transaction() as cur:
            await cur.execute(
                f"INSERT INTO channels (id, team_id, name, display_name, type, creator_id, create_at, update_at)"
                f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (channel_id, team_id, name, display_name, ctype, creator_id, now, now),
            )
            row = _row(await cur.fetchone())
            await cur.execute(
                "INSERT INTO channel_members (channel_id, user_id, is_admin, create_at) VALUES (%s, %s, true, %s)",
                (channel_id, creator_id, now),
            )
    except psycopg2.errors.UniqueViolation:
        raise conflict("channel.name_taken", "A channel with that name already exists in this team") from None
    return row


def direct_name(user_a: str, user_b: str) -> str:
    return "__".join(sorted((user_a, user_b)))


async def get_or_create_direct(db: Pool, user_a: str, user_b: str, creator_id: str) -> tuple[dict[str, Any], bool]:
    name = direct_name(user_a, user_b)
    now = now_ms()
    async with db.transaction() as cur:
        await cur.execute(
            f"INSERT INTO channels (id, team_id, name, display_name, type, creator_id, create_at, update_at)"
            f" VALUES (%s, NULL, %s, '', 'direct', %s, %s, %s)"
            f" ON CONFLICT (name) WHERE type = 'direct' DO NOTHING RETURNING {_COLUMNS}",
            (new_id(), name, creator_id, now, now),
        )
        created = await cur.fetchone()
        if created is None:
            await cur.execute(f"SELECT {_COLUMNS} FROM channels WHERE type = 'direct' AND name = %s", (name,))
            return _row(await cur.fetchone()), False
        for uid in {user_a, user_b}:
            await cur.execute(
                "INSERT INTO channel_members (channel_id, user_id, create_at) VALUES (%s, %s, %s)",
                (created[0], uid, now),
            )
    return _row(created), True


async def get(db: Pool, channel_id: str) -> dict[str, Any] | None:
    return await db.fetchrow_dict(
        f"SELECT {_COLUMNS} FROM channels WHERE id = %s AND delete_at = 0", (channel_id,)
    )


async def membership(db: Pool, channel_id: str, user_id: str) -> dict[str, Any] | None:
    return await db.fetchrow_dict(
        "SELECT channel_id, user_id, is_admin, create_at, last_viewed_at FROM channel_members"
        " WHERE channel_id = %s AND user_id = %s",
        (channel_id, user_id),
    )


async def add_member(db: Pool, channel_id: str, user_id: str) -> tuple[dict[str, Any], bool]:
    return await insert_or_existing(
        db,
        "INSERT INTO channel_members (channel_id, user_id, create_at) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING channel_id, user_id, is_admin, create_at, last_viewed_at",
        (channel_id, user_id, now_ms()),
        lambda: membership(db, channel_id, user_id),
    )


async def remove_member(db: Pool, channel_id: str, user_id: str) -> bool:
    return await db.execute(
        "DELETE FROM channel_members WHERE channel_id = %s AND user_id = %s", (channel_id, user_id)
    ) > 0


async def members(db: Pool, channel_id: str) -> list[dict[str, Any]]:
    return await db.fetch_dicts(
        "SELECT channel_id, user_id, is_admin, create_at, last_viewed_at FROM channel_members"
        " WHERE channel_id = %s ORDER BY create_at",
        (channel_id,),
    )


async def member_ids(db: Pool, channel_id: str) -> list[str]:
    return [r[0] for r in await db.fetch("SELECT user_id FROM channel_members WHERE channel_id = %s", (channel_id,))]


async def visible_in_team(db: Pool, team_id: str, user_id: str) -> list[dict[str, Any]]:
    """Public channels of the team plus the private ones the user belongs to."""
    return await db.fetch_dicts(
        f"SELECT {_COLUMNS} FROM channels c WHERE c.team_id = %s AND c.delete_at = 0 AND"
        " (c.type = 'public' OR EXISTS (SELECT 1 FROM channel_members m WHERE m.channel_id = c.id AND m.user_id = %s))"
        " ORDER BY c.name",
        (team_id, user_id),
    )


async def for_user(db: Pool, user_id: str) -> list[dict[str, Any]]:
    return await db.fetch_dicts(
        "SELECT c.id, c.team_id, c.name, c.display_name, c.type, c.creator_id, c.create_at, c.update_at,"
        " c.delete_at, c.last_post_at FROM channels c JOIN channel_members m ON m.channel_id = c.id"
        " WHERE m.user_id = %s AND c.delete_at = 0 ORDER BY c.type, c.name",
        (user_id,),
    )


async def channel_ids_for_user(db: Pool, user_id: str) -> set[str]:
    return {r[0] for r in await db.fetch("SELECT channel_id FROM channel_members WHERE user_id = %s", (user_id,))}


UNREAD_CAP = 100  # counting stops here: a client shows "99+", and a long-unread channel stays cheap


async def read_states(db: Pool, user_id: str) -> list[dict[str, Any]]:
    """The user's memberships with what they have not seen: posts by others since last_viewed_at."""
    return await db.fetch_dicts(
        "SELECT m.channel_id, m.user_id, m.is_admin, m.create_at, m.last_viewed_at, c.last_post_at,"
        " (SELECT count(*) FROM (SELECT 1 FROM posts p WHERE p.channel_id = m.channel_id"
        "   AND p.create_at > m.last_viewed_at AND p.user_id <> m.user_id AND p.delete_at = 0"
        "   LIMIT %s) AS u) AS unread_count"
        " FROM channel_members m JOIN channels c ON c.id = m.channel_id"
        " WHERE m.user_id = %s AND c.delete_at = 0 ORDER BY c.type, c.name",
        (UNREAD_CAP, user_id),
    )


async def mark_viewed(db: Pool, channel_id: str, user_id: str) -> int | None:
    """Everything posted so far counts as seen; returns the new last_viewed_at (None: not a member).

    The channel's own last_post_at takes part so that a post stamped by a node whose clock runs
    ahead is not left unread after the user has looked at it.
    """
    return await db.fetchval(
        "UPDATE channel_members m SET last_viewed_at = GREATEST(m.last_viewed_at, %s, c.last_post_at)"
        " FROM channels c WHERE c.id = m.channel_id AND m.channel_id = %s AND m.user_id = %s"
        " RETURNING m.last_viewed_at",
        (now_ms(), channel_id, user_id),
    )
