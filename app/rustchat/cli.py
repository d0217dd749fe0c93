"""`rustchat` command line: serve, migrate, create-admin, check-config."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rustchat import __version__, logconfig
from rustchat.config import ConfigError, Settings, effective, load_settings


def _settings() -> Settings:
    try:
        settings = load_settings()
        logconfig.configure(settings.log, settings.log_format)
    except ConfigError as exc:
        print(f"rustchat: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings


@contextmanager
def database_url(settings: Settings, *, announce: bool = True) -> Iterator[str]:
    """The configured database, or the embedded one started for the duration of the block."""
    if settings.database_url:
        yield settings.database_url
        return
    from rustchat.db.embedded import EmbeddedPostgres, EmbeddedPostgresError, default_data_dir

    data_dir = Path(os.environ["RUSTCHAT_DATA_DIR"]) if os.environ.get("RUSTCHAT_DATA_DIR") else default_data_dir()
    embedded = EmbeddedPostgres(data_dir.resolve())
    try:
        url = embedded.start()
    except EmbeddedPostgresError as exc:
        print(f"rustchat: embedded PostgreSQL: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if announce:
        print(f"rustchat: embedded PostgreSQL running, data in {embedded.pgdata}", flush=True)
    try:
        yield url
    finally:
        embedded.stop()
        if announce:
            print("rustchat: embedded PostgreSQL stopped", flush=True)


async def _first_admin(url: str, settings: Settings, data_dir: Path) -> tuple[str, str | None]:
    """Make sure an admin exists; return (username, where to find a generated password)."""
    from rustchat.app import ensure_admin
    from rustchat.auth.passwords import hash_password
    from rustchat.db import migrations
    from rustchat.db.pool import Pool
    from rustchat.store import users

    await migrations.migrate(url)
    pool = Pool(url, settings.pool.__class__(max_connections=2, min_connections=0))
    await pool.start()
    try:
        if settings.admin_user:
            await ensure_admin(pool, settings)
            return settings.admin_user, None
        existing = await pool.fetchval("SELECT username FROM users WHERE is_admin AND delete_at = 0 ORDER BY create_at LIMIT 1")
        if existing:
            return existing, None
        password = secrets.token_urlsafe(12)
        await users.create(pool, "admin", "admin@localhost", await hash_password(password), is_admin=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        secret_file = data_dir / "admin-password"
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        return "admin", str(secret_file)
    finally:
        await pool.close()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings()
    # The one process of `serve` starts first: empty PROMETHEUS_MULTIPROC_DIR (when set) before
    # any metric is created, as gunicorn's on_starting hook does for its workers.
    from rustchat.gunicorn_hooks import clean_multiprocess_dir

    clean_multiprocess_dir()
    from aiohttp import web

    from rustchat.app import create_app

    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    if sys.platform != "win32":
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    with database_url(settings) as url:
        from rustchat.db.embedded import default_data_dir

        data_dir = Path(os.environ["RUSTCHAT_DATA_DIR"]) if os.environ.get("RUSTCHAT_DATA_DIR") else default_data_dir()
        admin, secret_file = asyncio.run(_first_admin(url, settings, data_dir))
        shown_host = "localhost" if host in ("0.0.0.0", "::", "") else host
        print(f"rustchat {__version__}: serving on http://{shown_host}:{port}", flush=True)
        if secret_file:
            if sys.stdout.isatty():
                print(f"rustchat: created admin user '{admin}' with password: {Path(secret_file).read_text().strip()}", flush=True)
            print(f"rustchat: admin login '{admin}', password in {secret_file} (mode 0600)", flush=True)
        else:
            print(f"rustchat: admin login '{admin}'", flush=True)
        web.run_app(create_app(settings, url), host=host, port=port, print=None, access_log=None,
                    handle_signals=True, shutdown_timeout=10)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from rustchat.db import migrations

    settings = _settings()
    with database_url(settings, announce=False) as url:
        applied = asyncio.run(migrations.migrate(url))
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    print("database schema is current" if not applied else f"{len(applied)} migration(s) applied")
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    from rustchat.auth.passwords import MIN_PASSWORD_LENGTH, hash_password
    from rustchat.db import migrations
    from rustchat.db.pool import Pool
    from rustchat.errors import ApiError
    from rustchat.store import users

    settings = _settings()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password for the new admin: ")
    if len(password) < MIN_PASSWORD_LENGTH:
        print(f"rustchat: the password must have at least {MIN_PASSWORD_LENGTH} characters", file=sys.stderr)
        return 2

    async def run(url: str) -> int:
        await migrations.migrate(url)
        pool = Pool(url, settings.pool.__class__(max_connections=2, min_connections=0))
        await pool.start()
        try:
            await users.create(pool, args.username, args.email or f"{args.username}@localhost",
                               await hash_password(password), is_admin=True)
        except ApiError as exc:
            print(f"rustchat: {exc.message}", file=sys.stderr)
            return 1
        finally:
            await pool.close()
        print(f"created admin user {args.username}")
        return 0

    with database_url(settings, announce=False) as url:
        return asyncio.run(run(url))


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings()
    rows = effective(settings)
    width = max(len(r[0]) for r in rows)
    for env, value, _doc in rows:
        print(f"{env:<{width}}  {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rustchat", description="RustChat team-chat server")
    parser.add_argument("--version", action="version", version=f"rustchat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server in one process (embedded PostgreSQL by default)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(func=cmd_migrate)
    ca = sub.add_parser("create-admin", help="create a system administrator")
    ca.add_argument("--username", required=True)
    ca.add_argument("--email", default=None)
    ca.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    ca.set_defaults(func=cmd_create_admin)
    sub.add_parser("check-config", help="print the effective configuration, secrets masked").set_defaults(
        func=cmd_check_config
    )
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
