"""Opaque bearer tokens: random, stored only as SHA-256 digests, revocable, with an expiry."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from rustchat.db.pool import Pool
from rustchat.ids import now_ms


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


async def issue(db: Pool, user_id: str, ttl_secs: int) -> str:
    token = secrets.token_urlsafe(32)
    now = now_ms()
    await db.execute(
        "INSERT INTO sessions (token_hash, user_id, create_at, expires_at, last_activity_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (digest(token), user_id, now, now + ttl_secs * 1000, now),
    )
    return token


async def resolve(db: Pool, token: str) -> dict[str, Any] | None:
    """The active user behind a token, or None when unknown, expired, revoked or deactivated."""
    # Tokens are ASCII: anything else (a header's undecodable bytes, a lone surrogate from JSON)
    # cannot be one, and could not even be hashed.
    if not token or len(token) > 256 or not token.isascii():
        return None
    return await db.fetchrow_dict(
        "SELECT u.id, u.username, u.email, u.is_admin, u.create_at, u.update_at, u.delete_at"
        " FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.token_hash = %s AND s.expires_at > %s AND u.delete_at = 0",
        (digest(token), now_ms()),
    )


async def revoke(db: Pool, token: str) -> bool:
    return await db.execute("DELETE FROM sessions WHERE token_hash = %s", (digest(token),)) > 0


async def purge_expired(db: Pool) -> int:
    return await db.execute("DELETE FROM sessions WHERE expires_at <= %s", (now_ms(),))
