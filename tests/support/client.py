"""A small HTTP + WebSocket client over aiohttp for the tests."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import aiohttp


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None = None) -> None:
        self.session = session
        self.base = base
        self.token = token
        self.user: dict[str, Any] | None = None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra or {})
        return headers

    async def request(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": self._headers(headers)}
        if json_body is not None:
            kwargs["json"] = json_body
        if data is not None:
            kwargs["data"] = data
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            text = await resp.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = text
            return resp.status, body

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json_body=body, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("PUT", path, json_body=body, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kw)

    async def login(self, login_id: str, password: str) -> Api:
        status, body = await self.post("/api/v1/auth/login", {"login_id": login_id, "password": password})
        assert status == 200, body
        api = Api(self.session, self.base, body["token"])
        api.user = body["user"]
        return api

    async def new_user(self, password: str = "password-123") -> Api:
        """Create a user (self must be an admin) and return a logged-in client for it."""
        name = "u" + secrets.token_hex(5)
        status, body = await self.post("/api/v1/users", {"username": name, "email": f"{name}@example.com", "password": password})
        assert status == 201, body
        return await self.login(name, password)

    async def new_team(self, *members: Api) -> dict[str, Any]:
        status, team = await self.post("/api/v1/teams", {"name": "t" + secrets.token_hex(5), "display_name": "Team"})
        assert status == 201, team
        for m in members:
            status, body = await self.post(f"/api/v1/teams/{team['id']}/members", {"user_id": m.user["id"]})
            assert status in (200, 201), body
        return team

    async def new_channel(self, team: dict[str, Any], ctype: str = "public", *members: Api) -> dict[str, Any]:
        status, ch = await self.post("/api/v1/channels", {"team_id": team["id"], "name": "c" + secrets.token_hex(5),
                                                          "display_name": "Channel", "type": ctype})
        assert status == 201, ch
        for m in members:
            status, body = await self.post(f"/api/v1/channels/{ch['id']}/members", {"user_id": m.user["id"]})
            assert status in (200, 201), body
        return ch

    async def ws(self, url: str, **kw: Any) -> Socket:
        ws = await self.session.ws_connect(url, headers=self._headers(), **kw)
        sock = Socket(ws)
        hello = await sock.next_event()
        assert hello["event"] == "hello", hello
        sock.hello = hello
        return sock


class Socket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.hello: dict[str, Any] | None = None
        self.last_seq = 0
        self.replies: list[dict[str, Any]] = []

    async def next_message(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket closed: {msg.type} {self.ws.close_code} {msg.extra}")
        return json.loads(msg.data)

    async def next_event(self, timeout: float = 5.0, *, name: str | None = None) -> dict[str, Any]:
        """The next event (skipping replies; and events of other names when `name` is given)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {name or 'event'} within {timeout}s")
            msg = await self.next_message(remaining)
            if "event" not in msg:
                self.replies.append(msg)
                continue
            if msg["event"] != "hello":
                self.last_seq = msg["seq"]
            if name is None or msg["event"] == name:
                return msg

    async def events_for(self, seconds: float) -> list[dict[str, Any]]:
        """Every event that arrives within `seconds` (used to prove that nothing arrives)."""
        out = []
        try:
            while True:
                out.append(await self.next_event(seconds))
        except TimeoutError:
            return out

    async def send(self, action: str, data: dict[str, Any] | None = None, seq: int = 1) -> None:
        await self.ws.send_str(json.dumps({"seq": seq, "action": action, "data": data or {}}))

    async def reply(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.replies:
            return self.replies.pop(0)
        while True:
            msg = await self.next_message(timeout)
            if "seq_reply" in msg:
                return msg
            if msg.get("event") and msg["event"] != "hello":
                self.last_seq = msg["seq"]

    async def close(self) -> None:
        await self.ws.close()
