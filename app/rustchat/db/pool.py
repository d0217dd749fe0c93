"""The per-process PostgreSQL connection pool, on plain `aiopg.connect()` connections.

aiopg's own Pool has no acquire timeout, cannot shrink idle connections down to a minimum and
reports no useful stats, so this module manages the connections itself:

* MIN connections are opened by `start()` and kept open; the reaper refills them.
* MAX is never exceeded; connections still being opened count as in use.
* An acquirer waits at most `acquire_timeout_secs` in a FIFO queue, then gets `PoolTimeout`.
* Idle connections beyond MIN are closed after `idle_timeout_secs`; any connection older than
  `max_lifetime_secs` is replaced on release or by the reaper, never while it is in use.
* A connection that comes back closed, mid-operation or inside a transaction is closed, never reused.

Every state change outside `_connect` is synchronous, so a cancelled task can never leave the
bookkeeping half-updated: there is no await between taking a slot and recording who holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiopg
import psycopg2
import psycopg2.extensions

from rustchat.config import PoolSettings

log = logging.getLogger(__name__)

Params = Sequence[Any] | Mapping[str, Any]

# aiopg applies one timeout to every operation on a connection (and closes the connection when it
# fires); this is only a backstop against a query hanging forever, not a statement budget.
DEFAULT_QUERY_TIMEOUT_SECS = 60.0
CONNECT_TIMEOUT_CAP_SECS = 10.0
CLOSE_WAIT_SECS = 10.0
TIMEOUT_LOG_INTERVAL_SECS = 1.0
CONNECT_FAILURE_LOG_INTERVAL_SECS = 5.0
# Up to this fraction is taken off each connection's lifetime so the MIN connections opened together
# at start are not all replaced in the same reaper tick.
LIFETIME_JITTER = 0.025


class DatabaseUnavailable(Exception):
    """The database cannot serve this request right now (the HTTP layer answers 503)."""


class PoolTimeout(DatabaseUnavailable):
    """No connection became free within the acquire timeout."""


class PoolUnavailable(DatabaseUnavailable):
    """PostgreSQL cannot be reached, a connection broke, or the pool is closed."""


@dataclass(frozen=True)
class PoolStats:
    size: int
    in_use: int
    idle: int
    waiting: int
    max: int
    min: int
    timeouts_total: int

    @property
    def saturation(self) -> float:
        return self.in_use / self.max if self.max else 0.0


@dataclass(eq=False)
class _Conn:
    conn: aiopg.Connection
    created_at: float
    expires_at: float
    last_used: float


class _RateLimit:
    """Allows one event per interval and counts the ones it swallowed in between."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last = float("-inf")
        self._suppressed = 0

    def ready(self, now: float) -> int | None:
        """The number suppressed since the last allowed event, or None if this one is suppressed."""
        if now - self._last < self._interval:
            self._suppressed += 1
            return None
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        return suppressed


def _reusable(conn: aiopg.Connection) -> bool:
    if conn.closed:
        return False
    try:
        if conn.isexecuting():
            return False
        status = conn.raw.get_transaction_status()
    except psycopg2.Error:
        return False
    return status == psycopg2.extensions.TRANSACTION_STATUS_IDLE


async def _prepare_session(conn: aiopg.Connection) -> None:
    # A task cancelled mid-query makes aiopg close the socket, but PostgreSQL only notices a
    # vanished client when it next talks to it: without this check the abandoned statement runs
    # to completion, holding its locks and a server slot. Available from PostgreSQL 14, Linux only.
    if conn.server_version < 140000:
        return
    async with conn.cursor() as cur:
        try:
            await cur.execute("SET client_connection_check_interval = '1s'")
        except psycopg2.Error as exc:
            log.debug("client_connection_check_interval not available: %s", _one_line(exc))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Pool:
    def __init__(
        self,
        dsn: str,
        settings: PoolSettings,
        *,
        application_name: str = "rustchat",
        query_timeout: float = DEFAULT_QUERY_TIMEOUT_SECS,
    ) -> None:
        if settings.min_connections > settings.max_connections:
            raise ValueError("min_connections exceeds max_connections")
        self.settings = settings
        self._dsn = dsn
        self._application_name = application_name
        self._query_timeout = query_timeout
        self._connect_timeout = min(settings.acquire_timeout_secs, CONNECT_TIMEOUT_CAP_SECS)
        self._reap_interval = max(
            0.05, min(settings.idle_timeout_secs, settings.max_lifetime_secs, 30.0) / 2
        )
        self._idle: deque[_Conn] = deque()  # right end = most recently used
        self._in_use: dict[aiopg.Connection, _Conn] = {}
        self._opening = 0
        self._waiters: deque[asyncio.Future[_Conn]] = deque()
        self._openers: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._closed = False
        self._timeouts_total = 0
        self._timeout_log = _RateLimit(TIMEOUT_LOG_INTERVAL_SECS)
        self._connect_log = _RateLimit(CONNECT_FAILURE_LOG_INTERVAL_SECS)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open MIN connections (at least one, to prove the DSN works) and start the reaper."""
        if self._closed:
            raise PoolUnavailable("pool is closed")
        if self._reaper is not None:
            return
        wanted = max(max(self.settings.min_connections, 1) - self._size(), 0)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._connect()) for _ in range(wanted)]

        def opened() -> list[aiopg.Connection]:
            return [t.result() for t in tasks if t.done() and not t.cancelled() and t.exception() is None]

        # All or none: a failed or cancelled start must not strand open sessions.
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:
            for conn in opened():
                conn.close()
            raise
        failure = next((t.exception() for t in tasks if t.exception() is not None), None)
        if failure is not None:
            for conn in opened():
                conn.close()
            raise failure
        for conn in opened():
            self._put(self._record(conn))
        self._reaper = loop.create_task(self._reap_loop())
        log.debug("pool started: %d connections (max %d)", wanted, self.settings.max_connections)

    async def close(self, *, grace_secs: float = CLOSE_WAIT_SECS) -> None:
        """Stop the reaper, close idle connections, wait up to `grace_secs` for in-use ones."""
        if self._closed:
            return
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(PoolUnavailable("pool is closed"))
        for task in list(self._openers):
            task.cancel()
        await asyncio.gather(*self._openers, return_exceptions=True)
        while self._idle:
            self._discard(self._idle.pop())
        if self._in_use:
            self._drained.clear()
            try:
                async with asyncio.timeout(grace_secs):
                    await self._drained.wait()
            except TimeoutError:
                log.warning("pool closing with %d connections still in use; closing them", len(self._in_use))
                for rec in list(self._in_use.values()):
                    self._discard(rec)
                self._in_use.clear()

    # -- acquiring -------------------------------------------------------------------------------

    def acquire(self) -> AbstractAsyncContextManager[aiopg.Connection]:
        """`async with pool.acquire() as conn:` — an autocommit connection, returned on exit."""
        return _Acquired(self)

    async def _get(self) -> _Conn:
        if self._closed:
            raise PoolUnavailable("pool is closed")
        loop = asyncio.get_running_loop()
        # Only take an idle connection directly when nobody queued earlier, so waiting is FIFO.
        if not self._waiters:
            rec = self._pop_idle()
            if rec is not None:
                return rec
        fut: asyncio.Future[_Conn] = loop.create_future()
        self._waiters.append(fut)
        # The timer fails the future instead of cancelling this task, so a timeout and a hand-off
        # can never both happen to one waiter.
        timer = loop.call_later(self.settings.acquire_timeout_secs, self._expire, fut)
        self._grow()
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Cancelled after a connection was handed over but before this task resumed.
                self._release(fut.result())
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            raise
        finally:
            timer.cancel()

    def _expire(self, fut: asyncio.Future[_Conn]) -> None:
        if fut.done():
            return
        waiting = len(self._waiters)
        with contextlib.suppress(ValueError):
            self._waiters.remove(fut)
        self._timeouts_total += 1
        in_use = len(self._in_use) + self._opening
        suppressed = self._timeout_log.ready(asyncio.get_running_loop().time())
        if suppressed is not None:
            log.warning(
                "pool timed out after %gs waiting for a connection (max %d, in use %d, waiters %d)%s",
                self.settings.acquire_timeout_secs, self.settings.max_connections, in_use, waiting,
                f"; {suppressed} more timeouts since the last report" if suppressed else "",
            )
        fut.set_exception(
            PoolTimeout(
                f"no database connection free within {self.settings.acquire_timeout_secs:g}s"
                f" (max {self.settings.max_connections}, in use {in_use}, waiters {waiting})"
            )
        )

    def _pop_idle(self) -> _Conn | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            rec = self._idle.pop()
            if rec.conn.closed or now >= rec.expires_at:
                self._discard(rec)
                continue
            self._in_use[rec.conn] = rec
            return rec
        return None

    # -- returning -------------------------------------------------------------------------------

    def _release(self, rec: _Conn) -> None:
        self._in_use.pop(rec.conn, None)
        now = asyncio.get_running_loop().time()
        if self._closed or now >= rec.expires_at or not _reusable(rec.conn):
            self._discard(rec)
            self._grow()
        else:
            rec.last_used = now
            self._put(rec)
        if not self._in_use:
            self._drained.set()

    def _put(self, rec: _Conn) -> None:
        """Hand a free connection to the oldest waiter, or park it as idle."""
        if self._closed:
            self._discard(rec)
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                self._in_use[rec.conn] = rec
                fut.set_result(rec)
                return
        self._idle.append(rec)

    def _discard(self, rec: _Conn) -> None:
        try:
            rec.conn.close()
        except Exception:
            log.debug("error closing a pooled connection", exc_info=True)

    # -- opening ---------------------------------------------------------------------------------

    def _size(self) -> int:
        return len(self._idle) + len(self._in_use) + self._opening

    def _grow(self) -> None:
        """Start opening connections for queued waiters and for MIN, never beyond MAX."""
        if self._closed:
            return
        for_waiters = len(self._waiters) - self._opening
        for_min = self.settings.min_connections - self._size()
        room = self.settings.max_connections - self._size()
        for _ in range(min(max(for_waiters, for_min), room)):
            self._opening += 1
            task = asyncio.get_running_loop().create_task(self._open_one())
            self._openers.add(task)
            task.add_done_callback(self._openers.discard)

    async def _open_one(self) -> None:
        try:
            conn = await self._connect()
        except PoolUnavailable as exc:
            self._opening -= 1
            suppressed = self._connect_log.ready(asyncio.get_running_loop().time())
            if suppressed is not None:
                log.warning(
                    "pool could not open a connection: %s%s",
                    exc, f" ({suppressed} more failures since the last report)" if suppressed else "",
                )
            # Fail the oldest waiter now rather than letting it wait out the acquire timeout
            # against a server that is down; the next waiter gets its own attempt.
            while self._waiters:
                fut = self._waiters.popleft()
                if not fut.done():
                    fut.set_exception(PoolUnavailable(str(exc)))
                    break
            if self._waiters:
                self._grow()
            return
        except BaseException:
            self._opening -= 1
            raise
        self._opening -= 1
        self._put(self._record(conn))

    async def _connect(self) -> aiopg.Connection:
        try:
            # aiopg closes the half-open connection itself when this timeout cancels it.
            async with asyncio.timeout(self._connect_timeout):
                conn = await aiopg.connect(
                    self._dsn,
                    timeout=self._query_timeout,
                    enable_json=True,
                    enable_hstore=False,
                    enable_uuid=True,
                    application_name=self._application_name,
                )
                try:
                    await _prepare_session(conn)
                except BaseException:
                    conn.close()
                    raise
                return conn
        except TimeoutError as exc:
            raise PoolUnavailable(
                f"connecting to PostgreSQL timed out after {self._connect_timeout:g}s"
            ) from exc
        except (psycopg2.Error, OSError) as exc:
            raise PoolUnavailable(f"cannot connect to PostgreSQL: {_one_line(exc)}") from exc

    def _record(self, conn: aiopg.Connection) -> _Conn:
        now = asyncio.get_running_loop().time()
        lifetime = self.settings.max_lifetime_secs * (1 - random.uniform(0, LIFETIME_JITTER))
        return _Conn(conn, created_at=now, expires_at=now + lifetime, last_used=now)

    # -- reaper ----------------------------------------------------------------------------------

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            try:
                self._reap()
            except Exception:
                log.exception("pool reaper failed")

    def _reap(self) -> None:
        now = asyncio.get_running_loop().time()
        # Broken and expired idle connections go regardless of MIN; _grow replaces them below.
        for rec in [r for r in self._idle if r.conn.closed or now >= r.expires_at]:
            self._idle.remove(rec)
            self._discard(rec)
        # Left end = least recently used, so the connections that stay are the ones in rotation.
        while (
            self._idle
            and self._size() > self.settings.min_connections
            and now - self._idle[0].last_used >= self.settings.idle_timeout_secs
        ):
            self._discard(self._idle.popleft())
        self._grow()

    # -- queries ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiopg.Cursor]:
        async with self.acquire() as conn:
            cur = await conn.cursor()
            try:
                await cur.execute("BEGIN")
                try:
                    yield cur
                except BaseException as exc:
                    # On cancellation skip the ROLLBACK round trip: release sees the open
                    # transaction and closes the connection, which rolls it back server-side.
                    if isinstance(exc, Exception) and not conn.closed:
                        with contextlib.suppress(psycopg2.Error, TimeoutError):
                            await cur.execute("ROLLBACK")
                    raise
                await cur.execute("COMMIT")
            finally:
                cur.close()

    def transaction(self) -> AbstractAsyncContextManager[aiopg.Cursor]:
        """Acquire + BEGIN; COMMIT when the block succeeds, ROLLBACK when it raises. Yields a cursor."""
        return self._transaction()

    async def fetch(self, sql: str, params: Params = ()) -> list[tuple]:
        async with self.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, params or None)
            return await cur.fetchall()

    async def fetchrow(self, sql: str, params: Params = ()) -> tuple | None:
        async with self.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, params or None)
            return await cur.fetchone()

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchrow(sql, params)
        return None if row is None else row[0]

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; return its rowcount."""
        async with self.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, params or None)
            return cur.rowcount

    async def fetch_dicts(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        async with self.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, params or None)
            rows = await cur.fetchall()
            names = [col.name for col in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def fetchrow_dict(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        async with self.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, params or None)
            row = await cur.fetchone()
            names = [col.name for col in cur.description or ()]
        return None if row is None else dict(zip(names, row, strict=True))

    # -- observability ---------------------------------------------------------------------------

    def stats(self) -> PoolStats:
        in_use = len(self._in_use) + self._opening
        return PoolStats(
            size=in_use + len(self._idle),
            in_use=in_use,
            idle=len(self._idle),
            waiting=len(self._waiters),
            max=self.settings.max_connections,
            min=self.settings.min_connections,
            timeouts_total=self._timeouts_total,
        )


class _Acquired:
    """The `pool.acquire()` context: returns the connection however the block ends."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._rec: _Conn | None = None

    async def __aenter__(self) -> aiopg.Connection:
        self._rec = await self._pool._get()
        return self._rec.conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        rec, self._rec = self._rec, None
        if rec is None:
            return
        self._pool._release(rec)
        # A connection that died under the query means the server went away: report it as the
        # database being unavailable (503), not as a bug in the caller (500).
        if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError) and rec.conn.closed:
            raise PoolUnavailable(f"lost the database connection: {_one_line(exc)}") from exc
