"""Per-user WebSocket connection limits.

`LocalConnectionLimiter` counts this process's connections; the cluster-wide limiter (Redis)
implements the same two calls, so the WebSocket handler does not care which is in force.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol


class ConnectionLimiter(Protocol):
    async def acquire(self, user_id: str, connection_id: str, limit: int) -> bool: ...
    async def release(self, user_id: str, connection_id: str) -> None: ...
    def count(self, user_id: str) -> int: ...


class LocalConnectionLimiter:
    def __init__(self) -> None:
        self._live: dict[str, set[str]] = defaultdict(set)

    async def acquire(self, user_id: str, connection_id: str, limit: int) -> bool:
        live = self._live[user_id]
        if connection_id in live:
            return True
        if len(live) >= limit:
            return False
        live.add(connection_id)
        return True

    async def release(self, user_id: str, connection_id: str) -> None:
        live = self._live.get(user_id)
        if live is not None:
            live.discard(connection_id)
            if not live:
                del self._live[user_id]

    def count(self, user_id: str) -> int:
        return len(self._live.get(user_id, ()))
