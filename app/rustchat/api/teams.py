"""Teams and team membership."""

from __future__ import annotations

from aiohttp import web

from rustchat import keys
from rustchat.api.access import team_for_member
from rustchat.api.middleware import require_user
from rustchat.api.validation import Body, Id, Text, path_id, read_body
from rustchat.errors import ApiError, forbidden, not_found
from rustchat.realtime import events
from rustchat.realtime.events import Broadcast, Event, MembershipChange
from rustchat.store import channels, teams, users

routes = web.RouteTableDef()

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


class CreateTeamBody(Body):
    name: Text(1, 64, NAME_PATTERN)
    display_name: Text(1, 64)


class MemberBody(Body):
    user_id: Id


@routes.post("/api/v1/teams")
async def create_team(request: web.Request) -> web.Response:
    user = require_user(request)
    body = await read_body(request, CreateTeamBody)
    team = await teams.create(request.app[keys.DB], body.name, body.display_name, user["id"])
    request.app[keys.PUBLISHER].publish(
        Event(events.ADDED_TO_TEAM, {"team_id": team["id"], "user_id": user["id"]}, Broadcast(user_id=user["id"]),
              (MembershipChange("add_team", user["id"], team["id"]),))
    )
    return web.json_response(team, status=201)


@routes.get("/api/v1/teams")
async def list_teams(request: web.Request) -> web.Response:
    user = require_user(request)
    db = request.app[keys.DB]
    rows = await (teams.all_teams(db) if user["is_admin"] and request.query.get("all") == "true" else teams.for_user(db, user["id"]))
    return web.json_response(rows)


@routes.get("/api/v1/teams/{team_id}")
async def get_team(request: web.Request) -> web.Response:
    team, _ = await team_for_member(request.app[keys.DB], path_id(request, "team_id", "team"), require_user(request))
    return web.json_response(team)


@routes.get("/api/v1/teams/{team_id}/members")
async def team_members(request: web.Request) -> web.Response:
    db = request.app[keys.DB]
    team, _ = await team_for_member(db, path_id(request, "team_id", "team"), require_user(request))
    return web.json_response(await teams.members(db, team["id"]))


@routes.get("/api/v1/teams/{team_id}/channels")
async def team_channels(request: web.Request) -> web.Response:
    user = require_user(request)
    db = request.app[keys.DB]
    team, _ = await team_for_member(db, path_id(request, "team_id", "team"), user)
    return web.json_response(await channels.visible_in_team(db, team["id"], user["id"]))


@routes.post("/api/v1/teams/{team_id}/members")
async def add_team_member(request: web.Request) -> web.Response:
    user = require_user(request)
    db = request.app[keys.DB]
    team, member = await team_for_member(db, path_id(request, "team_id", "team"), user)
    if not user["is_admin"] and not (member and member["is_admin"]):
        raise forbidden("Only team administrators can add members")
    body = await read_body(request, MemberBody)
    if await users.get(db, body.user_id) is None:
        raise ApiError(400, "api.user.unknown", "No such user", details={"user_id": body.user_id})
    row, created = await teams.add_member(db, team["id"], body.user_id)
    if created:
        request.app[keys.PUBLISHER].publish(
            Event(events.ADDED_TO_TEAM, {"team_id": team["id"], "user_id": body.user_id}, Broadcast(user_id=body.user_id),
                  (MembershipChange("add_team", body.user_id, team["id"]),))
        )
    return web.json_response(row, status=201 if created else 200)


@routes.delete("/api/v1/teams/{team_id}/members/{user_id}")
async def remove_team_member(request: web.Request) -> web.Response:
    user = require_user(request)
    db = request.app[keys.DB]
    team, member = await team_for_member(db, path_id(request, "team_id", "team"), user)
    target = path_id(request, "user_id", "user")
    if target != user["id"] and not user["is_admin"] and not (member and member["is_admin"]):
        raise forbidden("Only team administrators can remove other members")
    left_channels = await teams.remove_member(db, team["id"], target)
    if left_channels is None:
        raise not_found("member")
    changes = [MembershipChange("remove_team", target, team["id"])]
    changes += [MembershipChange("remove_channel", target, ch) for ch in left_channels]
    request.app[keys.PUBLISHER].publish(
        Event(events.LEAVE_TEAM, {"team_id": team["id"], "user_id": target, "remover_id": user["id"]},
              Broadcast(team_id=team["id"]), tuple(changes))
    )
    return web.json_response({"status": "OK"})
