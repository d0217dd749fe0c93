"""Connection tracking: the per-user limit and presence.

`setup(app)` installs the limiter the WebSocket handler uses (`websocket.LIMITER`). Without Redis
it is the per-process `LocalConnectionLimiter`.
"""

from __future__ import annotations

from aiohttp import web

from rustchat.realtime.limits import LocalConnectionLimiter
from rustchat.realtime.websocket import LIMITER


def setup(app: web.Application) -> None:
    app[LIMITER] = LocalConnectionLimiter()
