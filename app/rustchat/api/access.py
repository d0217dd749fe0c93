"""Authorization checks shared by the routes: who may see and write what."""

from __future__ import annotations

from typing import Any

from rustchat.db.pool import Pool
from rustchat.errors import ApiError, not_found
from rustchat.store import channels, teams


async def team_for_member(db: Pool, team_id: str, user: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The team and the caller's membership; non-members (other than admins) get 403."""
    team = await teams.get(db, team_id)
    if team is None:
        raise not_found("team")
    member = await teams.membership(db, team_id, user["id"])
    if member is None and not user["is_admin"]:
        raise ApiError(403, "api.team.not_member", "You are not a member of this team")
    return team, member


async def readable_channel(db: Pool, channel_id: str, user: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A channel the caller may read, with the caller's membership (None if only readable).

    Private and direct channels do not exist for non-members: 404, so ids cannot be probed.
    Public channels are readable by the team's members.
    """
    channel = await channels.get(db, channel_id)
    if channel is None:
        raise not_found("channel")
    member = await channels.membership(db, channel_id, user["id"])
    if member is not None or user["is_admin"]:
        return channel, member
    if channel["type"] == "public" and await teams.membership(db, channel["team_id"], user["id"]):
        return channel, None
    raise not_found("channel")


async def writable_channel(db: Pool, channel_id: str, user: dict[str, Any]) -> dict[str, Any]:
    channel, member = await readable_channel(db, channel_id, user)
    if member is None:
        raise ApiError(403, "api.channel.not_member", "Join the channel before posting in it")
    return channel
