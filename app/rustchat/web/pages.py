"""The client's HTML pages, rendered once from the Jinja2 templates, with the headers that keep
them to their own scripts: a Content-Security-Policy without inline script or style, no framing,
no referrer, no caching of a page that would go stale with the assets."""

from __future__ import annotations

from functools import cache

import jinja2
from aiohttp import web

from rustchat import __version__
from rustchat.web.static import asset_url

routes = web.RouteTableDef()

# 'self' covers the same-origin ws:/wss: WebSocket too (CSP 3). blob: is for image previews and
# downloads: files need the bearer token, so the client fetches them and shows a blob URL.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))

PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cache-Control": "no-cache",
}


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("rustchat.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals.update(asset=asset_url, version=__version__)
    return env


@cache
def render(template: str) -> bytes:
    return _environment().get_template(template).render().encode("utf-8")


@routes.get("/")
async def client(request: web.Request) -> web.Response:
    return web.Response(body=render("app.html"), headers=PAGE_HEADERS)
