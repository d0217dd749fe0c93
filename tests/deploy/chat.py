"""Chat clients for the deployed cluster: WebSocket readers that resume, and post senders.

A `ResumingClient` keeps one WebSocket open through the load balancer the way a real client
should: on any close (above all 1012 "service restart" with its `reconnect_after_ms` hint, sent
when an app node drains) it reconnects with `?connection_id=…&sequence_number=<last seq>` and
records whether the server resumed the connection (same connection_id in `hello`) on whichever
node the balancer picked. Every `posted` event is recorded, duplicates included, so a test can
prove each message arrived exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.support.client import Api


def node_host(node_id: str) -> str:
    """'app2-1234-abcdef' -> 'app2' (node ids are host name, pid, random part)."""
    return node_id.rsplit("-", 2)[0]


def ws_url(base: str) -> str:
    return base.replace("https://", "wss://").replace("http://", "ws://").rstrip("/") + "/api/v1/websocket"


@dataclass
class Resume:
    at: float
    asked: str
    got: str
    node: str

    @property
    def ok(self) -> bool:
        return self.asked == self.got


@dataclass
class ResumingClient:
    api: Api
    name: str
    connection_id: str | None = None
    last_seq: int = 0
    node_id: str | None = None
    received: list[str] = field(default_factory=list)  # post ids, in arrival order
    closes: list[tuple[int | None, str]] = field(default_factory=list)
    resumes: list[Resume] = field(default_factory=list)
    connect_errors: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # server_version of every hello
    _ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, resume: bool = False) -> dict[str, Any]:
        params = {}
        if resume and self.connection_id:
            params = {"connection_id": self.connection_id, "sequence_number": str(self.last_seq)}
        self._ws = await self.api.session.ws_connect(
            ws_url(self.api.base), params=params, headers={"Authorization": f"Bearer {self.api.token}"},
            heartbeat=None, timeout=aiohttp.ClientWSTimeout(ws_close=5))
        msg = await self._ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"{self.name}: no hello ({msg.type}, {self._ws.close_code})")
        hello = json.loads(msg.data)
        assert hello["event"] == "hello", hello
        data = hello["data"]
        if params:
            self.resumes.append(Resume(time.time(), params["connection_id"], data["connection_id"], data["node_id"]))
            if data["connection_id"] != params["connection_id"]:
                self.last_seq = 0  # not resumed: a new connection, counting from the start
        self.connection_id, self.node_id = data["connection_id"], data["node_id"]
        self.nodes.append(data["node_id"])
        self.versions.append(data.get("server_version", ""))
        return data

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def _read(self) -> tuple[int | None, str]:
        """Read events until the socket closes; return (close code, close message)."""
        assert self._ws is not None
        while True:
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                if "event" not in event or event["event"] == "hello":
                    continue
                self.last_seq = max(self.last_seq, event["seq"])
                if event["event"] == "posted":
                    post = event["data"]["post"]
                    post = json.loads(post) if isinstance(post, str) else post
                    self.received.append(post["id"])
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.ERROR):
                extra = msg.extra if isinstance(msg.extra, str) else repr(msg.extra)
                # The code in the server's close frame. aiohttp's close_code turns into 1006 when its
                # own closing reply cannot be written because the server already hung up.
                code = msg.data if msg.type == aiohttp.WSMsgType.CLOSE else self._ws.close_code
                return code, extra or ""

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop`, resuming after every close."""
        while not stop.is_set():
            code, reason = await self._read()
            self.closes.append((code, reason))
            if stop.is_set():
                return
            delay = 0.2
            with contextlib.suppress(ValueError, TypeError, KeyError):
                delay = max(delay, json.loads(reason)["reconnect_after_ms"] / 1000)
            await asyncio.sleep(delay)
            while not stop.is_set():
                try:
                    await self.connect(resume=True)
                    break
                except (aiohttp.ClientError, ConnectionError, TimeoutError, AssertionError) as exc:
                    self.connect_errors.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.5)


@dataclass
class Sender:
    api: Api
    channel_id: str
    prefix: str
    sent: list[str] = field(default_factory=list)  # post ids the server confirmed
    failures: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                status, body = await self.api.post(f"/api/v1/channels/{self.channel_id}/posts",
                                                   {"message": f"{self.prefix} {i}"})
                if status == 201:
                    self.sent.append(body["id"])
                else:
                    self.failures.append(f"{self.prefix} {i}: {status} {body}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failures.append(f"{self.prefix} {i}: {type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


async def channel_posts(api: Api, channel_id: str) -> list[dict[str, Any]]:
    """Every post of the channel, oldest first (the API pages newest first)."""
    out: list[dict[str, Any]] = []
    before = None
    while True:
        path = f"/api/v1/channels/{channel_id}/posts?limit=200" + (f"&before={before}" if before else "")
        status, body = await api.get(path)
        assert status == 200, body
        out.extend(body["posts"])
        if not body["has_more"] or not body["posts"]:
            return list(reversed(out))
        before = body["posts"][-1]["id"]
