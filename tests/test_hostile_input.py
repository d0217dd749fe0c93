"""Hostile input at the realtime path's edges, against two real processes joined by a real Redis.

Each test throws at one edge what an attacker (or a stray publisher on the same Redis) could, and
then checks what matters: a post still crosses between the processes in both directions, nobody
received anything they should not, and /api/v1/health reports the truth.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.support.client import Api, Socket
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER, ServerProcess
from tests.support.wait import wait_for

HEARTBEAT = 1.0
CHANNEL = "rustchat:cluster:ws:broadcast"
STREAM = "rustchat:cluster:ws:log"


@pytest.fixture(scope="module")
def pair(start_server, new_database, own_redis) -> tuple[ServerProcess, ServerProcess]:  # noqa: ANN001
    db = new_database()
    env = {"RUSTCHAT_REDIS_URL": own_redis.url, "RUSTCHAT_CLUSTER__HEARTBEAT_SECS": str(HEARTBEAT)}
    return start_server(db, env=env, name="hostile-a"), start_server(db, env=env, name="hostile-b")


class Room:
    """Alice on process a and Bob on process b, in one private channel; Eve (no channel) on a."""

    def __init__(self, admin: Api, channel: dict, alice: Socket, bob: Socket, eve: Socket, apis: dict) -> None:
        self.admin, self.channel, self.alice, self.bob, self.eve, self.apis = admin, channel, alice, bob, eve, apis

    async def post_crosses_both_ways(self) -> None:
        for author, reader in (("alice", self.bob), ("bob", self.alice)):
            status, post = await self.apis[author].post(f"/api/v1/channels/{self.channel['id']}/posts",
                                                        {"message": f"from {author}"})
            assert status == 201, post
            while True:
                ev = await reader.next_event(timeout=15, name="posted")
                if ev["data"]["post"]["id"] == post["id"]:
                    break

    async def close(self) -> None:
        for sock in (self.alice, self.bob, self.eve):
            await sock.close()


@pytest.fixture
async def room(pair, http: aiohttp.ClientSession) -> Room:  # noqa: ANN001
    a, b = pair
    admin = await Api(http, a.url).login(ADMIN_USER, ADMIN_PASSWORD)
    await wait_for(lambda: _both_listed(admin), timeout=30)
    alice, bob, eve = await admin.new_user(), await admin.new_user(), await admin.new_user()
    team = await admin.new_team(alice, bob, eve)
    channel = await admin.new_channel(team, "private", alice, bob)
    apis = {"alice": Api(http, a.url, alice.token), "bob": Api(http, b.url, bob.token)}
    room = Room(admin, channel, await apis["alice"].ws(a.ws_url), await apis["bob"].ws(b.ws_url),
                await Api(http, a.url, eve.token).ws(a.ws_url), apis)
    yield room
    await room.close()


async def _both_listed(api: Api) -> bool:
    status, body = await api.get("/api/v1/health")
    return status == 200 and len(body["nodes"]) == 2 and body["status"] == "ok"


async def _healthy(api: Api) -> dict | None:
    status, body = await api.get("/api/v1/health")
    return body if status == 200 and body["status"] == "ok" and len(body["nodes"]) == 2 else None


async def _raw_reply(sock: Socket, text: str) -> dict:
    await sock.ws.send_str(text)
    return await sock.reply(timeout=10)


async def test_hostile_websocket_frames_get_errors_and_break_nothing(room: Room, pair) -> None:  # noqa: ANN001
    ch = room.channel["id"]
    cases = [
        # A lone surrogate in parent_id: this once killed the process's cluster publisher for good.
        ('{"seq":1,"action":"user_typing","data":{"channel_id":"' + ch + '","parent_id":"\\ud800"}}',
         "api.websocket.invalid_data"),
        ('{"seq":2,"action":"user_typing","data":{"channel_id":"' + ch + '","parent_id":"' + "a" * 26 + '\\n"}}',
         "api.websocket.invalid_data"),
        ("[" * 5000 + "]" * 5000, "api.websocket.invalid_json"),  # once a RecursionError out of the handler
        ('{"seq":3,"action":"\\udfff"}', "api.websocket.unknown_action"),
        ('{"seq":"x","action":"ping"}', "api.websocket.invalid_seq"),
        ('{"seq":4,"action":"user_typing","data":[]}', "api.websocket.invalid_data"),
        ("null", "api.websocket.invalid_message"),
    ]
    for text, error_id in cases:
        reply = await _raw_reply(room.alice, text)
        assert reply["status"] == "FAIL" and reply["error"]["id"] == error_id, (text[:80], reply)
    assert room.alice.ws.close_code is None  # still open
    await room.post_crosses_both_ways()
    a, b = pair
    async with room.admin.session.get(f"{a.url}/metrics") as resp:
        counted = dict(re.findall(r'rustchat_ws_invalid_frames_total\{reason="([a-z_]+)"\} (\S+)', await resp.text()))
    for reason in ("invalid_data", "invalid_json", "unknown_action", "invalid_seq", "invalid_message"):
        assert float(counted.get(reason, 0)) >= 1, (reason, counted)
    for srv in (a, b):
        assert "Traceback" not in srv.log()
    assert await wait_for(lambda: _healthy(room.admin), timeout=20)


async def test_stray_cluster_messages_are_dropped_and_counted(room: Room, pair, own_redis) -> None:  # noqa: ANN001
    client = aioredis.Redis.from_url(own_redis.url)
    a, _ = pair
    everyone_else = {"channel_id": "", "team_id": "", "user_id": "", "omit_user_id": "", "team_ids": []}
    event = {"type": "event", "origin_node": "intruder", "ts": 1.0, "eid": "x:1", "event": "posted",
             "data": {"post": {"id": "injected"}}, "membership": []}
    junk: list[bytes | str] = [
        b"\xff\xfe not json",
        "[]",
        '{"type":"heartbeat"}',  # no node_id: this once killed every process's subscriber at once
        '{"type":"heartbeat","node_id":"n","connections":"many","pool_max":1,"timestamp":1}',
        json.dumps({"type": "mystery"}),
        json.dumps(event),  # no broadcast: this once reached every session of every process
        json.dumps({**event, "broadcast": everyone_else}),  # a broadcast naming nobody: nobody
        json.dumps({**event, "broadcast": {"channel_id": 7}}),
        json.dumps({**event, "broadcast": {"channel_id": room.channel["id"]}, "membership": [["add_team", 1]]}),
        json.dumps({**event, "broadcast": {"channel_id": room.channel["id"]}, "sid": "not-a-sid"}),
        '{"type":"event","event":"posted","data":{"x":"\\ud800"},"broadcast":{"user_id":"u"},"origin_node":"i"}',
        "[" * 100_000 + "]" * 100_000,
        "x" * (2 << 20),
    ]
    for message in junk:
        await client.publish(CHANNEL, message)
    # A junk entry in the replay log, then every subscriber cut off: the catch-up reads past it.
    await client.xadd(STREAM, {"m": b"\xff not an event"})
    await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await client.aclose()

    await room.post_crosses_both_ways()
    for sock in (room.alice, room.bob, room.eve):
        injected = [e for e in await sock.events_for(0.5) if e["data"].get("post", {}).get("id") == "injected"]
        assert injected == []
    body = await wait_for(lambda: _healthy(room.admin), timeout=30)
    assert body["problems"] == []
    async with room.admin.session.get(f"{a.url}/metrics") as resp:
        text = await resp.text()
    dropped = dict(re.findall(r'rustchat_cluster_messages_dropped_total\{reason="([a-z_]+)"\} (\d+)', text))
    for reason in ("not_json", "not_object", "heartbeat", "unknown_type", "no_scope", "broadcast",
                   "membership", "sid", "unencodable", "too_large"):
        assert int(float(dropped.get(reason, 0))) >= 1, (reason, dropped)
    assert "handler_error" not in dropped


async def test_a_stuck_redis_shows_in_health_and_the_link_recovers(room: Room, pair, own_redis) -> None:  # noqa: ANN001
    """Redis frozen (SIGSTOP): the link's tasks stop completing rounds, health names them; then it
    thaws and everything comes back by itself."""
    pid = own_redis.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        async def names_a_task() -> dict | None:
            status, body = await room.admin.get("/api/v1/health")
            stuck = [p for p in body.get("problems", []) if p.startswith("cluster ") and "task" in p]
            return body if status == 200 and body["status"] == "degraded" and stuck else None

        body = await wait_for(names_a_task, timeout=60, interval=1)
        assert any("subscriber" in p or "heartbeat" in p for p in body["problems"]), body["problems"]
    finally:
        os.kill(pid, signal.SIGCONT)
    await wait_for(lambda: _healthy(room.admin), timeout=60, interval=1)
    await room.post_crosses_both_ways()


async def test_public_routes_ignore_a_stale_bearer_token(pair, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    """A load balancer's probe or a login form carrying a stale token is not unauthorized."""
    a, _ = pair
    stale = Api(http, a.url, "a" * 40)
    for path, expected in (("/api/v1/health", 200), ("/api/v1/health/live", 200), ("/api/v1/health/ready", 200)):
        status, body = await stale.get(path)
        assert status == expected, (path, status, body)
    status, body = await stale.post("/api/v1/auth/login", {"login_id": ADMIN_USER, "password": ADMIN_PASSWORD})
    assert status == 200 and body["token"], body
    status, body = await stale.get("/api/v1/users/me")
    assert status == 401 and body["message"] == "Invalid or expired token", body
    # Bytes that are not UTF-8 in the header are no token at all, never a 500.
    reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
    writer.write(b"GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
                 b"Connection: close\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 401"), head
