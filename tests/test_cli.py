"""The command line: migrate, create-admin, and the admin it creates can log in."""

from __future__ import annotations

import os
import subprocess
import sys

import aiohttp

from tests.support.client import Api


def _cli(*args: str, database_url: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "RUSTCHAT_DATABASE_URL": database_url}
    for key in ("RUSTCHAT_ADMIN_USER", "RUSTCHAT_ADMIN_PASSWORD"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "rustchat", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=120)


async def test_migrate_then_create_admin(new_database, start_server, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    db = new_database()
    first = _cli("migrate", database_url=db)
    assert first.returncode == 0 and "applied 0001_initial" in first.stdout
    again = _cli("migrate", database_url=db)
    assert again.returncode == 0 and "database schema is current" in again.stdout
    made = _cli("create-admin", "--username", "boss", "--password-stdin", database_url=db, stdin="boss-password-1\n")
    assert made.returncode == 0, made.stderr
    dup = _cli("create-admin", "--username", "boss", "--password-stdin", database_url=db, stdin="boss-password-1\n")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    short = _cli("create-admin", "--username", "tiny", "--password-stdin", database_url=db, stdin="short\n")
    assert short.returncode == 2 and "at least 8" in short.stderr
    srv = start_server(db, name="cli-admin")
    boss = await Api(http, srv.url).login("boss", "boss-password-1")
    assert boss.user["is_admin"] is True
