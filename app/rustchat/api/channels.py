"""Channels, direct messages and channel membership."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import RootModel

from rustchat import keys
from rustchat.api.access import readable_channel, team_for_member
from rustchat.api.middleware import require_user
from rustchat.api.teams import NAME_PATTERN, MemberBody
from rustchat.api.validation import Body, Id, Text, path_id, read_body, read_json_value, validate
from rustchat.errors import ApiError, forbidden, not_found
from rustchat.realtime import events
from rustchat.realtime.events import Broadcast, Event, MembershipChange
from rustchat.store import channels, teams, users

routes = web.RouteTableDef()


class CreateChannelBody(Body):
    team_id: Id
    name: Text(1, 64, NAME_PATTERN)
    display_name: Text(1, 64)
    type: Literal["public", "private"] = "public"
    purpose: Text(0, 250) = ""


class DirectBody(RootModel[list[Id]]):
    model_config = {"strict": True}


@routes.post("/api/v1/channels")
async def create_channel(request: web.Request) -> web.Response:
    user = require_user(request)
    body = await read_body(request, CreateChannelBody)
    db = request.app[keys.DB]
    team, member = await team_for_member(db, body.team_id, user)
    if member is None:
        raise ApiError(403, "api.team.not_member", "You are not a member of this team")
    channel = await channels.create(db, team["id"], body.name, body.display_name, body.type, user["id"])
    broadcast = Broadcast(team_id=team["id"]) if body.type == "public" else Broadcast(user_id=user["id"])
    request.app[keys.PUBLISHER].publish(
        Event(events.CHANNEL_CREATED, {"channel_id": channel["id"], "team_id": team["id"], "channel": channel},
              broadcast, (MembershipChange("add_channel", user["id"], channel["id"]),))
    )
    return web.json_response(channel, status=201)


@routes.post("/api/v1/channels/direct")
async def create_direct(request: web.Request) -> web.Response:
    user = require_user(request)
    ids = validate(DirectBody, await read_json_value(request)).root
    if len(ids) != 2:
        raise ApiError(400, "api.invalid_body", "Invalid request body: expected exactly two user ids")
    if user["id"] not in ids and not user["is_admin"]:
        raise forbidden("You can only open direct messages that include yourself")
    db = request.app[keys.DB]
    missing = set(ids) - await users.existing_ids(db, ids)
    if missing:
        raise ApiError(400, "api.user.unknown", "No such user", details={"user_ids": sorted(missing)})
    channel, created = await channels.get_or_create_direct(db, ids[0], ids[1], user["id"])
    if created:
        request.app[keys.PUBLISHER].publish(
            Event(events.DIRECT_ADDED, {"channel_id": channel["id"], "channel": channel, "user_ids": sorted(set(ids))},
                  Broadcast(channel_id=channel["id"]),
                  tuple(MembershipChange("add_channel", uid, channel["id"]) for uid in sorted(set(ids))))
        )
    return web.json_response(channel, status=201 if created else 200)


@routes.get("/api/v1/channels/{channel_id}")
async def get_channel(request: web.Request) -> web.Response:
    channel, _ = await readable_channel(request.app[keys.DB], path_id(request, "channel_id", "channel"), require_user(request))
    return web.json_response(channel)


@routes.get("/api/v1/users/me/channels")
async def my_channels(request: web.Request) -> web.Response:
    user = require_user(request)
    return web.json_response(await channels.for_user(request.app[keys.DB], user["id"]))


@routes.get("/api/v1/channels/{channel_id}/members")
async def channel_members(request: web.Request) -> web.Response:
    db = request.app[keys.DB]
    channel, _ = await readable_channel(db, path_id(request, "channel_id", "channel"), require_user(request))
    return web.json_response(await channels.members(db, channel["id"]))


@routes.post("/api/v1/channels/{channel_id}/members")
async def add_channel_member(request: web.Request) -> web.Response:
    user = require_user(request)
    db = request.app[keys.DB]
    channel, member = await readable_channel(db, path_id(request, "channel_id", "channel"), user)
    body = await read_body(request, MemberBody)
    if channel["type"] == "direct":
        raise ApiError(400, "api.channel.direct_members", "Direct message channels have fixed members")
    joining_self = body.user_id == user["id"]
    # Anyone in the team may join a public channel; adding someone else takes channel membership.
    if not user["is_admin"] and not member and not (joining_self and channel["type"] == "public"):
        raise forbidden("Only members of this channel can add people to it")
    if await users.get(db, body.user_id) is None:
        raise ApiError(400, "api.user.unknown", "No such user", details={"user_id": body.user_id})
    if await teams.membership(db, channel["team_id"], body.user_id) is None:
        raise ApiError(400, "api.channel.not_team_member", "The user must be a member of the channel's team first")
    row, created = await channels.add_member(db, channel["id"], body.user_id)
    if created:
        request.app[keys.PUBLISHER].publish(
            Event(events.USER_ADDED, {"user_id": body.user_id, "channel_id": channel["id"], "team_id": channel["team_id"],
                                 "adder_id": user["id"]},
                  Broadcast(channel_id=channel["id"]), (MembershipChange("add_channel", body.user_id, channel["id"]),))
        )
    return web.json_response(row, status=201 if created else 200)


@routes.delete("/api/v1/channels/{channel_id}/members/{user_id}")
async def remove_channel_member(request: web.Request) -> web.Response:
    user = require_user(request)
    db = request.app[keys.DB]
    channel, member = await readable_channel(db, path_id(request, "channel_id", "channel"), user)
    target = path_id(request, "user_id", "user")
    if channel["type"] == "direct":
        raise ApiError(400, "api.channel.direct_members", "Direct message channels have fixed members")
    if target != user["id"] and not user["is_admin"] and not (member and member["is_admin"]):
        raise forbidden("Only channel administrators can remove other members")
    if not await channels.remove_member(db, channel["id"], target):
        raise not_found("member")
    request.app[keys.PUBLISHER].publish(
        Event(events.USER_REMOVED, {"user_id": target, "channel_id": channel["id"], "remover_id": user["id"]},
              Broadcast(channel_id=channel["id"]), (MembershipChange("remove_channel", target, channel["id"]),))
    )
    return web.json_response({"status": "OK"})
