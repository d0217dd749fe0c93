"""Presence: online while any connection is live anywhere in the cluster, offline when the last one
ends (cleanly or with its node); `status_change` reaches users who share a team, and nobody else."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.client import Api, Socket
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER, ServerProcess
from tests.support.services import RedisInstance
from tests.test_connection_limits import FAST_HEARTBEATS, REFRESH, TTL, connect, start_nodes

UNKNOWN_ID = "z" * 26


async def status_changes(sock: Socket, seconds: float) -> list[tuple[str, str]]:
    return [(e["data"]["user_id"], e["data"]["status"]) for e in await sock.events_for(seconds)
            if e["event"] == "status_change"]


async def next_status(sock: Socket, user_id: str, timeout: float = 10.0) -> str:
    while True:
        ev = await sock.next_event(timeout, name="status_change")
        if ev["data"]["user_id"] == user_id:
            return ev["data"]["status"]


async def status_of(api: Api, user_id: str) -> str:
    status, body = await api.get(f"/api/v1/users/{user_id}/status")
    assert status == 200, body
    assert body["user_id"] == user_id
    return body["status"]


@pytest.fixture(scope="module")
def presence_db(new_database) -> str:  # noqa: ANN001
    return new_database()


@pytest.fixture(scope="module")
def pnodes(start_server, presence_db: str, own_redis: RedisInstance) -> list[ServerProcess]:  # noqa: ANN001
    env = {"RUSTCHAT_REDIS_URL": own_redis.url, **FAST_HEARTBEATS}
    return start_nodes(start_server, presence_db, env, ["presence-a", "presence-b"])


@pytest.fixture
async def proot(http: aiohttp.ClientSession, pnodes: list[ServerProcess]) -> Api:
    return await Api(http, pnodes[0].url).login(ADMIN_USER, ADMIN_PASSWORD)


async def test_online_offline_across_nodes_reaches_team_mates_only(proot: Api, pnodes: list[ServerProcess]) -> None:
    a, b = pnodes
    x, y, z = await proot.new_user(), await proot.new_user(), await proot.new_user()
    await proot.new_team(x, y)
    await proot.new_team(z)  # z shares no team with x or y
    xid = x.user["id"]
    s_y = await connect(y, a)
    s_z = await connect(z, b)
    assert isinstance(s_y, Socket) and isinstance(s_z, Socket)
    on_a, on_b = Api(x.session, a.url, x.token), Api(x.session, b.url, x.token)
    assert await status_of(on_a, xid) == "offline"

    s_x1 = await connect(x, b)  # online on node b; y (on node a) hears it through the cluster
    assert isinstance(s_x1, Socket)
    assert await next_status(s_y, xid) == "online"
    assert await status_of(on_a, xid) == "online" and await status_of(on_b, xid) == "online"

    status, body = await Api(y.session, a.url, y.token).post(
        "/api/v1/users/status/ids", [xid, y.user["id"], z.user["id"], UNKNOWN_ID, xid])
    assert status == 200
    assert body == [{"user_id": xid, "status": "online"}, {"user_id": y.user["id"], "status": "online"},
                    {"user_id": z.user["id"], "status": "online"}]

    s_x2 = await connect(x, a)  # a second connection: still just online
    assert isinstance(s_x2, Socket)
    await s_x1.close()
    assert await status_changes(s_y, 1.0) == []
    assert await status_of(on_b, xid) == "online"

    await s_x2.close()  # the last one
    assert await next_status(s_y, xid) == "offline"
    assert await status_of(on_a, xid) == "offline" and await status_of(on_b, xid) == "offline"
    assert await status_changes(s_y, 0.5) == []  # once each
    assert await status_changes(s_z, 0.5) == []  # never to a user who shares no team
    await s_y.close()
    await s_z.close()


async def test_offline_after_the_node_crashes(proot: Api, pnodes: list[ServerProcess], start_server,  # noqa: ANN001
                                              presence_db: str, own_redis: RedisInstance) -> None:
    doomed = start_server(presence_db, env={"RUSTCHAT_REDIS_URL": own_redis.url, **FAST_HEARTBEATS},
                          name="presence-doomed")
    x, y = await proot.new_user(), await proot.new_user()
    await proot.new_team(x, y)
    xid = x.user["id"]
    s_y = await connect(y, pnodes[0])
    assert isinstance(s_y, Socket)
    s_x = await connect(x, doomed)
    assert isinstance(s_x, Socket)
    assert await next_status(s_y, xid) == "online"
    doomed.kill()
    # Within TTL plus a refresh or two (the sweep notices the expired heartbeat); no timing asserted.
    assert await next_status(s_y, xid, timeout=TTL + 4 * REFRESH + 10) == "offline"
    assert await status_of(proot, xid) == "offline"
    assert await status_changes(s_y, 0.5) == []
    await s_y.close()


async def test_single_node_presence_without_redis(admin: Api, server: ServerProcess) -> None:
    x, y = await admin.new_user(), await admin.new_user()
    await admin.new_team(x, y)
    xid = x.user["id"]
    s_y = await y.ws(server.ws_url)
    s_x = await x.ws(server.ws_url)
    assert await next_status(s_y, xid) == "online"
    assert await status_of(y, xid) == "online"
    await s_x.close()
    assert await next_status(s_y, xid) == "offline"
    assert await status_of(y, xid) == "offline"
    await s_y.close()


async def test_status_api_validation(admin: Api, anon: Api) -> None:
    me = admin.user["id"]
    status, body = await anon.get(f"/api/v1/users/{me}/status")
    assert status == 401 and body["id"] == "api.unauthorized"
    status, body = await anon.post("/api/v1/users/status/ids", [me])
    assert status == 401
    status, body = await admin.get("/api/v1/users/me/status")
    assert status == 200 and body["user_id"] == me and body["status"] in ("online", "offline")
    for bad in ("not-an-id", UNKNOWN_ID):
        status, body = await admin.get(f"/api/v1/users/{bad}/status")
        assert status == 404 and body["id"] == "user.not_found"
    assert await admin.post("/api/v1/users/status/ids", []) == (200, [])
    status, body = await admin.post("/api/v1/users/status/ids", [me] * 201)
    assert status == 400 and body["id"] == "api.invalid_body"
    for junk in ({"ids": [me]}, ["nope"], [1], "x"):
        status, body = await admin.post("/api/v1/users/status/ids", junk)
        assert status == 400 and body["id"] == "api.invalid_body", (junk, body)
    status, body = await admin.post("/api/v1/users/status/ids", data=b"[", headers={"Content-Type": "application/json"})
    assert status == 400 and body["id"] == "api.invalid_json"


async def test_enforce_limit_requires_admin(admin: Api) -> None:
    user = await admin.new_user()
    status, body = await user.post("/api/v1/admin/connections/enforce-limit")
    assert status == 403 and body["id"] == "api.forbidden"
    status, body = await admin.post("/api/v1/admin/connections/enforce-limit")
    assert status == 200 and body["closed"] == 0 and body["limit"] >= 1
