"""Subscriber WebSockets that cost the load generator as little as possible.

Each subscriber is a bare `asyncio.Protocol` speaking just enough RFC 6455 for a server that
sends unmasked, unfragmented, uncompressed text frames: the upgrade request, a frame parser, a
pong for every ping and a close reply. Nothing is JSON-decoded except the `hello` frame: for an
event the parser only looks for `"create_at":` with `bytes.find` and reads the integer after it.
The receive time is taken once per `data_received` call (every frame in one read arrived at the
same moment), and latencies go into a 1 ms histogram shared by all connections, so the
per-delivery work is a few bytes operations and two integer additions.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections import Counter

HIST_MS = 120_000  # latencies above two minutes land in the last bin
_CREATE_AT = b'"create_at":'
_CA_LEN = len(_CREATE_AT)


class Stats:
    """What every subscriber reports into, reset at the start of each step."""

    def __init__(self) -> None:
        self.hist = [0] * (HIST_MS + 1)
        self.count = 0  # deliveries of this step's posts
        self.late = 0  # deliveries of an earlier step's posts that arrived during this one
        self.other = 0  # other events (presence and the like): not counted as deliveries
        self.reads = 0  # data_received calls: the client's cost is per read more than per frame
        self.closes: Counter[int] = Counter()  # close codes the server sent
        self.lost = 0  # connections that ended without a close frame
        self.step_start_ms = 0

    def reset(self, step_start_ms: int) -> None:
        self.hist = [0] * (HIST_MS + 1)
        self.count = 0
        self.late = 0
        self.other = 0
        self.reads = 0
        self.closes = Counter()
        self.lost = 0
        self.step_start_ms = step_start_ms

    def percentile(self, q: float) -> float | None:
        """The q-quantile (0..1) of this step's latencies in ms, or None without samples."""
        if not self.count:
            return None
        rank = max(1, int(q * self.count + 0.999999))
        seen = 0
        for ms, n in enumerate(self.hist):
            seen += n
            if seen >= rank:
                return float(ms)
        return float(HIST_MS)

    def max_ms(self) -> float | None:
        for ms in range(HIST_MS, -1, -1):
            if self.hist[ms]:
                return float(ms)
        return None


class Subscriber(asyncio.Protocol):
    def __init__(self, stats: Stats, host: str, port: int, token: str) -> None:
        self.stats = stats
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET /api/v1/websocket HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.closing = False
        self.hello: asyncio.Future[dict] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.stats.lost += 1
        if not self.hello.done():
            self.hello.set_exception(ConnectionError(f"connection lost before hello: {exc}"))

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.upgraded:
            head_end = data.find(b"\r\n\r\n")
            if head_end < 0:
                self.buf = data
                return
            status = data[:data.find(b"\r\n")]
            if status.split(b" ")[1:2] != [b"101"]:
                if not self.hello.done():
                    self.hello.set_exception(ConnectionError(f"upgrade refused: {data[:300]!r}"))
                self.closing = True
                self.transport.close()
                return
            self.upgraded = True
            data = data[head_end + 4:]
        now_ms = time.time() * 1000.0
        stats = self.stats
        hist = stats.hist
        start_ms = stats.step_start_ms
        n = len(data)
        p = 0
        count = late = 0
        while n - p >= 2:
            length = data[p + 1] & 0x7F
            if length < 126:
                body = p + 2
            elif length == 126:
                if n - p < 4:
                    break
                length = (data[p + 2] << 8) | data[p + 3]
                body = p + 4
            else:
                if n - p < 10:
                    break
                length = int.from_bytes(data[p + 2:p + 10], "big")
                body = p + 10
            end = body + length
            if end > n:
                break
            opcode = data[p] & 0x0F
            p = end
            if opcode == 1:
                i = data.find(_CREATE_AT, body, end)
                if i < 0:
                    self._other(data[body:end])
                    continue
                i += _CA_LEN
                j = data.find(b",", i, end)
                created = int(data[i:j if j > 0 else data.find(b"}", i, end)])
                if created < start_ms:
                    late += 1
                    continue
                lat = int(now_ms - created)
                hist[lat if 0 <= lat < HIST_MS else (0 if lat < 0 else HIST_MS)] += 1
                count += 1
            elif opcode == 9:  # ping: answer with a (zero-)masked pong carrying the same payload
                payload = data[body:end]
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
            elif opcode == 8:
                payload = data[body:end]
                stats.closes[int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005] += 1
                self.closing = True
                self.transport.write(b"\x88\x82\0\0\0\0" + payload[:2])
                self.transport.close()
                return
        if p < n:
            self.buf = data[p:]
        stats.count += count
        stats.late += late
        stats.reads += 1

    def _other(self, payload: bytes) -> None:
        if not self.hello.done():
            msg = json.loads(payload)
            if msg.get("event") == "hello":
                self.hello.set_result(msg["data"])
                return
        self.stats.other += 1

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"\x88\x82\0\0\0\0\x03\xe8")  # close 1000
            self.transport.close()


async def connect(stats: Stats, host: str, port: int, token: str, timeout: float = 20.0) -> tuple[Subscriber, dict]:
    """Open one subscriber and wait for its `hello` (returned: connection_id, node_id, ...)."""
    loop = asyncio.get_running_loop()
    _, sub = await asyncio.wait_for(
        loop.create_connection(lambda: Subscriber(stats, host, port, token), host, port), timeout
    )
    try:
        hello = await asyncio.wait_for(sub.hello, timeout)
    except BaseException:
        sub.close()
        raise
    return sub, hello
