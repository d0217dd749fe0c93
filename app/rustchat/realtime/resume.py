"""Resume on another node: a client that reconnects anywhere within the resume window gets every
event it missed, in order, each once.

When a socket closes, its node saves a record in Redis (`rustchat:ws:resume:{connection_id}`, TTL =
the resume window): the session's last `seq`, its channels and teams, the position of the node's
cluster subscriber, and the stream ids of the events in its replay log. Another node rebuilds the
missed events from the cluster's replay stream: those numbered by the old node after the client's
last `seq` (by stream id), then everything after the old node's position that the user could see,
applying membership changes as they come, numbered on. The record is then marked as taken, so the
old node does not resume it a second time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rustchat import metrics
from rustchat.realtime.cluster import (
    STREAM,
    ClusterLink,
    EventMessage,
    is_sid,
    parse_message,
    sid_key,
)
from rustchat.realtime.events import Event, InvalidWire
from rustchat.realtime.session import Session

log = logging.getLogger(__name__)

KEY = "rustchat:ws:resume:{}"
MAX_AFTER = 5000  # beyond this many later events a client is better off refetching


@dataclass
class Snapshot:
    session_id: str
    user_id: str
    token_hash: str
    seq: int
    channels: list[str]
    teams: list[str]
    position: tuple[int, int] | None
    entries: list[tuple[int, Event]]


def snapshot(session: Session, link: ClusterLink) -> Snapshot:
    """Taken synchronously when the socket closes; the stream ids fill in as publishes complete."""
    return Snapshot(session.id, session.user_id, session.token_hash, session.seq, sorted(session.channels),
                    sorted(session.teams), link.position, session.replay_log())


async def save(redis: aioredis.Redis, link: ClusterLink, snap: Snapshot, node_id: str, ttl: float) -> bool:
    if snap.position is None:
        return False
    await link.flushed()
    entries: list[list[Any]] = []
    for seq, event in snap.entries:
        if event.stream_id is None:
            entries = []  # not in the stream (publish failed): only what follows can be replayed
            continue
        entries.append([seq, event.stream_id])
    record = {"node": node_id, "user_id": snap.user_id, "token_hash": snap.token_hash, "seq": snap.seq,
              "channels": snap.channels, "teams": snap.teams,
              "position": f"{snap.position[0]}-{snap.position[1]}", "entries": entries}
    try:
        await redis.set(KEY.format(snap.session_id), json.dumps(record, separators=(",", ":")), ex=max(1, int(ttl)))
    except (RedisError, OSError) as exc:
        log.warning("could not save resume state of session %s: %s", snap.session_id, exc)
        return False
    return True


async def load(redis: aioredis.Redis, session_id: str) -> dict[str, Any] | None:
    """The saved record, or None when there is none or it is not a valid one (it came over Redis)."""
    try:
        raw = await redis.get(KEY.format(session_id))
    except (RedisError, OSError):
        return None
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        record = None
    if not _valid_record(record):
        log.warning("ignoring an invalid resume record for session %s", session_id)
        return None
    return record


def _valid_record(record: Any) -> bool:
    """A full record (save), or the marker another node left when it took the connection over."""
    if not isinstance(record, dict):
        return False
    if record.get("taken") is True:
        return isinstance(record.get("node"), str)
    strings = ("node", "user_id", "position")
    if not all(isinstance(record.get(k), str) for k in strings) or not is_sid(record["position"]):
        return False
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return False
    if not all(isinstance(record.get(k), list) and all(isinstance(v, str) for v in record[k]) for k in ("channels", "teams")):
        return False
    entries = record.get("entries")
    return isinstance(entries, list) and all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[0], int) and not isinstance(e[0], bool)
        and is_sid(e[1]) for e in entries)


async def mark_taken(redis: aioredis.Redis, session_id: str, node_id: str, ttl: float) -> None:
    try:
        await redis.set(KEY.format(session_id), json.dumps({"node": node_id, "taken": True}), ex=max(1, int(ttl)))
    except (RedisError, OSError) as exc:
        log.debug("could not mark session %s as taken: %s", session_id, exc)


def visible(event: Event, user_id: str, channels: set[str], teams: set[str]) -> bool:
    """The hub's recipient rule (hub._recipients) for one user, evaluated on an event."""
    b = event.broadcast
    if b.omit_user_id and b.omit_user_id == user_id:
        return False
    if b.team_ids:
        return bool(teams.intersection(b.team_ids))
    if b.channel_id:
        return b.channel_id in channels
    if b.team_id:
        return b.team_id in teams
    if b.user_id:
        return b.user_id == user_id
    return b.everyone


def _apply(event: Event, user_id: str, channels: set[str], teams: set[str], when: str) -> None:
    for change in event.membership:
        if change.user_id != user_id or not change.op.startswith(when):
            continue
        target = channels if change.op.endswith("_channel") else teams
        if when == "add_":
            target.add(change.target_id)
        else:
            target.discard(change.target_id)


def _event(sid: bytes | str, fields: dict) -> Event:
    """The replay-log entry's event; InvalidWire when the entry is not one (it came over Redis)."""
    sid = sid.decode() if isinstance(sid, bytes) else sid
    message = parse_message(fields.get(b"m") or fields.get("m") or b"", sid=sid)
    if not isinstance(message, EventMessage):
        raise InvalidWire("unknown_type")
    message.event.stream_id = sid
    return message.event


async def replay(redis: aioredis.Redis, record: dict[str, Any], last_seq: int,
                 current: tuple[set[str], set[str]] | None = None) -> list[tuple[int, Event]] | None:
    """The (seq, event) pairs the client missed, or None when they cannot all be rebuilt.

    `current` is the user's (channels, teams) as PostgreSQL has them now: an event after the old
    node's position reaches the client only if the user may still see its scope (or it announces
    the user's own membership change), so a member removed meanwhile, by a change this node never
    heard of, gets nothing more of that channel or team."""
    try:
        return await _replay(redis, record, last_seq, current)
    except InvalidWire as exc:
        metrics.CLUSTER_DROPPED.labels(exc.reason).inc()
        log.warning("resume from the replay log failed: an invalid entry (%s)", exc.reason)
        return None


async def _replay(redis: aioredis.Redis, record: dict[str, Any], last_seq: int,
                  current: tuple[set[str], set[str]] | None) -> list[tuple[int, Event]] | None:
    seq = int(record["seq"])
    if last_seq > seq or last_seq < 0:
        return None
    numbered = [(int(n), sid) for n, sid in record["entries"]]
    missed_numbered = [(n, sid) for n, sid in numbered if n > last_seq]
    if last_seq < seq and (not missed_numbered or missed_numbered[0][0] != last_seq + 1):
        return None  # the client is further behind than the old node's replay log reaches
    position = record["position"]
    for attempt in (1, 2):
        # A second try: right after a Redis restart the first command may meet a stale connection.
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for _, sid in missed_numbered:
                    pipe.xrange(STREAM, min=sid, max=sid)
                found = await pipe.execute() if missed_numbered else []
            later = await redis.xrange(STREAM, min=position, max="+", count=MAX_AFTER + 1)
            break
        except (RedisError, OSError) as exc:
            if attempt == 2:
                log.warning("resume from the replay log failed: %s", exc)
                return None
            await asyncio.sleep(0.2)
    out: list[tuple[int, Event]] = []
    for (n, _), entries in zip(missed_numbered, found, strict=True):
        if not entries:
            return None  # trimmed from the stream
        out.append((n, _event(*entries[0])))
    if len(later) > MAX_AFTER or (later and sid_key(later[0][0]) != sid_key(position) and position != "0-0"):
        return None  # too much, or the stream no longer reaches back to the old node's position
    already = {sid_key(sid) for _, sid in numbered}
    user_id = record["user_id"]
    channels, teams = set(record["channels"]), set(record["teams"])
    for sid, fields in later:
        key = sid_key(sid)
        if key <= sid_key(position) or key in already:
            continue
        event = _event(sid, fields)
        _apply(event, user_id, channels, teams, "add_")
        if visible(event, user_id, channels, teams) and (current is None or still_visible(event, user_id, *current)):
            seq += 1
            out.append((seq, event))
        _apply(event, user_id, channels, teams, "remove_")
    return out


def still_visible(event: Event, user_id: str, channels: set[str], teams: set[str]) -> bool:
    """Whether the user, with the memberships the database has now, may still see the event."""
    return visible(event, user_id, channels, teams) or any(c.user_id == user_id for c in event.membership)
