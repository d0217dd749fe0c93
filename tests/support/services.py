"""Throwaway PostgreSQL and Redis servers for the test suite, on 127.0.0.1 and free ports.

Tests that simulate outages stop, kill and restart these; nothing here touches the machine's own
servers. PostgreSQL binaries and the root handling (PostgreSQL refuses to run as root) come from
rustchat.db.embedded, so the suite exercises the same lookup as `rustchat serve`.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from psycopg2 import sql

from rustchat.db import embedded


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (another process could still take it later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _temp_dir(prefix: str) -> Path:
    # Under /tmp with 0755 rather than pytest's 0700 tmp_path: as root, PostgreSQL runs as
    # rustchat-pg, which must traverse it.
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


class PostgresInstance:
    """A throwaway PostgreSQL on 127.0.0.1:<free port>, trust auth, data in a temp dir."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.dir = _temp_dir("rustchat-test-pg-")
        self.pgdata = self.dir / "pgdata"
        self.log_file = self.dir / "postgres.log"
        self._account = embedded.server_account()
        self._bin_dir: Path | None = None
        # Removes the directory (and any server still on it) when the instance is garbage
        # collected or at interpreter exit; conftest only calls stop().
        self._finalizer = weakref.finalize(self, _discard_postgres, self.pgdata, self.dir)

    def start(self) -> None:
        if embedded.postmaster_pid(self.pgdata) is not None:
            return
        if self._bin_dir is None:
            self._bin_dir = embedded.usable_bin_dir(embedded.find_bin_dir(), self._account, self.dir / "pginstall")
        if not (self.pgdata / "PG_VERSION").is_file():
            embedded.initdb(self._bin_dir, self.pgdata, self._account, auth_local="trust",
                            auth_host="trust", sync=False)
        if self._account is not None:
            # pg_ctl, running as rustchat-pg, appends to it.
            self.log_file.touch()
            self._account.chown(self.log_file)
        embedded.pg_ctl_start(self._bin_dir, self.pgdata, self._account, log_file=self.log_file, settings={
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            # Durability is pointless for throwaway data; speed is not.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            # A session runs several server processes, each with its own pool.
            "max_connections": "300",
        })

    def stop(self) -> None:
        """Fast shutdown; the data stays for a restart."""
        if self._bin_dir is not None:
            embedded.pg_ctl_stop(self._bin_dir, self.pgdata, self._account, mode="fast")

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends, like a crash; restart() recovers."""
        embedded.kill_server(self.pgdata)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its data."""
        self._finalizer()

    def create_database(self, name: str) -> str:
        with _admin_connection(self.url) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return _with_database(self.url, name)

    def __enter__(self) -> PostgresInstance:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _discard_postgres(pgdata: Path, directory: Path) -> None:
    # Killing is enough: the data is deleted right after, and nothing will start on it again.
    embedded.kill_server(pgdata, wait_reaped=False)
    shutil.rmtree(directory, ignore_errors=True)


class _admin_connection:
    """An autocommit connection (CREATE/DROP DATABASE cannot run in a transaction), closed on exit."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg2.connect(url, connect_timeout=10)
        self.conn.autocommit = True

    def __enter__(self) -> psycopg2.extensions.connection:
        return self.conn

    def __exit__(self, *exc_info: object) -> None:
        self.conn.close()


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def fresh_database(admin_url: str, prefix: str = "rustchat_test") -> tuple[str, Callable[[], None]]:
    """CREATE DATABASE <prefix>_<random> on the server at admin_url; return (url, drop)."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with _admin_connection(admin_url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop() -> None:
        # FORCE: server processes under test may still hold connections.
        with _admin_connection(admin_url) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    return _with_database(admin_url, name), drop


def redis_server_binary() -> str:
    """Path of redis-server; skips the test with install instructions when it is missing."""
    found = shutil.which("redis-server")
    if not found:
        pytest.skip("redis-server not found on PATH; install it (Debian/Ubuntu: apt-get install -y redis-server, "
                    "macOS: brew install redis) or set RUSTCHAT_TEST_REDIS_URL")
    return found


class RedisInstance:
    """A throwaway redis-server on 127.0.0.1:<free port>, no persistence, its own dir.

    restart() keeps the port, so clients can reconnect to the same URL after an outage.
    """

    def __init__(self, *extra_args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.extra_args: Sequence[str] = extra_args
        self.dir = _temp_dir("rustchat-test-redis-")
        self.log_file = self.dir / "redis.log"
        # A box rather than an attribute: the finalizer must not hold on to self.
        self._box: list[subprocess.Popen[bytes] | None] = [None]
        self._finalizer = weakref.finalize(self, _discard_redis, self._box, self.dir)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._box[0]

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        cmd = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", str(self.dir),
               "--logfile", str(self.log_file), "--daemonize", "no", *self.extra_args]
        deadline = time.monotonic() + timeout
        while True:
            self._box[0] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
            if self._wait_ready(deadline):
                return
            # The old socket may linger briefly after a restart; try the same port again.
            if time.monotonic() > deadline:
                tail = self.log_file.read_text(errors="replace")[-1500:] if self.log_file.exists() else ""
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")
            time.sleep(0.1)

    def _wait_ready(self, deadline: float) -> bool:
        assert self.proc is not None
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """SIGTERM and wait; without persistence redis-server exits at once."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Kill the server and delete its dir."""
        self._finalizer()

    def _end(self, sig: signal.Signals) -> None:
        _end_process(self._box, sig)

    def __enter__(self) -> RedisInstance:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _end_process(box: list[subprocess.Popen[bytes] | None], sig: signal.Signals) -> None:
    proc, box[0] = box[0], None
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _discard_redis(box: list[subprocess.Popen[bytes] | None], directory: Path) -> None:
    _end_process(box, signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)
