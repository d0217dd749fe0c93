"""Helpers for the appliance tests: topologies, env-file parsing, and the external tools."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = "apt-get install -y --no-install-recommends {package}  (scripts/bootstrap.sh --test should install it)"


def require_tool(tool: str, package: str) -> str:
    """The tool's path, or fail saying exactly what is missing and how to get it.

    Failing rather than skipping: a skipped check would let a broken config file through
    unnoticed on a machine that happens to lack the tool.
    """
    path = shutil.which(tool) or next(
        (str(p) for p in (Path("/usr/sbin") / tool, Path("/sbin") / tool) if p.exists()), None
    )
    if path is None:
        pytest.fail(f"{tool} is missing; the appliance tests check rendered configs with it. Install it: "
                    + INSTALL_HINT.format(package=package), pytrace=False)
    return path


def pg_bindir() -> Path:
    """PostgreSQL server binaries: $RUSTCHAT_PG_BINDIR, Debian's 15, or pg_config's."""
    candidates = [os.environ.get("RUSTCHAT_PG_BINDIR", ""), "/usr/lib/postgresql/15/bin"]
    if shutil.which("pg_config"):
        candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip())
    for candidate in candidates:
        if candidate and (Path(candidate) / "postgres").exists() and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    # The embedded default's binaries (pgserver's) are always installed with the app.
    from rustchat.db.embedded import EmbeddedPostgresError, find_bin_dir

    try:
        return find_bin_dir()
    except EmbeddedPostgresError:
        pass
    pytest.fail("PostgreSQL server binaries (postgres, initdb) are missing; set RUSTCHAT_PG_BINDIR or install: "
                + INSTALL_HINT.format(package="postgresql-15"), pytrace=False)


def unprivileged_user() -> str | None:
    """Who runs PostgreSQL in the tests: None (ourselves) unless we are root, which initdb refuses.

    As root, the system's `postgres` account is preferred because the rendered pg_hba.conf lets
    exactly that OS user in through peer authentication, so the test can log in the way an
    operator would; `nobody` is the fallback.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    pytest.fail("running as root, but neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL",
                pytrace=False)


@contextmanager
def scratch_dir(owner: str | None = None) -> Iterator[Path]:
    """A directory under /tmp that `owner` (or everyone, for nginx workers) can reach."""
    path = Path(tempfile.mkdtemp(prefix="rustchat-appliance-"))
    try:
        path.chmod(0o755)  # pytest's tmp_path sits under a 0700 root directory
        if owner is not None:
            entry = pwd.getpwnam(owner)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def chown_tree(path: Path, owner: str) -> None:
    entry = pwd.getpwnam(owner)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(Path(root) / name, entry.pw_uid, entry.pw_gid)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def topology(app_nodes: int = 3, **variables: Any) -> dict[str, Any]:
    """A valid topology: one lb, `app_nodes` app nodes, one database, one Redis."""
    base = {
        "rustchat_db_password": "db pass/with:odd@chars'\"",
        "redis_requirepass": "redis pass \"quoted\" \\ back",
    }
    return {
        "groups": {
            "lb": {"lb1": "10.0.0.2"},
            "app": {f"app{i}": f"10.0.1.{i}" for i in range(1, app_nodes + 1)},
            "postgres": {"db1": "10.0.0.5"},
            "redis": {"cache1": "10.0.0.7"},
        },
        "vars": {**base, **variables},
    }


_ENV_LINE = re.compile(r'^([A-Z_][A-Z0-9_]*)=(.*)$')


def parse_env(text: str) -> dict[str, str]:
    """Parse a systemd EnvironmentFile the way systemd does for the forms we render."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        assert match, f"not KEY=value: {line!r}"
        key, value = match.groups()
        if value.startswith('"'):
            assert value.endswith('"') and len(value) >= 2, f"unterminated quote: {line!r}"
            value = re.sub(r'\\(.)', r'\1', value[1:-1])
        out[key] = value
    return out


def gunicorn_settings(text: str) -> dict[str, Any]:
    """Execute a rendered gunicorn.conf.py the way gunicorn does: as a Python module."""
    namespace: dict[str, Any] = {"__file__": "gunicorn.conf.py", "__name__": "__config__"}
    exec(compile(text, "gunicorn.conf.py", "exec"), namespace)  # our own rendered file
    return {k: v for k, v in namespace.items() if not k.startswith("__")}
