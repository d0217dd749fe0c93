"""One logical WebSocket connection: its sequence numbers, replay log and bounded send queue.

A session outlives its socket for the resume window: while detached it keeps numbering and
logging the events it would have received, so a client that reconnects with its
`connection_id` and last `seq` gets exactly what it missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from aiohttp import WSMsgType, web

from rustchat.realtime.events import Event, frame

log = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 1013  # "try again later": the client may resume and catch up from the replay log


class Session:
    def __init__(
        self,
        session_id: str,
        user_id: str,
        *,
        token_hash: str,
        send_queue: int,
        replay_events: int,
        on_drop: Callable[[Session, str], None],
    ) -> None:
        self.id = session_id
        self.user_id = user_id
        self.token_hash = token_hash
        self.channels: set[str] = set()
        self.teams: set[str] = set()
        self.seq = 0
        # The replay log: frames with consecutive seqs ending at self.seq, and beside them the
        # events (for their stream ids when resuming on another node). Two flat deques rather
        # than a tuple per entry: bytes and the shared Event objects add nothing for the garbage
        # collector to walk, where 512 tuples per session made full collections take 100s of ms.
        self._frames: deque[bytes] = deque(maxlen=replay_events)
        self._events: deque[Event | None] = deque(maxlen=replay_events)
        # While a session resumed from another node catches up, live events wait here unnumbered.
        self._held: list[tuple[bytes, Event | None]] | None = None
        self._queue_size = send_queue
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.ws: web.WebSocketResponse | None = None
        self.detached_at: float | None = time.monotonic()
        self._on_drop = on_drop

    @property
    def attached(self) -> bool:
        return self.ws is not None

    # -- delivery -----------------------------------------------------------------------------
    def push(self, tail: bytes, event: Event | None = None) -> None:
        """Number, log and queue one event. Never blocks: a full queue drops the socket, not others."""
        if self._held is not None:
            self._held.append((tail, event))
            return
        self.seq += 1
        data = frame(self.seq, tail)
        self._log(data, event)
        self._enqueue(data)

    def _log(self, data: bytes, event: Event | None) -> None:
        self._frames.append(data)
        self._events.append(event)

    def hold(self) -> None:
        self._held = []

    def restore(self, seq: int, replayed: list[tuple[int, Event]]) -> list[bytes]:
        """Adopt another node's numbering: `replayed` are (seq, event) in order, the first ones
        numbered there, the rest here. Then release the held live events not among them."""
        out = []
        for number, event in replayed:
            data = frame(number, event.tail())
            self._log(data, event)
            out.append(data)
        self.seq = max([seq, *(n for n, _ in replayed)])
        held, self._held = self._held or [], None
        seen = {event.eid for _, event in replayed if event.eid}
        for tail, event in held:
            if event is None or event.eid not in seen:
                self.seq += 1
                data = frame(self.seq, tail)
                self._log(data, event)
                out.append(data)
        return out

    def replay_log(self) -> list[tuple[int, Event | None]]:
        first = self.seq - len(self._events) + 1
        return [(first + i, event) for i, event in enumerate(self._events)]

    def send_control(self, data: bytes) -> None:
        """Replies and hello: not numbered, not replayed."""
        self._enqueue(data)

    def _enqueue(self, data: bytes) -> None:
        if self._queue is None:
            return
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self._on_drop(self, "slow_consumer")

    # -- resume -------------------------------------------------------------------------------
    def missed_since(self, last_seq: int) -> list[bytes] | None:
        """Frames after `last_seq`, or None when some of them are no longer in the replay log."""
        if last_seq == self.seq:
            return []
        if last_seq > self.seq or last_seq < 0:
            return None
        first = self.seq - len(self._frames) + 1
        if not self._frames or first > last_seq + 1:
            return None
        return list(self._frames)[last_seq + 1 - first:]

    # -- socket lifecycle ---------------------------------------------------------------------
    def attach(self, ws: web.WebSocketResponse, backlog: list[bytes]) -> None:
        """Start writing to `ws`: first `backlog` (hello, replayed events), then live events."""
        self.ws = ws
        self.detached_at = None
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(self._queue_size)
        self._queue = queue
        self._writer = asyncio.get_running_loop().create_task(self._write(ws, queue, backlog))

    def detach(self) -> web.WebSocketResponse | None:
        ws, self.ws = self.ws, None
        if self._queue is not None:
            self._queue = None
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        self._writer = None
        self.detached_at = time.monotonic()
        return ws

    async def _write(self, ws: web.WebSocketResponse, queue: asyncio.Queue[bytes | None], backlog: list[bytes]) -> None:
        try:
            for data in backlog:
                await ws.send_frame(data, WSMsgType.TEXT)
            while True:
                data = await queue.get()
                if data is None:
                    return
                await ws.send_frame(data, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-write; the reader side notices and detaches the session.
            log.debug("write to session %s stopped: %s", self.id, exc)
