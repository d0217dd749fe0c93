"""Graceful drain: SIGTERM moves clients to another node without losing their events."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

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


def _get(sock: socket.socket, path: str) -> bytes:
    """One HTTP/1.1 request on an open keep-alive connection; the whole response (by Content-Length)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: rustchat\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response (after {data!r})")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_sigterm_under_gunicorn_keeps_an_idle_keepalive_connection_for_its_peer_to_close(start_server) -> None:  # noqa: ANN001
    """The race a load balancer loses otherwise: it reuses an idle connection the draining node is
    closing, and a POST sent on it fails (a 502 for the client). The worker keeps idle connections
    open for RUSTCHAT_DRAIN__IDLE_CONNECTIONS_SECS, answering on them with `Connection: close`."""
    server = start_server(gunicorn_workers=1, name="drain-keepalive",
                          env={"RUSTCHAT_DRAIN__IDLE_CONNECTIONS_SECS": "20"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = _get(sock, "/api/v1/health/live")
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
        server.proc.send_signal(signal.SIGTERM)
        wait_until_logged(server, "draining: closed 0 WebSocket connections")
        # Idle during the drain's start, and still open: the next request is answered, and the
        # answer tells the peer to drop the connection.
        head = _get(sock, "/api/v1/health/ready")
        assert head.startswith(b"HTTP/1.1 503"), head  # draining: not ready
        assert b"connection: close" in head.lower(), head
        assert sock.recv(1) == b""  # then the server closes it, after the response
    # The peer closed the last connection: the worker stops without waiting out the 20 s.
    assert server.proc.wait(15) == 0
    assert "draining: every connection closed by its peer" in server.log()


def wait_until_logged(server, text: str, timeout: float = 15) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.log()}"
        time.sleep(0.1)
