"""User status (presence) and the admin's on-demand enforcement of a lowered connection limit.

- `GET /api/v1/users/{user_id}/status` → `{"user_id", "status": "online"|"offline"}` (`me` works too).
- `POST /api/v1/users/status/ids` with a JSON array of up to 200 user ids → `[{"user_id", "status"}]`
  for the ones that exist, in the order asked.
- `POST /api/v1/admin/connections/enforce-limit` (admin): a lower `max_simultaneous_connections`
  never closes open sockets by itself; this does, on the process that receives it. For each user
  over the limit (counted cluster-wide when Redis is in use) it closes up to the surplus of that
  user's connections on this process, oldest first, with close code 4029. Surplus sockets on
  other processes stay open: send it to each node (each gunicorn worker) until `closed` is 0.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import Field, RootModel

from rustchat import keys
from rustchat.api.middleware import require_admin, require_user
from rustchat.api.validation import Id, path_id, read_json_value, validate
from rustchat.errors import not_found
from rustchat.realtime.presence import PRESENCE
from rustchat.realtime.websocket import CLOSE_TOO_MANY, LIMITER
from rustchat.store import users

routes = web.RouteTableDef()

MAX_IDS = 200


class StatusIdsBody(RootModel[Annotated[list[Id], Field(max_length=MAX_IDS)]]):
    model_config = {"strict": True}


@routes.get("/api/v1/users/{user_id}/status")
async def user_status(request: web.Request) -> web.Response:
    me = require_user(request)
    if request.match_info["user_id"] == "me":
        user_id = me["id"]
    else:
        user_id = path_id(request, "user_id", "user")
        if not await users.existing_ids(request.app[keys.DB], [user_id]):
            raise not_found("user")
    found = await request.app[PRESENCE].statuses([user_id])
    return web.json_response({"user_id": user_id, "status": found[user_id]}, headers={"Cache-Control": "no-store"})


@routes.post("/api/v1/users/status/ids")
async def user_statuses(request: web.Request) -> web.Response:
    require_user(request)
    asked = list(dict.fromkeys(validate(StatusIdsBody, await read_json_value(request)).root))
    existing = await users.existing_ids(request.app[keys.DB], asked) if asked else set()
    ids = [u for u in asked if u in existing]
    found = await request.app[PRESENCE].statuses(ids)
    return web.json_response([{"user_id": u, "status": found[u]} for u in ids], headers={"Cache-Control": "no-store"})


@routes.post("/api/v1/admin/connections/enforce-limit")
async def enforce_limit(request: web.Request) -> web.Response:
    require_admin(request)
    app = request.app
    limit = app[keys.SITE].max_simultaneous_connections
    limiter = app[LIMITER]
    counts = await limiter.live_counts(limiter.local.users())
    surplus = limiter.surplus(limit, counts)
    doomed = {conn for conns in surplus.values() for conn in conns}
    closed = app[keys.HUB].close_sessions(lambda s: s.id in doomed, CLOSE_TOO_MANY,
                                          b"connection limit lowered") if doomed else 0
    return web.json_response({
        "node_id": app[keys.NODE_ID],
        "limit": limit,
        "closed": closed,
        "users": [{"user_id": u, "connections": counts[u], "closed": len(c)} for u, c in sorted(surplus.items())],
    })
