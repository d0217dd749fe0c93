"""The write side of WebSocket sessions: frames reach the kernel in as few writes as the load allows.

Why not `ws.send_frame` from a writer task per socket: that costs a task wake-up, a future, two
coroutine layers and one `write()` system call per frame, which was most of a delivery's cost
(docs/benchmarks.md, "Where the server's time goes"). Instead:

- A session hands each frame to its `SocketWriter`, which appends it to a pending list and, with
  the first frame since its last flush, registers with the process's `Outbox`.
- The outbox flushes every registered writer in one loop callback (`call_soon`): each socket's
  pending frames get their WebSocket headers (server frames are unmasked, so a header is 2-10
  bytes in front of the payload) and go out in one `transport.write`. Nothing waits for a timer:
  a frame that arrives alone is written in the same loop iteration; frames that arrive together
  (a burst of posts, several cluster messages in one Redis read) share one system call, so the
  cost per delivery falls as the load rises instead of climbing.
- Flow control: while a socket's transport is paused (the client does not read; the kernel's and
  the transport's buffers are full), its frames stay pending, at most RUSTCHAT_WS__SEND_QUEUE of
  them (one more and the session is dropped as a slow consumer), and one task per such socket
  waits for the transport to drain, then writes them. That socket never holds up the others.
- A socket that negotiated permessage-deflate (RUSTCHAT_WS__COMPRESSION=true) is written through
  aiohttp's own writer in that task: its frames depend on the connection's compressor state.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Iterable

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

log = logging.getLogger(__name__)

_FIN_TEXT = 0x81
_SHORT_HEADERS = tuple(bytes((_FIN_TEXT, n)) for n in range(126))
_PACK_LEN16 = struct.Struct("!BBH").pack
_PACK_LEN64 = struct.Struct("!BBQ").pack


def text_frame_header(n: int) -> bytes:
    if n < 126:
        return _SHORT_HEADERS[n]
    if n < 65536:
        return _PACK_LEN16(_FIN_TEXT, 126, n)
    return _PACK_LEN64(_FIN_TEXT, 127, n)


def text_frames(payloads: list[bytes]) -> bytes:
    """Unmasked, unfragmented text frames (RFC 6455 section 5.2) for each payload, back to back."""
    if len(payloads) == 1:
        data = payloads[0]
        return text_frame_header(len(data)) + data
    parts = []
    for data in payloads:
        parts.append(text_frame_header(len(data)))
        parts.append(data)
    return b"".join(parts)


class Outbox:
    """This process's writers with frames pending, flushed together once per loop iteration."""

    def __init__(self) -> None:
        self._dirty: list[SocketWriter] = []
        self._scheduled = False

    def mark(self, writer: SocketWriter) -> None:
        self._dirty.append(writer)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for writer in dirty:
            try:
                writer.flush()
            except Exception:  # one broken socket must not keep the others' frames back
                log.exception("flushing a WebSocket failed")
                writer.close()


class SocketWriter:
    """Pending frames of one WebSocket and how they get to its transport."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.BaseRequest,
        stream: AbstractStreamWriter,
        outbox: Outbox,
        *,
        max_pending: int,
        on_overflow: Callable[[], None],
    ) -> None:
        self.ws = ws
        self._protocol = request.protocol
        self._stream = stream
        self._outbox = outbox
        self._max_pending = max_pending
        self._on_overflow = on_overflow
        self._compressed = bool(ws.compress)
        self._pending: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def send(self, data: bytes) -> None:
        """Queue one frame's payload; it is written in this loop iteration unless the socket is paused."""
        if self._closed:
            return
        pending = self._pending
        if not pending and self._task is None:
            self._outbox.mark(self)
        pending.append(data)
        if len(pending) > self._max_pending and (self._task is not None or self._protocol.writing_paused):
            self._on_overflow()

    def send_all(self, frames: Iterable[bytes]) -> None:
        """Queue a backlog (hello, replayed events) without the slow-consumer bound."""
        for data in frames:
            if not self._pending and self._task is None and not self._closed:
                self._outbox.mark(self)
            self._pending.append(data)

    def flush(self) -> None:
        frames = self._pending
        if self._task is not None or not frames:
            return  # a drain task owns the pending frames
        transport = self._transport()
        if transport is None:
            frames.clear()
            return
        if self._compressed or self._protocol.writing_paused:
            self._task = asyncio.get_running_loop().create_task(self._drain_and_write())
            return
        self._pending = []
        transport.write(text_frames(frames))

    def close(self) -> None:
        """Stop writing: the socket is being closed or taken over (its frames stay in the replay log)."""
        self._closed = True
        self._pending.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _transport(self) -> asyncio.Transport | None:
        """The transport, or None once nothing more may be written (closing, closed, close frame sent)."""
        transport = self._protocol.transport
        if self._closed or transport is None or transport.is_closing() or self.ws.closed:
            return None
        return transport

    async def _drain_and_write(self) -> None:
        try:
            while self._pending:
                if self._compressed:
                    frames, self._pending = self._pending, []
                    for data in frames:
                        await self.ws.send_frame(data, WSMsgType.TEXT)
                    continue
                await self._stream.drain()
                transport = self._transport()
                if transport is None:
                    break
                frames, self._pending = self._pending, []
                transport.write(text_frames(frames))
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-write; the reader side notices and detaches the session.
            log.debug("WebSocket write stopped: %s", exc)
        finally:
            self._task = None
            if self._closed or self._transport() is None:
                self._pending.clear()
