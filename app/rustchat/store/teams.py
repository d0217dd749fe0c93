"""Teams and team membership."""

from __future__ import annotations

from typing import Any

import psycopg2.errors

from rustchat.db.pool import Pool
from rustchat.errors import conflict
from rustchat.ids import new_id, now_ms
from rustchat.store.common import insert_or_existing

_COLUMNS = "id, name, display_name, creator_id, create_at, update_at, delete_at"


async def create(db: Pool, name: str, display_name: str, creator_id: str) -> dict[str, Any]:
    now = now_ms()
    team_id = new_id()
    try:
        async with db.transaction() as cur:
            await cur.execute(
                f"INSERT INTO teams (id, name, display_name, creator_id, create_at, update_at)"
                f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (team_id, name, display_name, creator_id, now, now),
            )
            row = await cur.fetchone()
            await cur.execute(
                "INSERT INTO team_members (team_id, user_id, is_admin, create_at) VALUES (%s, %s, true, %s)",
                (team_id, creator_id, now),
            )
    except psycopg2.errors.UniqueViolation:
        raise conflict("team.name_taken", "A team with that name already exists") from None
    return dict(zip(_COLUMNS.split(", "), row, strict=True))


async def get(db: Pool, team_id: str) -> dict[str, Any] | None:
    return await db.fetchrow_dict(f"SELECT {_COLUMNS} FROM teams WHERE id = %s AND delete_at = 0", (team_id,))


async def membership(db: Pool, team_id: str, user_id: str) -> dict[str, Any] | None:
    return await db.fetchrow_dict(
        "SELECT team_id, user_id, is_admin, create_at FROM team_members WHERE team_id = %s AND user_id = %s",
        (team_id, user_id),
    )


async def add_member(db: Pool, team_id: str, user_id: str) -> tuple[dict[str, Any], bool]:
    """Returns (membership, created)."""
    return await insert_or_existing(
        db,
        "INSERT INTO team_members (team_id, user_id, create_at) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING team_id, user_id, is_admin, create_at",
        (team_id, user_id, now_ms()),
        lambda: membership(db, team_id, user_id),
    )


async def remove_member(db: Pool, team_id: str, user_id: str) -> list[str] | None:
    """Remove from the team and its channels; return the channel ids left, or None if not a member."""
    async with db.transaction() as cur:
        await cur.execute(
            "DELETE FROM channel_members cm USING channels c"
            " WHERE cm.channel_id = c.id AND c.team_id = %s AND cm.user_id = %s RETURNING c.id",
            (team_id, user_id),
        )
        channel_ids = [r[0] for r in await cur.fetchall()]
        await cur.execute("DELETE FROM team_members WHERE team_id = %s AND user_id = %s", (team_id, user_id))
        if cur.rowcount == 0:
            return None
    return channel_ids


async def members(db: Pool, team_id: str) -> list[dict[str, Any]]:
    return await db.fetch_dicts(
        "SELECT team_id, user_id, is_admin, create_at FROM team_members WHERE team_id = %s ORDER BY create_at",
        (team_id,),
    )


async def for_user(db: Pool, user_id: str) -> list[dict[str, Any]]:
    return await db.fetch_dicts(
        "SELECT t.id, t.name, t.display_name, t.creator_id, t.create_at, t.update_at, t.delete_at"
        " FROM teams t JOIN team_members m ON m.team_id = t.id"
        " WHERE m.user_id = %s AND t.delete_at = 0 ORDER BY t.name",
        (user_id,),
    )


async def all_teams(db: Pool) -> list[dict[str, Any]]:
    return await db.fetch_dicts(f"SELECT {_COLUMNS} FROM teams WHERE delete_at = 0 ORDER BY name")


async def team_ids_for_user(db: Pool, user_id: str) -> set[str]:
    return {r[0] for r in await db.fetch("SELECT team_id FROM team_members WHERE user_id = %s", (user_id,))}
