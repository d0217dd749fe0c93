"""Server configuration (`server_config.site`), for system administrators."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import Field

from rustchat import keys
from rustchat.api.middleware import require_admin
from rustchat.api.validation import Body, Text, read_body
from rustchat.store import server_config

routes = web.RouteTableDef()


class SiteBody(Body):
    max_simultaneous_connections: Annotated[int, Field(ge=1, le=10000)] | None = None
    site_name: Text(1, 64) | None = None


@routes.get("/api/v1/admin/config")
async def get_config(request: web.Request) -> web.Response:
    require_admin(request)
    site = await server_config.load_site(request.app[keys.DB])
    return web.json_response({"site": site})


@routes.put("/api/v1/admin/config/site")
async def put_site(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, SiteBody)
    changes = body.model_dump(exclude_none=True)
    site = await server_config.update_site(request.app[keys.DB], changes)
    # This node applies it at once; the others within one refresh interval.
    request.app[keys.SITE].site = site
    return web.json_response({"site": site})
