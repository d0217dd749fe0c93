"""The browser client: pages rendered from Jinja2 templates and plain JavaScript and CSS, served
by the app itself (no build step). It talks to the same HTTP API and WebSocket as any client,
with the bearer token kept in the tab's sessionStorage, never in a URL or a cookie."""

from __future__ import annotations

from aiohttp import web

from rustchat.web import pages, static


def setup(app: web.Application) -> None:
    app.router.add_routes(pages.routes)
    app.router.add_routes(static.routes)
