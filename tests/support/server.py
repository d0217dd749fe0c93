"""Real server processes for the tests: `rustchat serve` or gunicorn, on free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-password-123"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One server process (or gunicorn master) with its own log file."""

    def __init__(self, database_url: str, *, env: dict[str, str] | None = None, gunicorn_workers: int = 0,
                 log_dir: Path | None = None, name: str = "server", gunicorn_args: list[str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/api/v1/websocket"
        self.gunicorn_workers = gunicorn_workers
        self.gunicorn_args = list(gunicorn_args or [])
        self.env = {
            **os.environ,
            "RUSTCHAT_DATABASE_URL": database_url,
            "RUSTCHAT_ADMIN_USER": ADMIN_USER,
            "RUSTCHAT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "RUSTCHAT_SERVER__HOST": "127.0.0.1",
            "RUSTCHAT_SERVER__PORT": str(self.port),
            "RUSTCHAT_DB_POOL__MIN_CONNECTIONS": "1",
            "RUSTCHAT_DB_POOL__MAX_CONNECTIONS": "10",
            # A session runs dozens of servers against one PostgreSQL: give idle connections back.
            "RUSTCHAT_DB_POOL__IDLE_TIMEOUT_SECS": "5",
            "RUSTCHAT_LOG": "info,rustchat=debug",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        log_dir = log_dir or Path(os.environ.get("RUSTCHAT_TEST_LOG_DIR", "/tmp/rustchat-test-logs"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        if self.gunicorn_workers:
            cmd = [sys.executable, "-m", "gunicorn", "rustchat.server:gunicorn_app",
                   "-k", "rustchat.worker.Worker", "-w", str(self.gunicorn_workers),
                   "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "10", *self.gunicorn_args]
        else:
            cmd = [sys.executable, "-m", "rustchat", "serve"]
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/api/v1/health/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not become ready:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid
