"""Revocation reaches every process: a token's sockets close with 4001 wherever they are, when the
user logs out elsewhere, when the token expires, and when the logout's message to the cluster was
lost (Redis down). Two real processes, one real Redis, one PostgreSQL."""

from __future__ import annotations

import aiohttp
import psycopg2
import pytest

from tests.support.client import Api, Socket
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER, ServerProcess

CHECK_SECS = 1.0


@pytest.fixture(scope="module")
def pair(start_server, new_database, own_redis) -> tuple[ServerProcess, ServerProcess]:  # noqa: ANN001
    db = new_database()
    env = {"RUSTCHAT_REDIS_URL": own_redis.url, "RUSTCHAT_CLUSTER__HEARTBEAT_SECS": "1",
           "RUSTCHAT_AUTH__TOKEN_CHECK_SECS": str(CHECK_SECS)}
    return start_server(db, env=env, name="revoke-a"), start_server(db, env=env, name="revoke-b")


async def _closed_with(sock: Socket, timeout: float) -> int | None:
    """Read until the socket closes; the code of the server's close frame (None if it stayed open).

    The frame's own code, not aiohttp's close_code, which reads 1006 when the client's closing
    reply meets a socket the server has already closed."""
    try:
        while True:
            msg = await sock.ws.receive(timeout=timeout)
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return msg.data
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return sock.ws.close_code
    except TimeoutError:
        return None


async def _bob(pair, http: aiohttp.ClientSession) -> tuple[Api, Socket, Socket]:  # noqa: ANN001
    a, b = pair
    admin = await Api(http, a.url).login(ADMIN_USER, ADMIN_PASSWORD)
    bob = await admin.new_user()
    on_a = await Api(http, a.url, bob.token).ws(a.ws_url)
    on_b = await Api(http, b.url, bob.token).ws(b.ws_url)
    return bob, on_a, on_b


async def test_logout_on_one_process_closes_the_tokens_sockets_on_every_process(start_server, new_database,  # noqa: ANN001
                                                                              own_redis, http) -> None:
    # The periodic check an hour away: what closes the other process's socket is the cluster message.
    db = new_database()
    env = {"RUSTCHAT_REDIS_URL": own_redis.url, "RUSTCHAT_CLUSTER__HEARTBEAT_SECS": "1",
           "RUSTCHAT_AUTH__TOKEN_CHECK_SECS": "3600"}
    pair = start_server(db, env=env, name="revoke-msg-a"), start_server(db, env=env, name="revoke-msg-b")
    bob, on_a, on_b = await _bob(pair, http)
    status, _ = await bob.post("/api/v1/auth/logout")
    assert status == 200
    assert await _closed_with(on_a, 5) == 4001
    assert await _closed_with(on_b, 5) == 4001
    assert "closed 1 WebSocket connections of a token revoked on another process" in pair[1].log()


async def test_an_expired_token_s_sockets_close(pair, http) -> None:  # noqa: ANN001
    bob, on_a, on_b = await _bob(pair, http)
    with psycopg2.connect(pair[0].env["RUSTCHAT_DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.execute("UPDATE sessions SET expires_at = 0 WHERE user_id = %s", (bob.user["id"],))
    assert await _closed_with(on_a, 10 * CHECK_SECS) == 4001
    assert await _closed_with(on_b, 10 * CHECK_SECS) == 4001


async def test_a_revocation_lost_with_redis_still_closes_the_sockets(pair, http, own_redis) -> None:  # noqa: ANN001
    bob, on_a, on_b = await _bob(pair, http)
    own_redis.stop()
    try:
        status, _ = await bob.post("/api/v1/auth/logout")
        assert status == 200
        assert await _closed_with(on_a, 5) == 4001  # its own process: at once
        assert await _closed_with(on_b, 10 * CHECK_SECS) == 4001  # the other: the token check
    finally:
        own_redis.start()
    assert "revocation not announced to the cluster" in pair[0].log()
