"""Health endpoints: the full report, liveness and readiness for load balancers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from rustchat import keys
from rustchat.appliance.sizing import pool_budget_exceeded, reserved_connections
from rustchat.db.migrations import pending_versions
from rustchat.db.pool import DatabaseUnavailable
from rustchat.realtime.websocket import LIMITER

routes = web.RouteTableDef()

DRAINING: web.AppKey[asyncio.Event] = web.AppKey("draining", asyncio.Event)
CHECK_TIMEOUT = 2.0


async def _database(app: web.Application) -> tuple[dict[str, Any], tuple[int, int] | None]:
    """Reachability and latency, and PostgreSQL's (max_connections, superuser_reserved)."""
    start = time.perf_counter()
    try:
        row = await asyncio.wait_for(app[keys.DB].fetchrow(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
        ), CHECK_TIMEOUT)
    except (DatabaseUnavailable, TimeoutError, OSError) as exc:
        return {"ok": False, "latency_ms": None, "error": type(exc).__name__}, None
    return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}, (row[0], row[1])


async def _redis(app: web.Application) -> dict[str, Any] | None:
    client = app[keys.REDIS]
    if client is None:
        return None
    start = time.perf_counter()
    try:
        await asyncio.wait_for(client.ping(), CHECK_TIMEOUT)
    except (RedisError, OSError, TimeoutError) as exc:
        return {"ok": False, "latency_ms": None, "error": type(exc).__name__}
    return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}


def problems(app: web.Application, database: dict[str, Any], redis: dict[str, Any] | None,
             pg_limits: tuple[int, int] | None, pool_maxima: int) -> list[str]:
    out = []
    if not database["ok"]:
        out.append("database unreachable")
    if redis is not None and not redis["ok"]:
        out.append("redis unreachable: events reach this process's connections only")
    link = app[keys.CLUSTER]
    if link is not None and redis is not None and redis["ok"] and not link.subscribed:
        out.append("cluster subscription is being re-established")
    if link is not None:
        out += link.problems()
    if pg_limits is not None:
        reason = pool_budget_exceeded(pool_maxima, pg_limits[0], reserved_connections(pg_limits[1]))
        if reason:
            out.append(reason)
    # The cluster-wide limiter reports when it has fallen back to per-process limits.
    limiter = app.get(LIMITER)
    limiter_reason = getattr(limiter, "degraded_reason", None)
    if limiter_reason:
        out.append(limiter_reason)
    if hasattr(limiter, "problems"):
        out += limiter.problems()
    return out


@routes.get("/api/v1/health")
async def health(request: web.Request) -> web.Response:
    app = request.app
    (database, pg_limits), redis = await asyncio.gather(_database(app), _redis(app))
    link = app[keys.CLUSTER]
    local = app[keys.HUB].attached_count()
    if link is not None:
        nodes = [{"node_id": n.node_id, "connections": n.connections, "last_seen": n.last_seen,
                  "pool_max": n.pool_max} for n in link.live_nodes()]
    else:
        nodes = [{"node_id": app[keys.NODE_ID], "connections": local, "last_seen": time.time(),
                  "pool_max": app[keys.SETTINGS].pool.max_connections}]
    found = problems(app, database, redis, pg_limits, sum(n["pool_max"] for n in nodes))
    body = {
        "status": "ok" if not found else "degraded",
        "node_id": app[keys.NODE_ID],
        "database": database,
        "redis": redis,
        "connections": {"local": local, "cluster": sum(n["connections"] for n in nodes)},
        "nodes": nodes,
        "problems": found,
    }
    return web.json_response(body, status=200 if database["ok"] else 503, headers={"Cache-Control": "no-store"})


@routes.get("/api/v1/health/live")
async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/api/v1/health/ready")
async def ready(request: web.Request) -> web.Response:
    app = request.app
    found = []
    if app[DRAINING].is_set():
        found.append("draining")
    try:
        async with app[keys.DB].acquire() as conn, conn.cursor() as cur:
            pending = await asyncio.wait_for(pending_versions(cur), CHECK_TIMEOUT)
        if pending:
            found.append(f"migrations pending: {pending}")
    except (DatabaseUnavailable, TimeoutError, OSError):
        found.append("database unreachable")
    status = 503 if found else 200
    return web.json_response({"status": "ready" if not found else "not_ready", "problems": found}, status=status)
