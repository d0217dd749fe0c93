"""Cluster mode with real processes and a real Redis: two gunicorn masters with two workers each
and one `rustchat serve`, all joined through one Redis and one PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.support.client import Api, Socket
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER, ServerProcess
from tests.support.wait import wait_for

HEARTBEAT = 1.0


@pytest.fixture(scope="module")
def cluster(start_server, new_database, own_redis) -> dict[str, ServerProcess]:  # noqa: ANN001
    db = new_database()
    env = {"RUSTCHAT_REDIS_URL": own_redis.url, "RUSTCHAT_CLUSTER__HEARTBEAT_SECS": str(HEARTBEAT),
           "RUSTCHAT_DB_POOL__MAX_CONNECTIONS": "5"}
    return {
        "a": start_server(db, env=env, gunicorn_workers=2, name="cluster-a"),
        "b": start_server(db, env=env, gunicorn_workers=2, name="cluster-b"),
        "c": start_server(db, env=env, name="cluster-c"),
    }


async def node_ids(api: Api) -> set[str]:
    status, body = await api.get("/api/v1/health")
    return {n["node_id"] for n in body["nodes"]} if status == 200 else set()


async def connect_everywhere(admin: Api, cluster: dict[str, ServerProcess], members: int, team: dict,
                             channel: dict) -> list[tuple[Api, Socket]]:
    """Member sockets on every process: keep adding users until each gunicorn worker has some."""
    out: list[tuple[Api, Socket]] = []
    seen: Counter[str] = Counter()
    for name, srv in cluster.items():
        wanted_workers = srv.gunicorn_workers or 1
        per_server: set[str] = set()
        attempts = 0
        while (len(per_server) < wanted_workers or attempts < members) and attempts < 40:
            attempts += 1
            user = await admin.new_user()
            await admin.post(f"/api/v1/teams/{team['id']}/members", {"user_id": user.user["id"]})
            if channel is not None:
                await admin.post(f"/api/v1/channels/{channel['id']}/members", {"user_id": user.user["id"]})
            sock = await Api(user.session, srv.url, user.token).ws(srv.ws_url)
            sock.user = user  # type: ignore[attr-defined]
            per_server.add(sock.hello["data"]["node_id"])
            seen[sock.hello["data"]["node_id"]] += 1
            out.append((user, sock))
        assert len(per_server) == wanted_workers, f"{name}: sockets landed on {per_server}"
    assert len(seen) == 5
    return out


@pytest.fixture
async def cluster_admin(http: aiohttp.ClientSession, cluster) -> Api:  # noqa: ANN001
    return await Api(http, cluster["a"].url).login(ADMIN_USER, ADMIN_PASSWORD)


async def test_every_process_joins_and_heartbeats(cluster, cluster_admin: Api, own_redis) -> None:  # noqa: ANN001
    nodes = await wait_for(lambda: _five(cluster_admin))
    assert len(nodes) == 5
    client = aioredis.Redis.from_url(own_redis.url)
    pubsub = client.pubsub()
    await pubsub.subscribe("rustchat:cluster:ws:broadcast")
    beats: dict[str, dict] = {}
    deadline = time.monotonic() + 5 * HEARTBEAT
    while time.monotonic() < deadline and len(beats) < 5:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if msg and msg["type"] == "message":
            data = json.loads(msg["data"])
            if data["type"] == "heartbeat":
                beats[data["node_id"]] = data
    await pubsub.aclose()
    await client.aclose()
    assert set(beats) == nodes
    for beat in beats.values():
        assert beat["origin_node"] == beat["node_id"]
        assert isinstance(beat["timestamp"], float) and isinstance(beat["connections"], int)


async def _five(api: Api) -> set[str] | None:
    ids = await node_ids(api)
    return ids if len(ids) == 5 else None


async def test_each_member_gets_each_post_exactly_once(cluster, cluster_admin: Api) -> None:  # noqa: ANN001
    await wait_for(lambda: _five(cluster_admin))
    team = await cluster_admin.new_team()
    channel = await cluster_admin.new_channel(team, "private")
    members = await connect_everywhere(cluster_admin, cluster, 2, team, channel)
    outsiders = await connect_everywhere(cluster_admin, cluster, 1, team, None)
    posters = [Api(cluster_admin.session, srv.url, cluster_admin.token) for srv in cluster.values()]
    sent = []
    for i in range(15):
        status, post = await posters[i % 3].post(f"/api/v1/channels/{channel['id']}/posts", {"message": f"m{i}"})
        assert status == 201
        sent.append(post["id"])
    for _, sock in members:
        got = [(await sock.next_event(timeout=10, name="posted"))["data"]["post"]["id"] for _ in sent]
        assert sorted(got) == sorted(sent)
        extra = [e for e in await sock.events_for(0.3) if e["event"] == "posted"]
        assert extra == []  # exactly once
    for _, sock in outsiders:
        assert [e for e in await sock.events_for(0.3) if e["event"] == "posted"] == []
    for _, sock in members + outsiders:
        await sock.close()


async def test_subscription_dropped_by_redis_is_refilled(cluster, cluster_admin: Api, own_redis) -> None:  # noqa: ANN001
    """Redis cutting subscribers off (as at its pub/sub output-buffer limit) loses nothing."""
    await wait_for(lambda: _five(cluster_admin))
    team = await cluster_admin.new_team()
    channel = await cluster_admin.new_channel(team, "public")
    members = await connect_everywhere(cluster_admin, cluster, 1, team, channel)
    client = aioredis.Redis.from_url(own_redis.url)
    sent = []
    poster = Api(cluster_admin.session, cluster["c"].url, cluster_admin.token)
    for i in range(10):
        if i % 3 == 0:
            await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        status, post = await poster.post(f"/api/v1/channels/{channel['id']}/posts", {"message": f"k{i}"})
        sent.append(post["id"])
    await client.aclose()
    for _, sock in members:
        got = [(await sock.next_event(timeout=15, name="posted"))["data"]["post"]["id"] for _ in sent]
        assert got == sent  # in order, none missing
        assert [e for e in await sock.events_for(0.3) if e["event"] == "posted"] == []
        await sock.close()
    assert "Cluster subscriber error" in cluster["a"].log() + cluster["b"].log()


async def test_redis_outage_local_delivery_continues_then_cluster_resumes(cluster, cluster_admin: Api, own_redis,  # noqa: ANN001
                                                                          http: aiohttp.ClientSession) -> None:
    await wait_for(lambda: _five(cluster_admin))
    c_admin = await Api(http, cluster["c"].url).login(ADMIN_USER, ADMIN_PASSWORD)
    team = await c_admin.new_team()
    channel = await c_admin.new_channel(team, "public")
    local_user, remote_user = await c_admin.new_user(), await c_admin.new_user()
    for u in (local_user, remote_user):
        await c_admin.post(f"/api/v1/teams/{team['id']}/members", {"user_id": u.user["id"]})
        await c_admin.post(f"/api/v1/channels/{channel['id']}/members", {"user_id": u.user["id"]})
    local = await Api(http, cluster["c"].url, local_user.token).ws(cluster["c"].ws_url)
    remote = await Api(http, cluster["a"].url, remote_user.token).ws(cluster["a"].ws_url)

    own_redis.stop()
    try:
        status, post = await c_admin.post(f"/api/v1/channels/{channel['id']}/posts", {"message": "during outage"})
        assert status == 201
        ev = await local.next_event(timeout=5, name="posted")
        assert ev["data"]["post"]["id"] == post["id"]  # local delivery never stops
        status, health = await c_admin.get("/api/v1/health")
        assert health["redis"]["ok"] is False and health["status"] == "degraded"
    finally:
        own_redis.start()
    await wait_for(lambda: _subscribed(c_admin), timeout=30)
    await wait_for(lambda: _subscribed(Api(http, cluster["a"].url)), timeout=30)
    # The outage post either arrives late or the remote client is told to resync; never silence.
    first = await remote.next_event(timeout=15)
    while first["event"] == "status_change":  # presence of team mates is not what this checks
        first = await remote.next_event(timeout=15)
    assert first["event"] in ("posted", "resync")
    status, post2 = await c_admin.post(f"/api/v1/channels/{channel['id']}/posts", {"message": "after outage"})
    ev = await remote.next_event(timeout=15, name="posted")
    if ev["data"]["post"]["id"] != post2["id"]:
        ev = await remote.next_event(timeout=15, name="posted")
    assert ev["data"]["post"]["id"] == post2["id"]
    assert "Failed to broadcast to cluster" in cluster["c"].log()
    assert "Cluster subscriber error" in cluster["a"].log()
    await local.close()
    await remote.close()


async def _subscribed(api: Api) -> bool:
    status, body = await api.get("/api/v1/health")
    return status == 200 and body["redis"] is not None and body["redis"]["ok"] and not any(
        "subscription" in p for p in body["problems"])


async def _bob_in_a_private_channel(admin: Api) -> tuple[Api, dict, str]:
    """A new user in a new team's private channel, once every process is in the cluster; the
    channel's posts path."""
    await wait_for(lambda: _five(admin))
    team = await admin.new_team()
    channel = await admin.new_channel(team, "private")
    bob = await admin.new_user()
    await admin.post(f"/api/v1/teams/{team['id']}/members", {"user_id": bob.user["id"]})
    await admin.post(f"/api/v1/channels/{channel['id']}/members", {"user_id": bob.user["id"]})
    return bob, channel, f"/api/v1/channels/{channel['id']}/posts"


async def test_resume_on_another_process_delivers_exactly_the_missed_events(cluster, cluster_admin: Api,  # noqa: ANN001
                                                                             http: aiohttp.ClientSession) -> None:
    bob, channel, path = await _bob_in_a_private_channel(cluster_admin)
    on_c = Api(http, cluster["c"].url, bob.token)
    sock = await on_c.ws(cluster["c"].ws_url)
    conn_id = sock.hello["data"]["connection_id"]
    await cluster_admin.post(path, {"message": "seen"})
    seen = await sock.next_event(timeout=10, name="posted")
    await sock.close()
    missed = []
    for i in range(5):
        status, post = await cluster_admin.post(path, {"message": f"missed {i}"})  # posted via process a
        missed.append(post["id"])
    # reconnect to the other gunicorn master: a different process than the one that numbered them
    on_b = Api(http, cluster["b"].url, bob.token)
    resumed = await on_b.ws(f"{cluster['b'].ws_url}?connection_id={conn_id}&sequence_number={seen['seq']}")
    assert resumed.hello["data"]["connection_id"] == conn_id
    assert resumed.hello["data"]["node_id"] != sock.hello["data"]["node_id"]
    got = [await resumed.next_event(timeout=10, name="posted") for _ in missed]
    assert [e["data"]["post"]["id"] for e in got] == missed
    assert [e["seq"] for e in got] == list(range(seen["seq"] + 1, seen["seq"] + 6))
    status, live = await cluster_admin.post(path, {"message": "live"})
    ev = await resumed.next_event(timeout=10, name="posted")
    assert ev["data"]["post"]["id"] == live["id"] and ev["seq"] == seen["seq"] + 6
    assert [e for e in await resumed.events_for(0.3) if e["event"] == "posted"] == []  # nothing twice
    last = ev["seq"]
    await resumed.close()

    # and once more, onto the third process, from where it was last numbered
    status, post = await cluster_admin.post(path, {"message": "after second close"})
    again = await on_c.ws(f"{cluster['c'].ws_url}?connection_id={conn_id}&sequence_number={last}")
    assert again.hello["data"]["connection_id"] == conn_id
    ev = await again.next_event(timeout=10, name="posted")
    assert ev["data"]["post"]["id"] == post["id"] and ev["seq"] == last + 1
    await again.close()


async def test_resume_elsewhere_follows_the_database_when_a_removal_was_lost(cluster, cluster_admin: Api,  # noqa: ANN001
                                                                             http: aiohttp.ClientSession,
                                                                             own_redis) -> None:
    """Bob is removed from a channel while disconnected, and the removal's event is lost from the
    replay log (as in a Redis restart without persistence). Resuming on another process, he gets
    nothing more of that channel: the replay follows PostgreSQL's memberships, not the snapshot
    his old node saved when he left."""
    bob, channel, path = await _bob_in_a_private_channel(cluster_admin)
    sock = await Api(http, cluster["c"].url, bob.token).ws(cluster["c"].ws_url)
    conn_id = sock.hello["data"]["connection_id"]
    await cluster_admin.post(path, {"message": "seen"})
    seen = await sock.next_event(timeout=10, name="posted")
    await sock.close()

    status, _ = await cluster_admin.delete(f"/api/v1/channels/{channel['id']}/members/{bob.user['id']}")
    assert status == 200
    client = aioredis.Redis.from_url(own_redis.url)
    removal = None
    for _ in range(50):  # published asynchronously: wait for it to reach the log
        for sid, fields in await client.xrevrange("rustchat:cluster:ws:log", count=50):
            message = json.loads(fields[b"m"])
            if message["event"] == "user_removed" and message["data"]["user_id"] == bob.user["id"]:
                removal = sid
                break
        if removal:
            break
        await asyncio.sleep(0.1)
    assert removal is not None
    await client.xdel("rustchat:cluster:ws:log", removal)
    await client.aclose()
    status, after = await cluster_admin.post(path, {"message": "after the removal"})
    assert status == 201

    resumed = await Api(http, cluster["b"].url, bob.token).ws(
        f"{cluster['b'].ws_url}?connection_id={conn_id}&sequence_number={seen['seq']}")
    assert resumed.hello["data"]["connection_id"] == conn_id  # resumed, not a fresh connection
    leaked = [e for e in await resumed.events_for(1.0)
              if e["event"] == "posted" and e["data"]["post"]["channel_id"] == channel["id"]]
    assert leaked == []
    await resumed.close()


async def test_killed_process_leaves_the_cluster_view(cluster, cluster_admin: Api) -> None:  # noqa: ANN001
    await wait_for(lambda: _five(cluster_admin))
    status, c_health = await Api(cluster_admin.session, cluster["c"].url).get("/api/v1/health")
    c_ids = {c_health["node_id"]}  # `rustchat serve` is a single process
    assert c_ids <= await node_ids(cluster_admin)
    cluster["c"].kill()
    gone = await wait_for(lambda: _without(cluster_admin, c_ids), timeout=3 * HEARTBEAT + 10)
    assert len(gone) == 4


async def _without(api: Api, removed: set[str]) -> set[str] | None:
    ids = await node_ids(api)
    return ids if ids and not (ids & removed) else None


async def test_multiple_workers_without_redis_refuse_to_start(new_database) -> None:  # noqa: ANN001
    srv = ServerProcess(new_database(), gunicorn_workers=2, name="islands")
    try:
        srv.start(timeout=30)
    except RuntimeError:
        pass  # the usual outcome: the master stopped before any worker was ready
    # Even when the first worker answered first, the master stops as soon as the second refuses.
    assert srv.proc is not None
    assert srv.proc.wait(30) == 3
    log = srv.log()
    assert "RUSTCHAT_REDIS_URL" in log and "islands" in log
    srv.stop()

