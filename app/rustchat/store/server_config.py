"""The `server_config` table: row `default`, JSONB column `site`."""

from __future__ import annotations

import json
from typing import Any

from rustchat.db.pool import Pool
from rustchat.ids import now_ms

DEFAULT_SITE: dict[str, Any] = {"max_simultaneous_connections": 5}


async def load_site(db: Pool) -> dict[str, Any]:
    value = await db.fetchval("SELECT site FROM server_config WHERE id = 'default'")
    site = dict(DEFAULT_SITE)
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict):
        site.update(value)
    return site


async def update_site(db: Pool, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge `changes` into `site` (JSONB `||`), so keys set by operators' SQL survive."""
    await db.execute(
        "INSERT INTO server_config (id, site, update_at) VALUES ('default', %s::jsonb, %s)"
        " ON CONFLICT (id) DO UPDATE SET site = server_config.site || EXCLUDED.site, update_at = EXCLUDED.update_at",
        (json.dumps(changes), now_ms()),
    )
    return await load_site(db)
