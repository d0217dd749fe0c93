"""The processes the fan-out benchmark starts and measures: a database, Redis, the servers.

Everything started here is remembered by PID and stopped by PID (SIGTERM, then SIGKILL after a
timeout); the database is created with a unique name and dropped at the end.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
ADMIN_USER = "admin"
ADMIN_PASSWORD = "bench-admin-password"
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- CPU accounting from /proc --------------------------------------------------------------------
def proc_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of one process (all its threads), in seconds; zeros if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return 0.0, 0.0
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = raw[raw.rindex(b")") + 2:].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14 and 15 of stat(5)


def proc_cpu(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0 if it is gone."""
    return sum(proc_times(pid))


def cores_busy() -> float:
    """CPU-seconds all cores have spent busy since boot (from /proc/stat: all but idle and iowait)."""
    with open("/proc/stat", "rb") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def children(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn's workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        if int(raw[raw.rindex(b")") + 2:].split()[1]) == pid:
            out.append(int(entry))
    return out


def cpu_of(pids: list[int]) -> float:
    return sum(proc_cpu(p) for p in pids)


# -- PostgreSQL: one throwaway database ----------------------------------------------------------
class Database:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"rustchat_bench_{os.getpid()}_{int(time.time())}"
        base, _, _ = admin_url.rpartition("/")
        self.url = f"{base}/{self.name}"
        self.created = False
        self._monitor = None  # one connection kept open: a busy server may refuse new ones later
        self._pids: list[int] = []

    def _run(self, statement: sql.Composable) -> None:
        conn = psycopg2.connect(self.admin_url)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def create(self) -> None:
        self._monitor = psycopg2.connect(self.admin_url)
        self._monitor.autocommit = True
        self._run(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.created = True

    def backend_pids(self) -> list[int]:
        """PostgreSQL backends serving this database (measured, not pinned: not ours to move)."""
        try:
            with self._monitor.cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.name,))
                self._pids = [r[0] for r in cur.fetchall()]
        except (psycopg2.Error, AttributeError):
            pass  # keep the last known list
        return self._pids

    def drop(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        if not self.created:
            return
        for attempt in range(10):
            try:
                self._run(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
                self.created = False
                return
            except psycopg2.OperationalError as exc:  # e.g. too many clients: try again shortly
                if attempt == 9:
                    raise RuntimeError(f"could not drop database {self.name}: {exc}") from exc
                time.sleep(2)


# -- processes ------------------------------------------------------------------------------------
@dataclass
class Started:
    name: str
    proc: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(name: str, cmd: list[str], log_dir: Path, env: dict[str, str] | None = None) -> Started:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509
    return Started(name, proc, log_path)


def start_redis(cpus: str, log_dir: Path) -> tuple[Started, int]:
    port = free_port()
    started = _spawn("redis", ["taskset", "-c", cpus, "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--protected-mode", "yes"], log_dir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return started, port
        except OSError:
            time.sleep(0.1)
    started.stop()
    raise RuntimeError(f"redis-server did not start; see {started.log_path}")


class Servers:
    """P server processes pinned to `cpus`: P `rustchat serve` processes (one port each), or one
    gunicorn master with P workers (one port; the kernel spreads the connections)."""

    def __init__(self, *, count: int, gunicorn: bool, cpus: str, database_url: str, redis_url: str,
                 send_queue: int, log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.count = count
        self.gunicorn = gunicorn
        self.cpus = cpus
        self.log_dir = log_dir
        self.env = {
            **os.environ,
            "RUSTCHAT_DATABASE_URL": database_url,
            "RUSTCHAT_REDIS_URL": redis_url,
            "RUSTCHAT_ADMIN_USER": ADMIN_USER,
            "RUSTCHAT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "RUSTCHAT_SERVER__HOST": "127.0.0.1",
            "RUSTCHAT_WS__SEND_QUEUE": str(send_queue),
            "RUSTCHAT_DB_POOL__MIN_CONNECTIONS": "2",
            "RUSTCHAT_DB_POOL__MAX_CONNECTIONS": "10",
            "RUSTCHAT_LOG": "warning",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.started: list[Started] = []
        self.ports: list[int] = []

    def _cmd(self, port: int) -> list[str]:
        pin = ["taskset", "-c", self.cpus]
        if self.gunicorn:
            return [*pin, sys.executable, "-m", "gunicorn", "rustchat.server:gunicorn_app",
                    "-k", "rustchat.worker.Worker", "-w", str(self.count),
                    "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10", "--log-level", "warning"]
        return [*pin, sys.executable, "-m", "rustchat", "serve"]

    def _start_one(self, index: int) -> None:
        port = free_port()
        env = {**self.env, "RUSTCHAT_SERVER__PORT": str(port)}
        self.started.append(_spawn(f"server-{index}-{port}", self._cmd(port), self.log_dir, env))
        self.ports.append(port)

    def _wait_ready(self, started: Started, port: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if started.proc.poll() is not None:
                raise RuntimeError(f"{started.name} exited with {started.proc.returncode}; see {started.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{started.name} not ready after {timeout:.0f} s; see {started.log_path}")

    def start(self) -> None:
        # The first process migrates the fresh database alone; the others then start together.
        self._start_one(0)
        self._wait_ready(self.started[0], self.ports[0])
        if not self.gunicorn:
            for i in range(1, self.count):
                self._start_one(i)
            for started, port in zip(self.started[1:], self.ports[1:], strict=True):
                self._wait_ready(started, port)
        else:
            # All workers must be up (each calls the app factory on its own).
            deadline = time.monotonic() + 60
            while len(children(self.started[0].pid)) < self.count and time.monotonic() < deadline:
                time.sleep(0.2)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def pids(self) -> list[int]:
        """Every process doing the server's work: the servers, gunicorn's master and its workers."""
        out = []
        for s in self.started:
            out.append(s.pid)
            if self.gunicorn:
                out.extend(children(s.pid))
        return out

    def worker_pids(self) -> list[int]:
        """The processes that hold WebSockets (the ones worth profiling)."""
        if self.gunicorn:
            return [c for s in self.started for c in children(s.pid)]
        return [s.pid for s in self.started]

    def check_alive(self) -> None:
        for s in self.started:
            if s.proc.poll() is not None:
                raise RuntimeError(f"{s.name} exited with {s.proc.returncode}; see {s.log_path}")

    def stop(self) -> None:
        for s in self.started:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        for s in self.started:
            s.stop()
