"""Events pushed to WebSocket clients, and their one-time serialization.

A client frame is `{"seq": N, "event", "data", "broadcast"}` where only `seq` differs between
recipients. So the event is JSON-encoded once (`tail`, everything after `{"seq":N,`) and each
recipient's frame is a cheap byte concatenation: no per-recipient JSON work on the hot path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

MembershipOp = Literal["add_channel", "remove_channel", "add_team", "remove_team"]


@dataclass(frozen=True)
class Broadcast:
    """Who may receive the event: a channel's members, a team's members, or one user."""

    channel_id: str = ""
    team_id: str = ""
    user_id: str = ""
    omit_user_id: str = ""  # internal: e.g. the typist does not get their own `typing`
    team_ids: tuple[str, ...] = ()  # internal: members of any of these teams, each once (presence)

    def public(self) -> dict[str, str]:
        return {"channel_id": self.channel_id, "team_id": self.team_id, "user_id": self.user_id}


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
        b = msg.get("broadcast") or {}
        return cls(
            event=str(msg["event"]),
            data=msg.get("data") or {},
            broadcast=Broadcast(
                channel_id=b.get("channel_id", ""),
                team_id=b.get("team_id", ""),
                user_id=b.get("user_id", ""),
                omit_user_id=b.get("omit_user_id", ""),
                team_ids=tuple(b.get("team_ids") or ()),
            ),
            membership=tuple(MembershipChange(op, uid, tid) for op, uid, tid in msg.get("membership", ())),
            eid=str(msg.get("eid", "")),
        )


def frame(seq: int, tail: bytes) -> bytes:
    return b'{"seq":%d,' % seq + tail


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
