"""What each user has read: unread counts per channel, and marking a channel viewed.

- `GET /api/v1/users/me/channel_members` → the caller's memberships, each
  `{"channel_id", "user_id", "is_admin", "create_at", "last_viewed_at", "last_post_at", "unread_count"}`;
  `unread_count` counts posts by others since `last_viewed_at`, up to 100.
- `POST /api/v1/channels/members/me/view` `{"channel_id"}` → `{"status", "channel_id", "last_viewed_at"}`:
  everything in the channel so far is read. The user's other connections get `channel_viewed`, so
  a second tab clears its marker too.
"""

from __future__ import annotations

from aiohttp import web

from rustchat import keys
from rustchat.api.access import writable_channel
from rustchat.api.middleware import require_user
from rustchat.api.validation import Body, Id, read_body
from rustchat.errors import not_found
from rustchat.realtime import events
from rustchat.realtime.events import Broadcast, Event
from rustchat.store import channels

routes = web.RouteTableDef()


class ViewBody(Body):
    channel_id: Id


@routes.get("/api/v1/users/me/channel_members")
async def my_read_states(request: web.Request) -> web.Response:
    user = require_user(request)
    rows = await channels.read_states(request.app[keys.DB], user["id"])
    return web.json_response(rows, headers={"Cache-Control": "no-store"})


@routes.post("/api/v1/channels/members/me/view")
async def view_channel(request: web.Request) -> web.Response:
    user = require_user(request)
    body = await read_body(request, ViewBody)
    db = request.app[keys.DB]
    channel = await writable_channel(db, body.channel_id, user)  # members only: 403 for readers
    viewed = await channels.mark_viewed(db, channel["id"], user["id"])
    if viewed is None:
        raise not_found("member")  # left the channel a moment ago
    request.app[keys.PUBLISHER].publish(
        Event(events.CHANNEL_VIEWED, {"channel_id": channel["id"], "last_viewed_at": viewed}, Broadcast(user_id=user["id"]))
    )
    return web.json_response({"status": "OK", "channel_id": channel["id"], "last_viewed_at": viewed})
