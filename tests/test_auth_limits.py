"""Failed-login limits per account and per client address; token expiry; trusted proxies."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.support.client import Api
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER

LIMITS = {"RUSTCHAT_AUTH__MAX_FAILED_LOGINS_PER_ACCOUNT": "3", "RUSTCHAT_AUTH__MAX_FAILED_LOGINS_PER_ADDRESS": "6",
          "RUSTCHAT_AUTH__FAILED_LOGIN_WINDOW_SECS": "120"}


async def _login(api: Api, login_id: str, password: str, xff: str | None = None) -> tuple[int, dict]:
    headers = {"X-Forwarded-For": xff} if xff else None
    return await api.request("POST", "/api/v1/auth/login", json_body={"login_id": login_id, "password": password},
                             headers=headers)


async def test_account_and_address_limits_and_no_spoofing(start_server, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    srv = start_server(env=LIMITS, name="login-limits")
    anon = Api(http, srv.url)
    admin = await anon.login(ADMIN_USER, ADMIN_PASSWORD)
    victim = await admin.new_user(password="right-password")
    name = victim.user["username"]
    for _ in range(3):
        status, body = await _login(anon, name, "wrong-password")
        assert status == 401
    status, body = await _login(anon, name, "right-password")
    assert status == 429 and body["id"] == "api.login.too_many_attempts" and body["status_code"] == 429
    # a forged X-Forwarded-For from an untrusted peer changes nothing
    status, _ = await _login(anon, name, "right-password", xff="203.0.113.9")
    assert status == 429
    # per address: failures against other accounts from this address add up
    for i in range(3):
        status, _ = await _login(anon, f"nobody{i}", "wrong-password", xff=f"198.51.100.{i}")
        assert status == 401
    status, body = await _login(anon, ADMIN_USER, ADMIN_PASSWORD)
    assert status == 429


async def test_trusted_proxy_forwards_the_client_address(start_server, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    srv = start_server(env={**LIMITS, "RUSTCHAT_TRUSTED_PROXIES": "127.0.0.1"}, name="login-proxy")
    anon = Api(http, srv.url)
    for i in range(6):
        status, _ = await _login(anon, f"ghost{i}", "wrong-password", xff="203.0.113.7")
        assert status == 401
    status, _ = await _login(anon, ADMIN_USER, ADMIN_PASSWORD, xff="203.0.113.7")
    assert status == 429  # that client address is blocked
    status, _ = await _login(anon, ADMIN_USER, ADMIN_PASSWORD, xff="203.0.113.8")
    assert status == 200  # another client behind the same proxy is not
    # the right-most untrusted hop counts: a client cannot prepend its way out
    status, _ = await _login(anon, ADMIN_USER, ADMIN_PASSWORD, xff="10.9.9.9, 203.0.113.7")
    assert status == 429


async def test_tokens_expire(start_server, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    srv = start_server(env={"RUSTCHAT_AUTH__TOKEN_TTL_SECS": "2"}, name="token-ttl")
    admin = await Api(http, srv.url).login(ADMIN_USER, ADMIN_PASSWORD)
    assert (await admin.get("/api/v1/users/me"))[0] == 200
    await asyncio.sleep(2.5)
    status, body = await admin.get("/api/v1/users/me")
    assert status == 401 and body["id"] == "api.unauthorized"
