"""Entry point for gunicorn's aiohttp worker.

    gunicorn 'rustchat.server:gunicorn_app' -k aiohttp.GunicornUVLoopWebWorker -w 4 -b 0.0.0.0:3000

Each worker calls this factory in its own event loop and becomes its own hub. Under gunicorn
there is no embedded database: RUSTCHAT_DATABASE_URL is required.
"""

from __future__ import annotations

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
    return create_app(settings, settings.database_url)
