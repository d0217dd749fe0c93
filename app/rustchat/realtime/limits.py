"""Per-user WebSocket connection limits and the connection registry presence is built on.

`LocalConnectionLimiter` is this process's own bookkeeping: which connections are live here and
since when. On its own (single node) it is the limiter.

`RedisConnectionLimiter` makes the limit cluster-wide. Every connect is one Lua script (EVALSHA)
that, atomically on Redis,

1. prunes the user's stale connections: members of `rustchat:presence:user:{user_id}:connections`
   whose `rustchat:conn:heartbeat:{user_id}:{connection_id}` key has expired (their node died),
2. checks the live count against the limit, and
3. registers the connection in the set, the counter `rustchat:conn:count:{user_id}` (= SCARD) and
   its heartbeat key (value: the node id, with a TTL).

A clean close runs the release script (SREM, DEL the heartbeat key, counter updated, DEL at 0).
A background task refreshes the heartbeat keys of this process's connections every refresh
interval, and one process at a time sweeps every user's set, so a killed node's connections stop
counting (and its users go offline) within one TTL plus one refresh.

When Redis is unreachable the limiter never refuses everything: it falls back to enforcing the
same limit per process (`degraded_reason` says so, for health), logs one warning per outage, and
when the refresher reaches Redis again it re-registers every live connection of this process, so
the cluster counts are right again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

SET_PATTERN = "rustchat:presence:user:*:connections"
SWEEP_LOCK = "rustchat:conn:sweep"
# Redis calls on the connect path are bounded: a hanging Redis means the per-process fallback.
REDIS_CALL_TIMEOUT = 3.0
# While degraded, how often the refresher probes Redis (at most; the refresh interval if shorter).
PROBE_SECS = 2.0
# Releases that could not reach Redis, applied when it returns (bounded; the TTL cleans up the rest).
MAX_PENDING_RELEASES = 100_000
PIPELINE_CHUNK = 500

REDIS_ERRORS = (RedisError, OSError, TimeoutError)

ONLINE, OFFLINE = "online", "offline"


def set_key(user_id: str) -> str:
    return f"rustchat:presence:user:{user_id}:connections"


def count_key(user_id: str) -> str:
    return f"rustchat:conn:count:{user_id}"


def heartbeat_prefix(user_id: str) -> str:
    return f"rustchat:conn:heartbeat:{user_id}:"


def heartbeat_key(user_id: str, connection_id: str) -> str:
    return heartbeat_prefix(user_id) + connection_id


def user_of_set_key(key: str | bytes) -> str | None:
    if isinstance(key, bytes):
        key = key.decode()
    head, tail = "rustchat:presence:user:", ":connections"
    if key.startswith(head) and key.endswith(tail):
        return key[len(head):-len(tail)] or None
    return None


# Shared by every script. The heartbeat keys of the user's *other* connections are computed inside
# the script from the set's members rather than passed as KEYS (they are not known beforehand).
# That is fine on a standalone Redis (with or without replicas); on Redis Cluster it would need the
# user's keys in one hash slot, e.g. `{user_id}` hash tags, which the contract's key names do not use.
_LUA_COMMON = """
local function prune(set_key, prefix)
  local pruned = 0
  for _, member in ipairs(redis.call('SMEMBERS', set_key)) do
    if redis.call('EXISTS', prefix .. member) == 0 then
      redis.call('SREM', set_key, member)
      pruned = pruned + 1
    end
  end
  return pruned
end
local function store_count(set_key, count_key)
  local n = redis.call('SCARD', set_key)
  if n == 0 then redis.call('DEL', count_key) else redis.call('SET', count_key, n) end
  return n
end
"""

# KEYS: set, counter, this connection's heartbeat key.
# ARGV: connection id, limit, TTL (ms), node id, the user's heartbeat key prefix.
# Returns {allowed (0/1), live count, went online (0/1)}.
_ACQUIRE_LUA = _LUA_COMMON + """
prune(KEYS[1], ARGV[5])
local live = redis.call('SCARD', KEYS[1])
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  -- The same connection again (a resumed session): it already holds its slot.
  redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[3])
  return {1, store_count(KEYS[1], KEYS[2]), 0}
end
if live >= tonumber(ARGV[2]) then
  return {0, store_count(KEYS[1], KEYS[2]), 0}
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[3])
local n = store_count(KEYS[1], KEYS[2])
if live == 0 then return {1, n, 1} end
return {1, n, 0}
"""

# KEYS: set, counter, this connection's heartbeat key.
# ARGV: connection id, node id, the user's heartbeat key prefix.
# Returns {removed (0/1), live count, went offline (0/1)}.
_RELEASE_LUA = _LUA_COMMON + """
local owner = redis.call('GET', KEYS[3])
if owner and owner ~= ARGV[2] then
  -- Another node has taken this connection over (resumed there): not ours to remove.
  return {0, redis.call('SCARD', KEYS[1]), 0}
end
redis.call('DEL', KEYS[3])
local removed = redis.call('SREM', KEYS[1], ARGV[1])
local pruned = prune(KEYS[1], ARGV[3])
local n = store_count(KEYS[1], KEYS[2])
if n == 0 and removed + pruned > 0 then return {removed, n, 1} end
return {removed, n, 0}
"""

# Re-registration of connections that are live on this node (no limit check: they are open).
# KEYS: set, counter, then one heartbeat key per connection.
# ARGV: TTL (ms), node id, the user's heartbeat key prefix, then the connection ids (same order).
# Returns the live count.
_REGISTER_LUA = _LUA_COMMON + """
for i = 3, #KEYS do
  redis.call('SADD', KEYS[1], ARGV[i + 1])
  local owner = redis.call('GET', KEYS[i])
  if not owner or owner == ARGV[2] then
    redis.call('SET', KEYS[i], ARGV[2], 'PX', ARGV[1])
  end
end
prune(KEYS[1], ARGV[3])
return store_count(KEYS[1], KEYS[2])
"""

# The sweep, per user. KEYS: set, counter. ARGV: the user's heartbeat key prefix.
# Returns {live count, pruned}.
_PRUNE_LUA = _LUA_COMMON + """
local pruned = prune(KEYS[1], ARGV[1])
return {store_count(KEYS[1], KEYS[2]), pruned}
"""

# Read-only live counts. KEYS: the users' sets. ARGV: their heartbeat key prefixes (same order).
_LIVE_LUA = """
local out = {}
for i = 1, #KEYS do
  local n = 0
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    if redis.call('EXISTS', ARGV[i] .. member) == 1 then n = n + 1 end
  end
  out[i] = n
end
return out
"""


class ConnectionLimiter(Protocol):
    async def acquire(self, user_id: str, connection_id: str, limit: int) -> bool: ...
    async def release(self, user_id: str, connection_id: str) -> None: ...
    def count(self, user_id: str) -> int: ...


class LocalConnectionLimiter:
    """This process's live connections: user -> {connection id: when it was acquired}."""

    def __init__(self) -> None:
        self._live: dict[str, dict[str, float]] = {}

    # -- the limiter interface ------------------------------------------------------------------
    async def acquire(self, user_id: str, connection_id: str, limit: int) -> bool:
        return self.try_add(user_id, connection_id, limit)[0]

    async def release(self, user_id: str, connection_id: str) -> None:
        self.remove(user_id, connection_id)

    def count(self, user_id: str) -> int:
        return len(self._live.get(user_id, ()))

    # -- bookkeeping ----------------------------------------------------------------------------
    def try_add(self, user_id: str, connection_id: str, limit: int) -> tuple[bool, bool]:
        """(allowed, the user went from 0 to 1 connection here)."""
        live = self._live.get(user_id, {})
        if connection_id in live:
            return True, False
        if len(live) >= limit:
            return False, False
        return True, self.add(user_id, connection_id)

    def add(self, user_id: str, connection_id: str) -> bool:
        """Record a connection without a limit check; True when it is the user's first here."""
        live = self._live.setdefault(user_id, {})
        first = not live
        live.setdefault(connection_id, time.monotonic())
        return first

    def remove(self, user_id: str, connection_id: str) -> bool:
        """Forget a connection; True when it was the user's last one here."""
        live = self._live.get(user_id)
        if live is None or live.pop(connection_id, None) is None:
            return False
        if not live:
            del self._live[user_id]
            return True
        return False

    def has(self, user_id: str, connection_id: str) -> bool:
        return connection_id in self._live.get(user_id, ())

    def users(self) -> list[str]:
        return list(self._live)

    def connections(self) -> list[tuple[str, str]]:
        return [(user, conn) for user, live in self._live.items() for conn in live]

    def oldest_first(self, user_id: str) -> list[str]:
        live = self._live.get(user_id, {})
        return sorted(live, key=live.__getitem__)

    def total(self) -> int:
        return sum(len(live) for live in self._live.values())


StatusCallback = Callable[[str, str], None]


class RedisConnectionLimiter:
    """The cluster-wide limiter (see the module docstring); per process until `start(redis)`.

    `on_status(user_id, "online"|"offline")` is called on presence transitions: cluster-wide ones
    while Redis is in use, this process's own otherwise.
    """

    def __init__(self, node_id: str, *, ttl_secs: float = 60.0, refresh_secs: float = 20.0,
                 on_status: StatusCallback | None = None) -> None:
        self.node_id = node_id
        self.ttl_ms = max(1, int(ttl_secs * 1000))
        self.refresh_secs = refresh_secs
        self.local = LocalConnectionLimiter()
        self.on_status = on_status
        self.redis: Any = None
        # None while limits are cluster-wide; otherwise why they are per process (shown in health).
        self.degraded_reason: str | None = None
        self.last_round_ok = time.monotonic()  # the refresher's last complete round (health)
        self.outages = 0
        self._pending_releases: dict[tuple[str, str], None] = {}
        self._task: asyncio.Task[None] | None = None
        self._scripts: dict[str, Any] = {}

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, redis: Any) -> None:
        """Go cluster-wide with this Redis client and start the heartbeat refresher."""
        self.redis = redis
        self._scripts = {
            name: redis.register_script(text)
            for name, text in (("acquire", _ACQUIRE_LUA), ("release", _RELEASE_LUA), ("register", _REGISTER_LUA),
                               ("prune", _PRUNE_LUA), ("live", _LIVE_LUA))
        }
        self._task = asyncio.get_running_loop().create_task(self._refresher())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def cluster_wide(self) -> bool:
        return self.redis is not None and self.degraded_reason is None

    # -- the limiter interface ------------------------------------------------------------------
    async def acquire(self, user_id: str, connection_id: str, limit: int) -> bool:
        if self.cluster_wide:
            try:
                allowed, _count, online = await asyncio.wait_for(self._scripts["acquire"](
                    keys=[set_key(user_id), count_key(user_id), heartbeat_key(user_id, connection_id)],
                    args=[connection_id, limit, self.ttl_ms, self.node_id, heartbeat_prefix(user_id)],
                ), REDIS_CALL_TIMEOUT)
            except REDIS_ERRORS as exc:
                self._degrade(exc)
            else:
                if not allowed:
                    return False
                self.local.add(user_id, connection_id)
                self._pending_releases.pop((user_id, connection_id), None)
                if online:
                    self._status(user_id, ONLINE)
                return True
        allowed, first = self.local.try_add(user_id, connection_id, limit)
        if first:
            self._status(user_id, ONLINE)
        return allowed

    async def release(self, user_id: str, connection_id: str) -> None:
        last_here = self.local.remove(user_id, connection_id)
        if self.cluster_wide:
            try:
                _removed, _count, offline = await asyncio.wait_for(self._scripts["release"](
                    keys=[set_key(user_id), count_key(user_id), heartbeat_key(user_id, connection_id)],
                    args=[connection_id, self.node_id, heartbeat_prefix(user_id)],
                ), REDIS_CALL_TIMEOUT)
            except REDIS_ERRORS as exc:
                self._degrade(exc)
            else:
                if offline:
                    self._status(user_id, OFFLINE)
                return
        if self.redis is None:
            if last_here:
                self._status(user_id, OFFLINE)
            return
        # Redis is away: the user may still be connected to other nodes, so "offline" waits for
        # Redis to say so (see run_round).
        if len(self._pending_releases) < MAX_PENDING_RELEASES:
            self._pending_releases[(user_id, connection_id)] = None

    def count(self, user_id: str) -> int:
        """This process's connections of the user."""
        return self.local.count(user_id)

    # -- queries ----------------------------------------------------------------------------------
    async def live_counts(self, user_ids: Sequence[str]) -> dict[str, int]:
        """Each user's live connections: cluster-wide when Redis is in use, else this process's."""
        counts = {u: self.local.count(u) for u in user_ids}
        if not self.cluster_wide or not user_ids:
            return counts
        try:
            found = await asyncio.wait_for(self._scripts["live"](
                keys=[set_key(u) for u in user_ids], args=[heartbeat_prefix(u) for u in user_ids]
            ), REDIS_CALL_TIMEOUT)
        except REDIS_ERRORS as exc:
            self._degrade(exc)
            return counts
        # A connection accepted here while Redis was away is live even before it is re-registered.
        return {u: max(int(n), counts[u]) for u, n in zip(user_ids, found, strict=True)}

    async def statuses(self, user_ids: Sequence[str]) -> dict[str, str]:
        counts = await self.live_counts(user_ids)
        return {u: ONLINE if n > 0 else OFFLINE for u, n in counts.items()}

    def surplus(self, limit: int, counts: dict[str, int]) -> dict[str, list[str]]:
        """Per user over `limit`: this process's connections to close, oldest first."""
        out = {}
        for user_id, n in counts.items():
            extra = n - limit
            if extra > 0:
                out[user_id] = self.local.oldest_first(user_id)[:extra]
        return out

    # -- Redis outage -----------------------------------------------------------------------------
    def _degrade(self, exc: BaseException) -> None:
        if self.degraded_reason is not None:
            return
        self.outages += 1
        self.degraded_reason = "redis unavailable: connection limits and presence are enforced per process"
        log.warning("Redis unavailable for connection limits (%s): enforcing max_simultaneous_connections per "
                    "process until it returns", _describe(exc))

    def _status(self, user_id: str, status: str) -> None:
        if self.on_status is not None:
            self.on_status(user_id, status)

    # -- the refresher ----------------------------------------------------------------------------
    async def _refresher(self) -> None:
        while True:
            pause = self.refresh_secs if self.degraded_reason is None else min(self.refresh_secs, PROBE_SECS)
            await asyncio.sleep(pause)
            try:
                await asyncio.wait_for(self.run_round(), max(self.refresh_secs, 10.0))
                self.last_round_ok = time.monotonic()
            except REDIS_ERRORS as exc:
                self._degrade(exc)
            except Exception:
                log.exception("connection heartbeat refresh failed")

    def problems(self) -> list[str]:
        """For /api/v1/health: the refresher not completing rounds while Redis is considered up
        (a Redis outage is reported as such, through degraded_reason)."""
        late = time.monotonic() - self.last_round_ok
        if self._task is None or self.degraded_reason is not None or late <= 3 * self.refresh_secs + 10:
            return []
        if self._task.done():
            return ["connection-limit refresher has stopped"]
        return [f"connection-limit refresher stuck or failing: no complete round for {late:.0f} s"]

    async def run_round(self) -> None:
        """One refresher round: heartbeats (or recovery after an outage), then the sweep."""
        if self.degraded_reason is not None:
            await self.redis.ping()
            released = await self._apply_pending_releases()
            registered = await self._register(self.local.connections())
            self.degraded_reason = None
            log.info("Redis is back: connection limits are cluster-wide again (%d live connections re-registered, "
                     "%d releases applied)", registered, len(released))
            # Whoever closed their last connection here meanwhile is offline unless connected
            # elsewhere; presence reads the live count (from Redis again) before announcing it.
            for user_id in dict.fromkeys(u for u, _ in released):
                if not self.local.count(user_id):
                    self._status(user_id, OFFLINE)
        else:
            await self._refresh()
        await self._sweep()

    async def _refresh(self) -> None:
        conns = self.local.connections()
        missing: list[tuple[str, str]] = []
        for chunk in _chunks(conns, PIPELINE_CHUNK):
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id, conn_id in chunk:
                    pipe.pexpire(heartbeat_key(user_id, conn_id), self.ttl_ms)
                results = await pipe.execute()
            missing.extend(c for c, ok in zip(chunk, results, strict=True) if not ok)
        # Gone from Redis although live here (Redis restarted, or this process stalled past the TTL).
        missing = [(u, c) for u, c in missing if self.local.has(u, c)]
        if missing:
            log.info("re-registering %d connections whose heartbeat keys were gone", len(missing))
            await self._register(missing)

    async def _register(self, conns: Iterable[tuple[str, str]]) -> int:
        by_user: dict[str, list[str]] = {}
        for user_id, conn_id in conns:
            by_user.setdefault(user_id, []).append(conn_id)
        script = self._scripts["register"]
        for chunk in _chunks(list(by_user.items()), PIPELINE_CHUNK):
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id, conn_ids in chunk:
                    await script(
                        keys=[set_key(user_id), count_key(user_id), *(heartbeat_key(user_id, c) for c in conn_ids)],
                        args=[self.ttl_ms, self.node_id, heartbeat_prefix(user_id), *conn_ids],
                        client=pipe,
                    )
                await pipe.execute()
        return sum(len(c) for c in by_user.values())

    async def _apply_pending_releases(self) -> list[tuple[str, str]]:
        pending = [p for p in self._pending_releases if not self.local.has(*p)]
        script = self._scripts["release"]
        for chunk in _chunks(pending, PIPELINE_CHUNK):
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id, conn_id in chunk:
                    await script(keys=[set_key(user_id), count_key(user_id), heartbeat_key(user_id, conn_id)],
                                 args=[conn_id, self.node_id, heartbeat_prefix(user_id)], client=pipe)
                await pipe.execute()
            for done in chunk:
                self._pending_releases.pop(done, None)
        for again in [p for p in self._pending_releases if self.local.has(*p)]:
            del self._pending_releases[again]  # acquired again (resumed) meanwhile
        return pending

    async def _sweep(self) -> None:
        """Prune every user's stale connections, one process per interval across the cluster.

        Users whose last connection died with its node go offline here (the script that removes
        their last member reports it, so exactly one process announces it).
        """
        lock_ms = max(100, int(self.refresh_secs * 800))
        if not await self.redis.set(SWEEP_LOCK, self.node_id, nx=True, px=lock_ms):
            return
        script = self._scripts["prune"]
        batch: list[str] = []
        async for key in self.redis.scan_iter(match=SET_PATTERN, count=1000):
            user_id = user_of_set_key(key)
            if user_id is not None:
                batch.append(user_id)
            if len(batch) >= PIPELINE_CHUNK:
                await self._prune(script, batch)
                batch = []
        if batch:
            await self._prune(script, batch)

    async def _prune(self, script: Any, user_ids: list[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                await script(keys=[set_key(user_id), count_key(user_id)], args=[heartbeat_prefix(user_id)],
                             client=pipe)
            results = await pipe.execute()
        for user_id, (count, pruned) in zip(user_ids, results, strict=True):
            if pruned:
                log.info("pruned %d expired connections of user %s (%d live)", pruned, user_id, count)
                if count == 0 and not self.local.count(user_id):
                    self._status(user_id, OFFLINE)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
