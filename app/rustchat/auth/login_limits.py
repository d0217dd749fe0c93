"""Failed-login limits per account and per client address.

Counted in PostgreSQL (one upsert per failure), so the limit is the same whichever worker or
node a request lands on, with or without Redis. A fixed window keeps it to one row per key.
"""

from __future__ import annotations

from dataclasses import dataclass

from rustchat.db.pool import Pool
from rustchat.ids import now_ms


@dataclass(frozen=True)
class LoginLimits:
    per_account: int
    per_address: int
    window_secs: int


async def retry_after(db: Pool, limits: LoginLimits, account: str, address: str) -> int | None:
    """Seconds until a blocked caller may try again, or None when not blocked."""
    window_ms = limits.window_secs * 1000
    rows = await db.fetch(
        "SELECT scope, failures, window_start FROM login_failures"
        " WHERE (scope = 'account' AND key = %s) OR (scope = 'address' AND key = %s)",
        (account, address),
    )
    now = now_ms()
    wait = 0
    for scope, failures, window_start in rows:
        cap = limits.per_account if scope == "account" else limits.per_address
        if failures >= cap and now - window_start < window_ms:
            wait = max(wait, (window_start + window_ms - now) // 1000 + 1)
    return wait or None


async def record_failure(db: Pool, limits: LoginLimits, account: str, address: str) -> None:
    now = now_ms()
    window_ms = limits.window_secs * 1000
    for scope, key in (("account", account), ("address", address)):
        await db.execute(
            "INSERT INTO login_failures (scope, key, window_start, failures) VALUES (%s, %s, %s, 1)"
            " ON CONFLICT (scope, key) DO UPDATE SET"
            "  failures = CASE WHEN %s - login_failures.window_start >= %s THEN 1"
            "                  ELSE login_failures.failures + 1 END,"
            "  window_start = CASE WHEN %s - login_failures.window_start >= %s THEN %s"
            "                  ELSE login_failures.window_start END",
            (scope, key, now, now, window_ms, now, window_ms, now),
        )


async def clear_account(db: Pool, account: str) -> None:
    await db.execute("DELETE FROM login_failures WHERE scope = 'account' AND key = %s", (account,))
