"""`server_config.site`, cached per process and refreshed in the background.

The WebSocket connect path reads the limit from memory; a change made through the API or by an
operator's SQL `UPDATE` reaches every node within one refresh interval, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from rustchat.db.pool import DatabaseUnavailable, Pool
from rustchat.store import server_config

log = logging.getLogger(__name__)


class SiteConfig:
    def __init__(self, db: Pool, refresh_secs: float = 3.0) -> None:
        self._db = db
        self._refresh_secs = refresh_secs
        self.site: dict[str, Any] = dict(server_config.DEFAULT_SITE)
        self._task: asyncio.Task[None] | None = None

    @property
    def max_simultaneous_connections(self) -> int:
        value = self.site.get("max_simultaneous_connections", 5)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 5

    async def refresh(self) -> None:
        self.site = await server_config.load_site(self._db)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_secs)
            try:
                await self.refresh()
            except DatabaseUnavailable as exc:
                log.debug("site config refresh skipped: %s", exc)
            except Exception:
                log.exception("site config refresh failed")
