"""Presence: a user is online while any of their WebSocket connections is live anywhere in the cluster.

The connection limiter reports transitions (first connection → online, last one gone → offline,
including a last connection that died with its node and was pruned by the sweep). Each is
announced as a `status_change` event `{"user_id", "status"}` to the users who share a team with
that user (the hub's `team_ids` scope: each recipient once, however many teams they share; the
user themself is left out).

Announcements go through one queue per process, in order. Before publishing, the current status
is read again: a transition already superseded (online, then offline a moment later) is not
announced, because the later one announces itself. Clients that need the truth ask
`GET /api/v1/users/{user_id}/status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from rustchat.realtime import events
from rustchat.realtime.events import Broadcast, Event
from rustchat.realtime.limits import RedisConnectionLimiter
from rustchat.store import teams

log = logging.getLogger(__name__)

QUEUE_MAX = 100_000
FLUSH_TIMEOUT = 2.0


class Presence:
    def __init__(self, limiter: RedisConnectionLimiter) -> None:
        self.limiter = limiter
        limiter.on_status = self.changed
        self.db: Any = None
        self.publisher: Any = None
        self._queue: asyncio.Queue[tuple[str, str]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.announced = 0

    def start(self, db: Any, publisher: Any) -> None:
        self.db = db
        self.publisher = publisher
        self._queue = asyncio.Queue(QUEUE_MAX)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Announce what is queued (briefly), then stop."""
        if self._task is None or self._queue is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), FLUSH_TIMEOUT)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._queue = None

    def changed(self, user_id: str, status: str) -> None:
        if self._queue is None:
            return
        try:
            self._queue.put_nowait((user_id, status))
        except asyncio.QueueFull:
            log.warning("presence queue full: status %s of user %s not announced", status, user_id)

    async def statuses(self, user_ids: list[str]) -> dict[str, str]:
        return await self.limiter.statuses(user_ids)

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            user_id, status = await queue.get()
            try:
                await self._announce(user_id, status)
            except Exception as exc:  # the database or Redis may be down; presence is advisory
                log.warning("status_change of user %s not announced: %s", user_id, exc)
            finally:
                queue.task_done()

    async def _announce(self, user_id: str, status: str) -> None:
        team_ids = await teams.team_ids_for_user(self.db, user_id)
        if not team_ids:
            return  # nobody shares a team with this user
        current = (await self.limiter.statuses([user_id]))[user_id]
        if current != status:
            return  # superseded by a later transition, which announces itself
        self.publisher.publish(Event(
            events.STATUS_CHANGE, {"user_id": user_id, "status": status},
            Broadcast(team_ids=tuple(sorted(team_ids)), omit_user_id=user_id),
        ))
        self.announced += 1
        log.debug("user %s is %s", user_id, status)


PRESENCE: web.AppKey[Presence] = web.AppKey("presence", Presence)
