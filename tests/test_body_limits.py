"""Request body limits per route category: 64 KB auth/status/queries, 1 MB API objects, 50 MB uploads.

Over the limit is a 413 JSON error with `Connection: close`, given before the body is read past
the limit: a declared Content-Length is refused with no body byte sent, a chunked body is answered
while the client is still sending it. 100 clients each streaming 60 MB leave the server's memory
flat.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.support.client import Api
from tests.support.server import ServerProcess

KB, MB = 1024, 1024 * 1024
SMALL, MEDIUM, LARGE = 64 * KB, MB, 50 * MB


@pytest.fixture(scope="module")
async def place(admin: Api) -> dict:
    team = await admin.new_team()
    channel = await admin.new_channel(team)
    return {"channel": channel}


def _targets(place: dict) -> dict[str, tuple[str, int]]:
    ch = place["channel"]["id"]
    return {
        "small": ("/api/v1/auth/login", SMALL),
        "medium": (f"/api/v1/channels/{ch}/posts", MEDIUM),
        "large": (f"/api/v1/files?channel_id={ch}&filename=big.bin", LARGE),
    }


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, rest: bytes | None) -> None:
        self.status, self.headers, self.body, self.rest = status, headers, body, rest

    def json(self) -> dict:
        return json.loads(self.body)


async def raw_post(base: str, path: str, headers: dict[str, str], body_parts: AsyncIterator[bytes] | None = None,
                   *, timeout: float = 60.0, read_to_eof: bool = False) -> RawResponse:
    """POST over a bare socket: send the head, then (while reading) the body parts, and read the
    response; with read_to_eof, also whatever else the server sends until it closes."""
    url = urlsplit(base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode() + b"\r\n")

    async def send() -> None:
        if body_parts is None:
            return
        try:
            async for part in body_parts:
                writer.write(part)
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server answered and closed while we were still sending

    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(timeout):
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            resp_headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                resp_headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(resp_headers.get("content-length", "0")))
            rest = await reader.read() if read_to_eof else None
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    return RawResponse(status, resp_headers, body, rest)


def _assert_too_large(resp: RawResponse, limit: int) -> None:
    assert resp.status == 413, (resp.status, resp.body[:300])
    body = resp.json()
    assert body["id"] == "api.body_too_large" and body["status_code"] == 413
    assert f"{limit} bytes" in body["message"]
    # The unread rest of the body must never be taken for a next request: the server closes.
    assert resp.headers.get("connection", "").lower() == "close"


@pytest.mark.parametrize("category", ["small", "medium", "large"])
async def test_declared_length_over_the_limit_is_refused_before_any_body_byte(
        server: ServerProcess, admin: Api, place: dict, category: str) -> None:
    path, limit = _targets(place)[category]
    # Not a single body byte is sent: the answer can only come from the declared length.
    resp = await raw_post(server.url, path, {"Authorization": f"Bearer {admin.token}",
                                             "Content-Type": "application/json", "Content-Length": str(limit + 1)},
                          timeout=10)
    _assert_too_large(resp, limit)


async def _chunks(total: int, size: int = 64 * KB) -> AsyncIterator[bytes]:
    block = b" " * size
    sent = 0
    while sent < total:
        yield block[: min(size, total - sent)]
        sent += size


def _chunked(parts: AsyncIterator[bytes], *, finish: bool) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        async for part in parts:
            yield b"%x\r\n" % len(part) + part + b"\r\n"
        if finish:
            yield b"0\r\n\r\n"
    return gen()


@pytest.mark.parametrize("category", ["small", "medium", "large"])
async def test_chunked_body_is_cut_off_at_the_limit(server: ServerProcess, admin: Api, place: dict,
                                                    category: str) -> None:
    path, limit = _targets(place)[category]
    # The body never ends (no last chunk): the 413 arrives once the limit is passed, not at the end.
    resp = await raw_post(server.url, path, {"Authorization": f"Bearer {admin.token}",
                                             "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                          _chunked(_chunks(limit + 256 * KB), finish=False))
    _assert_too_large(resp, limit)


async def test_the_rest_of_a_refused_body_is_not_parsed_as_a_request(server: ServerProcess, admin: Api) -> None:
    """A request smuggled in the body of a refused one is never answered; the connection ends."""
    smuggled = (b"GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + admin.token.encode()
                + b"\r\n\r\n")
    body = smuggled + b" " * (SMALL + 1 - len(smuggled))

    async def parts() -> AsyncIterator[bytes]:
        yield body

    resp = await raw_post(server.url, "/api/v1/auth/login", {"Content-Type": "application/json",
                                                             "Content-Length": str(len(body))},
                          parts(), timeout=30, read_to_eof=True)
    _assert_too_large(resp, SMALL)
    assert resp.rest == b"", resp.rest[:300]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_each_category_accepts_bodies_up_to_its_own_limit(server: ServerProcess, http: aiohttp.ClientSession,
                                                                admin: Api, place: dict, chunked: bool) -> None:
    """Just under each limit passes (and each is above the one before), with either framing."""
    ch = place["channel"]["id"]
    auth = {"Authorization": f"Bearer {admin.token}"}

    def body(payload: bytes) -> bytes | AsyncIterator[bytes]:
        if not chunked:
            return payload

        async def gen() -> AsyncIterator[bytes]:
            for i in range(0, len(payload), 64 * KB):
                yield payload[i:i + 64 * KB]
        return gen()

    # JSON may carry any amount of whitespace: pad valid bodies to just under the limit.
    login = json.dumps({"login_id": "admin", "password": "admin-password-123"}).encode()
    login = login[:-1] + b" " * (SMALL - len(login) - 1) + b"}"
    async with http.post(server.url + "/api/v1/auth/login", data=body(login),
                         headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 200, await resp.text()
    post = json.dumps({"message": "padded"}).encode()
    post = post[:-1] + b" " * (MEDIUM - len(post) - 1) + b"}"
    async with http.post(server.url + f"/api/v1/channels/{ch}/posts", data=body(post),
                         headers={**auth, "Content-Type": "application/json"}) as resp:
        assert resp.status == 201, await resp.text()
    upload = os.urandom(3 * MB)  # above the medium limit, far below the large one
    async with http.post(server.url + f"/api/v1/files?channel_id={ch}&filename=three.bin", data=body(upload),
                         headers={**auth, "Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["size"] == len(upload)


async def test_the_limits_are_configurable(start_server, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    srv = start_server(name="limits", env={"RUSTCHAT_BODY_LIMIT__SMALL": "2048",
                                           "RUSTCHAT_BODY_LIMIT__MEDIUM": "4096",
                                           "RUSTCHAT_BODY_LIMIT__LARGE": "8192"})
    admin = await Api(http, srv.url).login("admin", "admin-password-123")
    ch = (await admin.new_channel(await admin.new_team()))["id"]
    cases = [("/api/v1/auth/login", 2048), (f"/api/v1/channels/{ch}/posts", 4096),
             (f"/api/v1/files?channel_id={ch}&filename=x.bin", 8192)]
    for path, limit in cases:
        for chunked in (False, True):
            payload = b" " * (limit + 1)
            data: bytes | AsyncIterator[bytes] = payload
            if chunked:
                data = _chunks(limit + 1, 1000)
            headers = {**admin._headers(), "Content-Type": "application/json"}
            async with http.post(srv.url + path, data=data, headers=headers) as resp:
                assert resp.status == 413, (path, chunked, resp.status, await resp.text())
                assert f"limit for this route is {limit} bytes" in (await resp.json())["message"]
    status, body = await admin.request("POST", f"/api/v1/files?channel_id={ch}&filename=ok.bin", data=b"x" * 8192)
    assert status == 201 and body["size"] == 8192


# -- memory under 100 oversized uploads ---------------------------------------------------------------
CLIENTS = 100
UPLOAD = 60 * MB
# aiohttp holds up to one socket read (256 KB) plus its read buffer of a body in flight, so 100
# connections streaming at once take up to ~0.5 MB each (measured: 40-45 MB in all). Keeping the
# bodies instead would take 100 × 50 MB; even one body is 50 MB.
RSS_GROWTH_LIMIT = 64 * MB


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_many_oversized_uploads_leave_memory_flat(start_server, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    srv = start_server(name="upload-memory")
    admin = await Api(http, srv.url).login("admin", "admin-password-123")
    ch = (await admin.new_channel(await admin.new_team()))["id"]
    url = srv.url + f"/api/v1/files?channel_id={ch}&filename=huge.bin"
    block = b"\0" * (256 * KB)

    async def endless_upload(session: aiohttp.ClientSession) -> int:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(UPLOAD // len(block)):
                yield block
        async with session.post(url, data=body(), headers=admin._headers()) as resp:
            assert resp.headers.get("Connection", "").lower() == "close"
            return resp.status

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        assert await endless_upload(session) == 413  # warm-up: code paths loaded, pools filled
        baseline = _rss(srv.pid)
        peak = baseline
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss(srv.pid))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            async with asyncio.timeout(180):
                statuses = await asyncio.gather(*(endless_upload(session) for _ in range(CLIENTS)))
        finally:
            done.set()
            await watcher
        peak = max(peak, _rss(srv.pid))
    print(f"RSS {baseline / MB:.1f} MB before, {peak / MB:.1f} MB at most during {CLIENTS} uploads")
    assert statuses == [413] * CLIENTS
    assert peak - baseline < RSS_GROWTH_LIMIT, f"RSS grew by {(peak - baseline) / MB:.1f} MB"
    # And it answers normally afterwards.
    status, _ = await admin.get("/api/v1/users/me")
    assert status == 200
