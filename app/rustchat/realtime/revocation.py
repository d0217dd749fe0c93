"""Revoked and expired tokens end their sockets on every process.

A socket's token is checked when it connects; afterwards:

- `revoke(app, token_hash)` (logout): this process's sockets opened with the token close at once
  with 4001, and a `revoke` message on the cluster channel closes them on every other process
  within a round trip through Redis (realtime.cluster handles it).
- `check_tokens(app)`, every RUSTCHAT_AUTH__TOKEN_CHECK_SECS: the process asks PostgreSQL which of
  its sockets' tokens are still valid (not expired, not revoked, the user not deleted) and closes
  the others with 4001. That covers plain expiry, and a revocation whose message was lost (Redis
  down when it was sent): PostgreSQL is the authority, the message only makes it quick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from rustchat import keys
from rustchat.db.pool import DatabaseUnavailable
from rustchat.ids import now_ms
from rustchat.realtime.session import CLOSE_REVOKED

log = logging.getLogger(__name__)

_CHUNK = 1000  # token hashes per query


async def revoke(app: web.Application, token_hash: str) -> None:
    """After the token is gone from PostgreSQL: end its sockets here, and tell every other process."""
    app[keys.HUB].close_token(token_hash)
    link = app[keys.CLUSTER]
    if link is not None:
        await link.announce_revocation(token_hash)


async def check_tokens(app: web.Application) -> int:
    """Close every socket whose token PostgreSQL no longer accepts; how many were closed."""
    hub = app[keys.HUB]
    hashes = sorted({s.token_hash for s in hub.sessions.values() if s.attached})
    valid: set[str] = set()
    for i in range(0, len(hashes), _CHUNK):
        rows = await app[keys.DB].fetch(
            "SELECT s.token_hash FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.token_hash = ANY(%s) AND s.expires_at > %s AND u.delete_at = 0",
            (hashes[i:i + _CHUNK], now_ms()),
        )
        valid.update(row[0] for row in rows)
    gone = set(hashes) - valid
    if not gone:
        return 0
    closed = hub.close_sessions(lambda s: s.token_hash in gone, CLOSE_REVOKED, b"session expired or revoked")
    log.info("closed %d WebSocket connections whose token expired or was revoked", closed)
    return closed


async def token_checks(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the periodic check, one round at a time, for as long as the app runs."""
    interval = app[keys.SETTINGS].token_check_secs

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await check_tokens(app)
            except DatabaseUnavailable as exc:
                log.warning("token check skipped: %s", exc)
            except Exception:  # noqa: BLE001 - one failed round must not end the checks
                log.exception("token check failed")

    task = asyncio.get_running_loop().create_task(loop())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
