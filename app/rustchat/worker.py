"""gunicorn's aiohttp worker with a drain that never closes a connection the load balancer may reuse.

    gunicorn 'rustchat.server:gunicorn_app' -k rustchat.worker.Worker -w 4 -b 0.0.0.0:3000

aiohttp's own worker, on SIGTERM, stops listening and at once closes every idle keep-alive
connection. nginx keeps idle connections to each app node and may pick one at that very moment:
the request is sent, the connection is gone, and for a POST nginx may not try another node, so
the client gets a 502. The same race on the client side is why the appliance no longer drains a
node by reloading nginx (a reload closes every idle client connection; docs/operations.md).

This worker drains first, then lets aiohttp shut down as before:
1. the application is marked draining: /api/v1/health/ready answers 503, every response carries
   `Connection: close` (nginx drops the connection after it), and every WebSocket is closed with
   1012 and a reconnect hint (rustchat.app);
2. it waits until the peers have closed every connection, at most RUSTCHAT_DRAIN__IDLE_CONNECTIONS_SECS:
   an idle keep-alive connection is closed by nginx after its upstream keepalive_timeout, which
   the appliance keeps below this wait;
3. then aiohttp's shutdown: stop listening, finish requests, close what is left.

New connections during the drain are still accepted and served (with `Connection: close`); the
appliance's rustchat-restart refuses them at the node's firewall first, so nginx, whose connect
then fails, sends those requests to another node (safe even for a POST: nothing was sent).
SIGINT and SIGQUIT still mean a quick shutdown, as in gunicorn.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from types import FrameType
from typing import Any

from aiohttp import web
from aiohttp.worker import GunicornUVLoopWebWorker

log = logging.getLogger(__name__)


class Worker(GunicornUVLoopWebWorker):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.runner: web.AppRunner | None = None
        self._drain_task: asyncio.Task[None] | None = None

    def load_wsgi(self) -> None:
        """Build the AppRunner here, as aiohttp's worker would, to reach its connections later."""
        super().load_wsgi()
        factory = self.wsgi

        async def make_runner() -> web.AppRunner:
            app = await factory() if inspect.iscoroutinefunction(factory) else factory
            self.runner = web.AppRunner(
                app,
                logger=self.log,
                keepalive_timeout=self.cfg.keepalive,
                access_log=self.log.access_log if self.cfg.accesslog else None,
                access_log_format=self._get_valid_log_format(self.cfg.access_log_format),
                shutdown_timeout=self.cfg.graceful_timeout / 100 * 95,
            )
            return self.runner

        self.wsgi = make_runner

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGTERM: drain, then stop (a second SIGTERM changes nothing; gunicorn's graceful_timeout bounds it)."""
        runner = self.runner
        if self._drain_task is not None:
            return
        if runner is None or runner.server is None:  # not serving yet: nothing to drain
            super().handle_exit(sig, frame)
            return
        self._drain_task = self.loop.create_task(self._drain_then_exit(runner))

    async def _drain_then_exit(self, runner: web.AppRunner) -> None:
        try:
            await drain(runner)
        except Exception:  # noqa: BLE001 - whatever happened, the worker must still stop
            self.log.exception("draining failed; shutting down now")
        finally:
            self.alive = False
            self._notify_waiter_done()


async def drain(runner: web.AppRunner) -> None:
    """Mark the app draining, close its WebSockets, and wait for the peers to close every connection."""
    # Imported here, in the worker: gunicorn's master imports this module for the class, and must
    # not import the application (its metrics would create multiprocess files of the master's).
    from rustchat import keys
    from rustchat.app import drain as drain_app

    app = runner.app
    server = runner.server
    assert server is not None
    wait = app[keys.SETTINGS].drain_idle_connections_secs
    await drain_app(app)
    deadline = time.monotonic() + wait
    # aiohttp signals nothing when its last connection closes: look ten times a second.
    while server.connections and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    if server.connections:
        log.info("draining: %d connections still open after %.0f s; closing them", len(server.connections), wait)
    else:
        log.info("draining: every connection closed by its peer")
