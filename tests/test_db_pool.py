"""The connection pool against a real PostgreSQL, each test in a throwaway database of its own.

Backends are counted in pg_stat_activity by application_name and database, so these tests see
what the server sees, not only what the pool believes. Timing assertions stay coarse on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import aiopg
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest
from psycopg2 import sql

from rustchat.config import PoolSettings
from rustchat.db.pool import DatabaseUnavailable, Pool, PoolStats, PoolTimeout, PoolUnavailable

ADMIN_URL = os.environ.get("RUSTCHAT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
PROBE_APP = "rustchat_pooltest_probe"


@dataclass(frozen=True)
class Database:
    name: str
    dsn: str


@pytest.fixture
def database() -> Iterator[Database]:
    name = f"rustchat_pooltest_{secrets.token_hex(4)}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield Database(name, psycopg2.extensions.make_dsn(ADMIN_URL, dbname=name))
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


@pytest.fixture
async def make_pool(database: Database) -> AsyncIterator[Callable[..., Awaitable[Pool]]]:
    pools: list[Pool] = []

    async def make(start: bool = True, **overrides: float) -> Pool:
        values = {
            "max_connections": 5,
            "min_connections": 1,
            "acquire_timeout_secs": 5.0,
            "idle_timeout_secs": 60.0,
            "max_lifetime_secs": 60.0,
        } | overrides
        pool = Pool(database.dsn, PoolSettings(**values))  # type: ignore[arg-type]
        pools.append(pool)
        if start:
            await pool.start()
        return pool

    yield make
    for pool in pools:
        await pool.close(grace_secs=1.0)


async def backends(database: Database) -> list[int]:
    """Backend pids of the pool's sessions, as PostgreSQL reports them."""
    async with (
        aiopg.connect(ADMIN_URL, application_name=PROBE_APP, enable_hstore=False) as conn,
        conn.cursor() as cur,
    ):
        await cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'rustchat' AND datname = %s",
            (database.name,),
        )
        return sorted(row[0] for row in await cur.fetchall())


async def terminate(pids: list[int]) -> None:
    async with (
        aiopg.connect(ADMIN_URL, application_name=PROBE_APP, enable_hstore=False) as conn,
        conn.cursor() as cur,
    ):
        await cur.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 8.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.05)


async def backend_pid(conn: aiopg.Connection) -> int:
    async with conn.cursor() as cur:
        await cur.execute("SELECT pg_backend_pid()")
        return (await cur.fetchone())[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- sizing ----------------------------------------------------------------------------------------


async def test_start_opens_min_connections(make_pool, database: Database) -> None:
    pool = await make_pool(min_connections=3, max_connections=5)
    assert len(await backends(database)) == 3
    assert pool.stats() == PoolStats(size=3, in_use=0, idle=3, waiting=0, max=5, min=3, timeouts_total=0)
    assert pool.stats().saturation == 0.0


async def test_max_never_exceeded_under_50_concurrent_acquirers(make_pool, database: Database) -> None:
    pool = await make_pool(min_connections=1, max_connections=5, acquire_timeout_secs=30.0)
    peaks = {"in_use": 0, "size": 0, "backends": 0}
    done = asyncio.Event()

    async def monitor() -> None:
        while not done.is_set():
            stats = pool.stats()
            peaks["in_use"] = max(peaks["in_use"], stats.in_use)
            peaks["size"] = max(peaks["size"], stats.size)
            peaks["backends"] = max(peaks["backends"], len(await backends(database)))

    async def worker() -> int:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT pg_backend_pid() FROM pg_sleep(0.05)")
            return (await cur.fetchone())[0]

    watcher = asyncio.create_task(monitor())
    pids = await asyncio.gather(*(worker() for _ in range(50)))
    done.set()
    await watcher

    assert len(pids) == 50
    assert len(set(pids)) <= 5
    assert peaks["in_use"] == 5  # saturated, but never beyond
    assert peaks["size"] <= 5
    assert 1 <= peaks["backends"] <= 5
    stats = pool.stats()
    assert (stats.in_use, stats.waiting, stats.timeouts_total) == (0, 0, 0)
    assert len(await backends(database)) <= 5


async def test_idle_connections_closed_down_to_min(make_pool, database: Database) -> None:
    pool = await make_pool(min_connections=1, max_connections=4, idle_timeout_secs=0.5)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(4):
            await stack.enter_async_context(pool.acquire())
        assert pool.stats().in_use == 4
    assert pool.stats().idle == 4
    assert len(await backends(database)) == 4

    async def shrunk() -> bool:
        return pool.stats().size == 1 and len(await backends(database)) == 1

    await eventually(shrunk, "idle connections closed down to MIN")
    # and it stays at MIN rather than dropping to zero
    await asyncio.sleep(1.0)
    assert pool.stats().size == 1
    assert len(await backends(database)) == 1


async def test_connections_replaced_after_max_lifetime(make_pool, database: Database) -> None:
    pool = await make_pool(min_connections=1, max_connections=1, max_lifetime_secs=1.0)
    (first,) = await backends(database)
    assert await pool.fetchval("SELECT pg_backend_pid()") == first

    async def replaced() -> bool:
        return (await backends(database)) not in ([], [first])

    await eventually(replaced, "an idle connection past max_lifetime replaced by the reaper")
    (second,) = await backends(database)
    assert await pool.fetchval("SELECT pg_backend_pid()") == second


async def test_connection_in_use_outlives_max_lifetime_until_released(make_pool) -> None:
    pool = await make_pool(min_connections=1, max_connections=1, max_lifetime_secs=1.0)
    async with pool.acquire() as conn:
        pid = await backend_pid(conn)
        await asyncio.sleep(1.6)
        assert not conn.closed
        assert await backend_pid(conn) == pid
    assert await pool.fetchval("SELECT pg_backend_pid()") != pid


async def test_min_refilled_after_backends_die(make_pool, database: Database) -> None:
    pool = await make_pool(min_connections=2, max_connections=4, idle_timeout_secs=0.5)
    old = await backends(database)
    assert len(old) == 2
    await terminate(old)

    async def refilled() -> bool:
        now = await backends(database)
        return len(now) == 2 and not set(now) & set(old)

    await eventually(refilled, "MIN refilled with new sessions")
    assert pool.stats().size == 2
    assert await pool.fetchval("SELECT 1") == 1


# -- acquire timeout -------------------------------------------------------------------------------


async def test_acquire_times_out_then_recovers(make_pool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rustchat.db.pool")
    pool = await make_pool(min_connections=0, max_connections=2, acquire_timeout_secs=0.3)
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(pool.acquire()) for _ in range(2)]
        pids = {await backend_pid(conn) for conn in held}
        started = loop.time()
        with pytest.raises(PoolTimeout) as raised:
            async with pool.acquire():
                pass
        assert 0.2 <= loop.time() - started < 5.0
        assert isinstance(raised.value, DatabaseUnavailable)
        stats = pool.stats()
        assert (stats.in_use, stats.waiting, stats.timeouts_total, stats.saturation) == (2, 0, 1, 1.0)
    lines = [r for r in caplog.records if "pool timed out" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "max 2" in lines[0].getMessage() and "in use 2" in lines[0].getMessage()

    # released: the next acquirer is served at once, by one of the same sessions
    async with pool.acquire() as conn:
        assert await backend_pid(conn) in pids
    assert (pool.stats().in_use, pool.stats().timeouts_total) == (0, 1)


async def test_timeout_storm_counts_every_timeout_but_logs_sparingly(
    make_pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rustchat.db.pool")
    pool = await make_pool(min_connections=1, max_connections=1, acquire_timeout_secs=0.2)

    async def doomed() -> None:
        async with pool.acquire():
            pass

    async with pool.acquire():
        results = await asyncio.gather(*(doomed() for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, PoolTimeout) for r in results)
    assert pool.stats().timeouts_total == 20
    lines = [r for r in caplog.records if "pool timed out" in r.getMessage()]
    assert 1 <= len(lines) <= 2


async def test_waiters_are_served_first_come_first_served(make_pool) -> None:
    pool = await make_pool(min_connections=1, max_connections=1)
    order: list[int] = []

    async def waiter(n: int) -> None:
        async with pool.acquire():
            order.append(n)
            await asyncio.sleep(0.01)

    async with pool.acquire():
        tasks = []
        for n in range(5):
            tasks.append(asyncio.create_task(waiter(n)))
            await asyncio.sleep(0.01)
        assert pool.stats().waiting == 5
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


# -- cancellation and dirty connections ------------------------------------------------------------


async def test_cancelled_waiter_leaks_nothing(make_pool) -> None:
    pool = await make_pool(min_connections=1, max_connections=1)
    async with pool.acquire() as conn:
        pid = await backend_pid(conn)
        task = asyncio.create_task(pool.fetchval("SELECT 1"))
        await asyncio.sleep(0.05)
        assert pool.stats().waiting == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (pool.stats().waiting, pool.stats().in_use) == (0, 1)
    assert (pool.stats().in_use, pool.stats().idle) == (0, 1)
    assert await pool.fetchval("SELECT pg_backend_pid()") == pid


async def test_acquirer_cancelled_while_its_connection_opens_leaks_nothing(
    make_pool, database: Database
) -> None:
    pool = await make_pool(start=False, min_connections=0, max_connections=2)
    task = asyncio.create_task(pool.fetchval("SELECT 1"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert pool.stats().in_use == 1  # the connection being opened counts
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def parked() -> bool:  # the opened connection lands in the pool, not in limbo
        stats = pool.stats()
        return (stats.in_use, stats.idle, stats.waiting) == (0, 1, 0)

    await eventually(parked, "the connection opened for the cancelled acquirer parked as idle")
    assert len(await backends(database)) == 1
    assert await pool.fetchval("SELECT 1") == 1
    assert pool.stats().size == 1


async def test_waiter_cancelled_just_after_handoff_returns_the_connection(make_pool) -> None:
    pool = await make_pool(min_connections=1, max_connections=1)
    holder = pool.acquire()
    conn = await holder.__aenter__()
    pid = await backend_pid(conn)
    task = asyncio.create_task(pool.fetchval("SELECT 1"))
    await asyncio.sleep(0.05)
    assert pool.stats().waiting == 1
    # Release hands the connection to the waiter; cancel it before it gets to run.
    await holder.__aexit__(None, None, None)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (pool.stats().in_use, pool.stats().idle, pool.stats().waiting) == (0, 1, 0)
    assert await pool.fetchval("SELECT pg_backend_pid()") == pid


async def test_cancelled_mid_query_connection_is_closed_not_reused(make_pool, database: Database) -> None:
    pool = await make_pool(min_connections=1, max_connections=1)
    await pool.execute("CREATE TABLE t (n int)")
    pid = await pool.fetchval("SELECT pg_backend_pid()")

    async def slow() -> None:
        async with pool.transaction() as cur:
            await cur.execute("INSERT INTO t VALUES (1)")
            await cur.execute("SELECT pg_sleep(30)")

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def settled() -> bool:  # in_use briefly counts the replacement being opened for MIN
        return pool.stats().in_use == 0

    await eventually(settled, "no connection left checked out")
    assert await pool.fetchval("SELECT pg_backend_pid()") != pid
    assert await pool.fetchval("SELECT count(*) FROM t") == 0

    async def gone() -> bool:
        return pid not in await backends(database)

    await eventually(gone, "the cancelled session ended on the server")


async def test_cancelled_between_statements_in_transaction_is_not_reused(make_pool) -> None:
    pool = await make_pool(min_connections=1, max_connections=1)
    await pool.execute("CREATE TABLE t (n int)")
    pid = await pool.fetchval("SELECT pg_backend_pid()")

    async def interrupted() -> None:
        async with pool.transaction() as cur:
            await cur.execute("INSERT INTO t VALUES (1)")
            await asyncio.sleep(30)

    task = asyncio.create_task(interrupted())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with pool.acquire() as conn:
        assert await backend_pid(conn) != pid
        assert conn.raw.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    assert await pool.fetchval("SELECT count(*) FROM t") == 0


async def test_connection_returned_in_open_or_failed_transaction_is_not_reused(make_pool) -> None:
    pool = await make_pool(min_connections=1, max_connections=1)
    await pool.execute("CREATE TABLE t (n int)")

    async with pool.acquire() as conn:
        clean_pid = await backend_pid(conn)
    async with pool.acquire() as conn:  # a clean connection is reused
        assert await backend_pid(conn) == clean_pid
        async with conn.cursor() as cur:
            await cur.execute("BEGIN")
            await cur.execute("INSERT INTO t VALUES (1)")
    # left inside an open transaction: closed, and its uncommitted insert is gone
    async with pool.acquire() as conn:
        open_pid = await backend_pid(conn)
        assert open_pid != clean_pid
        async with conn.cursor() as cur:
            await cur.execute("BEGIN")
            with pytest.raises(psycopg2.errors.DivisionByZero):
                await cur.execute("SELECT 1 / 0")
    # left inside a failed transaction: closed too
    async with pool.acquire() as conn:
        assert await backend_pid(conn) != open_pid
        assert conn.raw.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    assert await pool.fetchval("SELECT count(*) FROM t") == 0


async def test_connection_lost_while_held_is_reported_unavailable(make_pool, database: Database) -> None:
    pool = await make_pool(min_connections=1, max_connections=1)
    with pytest.raises(PoolUnavailable):
        async with pool.acquire() as conn:
            await terminate([await backend_pid(conn)])
            await asyncio.sleep(0.2)
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")
    assert await pool.fetchval("SELECT 1") == 1


# -- queries ---------------------------------------------------------------------------------------


async def test_transaction_commits_and_rolls_back(make_pool) -> None:
    pool = await make_pool(min_connections=1, max_connections=1)
    await pool.execute("CREATE TABLE t (n int PRIMARY KEY)")
    pid = await pool.fetchval("SELECT pg_backend_pid()")

    async with pool.transaction() as cur:
        await cur.execute("INSERT INTO t VALUES (%s)", (1,))
        await cur.execute("INSERT INTO t VALUES (%s)", (2,))
    assert await pool.fetch("SELECT n FROM t ORDER BY n") == [(1,), (2,)]

    with pytest.raises(RuntimeError):
        async with pool.transaction() as cur:
            await cur.execute("INSERT INTO t VALUES (%s)", (3,))
            raise RuntimeError("boom")
    with pytest.raises(psycopg2.errors.UniqueViolation):
        async with pool.transaction() as cur:
            await cur.execute("INSERT INTO t VALUES (%s)", (4,))
            await cur.execute("INSERT INTO t VALUES (%s)", (1,))
    assert await pool.fetch("SELECT n FROM t ORDER BY n") == [(1,), (2,)]
    # a cleanly rolled-back connection goes back into service
    assert await pool.fetchval("SELECT pg_backend_pid()") == pid


async def test_query_helpers(make_pool) -> None:
    pool = await make_pool()
    await pool.execute("CREATE TABLE t (n int, s text)")
    assert await pool.execute("INSERT INTO t VALUES (%s, %s), (%s, %s)", (1, "a", 2, "b")) == 2
    assert await pool.fetch("SELECT n, s FROM t ORDER BY n") == [(1, "a"), (2, "b")]
    assert await pool.fetchrow("SELECT n, s FROM t WHERE n = %(n)s", {"n": 2}) == (2, "b")
    assert await pool.fetchrow("SELECT n FROM t WHERE n = %s", (99,)) is None
    assert await pool.fetchval("SELECT s FROM t WHERE n = %s", (1,)) == "a"
    assert await pool.fetchval("SELECT s FROM t WHERE n = %s", (99,)) is None
    assert await pool.fetch_dicts("SELECT n, s FROM t ORDER BY n") == [{"n": 1, "s": "a"}, {"n": 2, "s": "b"}]
    assert await pool.fetchrow_dict("SELECT n, s FROM t WHERE s = %s", ("b",)) == {"n": 2, "s": "b"}
    assert await pool.fetchrow_dict("SELECT n FROM t WHERE false") is None
    # values are bound, never spliced into the SQL
    assert await pool.fetchval("SELECT %s::text", ("'; DROP TABLE t; --",)) == "'; DROP TABLE t; --"
    assert await pool.fetchval("SELECT 'a%'") == "a%"  # no params: no %-formatting either
    assert await pool.execute("DELETE FROM t WHERE n = %s", (1,)) == 1
    assert await pool.fetchval("SELECT current_setting('application_name')") == "rustchat"


# -- unavailability and shutdown -------------------------------------------------------------------


async def test_unreachable_server_raises_pool_unavailable_fast() -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    settings = PoolSettings(acquire_timeout_secs=30.0)
    loop = asyncio.get_running_loop()

    started = loop.time()
    with pytest.raises(PoolUnavailable) as raised:
        await Pool(dsn, settings).start()
    assert isinstance(raised.value, DatabaseUnavailable)
    assert loop.time() - started < 5.0

    # an acquirer fails with the connect error, not after waiting out the 30 s acquire timeout
    pool = Pool(dsn, settings)
    started = loop.time()
    with pytest.raises(PoolUnavailable):
        await pool.fetchval("SELECT 1")
    assert loop.time() - started < 5.0
    assert pool.stats().size == 0
    await pool.close()


async def test_close_waits_for_connections_in_use(make_pool, database: Database) -> None:
    pool = await make_pool(min_connections=2, max_connections=3)
    holder = pool.acquire()
    await holder.__aenter__()
    closing = asyncio.create_task(pool.close(grace_secs=10.0))
    await asyncio.sleep(0.2)
    assert not closing.done()
    with pytest.raises(PoolUnavailable):
        await pool.fetchval("SELECT 1")
    await holder.__aexit__(None, None, None)
    await asyncio.wait_for(closing, 5.0)

    async def none_left() -> bool:
        return await backends(database) == []

    await eventually(none_left, "every session closed")


async def test_close_force_closes_after_grace(make_pool, database: Database) -> None:
    pool = await make_pool(min_connections=1, max_connections=2)
    async with pool.acquire() as conn:
        await pool.close(grace_secs=0.2)
        assert conn.closed

    async def none_left() -> bool:
        return await backends(database) == []

    await eventually(none_left, "every session closed")
