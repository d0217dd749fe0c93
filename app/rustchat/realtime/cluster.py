"""The cluster link: every server process joined through Redis.

The path of an event: the origin delivers it to its own connections (hub) first, then this link
publishes it once, with `origin_node`, to `rustchat:cluster:ws:broadcast`; every other process
delivers it to its own connections and the origin drops its echo. The same Lua call appends the
event to a capped stream (`rustchat:cluster:ws:log`) and stamps the published copy with the stream
id (`sid`), so:

- a subscriber that lost its subscription (Redis restart, pub/sub output-buffer limit) refills the
  gap from the stream, in order and without duplicates, when it resubscribes; when the gap is
  older than the stream it tells its clients to resync;
- a client that reconnects to another process can be replayed what it missed (realtime.resume).

Publishing never blocks the caller: events wait in an in-memory backlog that a task flushes in
pipelined batches, so a Redis outage costs cross-node delivery, never local delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rustchat import metrics
from rustchat.realtime import events
from rustchat.realtime.events import Broadcast, Event, InvalidWire
from rustchat.realtime.hub import Hub

log = logging.getLogger(__name__)

CHANNEL = "rustchat:cluster:ws:broadcast"
STREAM = "rustchat:cluster:ws:log"

# KEYS: stream, channel. ARGV: message JSON (an object), stream max length.
_PUBLISH_LUA = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[1])
redis.call('PUBLISH', KEYS[2], string.sub(ARGV[1], 1, -2) .. ',"sid":"' .. id .. '"}')
return id
"""


def sid_key(sid: str | bytes) -> tuple[int, int]:
    if isinstance(sid, bytes):
        sid = sid.decode()
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


# A published event is a post at most (16 KB of text) with its metadata; anything far larger on
# the cluster channel is not ours.
MAX_MESSAGE_BYTES = 1 << 20
_SID = re.compile(r"^\d{1,20}-\d{1,20}\Z")


def is_sid(value: object) -> bool:
    """Whether `value` is a replay-log (stream) id as Redis makes them: "<ms>-<seq>"."""
    return isinstance(value, str) and _SID.match(value) is not None


@dataclass(frozen=True)
class Heartbeat:
    node_id: str
    connections: int
    pool_max: int
    timestamp: float


@dataclass(frozen=True)
class Revoke:
    """A token was revoked: every process closes the sockets opened with it."""

    token_hash: str


_TOKEN_HASH = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class EventMessage:
    origin_node: str
    sid: str | None  # the replay-log id; set on published copies and on entries read back
    ts: float | None
    event: Event


def parse_message(data: bytes | str, sid: str | None = None) -> Heartbeat | Revoke | EventMessage:
    """One message of the cluster channel, or one replay-log entry (`sid` given), validated into a
    typed value: InvalidWire (with a reason for the metric) for anything else."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise InvalidWire("too_large")
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        raise InvalidWire("not_json") from None
    if not isinstance(msg, dict):
        raise InvalidWire("not_object")
    kind = msg.get("type")
    if kind == "heartbeat" and sid is None:
        node_id, connections, pool_max, timestamp = (msg.get(k) for k in ("node_id", "connections", "pool_max", "timestamp"))
        if not isinstance(node_id, str) or not 0 < len(node_id) <= 128:
            raise InvalidWire("heartbeat")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 31 for v in (connections, pool_max)):
            raise InvalidWire("heartbeat")
        if not isinstance(timestamp, int | float) or isinstance(timestamp, bool) or not math.isfinite(timestamp):
            raise InvalidWire("heartbeat")
        return Heartbeat(node_id, connections, pool_max, float(timestamp))
    if kind == "revoke" and sid is None:
        token_hash = msg.get("token_hash")
        if not isinstance(token_hash, str) or not _TOKEN_HASH.match(token_hash):
            raise InvalidWire("revoke")
        return Revoke(token_hash)
    if kind == "event":
        origin = msg.get("origin_node")
        if not isinstance(origin, str) or not 0 < len(origin) <= 128:
            raise InvalidWire("origin_node")
        sid = sid if sid is not None else msg.get("sid")
        if sid is not None and not is_sid(sid):
            raise InvalidWire("sid")
        ts = msg.get("ts")
        if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
            ts = None
        return EventMessage(origin, sid, ts, Event.from_wire(msg))
    raise InvalidWire("unknown_type")


@dataclass
class TaskHealth:
    """What /api/v1/health reports of one of the link's tasks: when it last completed a round."""

    name: str
    stale_after: float  # seconds without a round before the task counts as stuck
    last_ok: float = field(default_factory=time.monotonic)
    restarts: int = 0
    last_error: str | None = None

    def ok(self) -> None:
        self.last_ok = time.monotonic()


@dataclass
class NodeInfo:
    node_id: str
    connections: int
    pool_max: int
    last_seen: float  # unix time of the last heartbeat received


class _RateLimitedLog:
    """At most one line per interval for a repeating failure, with how many were suppressed."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = 0.0
        self._suppressed = 0

    def __call__(self, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += f" ({self._suppressed} similar suppressed)"
        self._last, self._suppressed = now, 0
        log.log(level, msg, *args)


class ClusterLink:
    def __init__(
        self,
        redis: aioredis.Redis,
        hub: Hub,
        node_id: str,
        *,
        pool_max: int,
        heartbeat_interval: float = 5.0,
        backlog_limit: int = 10000,
        stream_maxlen: int = 100000,
        local_connections: Callable[[], int] | None = None,
    ) -> None:
        self.redis = redis
        self.hub = hub
        self.node_id = node_id
        self.pool_max = pool_max
        self.heartbeat_interval = heartbeat_interval
        self.stream_maxlen = stream_maxlen
        self._local_connections = local_connections or hub.attached_count
        self._script = redis.register_script(_PUBLISH_LUA)
        self._backlog: deque[Event] = deque()
        self._backlog_limit = backlog_limit
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.nodes: dict[str, NodeInfo] = {}
        self.position: tuple[int, int] | None = None  # last stream id this process has processed
        self.subscribed = False
        self.publish_ok = True
        self.last_error: str | None = None
        self._publish_log = _RateLimitedLog(10.0)
        self._drop_log = _RateLimitedLog(10.0)
        stale = 3 * heartbeat_interval + 5
        self.task_health = {name: TaskHealth(name, stale) for name in ("publisher", "subscriber", "heartbeat")}
        self._counter = 0
        self._published_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._published_upto = 0

    # -- publishing -------------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        self._counter += 1
        event.seqno = self._counter
        if len(self._backlog) >= self._backlog_limit:
            dropped = self._backlog.popleft()
            metrics.EVENTS_DROPPED.labels("cluster_backlog_full").inc()
            self._published_upto = max(self._published_upto, dropped.seqno)
            self._publish_log(logging.ERROR, "Failed to broadcast to cluster: backlog of %d events full, dropping the oldest",
                              self._backlog_limit)
        self._backlog.append(event)
        self._wake.set()

    async def flushed(self, timeout: float = 5.0) -> bool:
        """Wait until everything published so far has reached Redis (or was given up on)."""
        target = self._counter
        if self._published_upto >= target:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._published_waiters.append((target, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False

    def _wire(self, event: Event) -> str:
        msg = {"type": "event", "origin_node": self.node_id, "ts": time.time(), "eid": event.eid, **event.to_wire()}
        return json.dumps(msg, separators=(",", ":"), ensure_ascii=False)

    async def _publisher(self) -> None:
        delay = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.task_health["publisher"].ok()
            while self._backlog:
                batch = list(self._backlog)[:256]
                wires = [self._encode(event) for event in batch]
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for wire in wires:
                            if wire is not None:
                                await self._script(keys=[STREAM, CHANNEL], args=[wire, self.stream_maxlen], client=pipe)
                        ids = iter(await pipe.execute()) if any(w is not None for w in wires) else iter(())
                except (RedisError, OSError) as exc:
                    self.publish_ok = False
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    metrics.CLUSTER_PUBLISH_FAILURES.inc(len(batch))
                    self._publish_log(logging.ERROR, "Failed to broadcast to cluster: %s (%d events waiting)",
                                      self.last_error, len(self._backlog))
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.1
                if not self.publish_ok:
                    log.info("cluster publishing recovered; %d queued events sent", len(batch))
                self.publish_ok = True
                for event, wire in zip(batch, wires, strict=True):
                    if wire is not None:
                        sid = next(ids)
                        event.stream_id = sid.decode() if isinstance(sid, bytes) else sid
                    self._backlog.popleft()
                self._published_upto = batch[-1].seqno
                metrics.CLUSTER_PUBLISHED.inc(sum(1 for w in wires if w is not None))
                self._wake_flush_waiters()
                self.task_health["publisher"].ok()

    def _encode(self, event: Event) -> bytes | None:
        """The event's cluster message as UTF-8; None (dropped, counted) when it has none."""
        try:
            return self._wire(event).encode("utf-8")
        except (TypeError, ValueError) as exc:  # a lone surrogate, a value JSON cannot hold
            metrics.EVENTS_DROPPED.labels("unencodable").inc()
            self._publish_log(logging.ERROR, "event %s not broadcast to the cluster: %s", event.event, exc)
            return None

    def _wake_flush_waiters(self) -> None:
        keep = []
        for target, fut in self._published_waiters:
            if target <= self._published_upto:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((target, fut))
        self._published_waiters = keep

    # -- subscribing ------------------------------------------------------------------------------
    async def _subscriber(self) -> None:
        delay = 0.1
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                await self._catch_up()
                self.subscribed = True
                delay = 0.1
                while True:
                    self.task_health["subscriber"].ok()
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.heartbeat_interval)
                    if msg is None:
                        # Silence longer than a heartbeat: make sure the subscription is still there.
                        await asyncio.wait_for(pubsub.ping(), self.heartbeat_interval)
                        continue
                    if msg.get("type") == "message":
                        self._receive(msg["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                self.subscribed = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                metrics.CLUSTER_SUBSCRIBER_RECONNECTS.inc()
                wait = delay * (0.5 + random.random())
                log.warning("Cluster subscriber error: %s; resubscribing in %.1f s", self.last_error, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, 10.0)
            finally:
                self.subscribed = False  # whatever ended this subscription (the supervisor restarts us)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _catch_up(self) -> None:
        """After (re)subscribing: deliver what the stream holds beyond our position."""
        if self.position is None:
            last = await self.redis.xrevrange(STREAM, count=1)
            self.position = sid_key(last[0][0]) if last else (0, 0)
            return
        start = f"{self.position[0]}-{self.position[1]}"
        first = True
        delivered = 0
        while True:
            entries = await self.redis.xrange(STREAM, min=start, max="+", count=1000)
            if first:
                first = False
                if self.position != (0, 0) and (not entries or sid_key(entries[0][0]) != self.position):
                    # Our last entry has been trimmed away: some events can no longer be replayed.
                    metrics.CLUSTER_GAPS.labels("resync").inc()
                    log.warning("cluster subscription gap older than the replay log; telling clients to resync")
                    self.hub.deliver(Event(events.RESYNC, {"reason": "cluster_gap"}, Broadcast(everyone=True)))
                    if entries:
                        self.position = sid_key(entries[0][0])
            fresh = [(sid, fields) for sid, fields in entries if sid_key(sid) > self.position]
            for sid, fields in fresh:
                sid = sid.decode() if isinstance(sid, bytes) else sid
                raw = fields.get(b"m") or fields.get("m") or b""
                try:
                    message = parse_message(raw, sid=sid)
                    if not isinstance(message, EventMessage):
                        raise InvalidWire("unknown_type")
                except InvalidWire as exc:
                    self._dropped(exc.reason, "replay-log entry")
                    self.position = sid_key(sid)
                    continue
                self._handle_event(message)
                delivered += 1
            if len(entries) < 1000:
                break
            last_sid = entries[-1][0]
            start = last_sid.decode() if isinstance(last_sid, bytes) else last_sid
        if delivered:
            metrics.CLUSTER_GAPS.labels("refilled").inc()
            log.info("cluster subscription restored: %d missed events delivered from the replay log", delivered)

    def _receive(self, data: bytes | str) -> None:
        """One message from the cluster channel. Total: nothing a message holds can end the subscriber."""
        try:
            message = parse_message(data)
        except InvalidWire as exc:
            self._dropped(exc.reason, "cluster message")
            return
        try:
            if isinstance(message, Heartbeat):
                if message.node_id != self.node_id:
                    self.nodes[message.node_id] = NodeInfo(message.node_id, message.connections,
                                                           message.pool_max, message.timestamp)
            elif isinstance(message, Revoke):
                closed = self.hub.close_token(message.token_hash)
                if closed:
                    log.info("closed %d WebSocket connections of a token revoked on another process", closed)
            else:
                self._handle_event(message)
        except Exception:  # a bug, not an input: count it, keep the subscription
            metrics.CLUSTER_DROPPED.labels("handler_error").inc()
            self._drop_log(logging.ERROR, "cluster message not handled (a bug): %s", _traceback())

    def _dropped(self, reason: str, what: str) -> None:
        metrics.CLUSTER_DROPPED.labels(reason).inc()
        self._drop_log(logging.WARNING, "ignoring an invalid %s (%s)", what, reason)

    def _handle_event(self, message: EventMessage) -> None:
        sid = message.sid
        if sid is not None:
            key = sid_key(sid)
            if self.position is not None and key <= self.position:
                return  # already delivered (the catch-up and the live subscription overlap)
            self.position = key
        if message.origin_node == self.node_id:
            return  # our own echo: delivered locally before it was published
        event = message.event
        event.stream_id = sid
        self.hub.deliver(event)
        metrics.CLUSTER_RECEIVED.inc()
        if message.ts is not None:
            metrics.CLUSTER_LAG.observe(max(0.0, time.time() - message.ts))

    async def announce_revocation(self, token_hash: str) -> None:
        """Tell every process to close the sockets of a revoked token (best effort: the periodic
        token check in realtime.revocation catches what a lost message misses)."""
        msg = {"type": "revoke", "origin_node": self.node_id, "token_hash": token_hash}
        try:
            await self.redis.publish(CHANNEL, json.dumps(msg, separators=(",", ":")))
        except (RedisError, OSError) as exc:
            log.warning("revocation not announced to the cluster (the token check will close its sockets): %s", exc)

    # -- heartbeats and the cluster view ----------------------------------------------------------
    async def _heartbeat(self) -> None:
        beat_log = _RateLimitedLog(30.0)
        while True:
            msg = {"type": "heartbeat", "origin_node": self.node_id, "node_id": self.node_id,
                   "timestamp": time.time(), "connections": self._local_connections(), "pool_max": self.pool_max}
            try:
                await self.redis.publish(CHANNEL, json.dumps(msg, separators=(",", ":")))
                self.task_health["heartbeat"].ok()
            except (RedisError, OSError) as exc:
                beat_log(logging.WARNING, "cluster heartbeat not sent: %s", exc)
            self.prune()
            metrics.CLUSTER_NODES.set(len(self.live_nodes()))
            await asyncio.sleep(self.heartbeat_interval)

    def prune(self) -> None:
        cutoff = time.time() - 3 * self.heartbeat_interval
        for node_id in [n for n, info in self.nodes.items() if info.last_seen < cutoff]:
            log.info("cluster node %s is gone (no heartbeat for %.0f s)", node_id, 3 * self.heartbeat_interval)
            del self.nodes[node_id]

    def live_nodes(self) -> list[NodeInfo]:
        """This process and every other process heard from within three heartbeat intervals."""
        cutoff = time.time() - 3 * self.heartbeat_interval
        me = NodeInfo(self.node_id, self._local_connections(), self.pool_max, time.time())
        return [me, *(info for info in self.nodes.values() if info.last_seen >= cutoff)]

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._supervise("publisher", self._publisher)),
                       loop.create_task(self._supervise("subscriber", self._subscriber)),
                       loop.create_task(self._supervise("heartbeat", self._heartbeat))]

    async def _supervise(self, name: str, run: Callable[[], Any]) -> None:
        """Run one of the link's loops for good: if it ever ends, log why and start it again after a
        jittered backoff. Each loop marks its rounds in task_health, which health reports."""
        health = self.task_health[name]
        delay = 0.1
        while True:
            started = time.monotonic()
            try:
                await run()
                health.last_error = "ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever ended it, the link must go on
                health.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.error("cluster %s task failed; restarting it: %s", name, _traceback())
            health.restarts += 1
            metrics.CLUSTER_TASK_RESTARTS.labels(name).inc()
            if time.monotonic() - started > 60:
                delay = 0.1  # it ran for a while: this is a new failure, not a crash loop
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 10.0)

    def problems(self) -> list[str]:
        """The link's tasks that are not doing their rounds, for /api/v1/health."""
        out = []
        now = time.monotonic()
        for name, health in self.task_health.items():
            idle_publisher = name == "publisher" and not self._backlog
            if not idle_publisher and now - health.last_ok > health.stale_after:
                out.append(f"cluster {name} task stuck or failing: no round for {now - health.last_ok:.0f} s"
                           + (f" (restarted {health.restarts} times; last error: {health.last_error})"
                              if health.restarts else ""))
        return out

    async def stop(self, flush_timeout: float = 2.0) -> None:
        if self._backlog:
            await self.flushed(flush_timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _traceback() -> str:
    import traceback

    return traceback.format_exc(limit=8)
