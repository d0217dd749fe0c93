"""Health endpoints: the full report, liveness and readiness for load balancers."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from rustchat import keys
from rustchat.db.migrations import pending_versions
from rustchat.db.pool import DatabaseUnavailable

routes = web.RouteTableDef()

DRAINING: web.AppKey[asyncio.Event] = web.AppKey("draining", asyncio.Event)
CHECK_TIMEOUT = 2.0


async def _database(app: web.Application) -> dict:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(app[keys.DB].fetchval("SELECT 1"), CHECK_TIMEOUT)
    except (DatabaseUnavailable, TimeoutError, OSError) as exc:
        return {"ok": False, "latency_ms": None, "error": type(exc).__name__}
    return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}


@routes.get("/api/v1/health")
async def health(request: web.Request) -> web.Response:
    app = request.app
    hub = app[keys.HUB]
    database = await _database(app)
    local = hub.attached_count()
    body = {
        "status": "ok" if database["ok"] else "degraded",
        "node_id": app[keys.NODE_ID],
        "database": database,
        "redis": None,
        "connections": {"local": local, "cluster": local},
        "nodes": [{"node_id": app[keys.NODE_ID], "connections": local, "last_seen": time.time()}],
    }
    return web.json_response(body, status=200 if database["ok"] else 503, headers={"Cache-Control": "no-store"})


@routes.get("/api/v1/health/live")
async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/api/v1/health/ready")
async def ready(request: web.Request) -> web.Response:
    app = request.app
    problems = []
    if app[DRAINING].is_set():
        problems.append("draining")
    try:
        async with app[keys.DB].acquire() as conn, conn.cursor() as cur:
            pending = await asyncio.wait_for(pending_versions(cur), CHECK_TIMEOUT)
        if pending:
            problems.append(f"migrations pending: {pending}")
    except (DatabaseUnavailable, TimeoutError, OSError):
        problems.append("database unreachable")
    status = 503 if problems else 200
    return web.json_response({"status": "ready" if not problems else "not_ready", "problems": problems}, status=status)
