"""Users: creation, lookup, the public shape returned by the API."""

from __future__ import annotations

from typing import Any

import psycopg2.errors

from rustchat.db.pool import Pool
from rustchat.errors import conflict
from rustchat.ids import new_id, now_ms

_COLUMNS = "id, username, email, is_admin, create_at, update_at, delete_at"


def public(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "username": row["username"],
        "email": row["email"],
        "roles": "system_admin system_user" if row["is_admin"] else "system_user",
        "is_admin": row["is_admin"],
        "create_at": row["create_at"],
        "update_at": row["update_at"],
        "delete_at": row["delete_at"],
    }


async def create(db: Pool, username: str, email: str, password_hash: str, *, is_admin: bool = False) -> dict[str, Any]:
    now = now_ms()
    try:
        row = await db.fetchrow_dict(
            f"INSERT INTO users (id, username, email, password_hash, is_admin, create_at, update_at)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (new_id(), username, email, password_hash, is_admin, now, now),
        )
    except psycopg2.errors.UniqueViolation as exc:
        which = "email" if "email" in str(exc) else "username"
        raise conflict(f"user.{which}_taken", f"A user with that {which} already exists") from None
    assert row is not None
    return row


async def get(db: Pool, user_id: str) -> dict[str, Any] | None:
    return await db.fetchrow_dict(f"SELECT {_COLUMNS} FROM users WHERE id = %s", (user_id,))


async def for_login(db: Pool, login_id: str) -> dict[str, Any] | None:
    return await db.fetchrow_dict(
        f"SELECT {_COLUMNS}, password_hash FROM users"
        " WHERE (lower(username) = lower(%s) OR lower(email) = lower(%s)) AND delete_at = 0",
        (login_id, login_id),
    )


async def by_username(db: Pool, username: str) -> dict[str, Any] | None:
    return await db.fetchrow_dict(
        f"SELECT {_COLUMNS} FROM users WHERE lower(username) = lower(%s)", (username,)
    )


async def list_page(db: Pool, page: int, per_page: int) -> list[dict[str, Any]]:
    return await db.fetch_dicts(
        f"SELECT {_COLUMNS} FROM users WHERE delete_at = 0 ORDER BY username LIMIT %s OFFSET %s",
        (per_page, page * per_page),
    )


async def existing_ids(db: Pool, user_ids: list[str]) -> set[str]:
    rows = await db.fetch("SELECT id FROM users WHERE id = ANY(%s) AND delete_at = 0", (user_ids,))
    return {r[0] for r in rows}


async def set_password(db: Pool, user_id: str, password_hash: str) -> None:
    await db.execute(
        "UPDATE users SET password_hash = %s, update_at = %s WHERE id = %s",
        (password_hash, now_ms(), user_id),
    )


async def by_ids(db: Pool, user_ids: list[str]) -> list[dict[str, Any]]:
    """The existing users among `user_ids`, in the order asked."""
    rows = await db.fetch_dicts(f"SELECT {_COLUMNS} FROM users WHERE id = ANY(%s)", (user_ids,))
    found = {r["id"]: r for r in rows}
    return [found[u] for u in dict.fromkeys(user_ids) if u in found]
