"""The local hub: this process's WebSocket sessions, indexed by user, channel and team.

`deliver` is the hot path. It runs synchronously on the event loop: pick the recipients from the
indexes, encode the event once, hand a frame to each session's socket writer, which the outbox
flushes once per loop iteration (realtime.outbox). Nothing in it awaits, so a slow client can
never hold up delivery to the others; it falls too far behind and is dropped instead (and can
resume from its replay log).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable

from rustchat import metrics
from rustchat.ids import new_id
from rustchat.realtime.events import Event, MembershipChange
from rustchat.realtime.outbox import Outbox
from rustchat.realtime.session import CLOSE_REVOKED, CLOSE_SLOW_CONSUMER, Session

log = logging.getLogger(__name__)


class Hub:
    def __init__(self, *, send_queue: int, replay_events: int, resume_window_secs: float) -> None:
        self.sessions: dict[str, Session] = {}
        self.outbox = Outbox()
        self._by_user: dict[str, set[Session]] = defaultdict(set)
        self._by_channel: dict[str, set[Session]] = defaultdict(set)
        self._by_team: dict[str, set[Session]] = defaultdict(set)
        self._send_queue = send_queue
        self._replay_events = replay_events
        self.resume_window_secs = resume_window_secs
        # Sessions still loading their memberships from the database record changes that arrive
        # meanwhile and apply them afterwards, so a join racing a connect is not lost.
        self._loading: dict[Session, list[MembershipChange]] = {}
        self.dropped: dict[str, int] = defaultdict(int)
        self.delivered = 0

    # -- sessions -------------------------------------------------------------------------------
    def new_session(self, user_id: str, token_hash: str, session_id: str | None = None) -> Session:
        stale = self.sessions.get(session_id) if session_id else None
        if stale is not None:
            self.remove(stale)
        session = Session(
            session_id or new_id(),
            user_id,
            token_hash=token_hash,
            send_queue=self._send_queue,
            replay_events=self._replay_events,
            on_drop=self._drop,
        )
        self.sessions[session.id] = session
        self._by_user[user_id].add(session)
        self._loading[session] = []
        return session

    def loaded(self, session: Session, channels: set[str], teams: set[str]) -> None:
        for ch in channels:
            self._index(session, "add_channel", ch)
        for team in teams:
            self._index(session, "add_team", team)
        for change in self._loading.pop(session, []):
            self._index(session, change.op, change.target_id)

    def remove(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self._loading.pop(session, None)
        _discard(self._by_user, session.user_id, session)
        for ch in session.channels:
            _discard(self._by_channel, ch, session)
        for team in session.teams:
            _discard(self._by_team, team, session)

    def user_sessions(self, user_id: str) -> set[Session]:
        return self._by_user.get(user_id, set())

    def attached_count(self, user_id: str | None = None) -> int:
        pool = self.sessions.values() if user_id is None else self._by_user.get(user_id, ())
        return sum(1 for s in pool if s.attached)

    def expire_detached(self) -> int:
        cutoff = time.monotonic() - self.resume_window_secs
        stale = [s for s in self.sessions.values() if s.detached_at is not None and s.detached_at < cutoff]
        for s in stale:
            self.remove(s)
        return len(stale)

    # -- delivery -------------------------------------------------------------------------------
    def deliver(self, event: Event) -> int:
        """Deliver to this process's sessions; return how many received it."""
        for change in event.membership:
            if change.op.startswith("add_"):
                self._apply(change)
        recipients = self._recipients(event)
        if recipients:
            try:
                tail = event.tail()
            except (TypeError, ValueError):  # e.g. a lone surrogate: not sendable, to anyone
                metrics.EVENTS_DROPPED.labels("unencodable").inc()
                log.warning("event %s not delivered: it cannot be encoded as UTF-8 JSON", event.event)
                recipients = []
            for session in recipients:
                session.push(tail, event)
        for change in event.membership:
            if change.op.startswith("remove_"):
                self._apply(change)
        self.delivered += len(recipients)
        metrics.EVENTS_DELIVERED.inc(len(recipients))
        return len(recipients)

    def _recipients(self, event: Event) -> list[Session]:
        b = event.broadcast
        if b.team_ids:
            pool = set().union(*(self._by_team.get(t, ()) for t in b.team_ids))
        elif b.channel_id:
            pool = self._by_channel.get(b.channel_id, ())
        elif b.team_id:
            pool = self._by_team.get(b.team_id, ())
        elif b.user_id:
            pool = self._by_user.get(b.user_id, ())
        elif b.everyone:
            pool = self.sessions.values()
        else:
            metrics.EVENTS_DROPPED.labels("no_scope").inc()  # never "everyone" by omission
            pool = ()
        if b.omit_user_id:
            return [s for s in pool if s.user_id != b.omit_user_id]
        return list(pool)

    def _apply(self, change: MembershipChange) -> None:
        for session in self._by_user.get(change.user_id, ()):
            if session in self._loading:
                self._loading[session].append(change)
            self._index(session, change.op, change.target_id)

    def _index(self, session: Session, op: str, target: str) -> None:
        if op == "add_channel":
            session.channels.add(target)
            self._by_channel[target].add(session)
        elif op == "remove_channel":
            session.channels.discard(target)
            _discard(self._by_channel, target, session)
        elif op == "add_team":
            session.teams.add(target)
            self._by_team[target].add(session)
        elif op == "remove_team":
            session.teams.discard(target)
            _discard(self._by_team, target, session)

    def _drop(self, session: Session, reason: str) -> None:
        self.dropped[reason] += 1
        metrics.EVENTS_DROPPED.labels(reason).inc()
        ws = session.detach()
        log.warning("dropping WebSocket session %s of user %s: %s", session.id, session.user_id, reason)
        if ws is not None and not ws.closed:
            asyncio.get_running_loop().create_task(_close(ws, CLOSE_SLOW_CONSUMER, b"slow consumer: send queue full"))

    def close_token(self, token_hash: str, message: bytes = b"session revoked") -> int:
        """End the sessions opened with a token that is no longer valid (close 4001, not resumable)."""
        return self.close_sessions(lambda s: s.token_hash == token_hash, CLOSE_REVOKED, message)

    def close_sessions(self, predicate: Callable[[Session], bool], code: int, message: bytes) -> int:
        n = 0
        for session in list(self.sessions.values()):
            if predicate(session):
                ws = session.detach()
                self.remove(session)
                if ws is not None and not ws.closed:
                    asyncio.get_running_loop().create_task(_close(ws, code, message))
                n += 1
        return n


    async def drain(self, code: int, reason: Callable[[], bytes]) -> int:
        """Close every attached socket (sessions stay, so they can be resumed elsewhere)."""
        closing = []
        for session in list(self.sessions.values()):
            ws = session.detach() if session.attached else None
            if ws is not None and not ws.closed:
                closing.append(_close(ws, code, reason()))
        await asyncio.gather(*closing)
        return len(closing)


async def _close(ws, code: int, message: bytes) -> None:  # noqa: ANN001
    try:
        await asyncio.wait_for(ws.close(code=code, message=message), timeout=2.0)
    except (TimeoutError, ConnectionError, RuntimeError):
        # A client too slow to take a close frame gets its transport cut.
        transport = getattr(getattr(ws, "_req", None), "transport", None)
        if transport is not None:
            transport.abort()


def _discard(index: dict[str, set[Session]], key: str, session: Session) -> None:
    bucket = index.get(key)
    if bucket is not None:
        bucket.discard(session)
        if not bucket:
            del index[key]
