"""Cluster-wide per-user connection limits: real server processes sharing one PostgreSQL and one Redis.

The Redis keys are the contract's (`rustchat:presence:user:{id}:connections`, `rustchat:conn:count:{id}`,
`rustchat:conn:heartbeat:{id}:{connection_id}`), inspected here the way an operator would.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import psycopg2
import pytest
import redis.asyncio as aioredis

from tests.support.client import Api, Socket
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER, ServerProcess
from tests.support.services import RedisInstance
from tests.support.wait import wait_for

TTL, REFRESH = 3, 1
FAST_HEARTBEATS = {"RUSTCHAT_CONN__HEARTBEAT_TTL_SECS": str(TTL), "RUSTCHAT_CONN__HEARTBEAT_REFRESH_SECS": str(REFRESH)}


def start_nodes(start_server, database_url: str, env: dict[str, str], names: list[str]) -> list[ServerProcess]:  # noqa: ANN001
    """Start several server processes: the first alone (it migrates the database and creates the
    admin), the others at once."""
    first = start_server(database_url, env=env, name=names[0])
    with ThreadPoolExecutor(max(1, len(names) - 1)) as pool:
        return [first, *pool.map(lambda name: start_server(database_url, env=env, name=name), names[1:])]


async def connect(user: Api, srv: ServerProcess) -> Socket | int:
    """A socket after its hello, or the HTTP status the upgrade was refused with."""
    try:
        return await Api(user.session, srv.url, user.token).ws(srv.ws_url)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def probe(srv: ServerProcess, token: str) -> tuple[int, dict | None, asyncio.StreamWriter]:
    """A raw upgrade request: (status, JSON error body or None, the open stream).

    Unlike aiohttp's client it shows the 429 body, which names the limit the node enforces.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(
        f"GET /api/v1/websocket HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
    status = int(head.split()[1])
    if status == 101:
        return status, None, writer
    length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:"))
    body = json.loads(await reader.readexactly(length))
    return status, body, writer


async def registry(rc: aioredis.Redis, user_id: str) -> tuple[int, int | None, list[str]]:
    """(SCARD of the set, the counter, the heartbeat keys) for a user."""
    scard = await rc.scard(f"rustchat:presence:user:{user_id}:connections")
    count = await rc.get(f"rustchat:conn:count:{user_id}")
    beats = [k async for k in rc.scan_iter(match=f"rustchat:conn:heartbeat:{user_id}:*")]
    return scard, int(count) if count is not None else None, sorted(beats)


async def agrees(rc: aioredis.Redis, user_id: str, live: int) -> bool:
    """The set, the counter and the heartbeat keys all say `live`."""
    try:
        scard, count, beats = await registry(rc, user_id)
    except aioredis.ConnectionError:
        return False  # this client's connection died with a restarted Redis; the next call reconnects
    return scard == live and (count or 0) == live and len(beats) == live


async def close_all(socks: list) -> None:  # noqa: ANN001
    for s in socks:
        if isinstance(s, Socket):
            await s.close()


def sql(database_url: str, statement: str) -> None:
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def cluster_db(new_database) -> str:  # noqa: ANN001
    return new_database()


@pytest.fixture(scope="module")
def nodes(start_server, cluster_db: str, own_redis: RedisInstance) -> list[ServerProcess]:  # noqa: ANN001
    env = {"RUSTCHAT_REDIS_URL": own_redis.url, **FAST_HEARTBEATS}
    return start_nodes(start_server, cluster_db, env, ["limits-a", "limits-b", "limits-c"])


@pytest.fixture
async def rc(own_redis: RedisInstance):  # noqa: ANN201
    client = aioredis.Redis.from_url(own_redis.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def root(http: aiohttp.ClientSession, nodes: list[ServerProcess]) -> Api:
    return await Api(http, nodes[0].url).login(ADMIN_USER, ADMIN_PASSWORD)


async def test_connect_storm_over_three_nodes_admits_exactly_the_limit(root: Api, nodes: list[ServerProcess],
                                                                       rc: aioredis.Redis) -> None:
    status, cfg = await root.get("/api/v1/admin/config")
    assert cfg["site"]["max_simultaneous_connections"] == 5
    user = await root.new_user()
    results = await asyncio.gather(*(connect(user, nodes[i % 3]) for i in range(50)))
    accepted = [r for r in results if isinstance(r, Socket)]
    refused = [r for r in results if not isinstance(r, Socket)]
    assert len(accepted) == 5 and refused == [429] * 45
    scard, count, beats = await registry(rc, user.user["id"])
    assert scard == 5 and count == 5 and len(beats) == 5
    ids = {s.hello["data"]["connection_id"] for s in accepted}
    assert await rc.smembers(f"rustchat:presence:user:{user.user['id']}:connections") == ids
    # Each heartbeat key names its node and carries the TTL.
    for s in accepted:
        key = f"rustchat:conn:heartbeat:{user.user['id']}:{s.hello['data']['connection_id']}"
        assert await rc.get(key) == s.hello["data"]["node_id"]
        assert 0 < await rc.pttl(key) <= TTL * 1000
    await close_all(accepted)
    await wait_for(lambda: agrees(rc, user.user["id"], 0), timeout=5)
    assert await rc.exists(f"rustchat:conn:count:{user.user['id']}") == 0


async def test_clean_close_frees_at_once_and_a_killed_node_expires(
        root: Api, nodes: list[ServerProcess], rc: aioredis.Redis, start_server, cluster_db: str,  # noqa: ANN001
        own_redis: RedisInstance) -> None:
    doomed = start_server(cluster_db, env={"RUSTCHAT_REDIS_URL": own_redis.url, **FAST_HEARTBEATS}, name="limits-doomed")
    user = await root.new_user()
    uid = user.user["id"]
    on_a = [await connect(user, nodes[0]) for _ in range(2)]
    on_doomed = [await connect(user, doomed) for _ in range(3)]
    assert all(isinstance(s, Socket) for s in on_a + on_doomed)
    assert await agrees(rc, uid, 5)
    assert await connect(user, nodes[1]) == 429

    await on_a[0].close()  # a clean close gives the slot back at once
    await wait_for(lambda: agrees(rc, uid, 4), timeout=3, interval=0.05)
    again = await connect(user, nodes[2])
    assert isinstance(again, Socket)
    assert await agrees(rc, uid, 5)

    # The heartbeats are refreshed: well past one TTL, nothing has expired.
    await asyncio.sleep(TTL + 1)
    assert await agrees(rc, uid, 5)

    doomed.kill()
    # Its three connections expire within one TTL and stop counting; the sweep fixes the counter.
    await wait_for(lambda: agrees(rc, uid, 2), timeout=TTL + 10)
    refill = [await connect(user, nodes[i % 3]) for i in range(3)]
    assert all(isinstance(s, Socket) for s in refill), refill
    assert await connect(user, nodes[0]) == 429
    assert await agrees(rc, uid, 5)
    await close_all([on_a[1], again, *refill])
    await wait_for(lambda: agrees(rc, uid, 0), timeout=5)


async def test_limit_changes_reach_every_node_and_open_sockets_stay(
        root: Api, nodes: list[ServerProcess], rc: aioredis.Redis, cluster_db: str) -> None:
    user = await root.new_user()
    uid = user.user["id"]
    held = [await connect(user, nodes[i % 3]) for i in range(4)]
    assert all(isinstance(s, Socket) for s in held)

    async def enforced_everywhere(limit: int) -> bool:
        """Every node refuses one more connection, naming `limit` (accepted probes are closed)."""
        for srv in nodes:
            status, body, writer = await probe(srv, user.token)
            writer.close()
            if status != 429 or body["details"]["max_simultaneous_connections"] != limit:
                return False
        return True

    try:
        # Through the API: lowered to 2 while 4 sockets are open.
        status, _ = await root.put("/api/v1/admin/config/site", {"max_simultaneous_connections": 2})
        assert status == 200
        await wait_for(lambda: enforced_everywhere(2), timeout=15)
        # A lower limit refuses new connections but closes none of the open ones.
        await asyncio.sleep(1)
        for s in held:
            await s.send("ping", seq=9)
            assert (await s.reply())["status"] == "OK"
        await wait_for(lambda: agrees(rc, uid, 4), timeout=5)

        # Through the operators' SQL: raised to 10, no restart.
        sql(cluster_db, "UPDATE server_config SET site = jsonb_set(site, '{max_simultaneous_connections}', '10') "
                        "WHERE id = 'default';")

        async def accepts_again() -> bool:
            for srv in nodes:
                status, _, writer = await probe(srv, user.token)
                writer.close()
                if status != 101:
                    return False
            return True

        await wait_for(accepts_again, timeout=15)
        await wait_for(lambda: agrees(rc, uid, 4), timeout=TTL + 5)  # the probes' sockets are gone again
        more = [await connect(user, nodes[i % 3]) for i in range(6)]
        assert all(isinstance(s, Socket) for s in more)
        held += more
        await wait_for(lambda: enforced_everywhere(10), timeout=5)

        # The admin applies a lowered limit to open sockets only when asked: oldest first.
        status, _ = await root.put("/api/v1/admin/config/site", {"max_simultaneous_connections": 3})
        assert status == 200
        oldest_on_a = [s for s in held if s.hello["data"]["node_id"] == held[0].hello["data"]["node_id"]]
        status, body = await root.post("/api/v1/admin/connections/enforce-limit")
        assert status == 200 and body["limit"] == 3
        # Node a (which got the request) closes its own surplus: up to 7 of the user's 10, all 4 it has.
        assert body["closed"] == len(oldest_on_a) == 4, body
        for s in oldest_on_a:
            msg = await s.ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and s.ws.close_code == 4029
        status, body = await root.post("/api/v1/admin/connections/enforce-limit")
        assert status == 200 and body["closed"] == 0  # nothing of this user's left on node a
        await wait_for(lambda: agrees(rc, uid, 6), timeout=5)
    finally:
        await root.put("/api/v1/admin/config/site", {"max_simultaneous_connections": 5})
        await close_all(held)


async def test_redis_outage_falls_back_to_per_node_limits_and_reregisters(
        start_server, new_database, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    redis_srv = RedisInstance()
    redis_srv.start()
    rc = aioredis.Redis.from_url(redis_srv.url, decode_responses=True)
    socks: list = []
    observer = None
    started: list[ServerProcess] = []
    try:
        started = start_nodes(start_server, new_database(), {"RUSTCHAT_REDIS_URL": redis_srv.url, **FAST_HEARTBEATS},
                           ["outage-e", "outage-f"])
        e, f = started
        root = await Api(http, e.url).login(ADMIN_USER, ADMIN_PASSWORD)
        user, mate = await root.new_user(), await root.new_user()
        await root.new_team(user, mate)
        uid = user.user["id"]
        observer = await connect(mate, f)
        assert isinstance(observer, Socket)
        socks += [await connect(user, e) for _ in range(2)] + [await connect(user, f) for _ in range(2)]
        assert all(isinstance(s, Socket) for s in socks)
        assert await agrees(rc, uid, 4)

        redis_srv.stop()
        # Never refuse everything: node e admits up to the limit of its own (2 + 3), then refuses.
        for _ in range(3):
            s = await connect(user, e)
            assert isinstance(s, Socket), s
            socks.append(s)
        assert await connect(user, e) == 429
        # Node f too, counting its own two.
        for _ in range(3):
            s = await connect(user, f)
            assert isinstance(s, Socket), s
            socks.append(s)

        status, health = await root.get("/api/v1/health")
        assert health["status"] == "degraded"
        assert any("connection limits" in p for p in health["problems"]), health["problems"]

        redis_srv.start()  # same port, empty: everything must be registered again
        await wait_for(lambda: agrees(rc, uid, 10), timeout=20)
        # Cluster-wide again: 10 live >= 5, so every node refuses.
        assert await connect(user, e) == 429 and await connect(user, f) == 429

        async def healthy() -> bool:
            _, body = await root.get("/api/v1/health")
            return not any("connection limits" in p for p in body["problems"])

        await wait_for(healthy, timeout=10)
        for srv in (e, f):
            text = srv.log_path.read_text(errors="replace")
            assert text.count("Redis unavailable for connection limits") == 1, srv.log_path
            assert "Redis is back: connection limits are cluster-wide again" in text

        # Sockets closed while Redis is down are not registered again when it returns, and the
        # user, gone from every node, is announced offline once Redis can tell.
        await observer.events_for(0.3)
        redis_srv.stop()
        for s in socks:
            await s.close()
        redis_srv.start()
        await wait_for(lambda: agrees(rc, uid, 0), timeout=20)
        while True:
            ev = await observer.next_event(20, name="status_change")
            if ev["data"]["user_id"] == uid and ev["data"]["status"] == "offline":
                break
        status, body = await root.get(f"/api/v1/users/{uid}/status")
        assert body["status"] == "offline"
    finally:
        await close_all([*socks, observer])
        for srv in started:
            srv.stop()
        await rc.aclose()
        redis_srv.close()
