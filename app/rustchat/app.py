"""The application factory.

Start-up and shutdown are `cleanup_ctx` generators in dependency order (database, schema, admin,
site config, hub), so a failure part-way unwinds exactly what was started.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import hdrs, web

from rustchat import keys
from rustchat import web as web_client
from rustchat.api import accounts, admin, channels, health, openapi, posts, read_state, teams
from rustchat.api.body_limits import READ_BUFSIZE, body_limit, largest
from rustchat.api.files import routes as file_routes
from rustchat.api.health import DRAINING
from rustchat.api.metrics_routes import http_metrics
from rustchat.api.metrics_routes import setup as setup_metrics
from rustchat.api.middleware import authenticate, errors, request_context
from rustchat.auth import passwords
from rustchat.config import Settings
from rustchat.db import migrations
from rustchat.db.pool import Pool
from rustchat.errors import ApiError
from rustchat.node import new_node_id
from rustchat.realtime import connections, revocation, websocket
from rustchat.realtime.cluster import ClusterLink
from rustchat.realtime.hub import Hub
from rustchat.realtime.publisher import Publisher
from rustchat.site_config import SiteConfig
from rustchat.store import users

log = logging.getLogger(__name__)

DATABASE_URL: web.AppKey[str] = web.AppKey("database_url", str)
REDIS_TIMEOUT = 2.0
# Per process: the subscriber holds one, every other command borrows one for a round trip.
REDIS_MAX_CONNECTIONS = 64


async def ensure_admin(db: Pool, settings: Settings) -> None:
    """Create the first admin from RUSTCHAT_ADMIN_USER/PASSWORD when that user does not exist yet."""
    if not settings.admin_user or not settings.admin_password:
        return
    if await users.by_username(db, settings.admin_user) is not None:
        return
    email = settings.admin_email or f"{settings.admin_user}@localhost"
    try:
        await users.create(db, settings.admin_user, email, await passwords.hash_password(settings.admin_password),
                           is_admin=True)
    except ApiError as exc:
        if exc.status != 409:
            raise
        return  # another process starting at the same moment created it
    log.info("created admin user %s from RUSTCHAT_ADMIN_USER", settings.admin_user)


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    await migrations.migrate(app[DATABASE_URL])
    pool = Pool(app[DATABASE_URL], settings.pool)
    await pool.start()
    app[keys.DB] = pool
    await ensure_admin(pool, settings)
    yield
    await pool.close()


async def _site(app: web.Application) -> AsyncIterator[None]:
    site = SiteConfig(app[keys.DB])
    await site.start()
    app[keys.SITE] = site
    yield
    await site.stop()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    """The shared Redis client, or None in single-node mode. A Redis that is down at start is
    logged and retried by its users; the node serves its own connections meanwhile."""
    url = app[keys.SETTINGS].redis_url
    if not url:
        app[keys.REDIS] = None
        yield
        return
    # A pool that waits for a free connection (up to REDIS_TIMEOUT) when all are busy: redis-py's
    # default pool raises `Too many connections` instead, which lost the resume state of clients
    # when a thousand sockets closed at once.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_TIMEOUT,
        socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT, health_check_interval=10,
    )
    client = aioredis.Redis.from_pool(pool)
    try:
        await client.ping()
    except (aioredis.RedisError, OSError) as exc:
        log.error("Redis unreachable at start (%s); serving local connections and retrying", exc)
    app[keys.REDIS] = client
    yield
    await client.aclose()


async def _cluster(app: web.Application) -> AsyncIterator[None]:
    redis = app[keys.REDIS]
    if redis is None:
        app[keys.CLUSTER] = None
        yield
        return
    settings = app[keys.SETTINGS]
    link = ClusterLink(
        redis, app[keys.HUB], app[keys.NODE_ID],
        pool_max=settings.pool.max_connections,
        heartbeat_interval=settings.cluster_heartbeat_secs,
        backlog_limit=settings.cluster_backlog,
        stream_maxlen=settings.cluster_log_maxlen,
    )
    await link.start()
    app[keys.CLUSTER] = link
    app[keys.PUBLISHER].cluster = link
    log.info("joined the cluster as %s", app[keys.NODE_ID])
    yield
    await websocket.saves_finished(timeout=3.0)
    app[keys.PUBLISHER].cluster = None
    await link.stop()


async def _hub(app: web.Application) -> AsyncIterator[None]:
    hub = app[keys.HUB]

    async def expire() -> None:
        while True:
            await asyncio.sleep(5)
            hub.expire_detached()

    task = asyncio.get_running_loop().create_task(expire())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    hub.close_sessions(lambda s: True, 1001, b"server shutting down")


CLOSE_SERVICE_RESTART = 1012


async def drain(app: web.Application) -> None:
    """SIGTERM: stop being ready, move every client elsewhere without a thundering herd.

    Called by rustchat.worker before aiohttp stops accepting (and again, as an on_shutdown hook,
    for sockets attached meanwhile or when no such worker runs the app). From now on every
    response carries `Connection: close`. Each socket closes with 1012 and its own random
    reconnect delay, its slot under the connection limit is released and its resume record
    saved, so the client resumes on another node.
    """
    app[DRAINING].set()
    jitter_ms = int(app[keys.SETTINGS].ws_reconnect_jitter_secs * 1000)

    def reason() -> bytes:
        return json.dumps({"reconnect_after_ms": random.randint(0, jitter_ms)}).encode()

    closed = await app[keys.HUB].drain(CLOSE_SERVICE_RESTART, reason)
    log.info("draining: closed %d WebSocket connections with 1012", closed)


async def _close_while_draining(request: web.Request, response: web.StreamResponse) -> None:
    """While draining, the peer (nginx) drops each connection after its response instead of
    reusing it, so the drain can wait for connections to close rather than close them under it."""
    if request.app[DRAINING].is_set() and not isinstance(response, web.WebSocketResponse):
        # The hook runs after aiohttp chose the headers: say it, and make the server close after.
        response.headers[hdrs.CONNECTION] = "close"
        response.force_close()


def create_app(settings: Settings, database_url: str) -> web.Application:
    app = web.Application(
        middlewares=[http_metrics, request_context, errors, body_limit, authenticate],
        # The body_limit middleware lowers this to each route category's limit.
        client_max_size=largest(settings),
        handler_args={"read_bufsize": READ_BUFSIZE},
    )
    app[keys.SETTINGS] = settings
    app[DATABASE_URL] = database_url
    app[keys.NODE_ID] = new_node_id()
    hub = Hub(
        send_queue=settings.ws_send_queue,
        replay_events=settings.ws_replay_events,
        resume_window_secs=settings.ws_resume_window_secs,
    )
    app[keys.HUB] = hub
    app[keys.PUBLISHER] = Publisher(hub, app[keys.NODE_ID])
    app[DRAINING] = asyncio.Event()
    app.cleanup_ctx.extend([_database, _site, _redis, _cluster, _hub, revocation.token_checks])
    app.on_shutdown.append(drain)
    app.on_response_prepare.append(_close_while_draining)
    connections.setup(app)
    for module in (accounts, teams, channels, read_state, posts, admin, health, openapi, websocket):
        app.router.add_routes(module.routes)
    app.router.add_routes(file_routes)
    web_client.setup(app)
    setup_metrics(app)
    app.on_startup.append(_freeze_startup_objects)  # after the cleanup contexts: the pool, Redis, the link
    return app


# Young-generation threshold (Python's default: 700). Every request leaves a few reference cycles
# behind; collected every 700 allocations, they are still alive mid-request, get promoted and end
# up in full collections. Collected every 50,000, they are garbage by then and die young.
GC_YOUNG_THRESHOLD = 50_000


async def _freeze_startup_objects(app: web.Application) -> None:
    """Move everything that exists once the server is up (modules, classes, routes, the pool) out of
    the garbage collector's reach, and collect the young generation less often.

    Full collections are a pause for every delivery queued behind them. A full collection walks
    every tracked object; with start-up objects left in, each one cost a process serving 500
    WebSockets about 60 ms of CPU on this project's machine, 19 ms without them; the threshold
    took full collections in a 64 posts/s run from seven per process to one (docs/benchmarks.md).
    Frozen objects live as long as the process anyway."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, max(middle, 20), old)
    log.debug("gc: %d objects frozen at start-up; thresholds %s", gc.get_freeze_count(), gc.get_threshold())
