"""Typed application keys: what lives on the aiohttp Application, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from rustchat.config import Settings
    from rustchat.db.pool import Pool
    from rustchat.realtime.cluster import ClusterLink
    from rustchat.realtime.hub import Hub
    from rustchat.realtime.publisher import Publisher
    from rustchat.site_config import SiteConfig

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
DB: web.AppKey[Pool] = web.AppKey("db")
HUB: web.AppKey[Hub] = web.AppKey("hub")
PUBLISHER: web.AppKey[Publisher] = web.AppKey("publisher")
SITE: web.AppKey[SiteConfig] = web.AppKey("site")
NODE_ID: web.AppKey[str] = web.AppKey("node_id")
# None in single-node mode (RUSTCHAT_REDIS_URL unset).
REDIS: web.AppKey[Redis | None] = web.AppKey("redis")
# None in single-node mode.
CLUSTER: web.AppKey[ClusterLink | None] = web.AppKey("cluster")
