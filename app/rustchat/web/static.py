"""`GET /static/{path}`: the client's JavaScript, CSS and icons from the package's `static/` folder.

Pages link assets as `/static/<path>?v=<version>`, the version being a digest of every asset, so
a versioned URL can be cached for good; anything else (a module's own `import`) revalidates.
"""

from __future__ import annotations

import hashlib
import logging
from functools import cache
from pathlib import Path

from aiohttp import web

from rustchat.errors import not_found

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

ROOT = (Path(__file__).parent / "static").resolve()
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
          ".png": "image/png"}


@cache
def version() -> str:
    """A digest of every asset: changes whenever one of them does."""
    digest = hashlib.sha256()
    for path in sorted(p for p in ROOT.rglob("*") if p.is_file()):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def asset_url(name: str) -> str:
    return f"/static/{name}?v={version()}"


def _resolve(name: str) -> Path | None:
    if not name or "\\" in name or "\x00" in name or any(part in ("", ".", "..") for part in name.split("/")):
        return None
    path = (ROOT / name).resolve()
    if not path.is_relative_to(ROOT) or not path.is_file() or path.suffix not in _TYPES:
        return None
    return path


@routes.get("/static/{name:.+}")
async def asset(request: web.Request) -> web.StreamResponse:
    path = _resolve(request.match_info["name"])
    if path is None:
        raise not_found("asset")
    immutable = request.query.get("v") == version()
    return web.FileResponse(path, headers={
        "Content-Type": _TYPES[path.suffix],
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "public, max-age=31536000, immutable" if immutable else "no-cache",
    })
