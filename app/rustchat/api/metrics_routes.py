"""`GET /metrics` (Prometheus), the HTTP request histogram, and the per-process samplers.

Under gunicorn every worker is a process of its own with its own figures. With
`PROMETHEUS_MULTIPROC_DIR` set, prometheus_client's multiprocess mode keeps each process's values in
files in that directory and `/metrics` — whichever worker answers it — merges the files of all
workers: counters and histograms summed (dead workers included, so totals never go backwards),
gauges as their `multiprocess_mode` says (`livesum`: total over the live workers; `liveall`: one
series per live worker with a `pid` label). The directory must be emptied when the server starts
(`rustchat.gunicorn_hooks.on_starting`, or systemd's RuntimeDirectory) and a dead worker's live
gauges dropped (`child_exit`). Without the variable (`rustchat serve`) the default registry serves
this one process.

Gauges that mirror state (pool figures, connection counts) are sampled from the pool and the hub
once a second by every process, and once more by the answering process right before a scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.exposition import choose_encoder

from rustchat import keys, metrics
from rustchat.api.middleware import Handler

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

METRICS_PATH = "/metrics"
SAMPLE_INTERVAL_SECS = 1.0
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Status recorded for a request whose client went away before the response (nginx's convention).
CLIENT_CLOSED = 499


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _registry() -> CollectorRegistry:
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def _route_label(request: web.Request) -> str:
    """The route template (`/api/v1/posts/{post_id}`), never the raw path: bounded cardinality."""
    route = getattr(request.match_info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return "unmatched"
    return resource.canonical


@web.middleware
async def http_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == METRICS_PATH:
        return await handler(request)
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        # A WebSocket handler returns when the socket closes: its "duration" is the connection's
        # lifetime, which the connection gauges describe; it would only distort the latency figures.
        if status != 101:
            method = request.method if request.method in _METHODS else "other"
            metrics.HTTP_REQUEST_DURATION.labels(_route_label(request), method, str(status)).observe(
                time.perf_counter() - start
            )


class _Sampler:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.timeouts_seen = 0

    def sample(self) -> None:
        app = self.app
        pool = app.get(keys.DB)
        if pool is not None:
            stats = pool.stats()
            metrics.DB_POOL_SIZE.set(stats.size)
            metrics.DB_POOL_IN_USE.set(stats.in_use)
            metrics.DB_POOL_IDLE.set(stats.idle)
            metrics.DB_POOL_WAITING.set(stats.waiting)
            metrics.DB_POOL_MAX.set(stats.max)
            metrics.DB_POOL_SATURATION.set(stats.saturation)
            if stats.timeouts_total > self.timeouts_seen:
                metrics.DB_POOL_ACQUIRE_TIMEOUTS.inc(stats.timeouts_total - self.timeouts_seen)
                self.timeouts_seen = stats.timeouts_total
        local = app[keys.HUB].attached_count()
        metrics.WS_CONNECTIONS.set(local)
        metrics.WS_PROCESS_CONNECTIONS.labels(app[keys.NODE_ID]).set(local)

    def zero_connections(self) -> None:
        metrics.WS_CONNECTIONS.set(0)
        metrics.WS_PROCESS_CONNECTIONS.labels(self.app[keys.NODE_ID]).set(0)


SAMPLER: web.AppKey[_Sampler] = web.AppKey("metrics_sampler", _Sampler)


async def _sampling(app: web.Application) -> AsyncIterator[None]:
    sampler = _Sampler(app)
    app[SAMPLER] = sampler

    async def loop() -> None:
        while True:
            try:
                sampler.sample()
            except Exception:
                log.exception("metrics sampling failed")
            await asyncio.sleep(SAMPLE_INTERVAL_SECS)

    task = asyncio.get_running_loop().create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    sampler.zero_connections()


@routes.get(METRICS_PATH)
async def metrics_endpoint(request: web.Request) -> web.Response:
    sampler = request.app.get(SAMPLER)
    if sampler is not None:
        sampler.sample()
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    # Multiprocess mode reads every worker's files: off the event loop.
    body = await asyncio.to_thread(lambda: encoder(_registry()))
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def setup(app: web.Application) -> None:
    """Register `/metrics` and the samplers (after the database and hub contexts, which they read)."""
    app.router.add_routes(routes)
    app.cleanup_ctx.append(_sampling)
