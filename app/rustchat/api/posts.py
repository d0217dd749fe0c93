"""Posts, threads and reactions."""

from __future__ import annotations

import re
from typing import Annotated

from aiohttp import web
from pydantic import Field

from rustchat import keys
from rustchat.api.access import readable_channel, writable_channel
from rustchat.api.middleware import require_user
from rustchat.api.validation import (
    Body,
    Id,
    IdsBody,
    Text,
    path_id,
    query_id,
    query_int,
    read_body,
    read_json_value,
    validate,
)
from rustchat.errors import ApiError, bad_request, forbidden, not_found
from rustchat.realtime import events
from rustchat.realtime.events import Broadcast, Event
from rustchat.store import posts

routes = web.RouteTableDef()

MAX_MESSAGE = 16383  # Mattermost's limit, so clients written for it fit
EMOJI_PATTERN = r"^[a-z0-9_+-]+$"


MAX_FILES = 10


class CreatePostBody(Body):
    message: Text(1, MAX_MESSAGE)
    root_id: Id | None = None
    # Uploads (POST /api/v1/files) of the author in this channel, not attached to a post yet.
    file_ids: Annotated[list[Id], Field(max_length=MAX_FILES)] | None = None


class EditPostBody(Body):
    message: Text(1, MAX_MESSAGE)


class ReactionBody(Body):
    emoji_name: Text(1, 64, EMOJI_PATTERN)


def _publish(request: web.Request, name: str, channel: dict, data: dict) -> None:
    request.app[keys.PUBLISHER].publish(
        Event(name, data, Broadcast(channel_id=channel["id"], team_id=channel["team_id"] or ""))
    )


async def _post_and_channel(request: web.Request, user: dict, *, write: bool) -> tuple[dict, dict]:
    db = request.app[keys.DB]
    post = await posts.get(db, path_id(request, "post_id", "post"))
    if post is None or post["delete_at"]:
        raise not_found("post")
    try:
        if write:
            channel = await writable_channel(db, post["channel_id"], user)
        else:
            channel, _ = await readable_channel(db, post["channel_id"], user)
    except ApiError as err:
        # A post in a channel the caller cannot see does not exist for them either.
        if err.status == 404:
            raise not_found("post") from None
        raise
    return post, channel


@routes.post("/api/v1/channels/{channel_id}/posts")
async def create_post(request: web.Request) -> web.Response:
    user = require_user(request)
    db = request.app[keys.DB]
    channel = await writable_channel(db, path_id(request, "channel_id", "channel"), user)
    body = await read_body(request, CreatePostBody)
    if body.root_id is not None:
        root = await posts.get(db, body.root_id)
        if root is None or root["channel_id"] != channel["id"] or root["delete_at"]:
            raise bad_request("api.post.invalid_root", "root_id must be a post in the same channel")
        if root["root_id"]:
            raise bad_request("api.post.invalid_root", "root_id must be the thread's root post, not a reply")
    if body.file_ids:
        if len(set(body.file_ids)) != len(body.file_ids):
            raise bad_request("api.post.invalid_files", "file_ids lists a file more than once")
        try:
            row = await posts.create_with_files(db, channel["id"], user["id"], body.message, body.root_id,
                                                body.file_ids)
        except posts.FilesUnavailable:
            raise bad_request("api.post.invalid_files", "file_ids must be your own uploads to this channel "
                              "that are not attached to a post yet") from None
    else:
        row = await posts.create(db, channel["id"], user["id"], body.message, body.root_id)
    post = posts.public(row)
    _publish(request, events.POSTED, channel, {"post": post, "channel_type": channel["type"], "sender_name": user["username"]})
    return web.json_response(post, status=201)


@routes.get("/api/v1/channels/{channel_id}/posts")
async def list_posts(request: web.Request) -> web.Response:
    user = require_user(request)
    db = request.app[keys.DB]
    channel, _ = await readable_channel(db, path_id(request, "channel_id", "channel"), user)
    since = query_int(request, "since", None, 0, 2**62)
    before_id = query_id(request, "before")
    limit = query_int(request, "limit", 60, 1, 200)
    if since is not None and before_id is not None:
        raise bad_request("api.invalid_query", "Use either 'since' or 'before', not both")
    before = None
    if before_id is not None:
        before = await posts.get(db, before_id)
        if before is None or before["channel_id"] != channel["id"]:
            raise bad_request("api.invalid_query", "'before' must be a post in this channel")
    rows, has_more = await posts.page(db, channel["id"], before=before, since=since, limit=limit)
    return web.json_response({"posts": [posts.public(r) for r in rows], "has_more": has_more})


@routes.get("/api/v1/posts/{post_id}")
async def get_post(request: web.Request) -> web.Response:
    post, _ = await _post_and_channel(request, require_user(request), write=False)
    return web.json_response(posts.public(post))


@routes.get("/api/v1/posts/{post_id}/thread")
async def get_thread(request: web.Request) -> web.Response:
    post, _ = await _post_and_channel(request, require_user(request), write=False)
    rows = await posts.thread(request.app[keys.DB], post["root_id"] or post["id"])
    return web.json_response({"posts": [posts.public(r) for r in rows]})


@routes.put("/api/v1/posts/{post_id}")
async def edit_post(request: web.Request) -> web.Response:
    user = require_user(request)
    post, channel = await _post_and_channel(request, user, write=False)
    if post["user_id"] != user["id"] and not user["is_admin"]:
        raise forbidden("Only the author or an administrator can edit this post")
    body = await read_body(request, EditPostBody)
    row = await posts.edit(request.app[keys.DB], post["id"], body.message)
    if row is None:
        raise not_found("post")
    out = posts.public(row)
    _publish(request, events.POST_EDITED, channel, {"post": out})
    return web.json_response(out)


@routes.delete("/api/v1/posts/{post_id}")
async def delete_post(request: web.Request) -> web.Response:
    user = require_user(request)
    post, channel = await _post_and_channel(request, user, write=False)
    if post["user_id"] != user["id"] and not user["is_admin"]:
        raise forbidden("Only the author or an administrator can delete this post")
    row = await posts.soft_delete(request.app[keys.DB], post["id"])
    if row is None:
        raise not_found("post")
    out = posts.public(row)
    _publish(request, events.POST_DELETED, channel, {"post": out, "delete_by": user["id"]})
    return web.json_response(out)


@routes.get("/api/v1/posts/{post_id}/reactions")
async def list_reactions(request: web.Request) -> web.Response:
    post, _ = await _post_and_channel(request, require_user(request), write=False)
    return web.json_response(await posts.reactions(request.app[keys.DB], post["id"]))


# Registered before /posts/{post_id}/reactions, which would otherwise take "ids" for a post id.
@routes.post("/api/v1/posts/ids/reactions")
async def reactions_by_posts(request: web.Request) -> web.Response:
    """`{post_id: [reaction, ...]}` for up to 200 posts; posts the caller cannot read are left out."""
    user = require_user(request)
    ids = list(dict.fromkeys(validate(IdsBody, await read_json_value(request)).root))
    db = request.app[keys.DB]
    channel_of = await posts.channels_of(db, ids) if ids else {}
    readable = set()
    for channel_id in set(channel_of.values()):  # a page of posts spans one channel or a few
        try:
            await readable_channel(db, channel_id, user)
        except ApiError:
            continue
        readable.add(channel_id)
    visible = [p for p in ids if channel_of.get(p) in readable]
    return web.json_response(await posts.reactions_of(db, visible) if visible else {})


@routes.post("/api/v1/posts/{post_id}/reactions")
async def add_reaction(request: web.Request) -> web.Response:
    user = require_user(request)
    post, channel = await _post_and_channel(request, user, write=True)
    body = await read_body(request, ReactionBody)
    reaction, created = await posts.add_reaction(request.app[keys.DB], post["id"], user["id"], body.emoji_name)
    if created:
        _publish(request, events.REACTION_ADDED, channel, {"reaction": reaction})
    return web.json_response(reaction, status=201 if created else 200)


@routes.delete("/api/v1/posts/{post_id}/reactions/{emoji_name}")
async def remove_reaction(request: web.Request) -> web.Response:
    user = require_user(request)
    post, channel = await _post_and_channel(request, user, write=True)
    emoji = request.match_info["emoji_name"]
    if len(emoji) > 64 or not re.fullmatch(EMOJI_PATTERN, emoji):
        # No reaction can have this name (and PostgreSQL text cannot even hold a NUL): not found.
        raise not_found("reaction")
    reaction = await posts.remove_reaction(request.app[keys.DB], post["id"], user["id"], emoji)
    if reaction is None:
        raise not_found("reaction")
    _publish(request, events.REACTION_REMOVED, channel, {"reaction": reaction})
    return web.json_response({"status": "OK"})
