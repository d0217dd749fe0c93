"""Connection tracking: the per-user limit and presence.

`setup(app)` installs the limiter the WebSocket handler uses (`websocket.LIMITER`, a
`RedisConnectionLimiter`), presence (`presence.PRESENCE`) and their HTTP routes (api.status).
The limiter counts this process's connections from the start; the cleanup context below makes it
cluster-wide when there is a Redis (RUSTCHAT_REDIS_URL), and starts presence announcements.

For health: `app[LIMITER].degraded_reason` is None while limits are cluster-wide (or there is no
Redis to begin with), otherwise the reason they are enforced per process.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from rustchat import keys
from rustchat.api import status
from rustchat.realtime.limits import RedisConnectionLimiter
from rustchat.realtime.presence import PRESENCE, Presence
from rustchat.realtime.websocket import LIMITER

log = logging.getLogger(__name__)


def setup(app: web.Application) -> None:
    settings = app[keys.SETTINGS]
    ttl = settings.conn_heartbeat_ttl_secs
    refresh = settings.conn_heartbeat_refresh_secs
    if refresh >= ttl:
        log.warning("RUSTCHAT_CONN__HEARTBEAT_REFRESH_SECS=%g is not below RUSTCHAT_CONN__HEARTBEAT_TTL_SECS=%g: "
                    "refreshing every %g s instead", refresh, ttl, ttl / 3)
        refresh = ttl / 3
    limiter = RedisConnectionLimiter(app[keys.NODE_ID], ttl_secs=ttl, refresh_secs=refresh)
    app[LIMITER] = limiter
    app[PRESENCE] = Presence(limiter)
    app.cleanup_ctx.append(_tracking)
    app.router.add_routes(status.routes)


async def _tracking(app: web.Application) -> AsyncIterator[None]:
    limiter: RedisConnectionLimiter = app[LIMITER]
    presence = app[PRESENCE]
    presence.start(app[keys.DB], app[keys.PUBLISHER])
    if app[keys.REDIS] is not None:
        limiter.start(app[keys.REDIS])
    yield
    await limiter.stop()
    await presence.stop()
