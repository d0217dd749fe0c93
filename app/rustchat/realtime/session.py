"""One logical WebSocket connection: its sequence numbers, replay log and socket writer.

A session outlives its socket for the resume window: while detached it keeps numbering and
logging the events it would have received, so a client that reconnects with its
`connection_id` and last `seq` gets exactly what it missed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from aiohttp import web

from rustchat.realtime.events import Event, frame
from rustchat.realtime.outbox import SocketWriter

CLOSE_REVOKED = 4001  # the token was revoked or expired: log in again (realtime.revocation)
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
        # The replay log: the events with consecutive seqs ending at self.seq. Only the shared
        # Event objects are kept (each holds its encoding once); a frame is rebuilt from its seq
        # and the event's tail when it is replayed. Keeping every recipient's frame instead cost
        # a bytes object per delivery (about 230 MB for 1,000 sessions) and doubled the entries
        # the garbage collector walks in each full collection.
        self._events: deque[Event] = deque(maxlen=replay_events)
        # While a session resumed from another node catches up, live events wait here unnumbered.
        self._held: list[tuple[bytes, Event]] | None = None
        self.send_queue = send_queue
        self._writer: SocketWriter | None = None
        self.ws: web.WebSocketResponse | None = None
        self.detached_at: float | None = time.monotonic()
        self._on_drop = on_drop

    @property
    def attached(self) -> bool:
        return self.ws is not None

    # -- delivery -----------------------------------------------------------------------------
    def push(self, tail: bytes, event: Event) -> None:
        """Number, log and send one event (`tail` is `event.tail()`). Never blocks: a client too
        far behind is dropped instead."""
        if self._held is not None:
            self._held.append((tail, event))
            return
        self.seq += 1
        self._events.append(event)
        if self._writer is not None:
            self._writer.send(b'{"seq":%d,' % self.seq + tail)  # events.frame, inlined: once per delivery

    def hold(self) -> None:
        self._held = []

    def restore(self, seq: int, replayed: list[tuple[int, Event]]) -> list[bytes]:
        """Adopt another node's numbering: `replayed` are (seq, event) in order, the first ones
        numbered there, the rest here. Then release the held live events not among them."""
        out = []
        for number, event in replayed:
            self._events.append(event)
            out.append(frame(number, event.tail()))
        self.seq = max([seq, *(n for n, _ in replayed)])
        held, self._held = self._held or [], None
        seen = {event.eid for _, event in replayed if event.eid}
        for tail, event in held:
            if event.eid not in seen:
                self.seq += 1
                self._events.append(event)
                out.append(frame(self.seq, tail))
        return out

    def replay_log(self) -> list[tuple[int, Event]]:
        first = self.seq - len(self._events) + 1
        return [(first + i, event) for i, event in enumerate(self._events)]

    def send_control(self, data: bytes) -> None:
        """Replies: not numbered, not replayed."""
        if self._writer is not None:
            self._writer.send(data)

    def overflowed(self) -> None:
        self._on_drop(self, "slow_consumer")

    # -- resume -------------------------------------------------------------------------------
    def missed_since(self, last_seq: int) -> list[bytes] | None:
        """Frames after `last_seq`, or None when some of them are no longer in the replay log."""
        if last_seq == self.seq:
            return []
        if last_seq > self.seq or last_seq < 0:
            return None
        first = self.seq - len(self._events) + 1
        if not self._events or first > last_seq + 1:
            return None
        start = last_seq + 1 - first
        return [frame(first + i, event.tail()) for i, event in enumerate(self._events) if i >= start]

    # -- socket lifecycle ---------------------------------------------------------------------
    def attach(self, writer: SocketWriter, backlog: list[bytes]) -> None:
        """Start writing to `writer`'s socket: first `backlog` (hello, replayed events), then live events."""
        self.ws = writer.ws
        self.detached_at = None
        self._writer = writer
        writer.send_all(backlog)

    def detach(self) -> web.WebSocketResponse | None:
        ws, self.ws = self.ws, None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.detached_at = time.monotonic()
        return ws
