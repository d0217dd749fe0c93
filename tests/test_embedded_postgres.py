"""The embedded PostgreSQL default, with real initdb/pg_ctl/postgres processes.

As root these exercise the `rustchat-pg` path, so the temp dirs live directly under /tmp with mode
0755 (pytest's tmp_path sits in a 0700 directory that user could not traverse).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from rustchat.db import embedded
from rustchat.db.embedded import EmbeddedPostgres, EmbeddedPostgresError, default_data_dir

IS_ROOT = os.geteuid() == 0


@pytest.fixture
def base_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rustchat-embedded-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for pgdata in path.glob("**/postgres"):
        if (pgdata / "postmaster.pid").exists():
            embedded.kill_server(pgdata, wait_reaped=False)
    shutil.rmtree(path, ignore_errors=True)


def _query(url: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def _tcp_socket_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(table):
            for line in Path(table).read_text().splitlines()[1:]:
                inodes.add(line.split()[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def test_data_survives_restart_no_tcp_port_one_user(base_dir: Path) -> None:
    data_dir = base_dir / "data"
    pg = EmbeddedPostgres(data_dir)
    url = pg.start()
    assert url.startswith("postgresql://postgres@/rustchat?host=/")
    pid = embedded.postmaster_pid(pg.pgdata)
    assert pid is not None
    assert not _socket_inodes(pid) & _tcp_socket_inodes(), "the postmaster opened a TCP socket"
    assert _query(url, "SHOW listen_addresses") == [("",)]
    socket_dir = Path(_query(url, "SHOW unix_socket_directories")[0][0])
    assert socket_dir.stat().st_mode & 0o777 == 0o700
    if IS_ROOT:
        assert pg.pgdata.stat().st_uid == embedded.server_account().uid
        assert _query(url, "SELECT current_setting('data_directory')") == [(str(pg.pgdata),)]
    _query(url, "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept')")
    # A second rustchat on the same data dir is refused, without disturbing the first.
    with pytest.raises(EmbeddedPostgresError, match="in use by another rustchat process"):
        EmbeddedPostgres(data_dir).start()
    assert _query(url, "SELECT count(*) FROM notes") == [(1,)]
    pg.stop()
    assert not embedded.process_alive(pid)
    pg.stop()  # idempotent

    with EmbeddedPostgres(data_dir) as again:
        assert again.url == url
        assert _query(url, "SELECT body FROM notes") == [("kept",)]
        assert embedded.postmaster_pid(again.pgdata) not in (None, pid)
    assert again.url is None


def test_no_binaries_is_a_clear_error(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = base_dir / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("RUSTCHAT_PG_BIN", str(empty))
    with pytest.raises(EmbeddedPostgresError, match=r"RUSTCHAT_PG_BIN=.*empty-bin does not contain initdb"):
        EmbeddedPostgres(base_dir / "data").start()
    assert not (base_dir / "data" / "postgres").exists()


def test_orphaned_server_is_refused_and_a_crashed_one_recovers(base_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = base_dir / "data"
    # A rustchat that dies without stopping its PostgreSQL leaves the server running.
    script = textwrap.dedent("""
        import os, sys, psycopg2
        from pathlib import Path
        from rustchat.db.embedded import EmbeddedPostgres
        url = EmbeddedPostgres(Path(sys.argv[1])).start()
        conn = psycopg2.connect(url); conn.autocommit = True
        conn.cursor().execute("CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script, str(data_dir)], check=True, timeout=60)
    pgdata = data_dir / "postgres"
    orphan = embedded.postmaster_pid(pgdata)
    assert orphan is not None
    with pytest.raises(EmbeddedPostgresError, match=rf"already running on .*\(pid {orphan}\)|pid {orphan}\) is already running"):
        EmbeddedPostgres(data_dir).start()

    # A crash leaves a stale postmaster.pid; after a reboot its pid may even belong to another
    # process, which PostgreSQL alone would take for a running postmaster.
    embedded.kill_server(pgdata)
    pidfile = pgdata / "postmaster.pid"
    assert pidfile.exists()
    with subprocess.Popen(["sleep", "60"]) as squatter:
        lines = pidfile.read_text().split("\n")
        lines[0] = str(squatter.pid)
        lines[2] = str(int(lines[2]) - 3600)  # the postmaster started before the "reboot"
        pidfile.write_text("\n".join(lines))
        try:
            with EmbeddedPostgres(data_dir) as pg:
                assert _query(pg.url, "SELECT v FROM t") == [(42,)]
        finally:
            squatter.kill()
    assert f"pid {squatter.pid} now belongs to another process" in caplog.text


@pytest.mark.skipif(not IS_ROOT, reason="only root runs PostgreSQL as another user")
def test_root_copies_unreachable_binaries_and_uses_a_short_socket_dir(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = embedded.pgserver_bin_dir()
    if source is None:
        pytest.skip("needs the pgserver package")
    # Like a venv under /root: a 0700 directory rustchat-pg cannot traverse.
    hidden = base_dir / "hidden"
    hidden.mkdir(mode=0o700)
    shutil.copytree(source.parent, hidden / "pgserver" / "pginstall", symlinks=True,
                    ignore=shutil.ignore_patterns("include"))
    libs = source.parents[2] / "pgserver.libs"
    if libs.is_dir():
        shutil.copytree(libs, hidden / "pgserver.libs", symlinks=True)
    monkeypatch.setenv("RUSTCHAT_PG_BIN", str(hidden / "pgserver" / "pginstall" / "bin"))
    # Deep enough that <pgdata>/socket/.s.PGSQL.5432 exceeds the 107-byte sun_path limit.
    data_dir = base_dir / ("d" * 90)
    with EmbeddedPostgres(data_dir) as pg:
        socket_dir = Path(_query(pg.url, "SHOW unix_socket_directories")[0][0])
        assert socket_dir.parent == Path("/tmp")
        assert socket_dir.stat().st_mode & 0o777 == 0o700
        assert (data_dir / "pginstall" / ".source").is_file()
    assert not socket_dir.exists()


@pytest.mark.skipif(not IS_ROOT, reason="only root runs PostgreSQL as another user")
def test_root_refuses_a_data_dir_the_server_user_cannot_reach(base_dir: Path) -> None:
    private = base_dir / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(EmbeddedPostgresError, match=r"not reachable .* RUSTCHAT_DATA_DIR=/var/lib/rustchat"):
        EmbeddedPostgres(private / "data").start()
    assert default_data_dir() == Path("/var/lib/rustchat")
