"""The embedded PostgreSQL used when no RUSTCHAT_DATABASE_URL is configured.

We drive initdb/pg_ctl ourselves rather than through pgserver's PostgresServer: that class
chmods every parent directory up to / when run as root. pgserver is only a source of
relocatable binaries.

The server listens on a Unix socket only, in a directory of mode 0700 owned by the server's
user, which is what makes `trust` authentication acceptable: only that user (and root) can
reach the socket. PostgreSQL refuses to run as root, so as root the server runs as the
unprivileged system user `rustchat-pg`.

The lower-level helpers (binary lookup, server account, initdb, pg_ctl) are shared with the test
suite's throwaway servers (tests/support/services.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import platform
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

logger = logging.getLogger(__name__)

SERVER_USER = "rustchat-pg"
ROOT_DATA_DIR = Path("/var/lib/rustchat")
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_PORT = 5432  # only names the socket file (.s.PGSQL.5432); no TCP port is opened
# Characters PostgreSQL's unix_socket_directories list parser and pg_ctl's shell line take as is.
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9/._+-]+$")
_CONF_MARKER = "# --- rustchat embedded defaults"


class EmbeddedPostgresError(Exception):
    """Something an operator has to fix; the message is a one-liner meant for them."""


def default_data_dir() -> Path:
    """./data for a normal user; /var/lib/rustchat for root.

    As root the server runs as `rustchat-pg`, which must be able to traverse the data dir's
    parents; a checkout under /root (mode 0700) would not work, /var/lib/rustchat (FHS) does.
    """
    if _is_root():
        return ROOT_DATA_DIR
    return Path("data").resolve()


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


# --- server account ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerAccount:
    """The unprivileged user PostgreSQL runs as when we are root."""

    name: str
    uid: int
    gid: int

    def chown(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid, follow_symlinks=False)


def server_account() -> ServerAccount | None:
    """None when not root (the server runs as us); else `rustchat-pg`, created if missing."""
    if not _is_root():
        return None
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        entry = _create_server_user()
    return ServerAccount(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create_server_user() -> pwd.struct_passwd:
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    cmd = [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise EmbeddedPostgresError(
            f"PostgreSQL cannot run as root and creating the system user {SERVER_USER} failed ({exc}); "
            f"create it yourself or run rustchat as a normal user") from None
    try:
        entry = pwd.getpwnam(SERVER_USER)  # a concurrent useradd may have won the race
    except KeyError:
        raise EmbeddedPostgresError(
            f"PostgreSQL cannot run as root and `{shlex.join(cmd)}` failed: {proc.stderr.strip()}") from None
    logger.info("created system user %s (uid %d) to run the embedded PostgreSQL", SERVER_USER, entry.pw_uid)
    return entry


def run_as(account: ServerAccount | None, cmd: Sequence[str | Path], *, cwd: Path | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the server's user, without the caller's PG* settings."""
    # PGDATA, PGPORT, PGOPTIONS... from the operator's shell would redirect or alter the tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    kwargs: dict = {}
    if account is not None:
        # extra_groups=[] drops root's supplementary groups too, not just uid/gid.
        kwargs = {"user": account.uid, "group": account.gid, "extra_groups": []}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


def reachable(path: Path, account: ServerAccount | None) -> bool:
    """Whether the account can traverse into `path` (every parent included, ACLs included)."""
    if account is None:
        return os.access(path, os.X_OK)
    return run_as(account, ["test", "-x", str(path)], cwd=Path("/"), timeout=30).returncode == 0


def owned_dir(path: Path, account: ServerAccount | None, mode: int = 0o700) -> Path:
    """Create (or fix) a directory the server's user owns with `mode`."""
    path.mkdir(parents=True, exist_ok=True)
    if account is not None:
        account.chown(path)
    path.chmod(mode)
    return path


# --- binaries ---------------------------------------------------------------------------------


def pgserver_bin_dir() -> Path | None:
    """pgserver's bundled bin dir, located without importing pgserver itself."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    return None


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bin_dir() -> Path:
    """RUSTCHAT_PG_BIN, else pgserver's binaries, else the newest /usr/lib/postgresql/*/bin."""
    override = os.environ.get("RUSTCHAT_PG_BIN")
    if override:
        bin_dir = Path(override).expanduser().resolve()
        missing = [tool for tool in ("initdb", "pg_ctl", "postgres") if not (bin_dir / tool).is_file()]
        if missing:
            raise EmbeddedPostgresError(
                f"RUSTCHAT_PG_BIN={override} does not contain {', '.join(missing)}; "
                f"point it at a PostgreSQL bin directory")
        return bin_dir
    bundled = pgserver_bin_dir()
    if bundled is not None:
        return bundled
    system = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").is_file()]
    if system:
        return max(system, key=_version_key)
    raise EmbeddedPostgresError(
        "no PostgreSQL binaries found (looked at RUSTCHAT_PG_BIN, the pgserver package and "
        "/usr/lib/postgresql/*/bin); `pip install pgserver`, install PostgreSQL, or set RUSTCHAT_DATABASE_URL")


def server_version(bin_dir: Path) -> str:
    """e.g. "16.2", from `postgres --version` (which, unlike everything else, root may run)."""
    proc = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"(\d+(?:\.\d+)*)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise EmbeddedPostgresError(f"{bin_dir / 'postgres'} --version failed: {_oneline(proc.stderr)}")
    return match.group(1)


def usable_bin_dir(bin_dir: Path, account: ServerAccount | None, copy_to: Path) -> Path:
    """`bin_dir`, or a copy of its installation under `copy_to` when the account can't reach it.

    As root, a venv under /root (mode 0700) is out of rustchat-pg's reach. A relocatable install
    (bin, lib, share side by side, as pgserver's) can be copied once to where it can be reached.
    """
    if account is None or reachable(bin_dir / "postgres", account):
        return bin_dir
    root = bin_dir.parent
    if not all((root / d).is_dir() for d in ("bin", "lib", "share")):
        raise EmbeddedPostgresError(
            f"{bin_dir} is not accessible to the {account.name} user and is not a relocatable "
            f"install that could be copied; set RUSTCHAT_PG_BIN to a bin directory it can read")
    # pgserver's wheel links initdb/psql against libpq via RPATH $ORIGIN/../../../pgserver.libs,
    # so the copy keeps that relative layout; otherwise the loader would look outside copy_to.
    libs = root.parent.parent / f"{root.parent.name}.libs"
    layout = Path(root.parent.name, root.name) if libs.is_dir() else Path()
    copied_bin = copy_to / layout / "bin"
    stamp = f"{bin_dir}\n{server_version(bin_dir)}\n{(bin_dir / 'postgres').stat().st_mtime_ns}\n"
    stamp_file = copy_to / ".source"
    if stamp_file.is_file() and stamp_file.read_text() == stamp and (copied_bin / "postgres").is_file():
        return copied_bin
    staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=copy_to.parent))
    try:
        for sub in ("bin", "lib", "share"):
            shutil.copytree(root / sub, staging / layout / sub, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        _world_readable(staging)
        (staging / ".source").write_text(stamp)
        if copy_to.exists():
            shutil.rmtree(copy_to)
        staging.rename(copy_to)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("copied PostgreSQL binaries from %s to %s so that %s can run them", root, copy_to, account.name)
    if not reachable(copied_bin / "postgres", account):
        raise EmbeddedPostgresError(
            f"copied the PostgreSQL binaries to {copy_to} but {account.name} cannot reach them; "
            f"check the permissions of its parent directories")
    return copied_bin


def _world_readable(top: Path) -> None:
    """Root-owned, readable by all; executables stay executable."""
    for dirpath, _dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            executable = os.stat(path).st_mode & 0o100
            os.chmod(path, 0o755 if executable else 0o644)


# --- cluster operations -----------------------------------------------------------------------


def initdb_locale() -> str:
    # C.UTF-8 makes lower()/upper() handle non-ASCII text and sorts by code point, which never
    # changes with glibc upgrades; glibc has it built in since 2.35, Debian/Ubuntu ship it earlier.
    libc, version = platform.libc_ver()
    if Path("/usr/lib/locale/C.utf8").is_dir() or (libc == "glibc" and _version_tuple(version) >= (2, 35)):
        return "C.UTF-8"
    return "C"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def initdb(bin_dir: Path, pgdata: Path, account: ServerAccount | None, *, auth_local: str = "trust",
           auth_host: str = "reject", sync: bool = True, conf: Mapping[str, str] | None = None) -> None:
    """Create a cluster in `pgdata` (superuser `postgres`), atomically: half-made ones never stay."""
    staging = pgdata.with_name(pgdata.name + ".initdb")
    if staging.exists():
        shutil.rmtree(staging)  # left by an initdb that was killed
    owned_dir(staging, account)
    cmd = [bin_dir / "initdb", "-D", staging, "-U", "postgres", "--encoding=UTF8",
           f"--locale={initdb_locale()}", f"--auth-local={auth_local}", f"--auth-host={auth_host}"]
    if not sync:
        cmd.append("--no-sync")
    proc = run_as(account, cmd, cwd=pgdata.parent, timeout=300)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise EmbeddedPostgresError(f"initdb failed (exit {proc.returncode}): {_tail_text(proc.stderr or proc.stdout)}")
    if conf:
        lines = [f"\n{_CONF_MARKER} (written once by initdb; edit freely) ---"]
        lines += [f"{name} = {value}" for name, value in conf.items()]
        with (staging / "postgresql.conf").open("a") as fh:  # keeps the file's owner
            fh.write("\n".join(lines) + "\n")
    staging.rename(pgdata)


def pg_ctl_start(bin_dir: Path, pgdata: Path, account: ServerAccount | None, *, log_file: Path,
                 settings: Mapping[str, str], timeout: int = 60) -> None:
    """Start the server and wait until it accepts connections; the error carries the log's tail."""
    # Command-line settings beat postgresql.conf and ALTER SYSTEM. pg_ctl hands -o to /bin/sh.
    options = " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items())
    _clear_stale_pidfile(pgdata)
    cmd = [bin_dir / "pg_ctl", "start", "-w", "-t", str(timeout), "-D", pgdata, "-l", log_file, "-o", options]
    proc = run_as(account, cmd, cwd=pgdata.parent, timeout=timeout + 30)
    if proc.returncode != 0:
        logs = [log_file, *sorted((pgdata / "log").glob("postgresql-*"), key=_mtime)[-1:]]
        detail = " | ".join(t for t in (_tail_text(_read_tail(p)) for p in logs) if t)
        raise EmbeddedPostgresError(
            f"PostgreSQL in {pgdata} did not start: {_oneline(proc.stderr or proc.stdout)}"
            + (f"; server log: {detail}" if detail else f"; see {log_file}"))


def pg_ctl_stop(bin_dir: Path, pgdata: Path, account: ServerAccount | None, *, mode: str = "fast",
                timeout: int = 60) -> bool:
    """Stop the server if it runs; False if there was none."""
    if postmaster_pid(pgdata) is None:
        return False
    cmd = [bin_dir / "pg_ctl", "stop", "-w", "-t", str(timeout), "-m", mode, "-D", pgdata]
    proc = run_as(account, cmd, cwd=pgdata.parent, timeout=timeout + 30)
    if proc.returncode != 0 and postmaster_pid(pgdata) is not None:
        raise EmbeddedPostgresError(f"pg_ctl stop failed for {pgdata}: {_oneline(proc.stderr or proc.stdout)}")
    return True


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of a live postmaster on `pgdata`, or None (no pid file, or a stale one)."""
    pid = _pidfile_pid(pgdata)
    if pid is None or not process_alive(pid, "postgres", "postmaster"):
        return None
    return None if _pid_reused(pgdata, pid) else pid


def _pidfile_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None


def _pid_reused(pgdata: Path, pid: int) -> bool:
    """Whether `pid` started after the postmaster recorded in postmaster.pid did (Linux only).

    After a reboot the pid in a stale postmaster.pid may belong to any process, and PostgreSQL
    then refuses to start. A process that started later cannot be that postmaster.
    """
    try:
        recorded = int((pgdata / "postmaster.pid").read_text().split("\n")[2])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    return boot + ticks / os.sysconf("SC_CLK_TCK") > recorded + 2


def process_alive(pid: int, *names: str) -> bool:
    """Whether `pid` runs (zombies count as gone); with `names`, only if its command is one of them."""
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        comm, _, rest = stat.partition("(")[2].rpartition(")")
        return rest.split()[0] != "Z" and (not names or comm in names)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_stale_pidfile(pgdata: Path) -> None:
    """Make a stale postmaster.pid harmless before starting; PostgreSQL handles most cases itself."""
    pid = _pidfile_pid(pgdata)
    if pid is None or postmaster_pid(pgdata) is not None:
        return
    if not process_alive(pid):
        _wait_reaped([pid])  # a dead postmaster that is still a zombie looks alive to PostgreSQL
    elif _pid_reused(pgdata, pid):
        logger.warning("removing stale %s: pid %d now belongs to another process", pgdata / "postmaster.pid", pid)
        (pgdata / "postmaster.pid").unlink(missing_ok=True)


def kill_server(pgdata: Path, *, wait_reaped: bool = True) -> None:
    """SIGKILL the postmaster and its children, like a crash, and wait until they are gone.

    Without `wait_reaped` we only wait until they are dead, which suffices unless the same
    pgdata is started again.
    """
    pid = postmaster_pid(pgdata)
    if pid is None:
        return
    # Backends call setsid(), so a process-group kill would miss them.
    victims = [pid, *_children(pid)]
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    _wait_reaped(victims, timeout=15 if wait_reaped else 0)
    deadline = time.monotonic() + 10
    while any(process_alive(v) for v in victims) and time.monotonic() < deadline:
        time.sleep(0.01)
    if any(process_alive(v) for v in victims):
        raise EmbeddedPostgresError(f"PostgreSQL processes of {pgdata} survived SIGKILL")


def _wait_reaped(pids: Sequence[int], timeout: float = 15) -> None:
    """Wait until dead processes are reaped, not merely zombies.

    PostgreSQL takes a zombie's pid in postmaster.pid for a live postmaster and refuses to start.
    An orphaned postmaster is reaped by init, which in some containers takes a second or two.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_exists(pid) for pid in pids):
        time.sleep(0.02)


def _exists(pid: int) -> bool:
    if Path("/proc/self").exists():
        return Path(f"/proc/{pid}").exists()
    return process_alive(pid)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_tail(path: Path, size: int = 4096) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - size))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _tail_text(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def _oneline(text: str) -> str:
    return _tail_text(text, lines=3) or "no output"


# --- the embedded server ----------------------------------------------------------------------

# Put into postgresql.conf once; the operator may tune them later.
_LAPTOP_CONF = {
    "max_connections": "100",
    "shared_buffers": "128MB",
    "fsync": "on",
    "logging_collector": "on",
    "log_directory": "'log'",
    # One file per weekday, overwritten a week later: bounded disk use, a week of history.
    "log_filename": "'postgresql-%a.log'",
    "log_truncate_on_rotation": "on",
    "log_rotation_age": "1d",
    "log_rotation_size": "0",
}


class EmbeddedPostgres:
    """A PostgreSQL cluster under `data_dir`, started and stopped with the process using it."""

    def __init__(self, data_dir: Path, *, database: str = "rustchat") -> None:
        self.data_dir = Path(data_dir).absolute()
        self.database = database
        self._account: ServerAccount | None = None
        self._bin_dir: Path | None = None
        self._lock_fd: int | None = None
        self._socket_dir: Path | None = None
        self._temp_socket_dir = False
        self._url: str | None = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def url(self) -> str | None:
        """The libpq URL while running, else None."""
        return self._url

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> str:
        """initdb on first use, start the server, create the database; return its URL."""
        if self._url:
            return self._url
        self._account = server_account()
        self._prepare_data_dir()
        self._lock()
        launched = False
        try:
            self._check_not_running()
            self._bin_dir = usable_bin_dir(find_bin_dir(), self._account, self.data_dir / "pginstall")
            version = server_version(self._bin_dir)
            if (self.pgdata / "PG_VERSION").is_file():
                self._check_version(version)
            else:
                logger.info("initialising PostgreSQL %s cluster in %s", version, self.pgdata)
                initdb(self._bin_dir, self.pgdata, self._account, conf=_LAPTOP_CONF)
            launched = True
            self._start_server()
            self._url = self._make_url()
            self._ensure_database()
        except BaseException:
            self._cleanup_after_failed_start(launched)
            raise
        logger.info("embedded PostgreSQL %s: data in %s, socket in %s, server log in %s",
                    version, self.pgdata, self._socket_dir, self.pgdata / "log")
        return self._url

    def stop(self) -> None:
        """Fast shutdown (active sessions are rolled back); a no-op when not running."""
        try:
            if self._url and self._bin_dir is not None:
                pg_ctl_stop(self._bin_dir, self.pgdata, self._account, mode="fast")
        finally:
            self._url = None
            self._remove_temp_socket_dir()
            self._unlock()

    # --- start, step by step

    def _prepare_data_dir(self) -> None:
        account = self._account
        try:
            if not self.data_dir.is_dir():
                self.data_dir.mkdir(parents=True)
                if account is not None:
                    self.data_dir.chmod(0o755)  # whatever root's umask, rustchat-pg must traverse it
        except OSError as exc:
            raise EmbeddedPostgresError(f"cannot create data directory {self.data_dir}: {exc.strerror}") from None
        if account is None:
            return
        if not reachable(self.data_dir, account):
            raise EmbeddedPostgresError(
                f"data directory {self.data_dir} is not reachable for the {account.name} user that runs "
                f"PostgreSQL when rustchat runs as root; set RUSTCHAT_DATA_DIR={ROOT_DATA_DIR} "
                f"(or any directory whose parents it can traverse)")
        if self.pgdata.exists() and self.pgdata.stat().st_uid != account.uid:
            raise EmbeddedPostgresError(
                f"{self.pgdata} is not owned by {account.name}, which runs PostgreSQL when rustchat runs "
                f"as root; `chown -R {account.name}: {self.pgdata}` or use another RUSTCHAT_DATA_DIR")

    def _lock(self) -> None:
        # Two rustchat processes on one data dir must not both drive (and stop) the same server.
        path = self.data_dir / "postgres.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise EmbeddedPostgresError(f"cannot write to data directory {self.data_dir}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL in {self.data_dir} is in use by another rustchat process "
                f"(pid {holder}); stop it or use another RUSTCHAT_DATA_DIR") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _check_not_running(self) -> None:
        pid = postmaster_pid(self.pgdata)
        if pid is not None:
            raise EmbeddedPostgresError(
                f"a PostgreSQL server (pid {pid}) is already running on {self.pgdata}, probably left by "
                f"a rustchat that was killed; stop it (kill -INT {pid}) and start again")

    def _check_version(self, version: str) -> None:
        data_major = (self.pgdata / "PG_VERSION").read_text().strip()
        if not f"{version}.".startswith(f"{data_major}."):
            raise EmbeddedPostgresError(
                f"{self.pgdata} was created by PostgreSQL {data_major} but the binaries found are "
                f"PostgreSQL {version} ({self._bin_dir}); set RUSTCHAT_PG_BIN to a PostgreSQL {data_major} "
                f"bin directory, or dump and restore the data")

    def _start_server(self) -> None:
        assert self._bin_dir is not None
        self._socket_dir = self._choose_socket_dir()
        log_dir = owned_dir(self.pgdata / "log", self._account)
        pg_ctl_start(self._bin_dir, self.pgdata, self._account, log_file=log_dir / "startup.log", settings={
            # These are what make trust auth safe, so they are not left to postgresql.conf.
            "listen_addresses": "",
            "port": str(_PORT),
            "unix_socket_directories": str(self._socket_dir),
            "unix_socket_permissions": "0700",
        })

    def _choose_socket_dir(self) -> Path:
        preferred = self.pgdata / "socket"
        if len(f"{preferred}/.s.PGSQL.{_PORT}".encode()) <= _MAX_SOCKET_PATH and _PLAIN_PATH.match(str(preferred)):
            return owned_dir(preferred, self._account)
        # Too long for sun_path (or unquotable): a private directory, removed again by stop().
        path = owned_dir(Path(tempfile.mkdtemp(prefix="rustchat-pg-", dir="/tmp")), self._account)
        self._temp_socket_dir = True
        logger.debug("socket path under %s would be too long; using %s", self.pgdata, path)
        return path

    def _make_url(self) -> str:
        # The explicit port stops a PGPORT in the environment from changing the socket file name.
        return f"postgresql://postgres@/{quote(self.database, safe='')}?host={quote(str(self._socket_dir))}&port={_PORT}"

    def _ensure_database(self) -> None:
        import psycopg2
        from psycopg2 import sql

        admin_url = f"postgresql://postgres@/postgres?host={quote(str(self._socket_dir))}&port={_PORT}"
        try:
            conn = psycopg2.connect(admin_url, connect_timeout=30)
        except psycopg2.Error as exc:
            raise EmbeddedPostgresError(f"cannot connect to the embedded PostgreSQL: {_oneline(str(exc))}") from None
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
                    logger.info("created database %s in the embedded PostgreSQL", self.database)
        finally:
            conn.close()

    def _cleanup_after_failed_start(self, launched: bool) -> None:
        # We hold the lock and saw no server before launching ours, so a live one now is ours.
        try:
            if launched and self._bin_dir is not None and postmaster_pid(self.pgdata) is not None:
                pg_ctl_stop(self._bin_dir, self.pgdata, self._account, mode="immediate")
        except (EmbeddedPostgresError, OSError, subprocess.SubprocessError) as exc:
            logger.warning("could not stop the embedded PostgreSQL after a failed start: %s", exc)
        finally:
            self._url = None
            self._remove_temp_socket_dir()
            self._unlock()

    def _remove_temp_socket_dir(self) -> None:
        if self._temp_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._temp_socket_dir = False
