"""Versioned SQL migrations.

Files `migrations/NNNN_name.sql` are applied in order, each in its own transaction. A session-level
advisory lock serialises concurrent runners, so several nodes starting at once apply each migration
exactly once: the others wait, then find nothing left to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import aiopg

log = logging.getLogger(__name__)

# Arbitrary but fixed: every RustChat process agrees on it, nothing else in the database uses it.
MIGRATION_LOCK_KEY = 0x52555354_43484154 & 0x7FFFFFFFFFFFFFFF

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    out = []
    for entry in resources.files("rustchat.db").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort(key=lambda mig: mig.version)
    return out


async def _applied(cur: aiopg.Cursor) -> set[int]:
    await cur.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
    (exists,) = await cur.fetchone()
    if not exists:
        return set()
    await cur.execute("SELECT version FROM schema_migrations")
    return {row[0] for row in await cur.fetchall()}


async def migrate(dsn: str) -> list[Migration]:
    """Apply every pending migration; return what this call applied."""
    done: list[Migration] = []
    async with aiopg.connect(dsn, timeout=600) as conn, conn.cursor() as cur:
        await cur.execute("SET application_name = 'rustchat'")
        await cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            await cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = await _applied(cur)
            for mig in available():
                if mig.version in applied:
                    continue
                log.info("applying migration %04d_%s", mig.version, mig.name)
                await cur.execute("BEGIN")
                try:
                    await cur.execute(mig.sql)
                    await cur.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (mig.version, mig.name),
                    )
                    await cur.execute("COMMIT")
                except BaseException:
                    await cur.execute("ROLLBACK")
                    raise
                done.append(mig)
        finally:
            await cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return done


async def pending_versions(cur: aiopg.Cursor) -> list[int]:
    """Versions shipped with this code but not applied yet (readiness reports them)."""
    applied = await _applied(cur)
    return [m.version for m in available() if m.version not in applied]
