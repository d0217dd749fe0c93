"""Entry point for gunicorn's aiohttp worker.

    gunicorn 'rustchat.server:gunicorn_app' -k rustchat.worker.Worker -w 4 -b 0.0.0.0:3000

Each worker calls this factory in its own event loop and becomes its own hub. Under gunicorn
there is no embedded database: RUSTCHAT_DATABASE_URL is required.
"""

from __future__ import annotations

import errno
import os
import socket
import sys

from aiohttp import web

from rustchat import logconfig
from rustchat.app import create_app
from rustchat.config import ConfigError, load_settings


async def gunicorn_app() -> web.Application:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"rustchat: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    logconfig.configure(settings.log, settings.log_format)
    if not settings.database_url:
        print("rustchat: RUSTCHAT_DATABASE_URL must be set under gunicorn (the embedded database is for "
              "`rustchat serve`)", file=sys.stderr, flush=True)
        raise SystemExit(2)
    if not settings.redis_url:
        _refuse_sibling_workers()
    return create_app(settings, settings.database_url)


# Exit status gunicorn's arbiter treats as "worker failed to boot": it stops instead of respawning.
WORKER_BOOT_ERROR = 3
_island_guard: socket.socket | None = None


def _refuse_sibling_workers() -> None:
    """Without Redis, a second worker would be an island whose users never see the others' events.

    Each worker binds an abstract Unix socket named after its gunicorn master; the second one finds
    the name taken and stops the whole server with a message that says what to set.
    """
    global _island_guard
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"\0rustchat-gunicorn-{os.getppid()}")
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        print("rustchat: more than one gunicorn worker without RUSTCHAT_REDIS_URL would split users into "
              "islands that never see each other's messages; set RUSTCHAT_REDIS_URL (cluster mode) or run "
              "gunicorn with -w 1", file=sys.stderr, flush=True)
        raise SystemExit(WORKER_BOOT_ERROR) from None
    _island_guard = sock
