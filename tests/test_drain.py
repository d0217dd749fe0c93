"""Graceful drain: SIGTERM moves clients to another node without losing their events."""

from __future__ import annotations

import json
import signal

import aiohttp

from tests.support.client import Api
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER


async def test_sigterm_closes_with_1012_and_clients_resume_elsewhere(start_server, new_database, own_redis,  # noqa: ANN001
                                                                     http: aiohttp.ClientSession) -> None:
    db = new_database()
    env = {"RUSTCHAT_REDIS_URL": own_redis.url, "RUSTCHAT_CLUSTER__HEARTBEAT_SECS": "1",
           "RUSTCHAT_WS__RECONNECT_JITTER_SECS": "3"}
    leaving = start_server(db, env=env, name="drain-leaving")
    staying = start_server(db, env=env, name="drain-staying")
    admin = await Api(http, staying.url).login(ADMIN_USER, ADMIN_PASSWORD)
    bob = await admin.new_user()
    team = await admin.new_team(bob)
    channel = await admin.new_channel(team, "private", bob)
    sock = await Api(http, leaving.url, bob.token).ws(leaving.ws_url)
    conn_id = sock.hello["data"]["connection_id"]
    await admin.post(f"/api/v1/channels/{channel['id']}/posts", {"message": "before"})
    seen = await sock.next_event(timeout=10, name="posted")

    leaving.proc.send_signal(signal.SIGTERM)
    msg = await sock.ws.receive(timeout=15)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert sock.ws.close_code == 1012
    hint = json.loads(msg.extra)
    assert 0 <= hint["reconnect_after_ms"] <= 3000
    assert leaving.proc.wait(30) == 0
    assert "draining: closed 1 WebSocket connections" in leaving.log()

    status, post = await admin.post(f"/api/v1/channels/{channel['id']}/posts", {"message": "while moving"})
    resumed = await Api(http, staying.url, bob.token).ws(
        f"{staying.ws_url}?connection_id={conn_id}&sequence_number={seen['seq']}")
    assert resumed.hello["data"]["connection_id"] == conn_id
    ev = await resumed.next_event(timeout=10, name="posted")
    assert ev["data"]["post"]["id"] == post["id"] and ev["seq"] == seen["seq"] + 1
    await resumed.close()
