"""Events pushed to WebSocket clients, and their one-time serialization.

A client frame is `{"seq": N, "event", "data", "broadcast"}` where only `seq` differs between
recipients. So the event is JSON-encoded once (`tail`, everything after `{"seq":N,`) and each
recipient's frame is a cheap byte concatenation: no per-recipient JSON work on the hot path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

MembershipOp = Literal["add_channel", "remove_channel", "add_team", "remove_team"]

# Every event the server sends, by name: each is built with one of these constants. docs/api.md
# lists each one and the web client handles each one (tests/test_docs.py checks both), and an
# event of any other name is refused, also when it arrives over the cluster.
HELLO = "hello"  # the first frame of a connection (realtime.websocket builds it)
POSTED = "posted"
POST_EDITED = "post_edited"
POST_DELETED = "post_deleted"
REACTION_ADDED = "reaction_added"
REACTION_REMOVED = "reaction_removed"
TYPING = "typing"
STATUS_CHANGE = "status_change"
CHANNEL_VIEWED = "channel_viewed"
USER_ADDED = "user_added"
USER_REMOVED = "user_removed"
CHANNEL_CREATED = "channel_created"
DIRECT_ADDED = "direct_added"
ADDED_TO_TEAM = "added_to_team"
LEAVE_TEAM = "leave_team"
RESYNC = "resync"  # local only: events were lost, refetch
EVENT_NAMES = frozenset((
    HELLO, POSTED, POST_EDITED, POST_DELETED, REACTION_ADDED, REACTION_REMOVED, TYPING, STATUS_CHANGE,
    CHANNEL_VIEWED, USER_ADDED, USER_REMOVED, CHANNEL_CREATED, DIRECT_ADDED, ADDED_TO_TEAM, LEAVE_TEAM, RESYNC,
))


@dataclass(frozen=True)
class Broadcast:
    """Who may receive the event: a channel's members, a team's members, or one user.

    An event with none of these reaches nobody. Every session of the process is a scope of its
    own, `everyone`, which only this process's own server events use (`resync`); it never
    crosses the cluster, so no message on the cluster channel can reach every session."""

    channel_id: str = ""
    team_id: str = ""
    user_id: str = ""
    omit_user_id: str = ""  # internal: e.g. the typist does not get their own `typing`
    team_ids: tuple[str, ...] = ()  # internal: members of any of these teams, each once (presence)
    everyone: bool = False  # internal, local only: every session of this process

    def public(self) -> dict[str, str]:
        return {"channel_id": self.channel_id, "team_id": self.team_id, "user_id": self.user_id}

    @property
    def scoped(self) -> bool:
        return bool(self.team_ids or self.channel_id or self.team_id or self.user_id)


@dataclass(frozen=True)
class MembershipChange:
    """Applied to live connections on every node together with the event that announces it:
    additions before delivery (the new member sees `user_added`), removals after."""

    op: MembershipOp
    user_id: str
    target_id: str


@dataclass
class Event:
    event: str
    data: dict[str, Any]
    broadcast: Broadcast
    membership: tuple[MembershipChange, ...] = ()
    eid: str = ""  # unique per event: "<origin node id>:<counter>"
    stream_id: str | None = field(default=None, compare=False)  # set once it is in the replay log
    seqno: int = field(default=0, repr=False, compare=False)  # the cluster link's publish counter
    _tail: bytes | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.event not in EVENT_NAMES:
            raise ValueError(f"unknown event {self.event!r}: add it to realtime/events.py's vocabulary")

    def tail(self) -> bytes:
        if self._tail is None:
            body = json.dumps(
                {"event": self.event, "data": self.data, "broadcast": self.broadcast.public()},
                separators=(",", ":"),
                ensure_ascii=False,
            )
            self._tail = body[1:].encode("utf-8")
        return self._tail

    def to_wire(self) -> dict[str, Any]:
        """The cluster representation (see realtime.cluster)."""
        return {
            "event": self.event,
            "data": self.data,
            "broadcast": {**self.broadcast.public(), "omit_user_id": self.broadcast.omit_user_id,
                          "team_ids": list(self.broadcast.team_ids)},
            "membership": [[m.op, m.user_id, m.target_id] for m in self.membership],
        }

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> Event:
        """The event of a cluster message or replay-log entry, validated: InvalidWire if it is not one."""
        name = msg.get("event")
        if name not in EVENT_NAMES or name in (HELLO, RESYNC):  # those two never cross the cluster
            raise InvalidWire("event_name")
        data = msg.get("data")
        if not isinstance(data, dict):
            raise InvalidWire("data")
        b = msg.get("broadcast")
        if not isinstance(b, dict):
            raise InvalidWire("broadcast")
        scope = {k: b.get(k, "") for k in ("channel_id", "team_id", "user_id", "omit_user_id")}
        team_ids = b.get("team_ids") or []
        if not all(isinstance(v, str) for v in scope.values()) or not isinstance(team_ids, list) \
                or not all(isinstance(t, str) for t in team_ids):
            raise InvalidWire("broadcast")
        broadcast = Broadcast(**scope, team_ids=tuple(team_ids))
        if not broadcast.scoped:
            raise InvalidWire("no_scope")
        membership = msg.get("membership") or []
        if not isinstance(membership, list):
            raise InvalidWire("membership")
        changes = []
        for item in membership:
            if (not isinstance(item, list) or len(item) != 3 or item[0] not in MEMBERSHIP_OPS
                    or not isinstance(item[1], str) or not isinstance(item[2], str)):
                raise InvalidWire("membership")
            changes.append(MembershipChange(item[0], item[1], item[2]))
        eid = msg.get("eid", "")
        event = cls(event=name, data=data, broadcast=broadcast, membership=tuple(changes),
                    eid=eid if isinstance(eid, str) else "")
        try:
            event.tail()  # encodable for clients (no lone surrogates), once, here at the edge
        except (TypeError, ValueError) as exc:
            raise InvalidWire("unencodable") from exc
        return event


class InvalidWire(ValueError):
    """A cluster message or replay-log entry that is not a valid event; `reason` names the flaw."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


MEMBERSHIP_OPS = frozenset(get_args(MembershipOp))


def frame(seq: int, tail: bytes) -> bytes:
    return b'{"seq":%d,' % seq + tail


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
