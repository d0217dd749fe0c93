"""WebSocket behaviour against a real server: authorization, membership on live sockets, resume."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.support.client import Api, Socket
from tests.support.server import ServerProcess


async def test_hello_and_header_auth(admin: Api, server: ServerProcess) -> None:
    user = await admin.new_user()
    sock = await user.ws(server.ws_url)
    data = sock.hello["data"]
    assert sock.hello["seq"] == 0 and set(data) >= {"connection_id", "node_id", "server_version"}
    await sock.send("ping", seq=7)
    reply = await sock.reply()
    assert reply["status"] == "OK" and reply["seq_reply"] == 7 and reply["data"]["text"] == "pong"
    await sock.close()


async def test_challenge_auth(admin: Api, server: ServerProcess, http: aiohttp.ClientSession) -> None:
    user = await admin.new_user()
    ws = await http.ws_connect(server.ws_url)
    await ws.send_str(json.dumps({"seq": 1, "action": "authentication_challenge", "data": {"token": user.token}}))
    sock = Socket(ws)
    reply = await sock.next_message()
    assert reply == {"status": "OK", "seq_reply": 1}
    hello = await sock.next_event()
    assert hello["event"] == "hello"
    await sock.close()

    ws = await http.ws_connect(server.ws_url)
    await ws.send_str(json.dumps({"seq": 1, "action": "authentication_challenge", "data": {"token": "bogus"}}))
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.TEXT, "replies are text frames, refusals too"
    reply = json.loads(msg.data)
    assert reply["status"] == "FAIL" and reply["error"]["id"] == "api.unauthorized"
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008


async def test_upgrade_refused_with_bad_token_or_foreign_origin(admin: Api, server: ServerProcess, http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(server.ws_url, headers={"Authorization": "Bearer nope"})
    assert err.value.status == 401
    user = await admin.new_user()
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(server.ws_url, headers={"Authorization": f"Bearer {user.token}", "Origin": "https://evil.example"})
    assert err.value.status == 403
    ws = await http.ws_connect(server.ws_url, headers={"Authorization": f"Bearer {user.token}",
                                                        "Origin": f"http://127.0.0.1:{server.port}"})
    await ws.close()
    status, body = await user.get("/api/v1/websocket")
    assert status == 400 and body["id"] == "api.websocket.upgrade_required"


async def test_posted_reaches_members_only(admin: Api, server: ServerProcess) -> None:
    alice, bob, eve = await admin.new_user(), await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob, eve)
    ch = await alice.new_channel(team, "private", bob)
    s_bob, s_eve = await bob.ws(server.ws_url), await eve.ws(server.ws_url)
    status, post = await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": "for members"})
    event = await s_bob.next_event(name="posted")
    assert event["data"]["post"] == post
    assert event["broadcast"]["channel_id"] == ch["id"]
    assert event["seq"] >= 1
    assert [e for e in await s_eve.events_for(0.5) if e["event"] == "posted"] == []
    for s in (s_bob, s_eve):
        await s.close()


async def test_event_kinds_and_sequence(admin: Api, server: ServerProcess) -> None:
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    ch = await alice.new_channel(team, "public", bob)
    sock = await bob.ws(server.ws_url)
    _, post = await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": "one"})
    await alice.put(f"/api/v1/posts/{post['id']}", {"message": "one!"})
    await alice.post(f"/api/v1/posts/{post['id']}/reactions", {"emoji_name": "tada"})
    await alice.delete(f"/api/v1/posts/{post['id']}")
    got = [await sock.next_event() for _ in range(4)]
    assert [e["event"] for e in got] == ["posted", "post_edited", "reaction_added", "post_deleted"]
    seqs = [e["seq"] for e in got]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    assert got[1]["data"]["post"]["message"] == "one!"
    assert got[2]["data"]["reaction"]["emoji_name"] == "tada"
    await sock.close()


async def test_membership_changes_apply_to_live_sockets(admin: Api, server: ServerProcess) -> None:
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    ch = await alice.new_channel(team, "private")
    sock = await bob.ws(server.ws_url)
    await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": "before"})
    status, _ = await alice.post(f"/api/v1/channels/{ch['id']}/members", {"user_id": bob.user["id"]})
    added = await sock.next_event()
    assert added["event"] == "user_added" and added["data"]["user_id"] == bob.user["id"]
    await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": "after join"})
    posted = await sock.next_event()
    assert posted["event"] == "posted" and posted["data"]["post"]["message"] == "after join"
    await alice.delete(f"/api/v1/channels/{ch['id']}/members/{bob.user['id']}")
    removed = await sock.next_event()
    assert removed["event"] == "user_removed" and removed["data"]["user_id"] == bob.user["id"]
    await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": "after removal"})
    assert await sock.events_for(0.5) == []
    await sock.close()


async def test_channel_created_goes_to_team_for_public_only(admin: Api, server: ServerProcess) -> None:
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    sock = await bob.ws(server.ws_url)
    public = await alice.new_channel(team, "public")
    ev = await sock.next_event()
    assert ev["event"] == "channel_created" and ev["data"]["channel_id"] == public["id"]
    await alice.new_channel(team, "private")
    assert await sock.events_for(0.4) == []
    await sock.close()


async def test_typing_goes_to_other_members(admin: Api, server: ServerProcess) -> None:
    alice, bob, eve = await admin.new_user(), await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob, eve)
    ch = await alice.new_channel(team, "private", bob)
    s_alice, s_bob, s_eve = [await u.ws(server.ws_url) for u in (alice, bob, eve)]
    await s_alice.send("user_typing", {"channel_id": ch["id"]}, seq=3)
    assert (await s_alice.reply())["status"] == "OK"
    # (status_change events of team mates coming online may arrive too: presence, not typing.)
    ev = await s_bob.next_event(name="typing")
    assert ev["data"]["user_id"] == alice.user["id"]
    assert [e for e in await s_eve.events_for(0.4) if e["event"] != "status_change"] == []
    assert [e for e in await s_alice.events_for(0.2) if e["event"] != "status_change"] == []  # not echoed to the typist
    await s_eve.send("user_typing", {"channel_id": ch["id"]}, seq=4)
    reply = await s_eve.reply()
    assert reply["status"] == "FAIL" and reply["seq_reply"] == 4
    for s in (s_alice, s_bob, s_eve):
        await s.close()


async def test_bad_frames(admin: Api, server: ServerProcess) -> None:
    user = await admin.new_user()
    sock = await user.ws(server.ws_url)
    for raw, error_id in [("{nope", "api.websocket.invalid_json"), ("[1]", "api.websocket.invalid_message"),
                          ('{"seq": "x", "action": "ping"}', "api.websocket.invalid_seq"),
                          ('{"seq": 2, "action": "fly"}', "api.websocket.unknown_action"),
                          ('{"seq": 3, "action": "ping", "data": 5}', "api.websocket.invalid_data")]:
        await sock.ws.send_str(raw)
        reply = await sock.reply()
        assert reply["status"] == "FAIL" and reply["error"]["id"] == error_id
    await sock.ws.send_bytes(b"\x00\x01")
    msg = await sock.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and sock.ws.close_code == 1003

    sock = await user.ws(server.ws_url)
    await sock.ws.send_str("x" * 70000)
    msg = await sock.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and sock.ws.close_code == 1009


async def test_resume_replays_missed_events_in_order(admin: Api, server: ServerProcess, http: aiohttp.ClientSession) -> None:
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    ch = await alice.new_channel(team, "private", bob)
    sock = await bob.ws(server.ws_url)
    conn_id = sock.hello["data"]["connection_id"]
    await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": "seen"})
    seen = await sock.next_event()
    await sock.close()
    for i in range(5):
        await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": f"missed {i}"})
    resumed = await bob.ws(f"{server.ws_url}?connection_id={conn_id}&sequence_number={seen['seq']}")
    assert resumed.hello["data"]["connection_id"] == conn_id
    missed = [await resumed.next_event() for _ in range(5)]
    assert [e["data"]["post"]["message"] for e in missed] == [f"missed {i}" for i in range(5)]
    assert [e["seq"] for e in missed] == list(range(seen["seq"] + 1, seen["seq"] + 6))
    await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": "live again"})
    live = await resumed.next_event()
    assert live["seq"] == seen["seq"] + 6 and live["data"]["post"]["message"] == "live again"
    await resumed.close()

    # An unknown connection or a sequence number from the future gets a fresh connection.
    fresh = await bob.ws(f"{server.ws_url}?connection_id={conn_id}&sequence_number=999999")
    assert fresh.hello["data"]["connection_id"] != conn_id
    await fresh.close()


async def _raw_ws_connect(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that reads nothing after the handshake, with a tiny receive buffer."""
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**15)
    writer.write(
        f"GET /api/v1/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _close_code(reader: asyncio.StreamReader) -> int | None:
    """Read server frames (unmasked) until a close frame; return its code."""
    while True:
        b0, b1 = await reader.readexactly(2)
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(length)
        if b0 & 0x0F == 0x8:
            return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None


async def _text_frames(reader: asyncio.StreamReader, count: int) -> list[dict]:
    """Read `count` text frames (unmasked server frames), skipping pings; each must be one whole JSON object."""
    out = []
    while len(out) < count:
        b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
        assert b1 & 0x80 == 0, "server frames are never masked"
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
            assert length >= 126, "the shortest length encoding is used"
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
            assert length >= 65536, "the shortest length encoding is used"
        payload = await reader.readexactly(length)
        if b0 == 0x89:  # ping
            continue
        assert b0 == 0x81, f"a final text frame, got {b0:#x}"
        out.append(json.loads(payload))
    return out


async def test_a_burst_of_events_arrives_as_whole_frames_in_order(admin: Api, server: ServerProcess) -> None:
    # Posts sent together reach a socket in the same loop iteration and share one write; every
    # length encoding (7-bit, 16-bit, 64-bit) must come out right, back to back.
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    ch = await alice.new_channel(team, "private", bob)
    reader, writer = await _raw_ws_connect(server.port, bob.token)
    hello = (await _text_frames(reader, 1))[0]
    assert hello["event"] == "hello"
    messages = [str(i) + "x" * n for i, n in enumerate([1, 30, 60, 200, 5000, 16000] * 4)] + ["\U0001F600" * 16383]
    results = await asyncio.gather(*(alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": m}) for m in messages))
    assert all(status == 201 for status, _ in results)
    frames = await _text_frames(reader, len(messages))
    assert [f["seq"] for f in frames] == list(range(1, len(messages) + 1))
    assert sorted(f["data"]["post"]["message"] for f in frames) == sorted(messages)
    assert max(len(json.dumps(f, ensure_ascii=False).encode()) for f in frames) > 65536
    writer.close()


async def test_a_client_that_pauses_reading_gets_every_frame_once_it_reads_again(start_server, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    # Enough to fill the kernel's and the transport's buffers, so frames wait in the writer until
    # the socket drains, but fewer than the send queue allows: nothing may be dropped or reordered.
    srv = start_server(env={"RUSTCHAT_WS__SEND_QUEUE": "1000"}, name="pausing")
    root = await Api(http, srv.url).login("admin", "admin-password-123")
    alice, bob = await root.new_user(), await root.new_user()
    team = await alice.new_team(bob)
    ch = await alice.new_channel(team, "private", bob)
    reader, writer = await _raw_ws_connect(srv.port, bob.token)
    assert (await _text_frames(reader, 1))[0]["event"] == "hello"
    n = 300
    for i in range(n):
        status, _ = await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": f"{i} " + "z" * 16000})
        assert status == 201
    frames = await _text_frames(reader, n)
    assert [f["seq"] for f in frames] == list(range(1, n + 1))
    assert [f["data"]["post"]["message"].split()[0] for f in frames] == [str(i) for i in range(n)]
    assert "slow_consumer" not in srv.log()
    writer.close()


async def test_slow_consumer_is_dropped_without_stalling_others(admin: Api, start_server, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    srv = start_server(env={"RUSTCHAT_WS__SEND_QUEUE": "8", "RUSTCHAT_WS__REPLAY_EVENTS": "16"}, name="slow")
    root = await Api(http, srv.url).login("admin", "admin-password-123")
    alice, slow, fast = await root.new_user(), await root.new_user(), await root.new_user()
    team = await alice.new_team(slow, fast)
    ch = await alice.new_channel(team, "private", slow, fast)
    reader, writer = await _raw_ws_connect(srv.port, slow.token)
    sock_fast = await fast.ws(srv.ws_url)
    big = "y" * 16000
    n = 300
    # The fast client reads while the posts go out; the slow one never reads.
    async def read_all() -> list[dict]:
        return [await sock_fast.next_event(timeout=10, name="posted") for _ in range(n)]

    reading = asyncio.ensure_future(read_all())
    for i in range(n):
        status, _ = await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": f"{i} {big}"})
        assert status == 201
    received = await reading
    assert [e["data"]["post"]["message"].split()[0] for e in received] == [str(i) for i in range(n)]
    assert await asyncio.wait_for(_close_code(reader), 30) == 1013
    assert "slow_consumer" in srv.log()
    writer.close()
    await sock_fast.close()


async def test_connection_limit_refuses_upgrade_with_429(admin: Api, server: ServerProcess, http: aiohttp.ClientSession) -> None:
    status, cfg = await admin.get("/api/v1/admin/config")
    limit = cfg["site"]["max_simultaneous_connections"]
    user = await admin.new_user()
    socks = [await user.ws(server.ws_url) for _ in range(limit)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(server.ws_url, headers={"Authorization": f"Bearer {user.token}"})
    assert err.value.status == 429
    await socks[0].close()
    await asyncio.sleep(0.2)
    again = await user.ws(server.ws_url)  # a slot freed by a clean close is usable at once
    for s in [*socks[1:], again]:
        await s.close()


async def test_leaving_a_team_stops_its_events_on_live_sockets(admin: Api, server: ServerProcess) -> None:
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    ch = await alice.new_channel(team, "public", bob)
    sock = await bob.ws(server.ws_url)
    await alice.delete(f"/api/v1/teams/{team['id']}/members/{bob.user['id']}")
    left = await sock.next_event()
    assert left["event"] == "leave_team" and left["data"]["user_id"] == bob.user["id"]
    await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": "bob is gone"})
    await alice.new_channel(team, "public")
    assert await sock.events_for(0.5) == []
    await sock.close()


async def test_logout_closes_sockets_opened_with_the_token(admin: Api, server: ServerProcess) -> None:
    user = await admin.new_user()
    sock = await user.ws(server.ws_url)
    assert (await user.post("/api/v1/auth/logout"))[0] == 200
    msg = await sock.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and sock.ws.close_code == 4001


async def test_idle_socket_is_closed(admin: Api, start_server, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    srv = start_server(env={"RUSTCHAT_WS__IDLE_TIMEOUT_SECS": "1", "RUSTCHAT_WS__PING_INTERVAL_SECS": "60"}, name="idle")
    user = await Api(http, srv.url).login("admin", "admin-password-123")
    sock = await user.ws(srv.ws_url)
    msg = await sock.ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE and sock.ws.close_code == 1001
    assert "Unhandled" not in srv.log() and "Traceback" not in srv.log()
