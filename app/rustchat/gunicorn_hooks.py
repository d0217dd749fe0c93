"""gunicorn server hooks for Prometheus multiprocess mode.

    PROMETHEUS_MULTIPROC_DIR=/run/rustchat/prometheus \\
    gunicorn 'rustchat.server:gunicorn_app' -c python:rustchat.gunicorn_hooks \\
        -k rustchat.worker.Worker -w 4 -b 0.0.0.0:3000

* `on_starting` (in the master, before any worker exists) empties PROMETHEUS_MULTIPROC_DIR, creating
  it if needed: files left by an earlier run would otherwise be summed into `/metrics`.
* `child_exit` drops a dead worker's live gauges (`mark_process_dead`), so connection and pool
  gauges count only the workers that are running; its counters stay, so totals never go back.

Only these names are gunicorn settings here, so this module can be combined with command-line
options. A gunicorn config file of your own can import them:
`from rustchat.gunicorn_hooks import on_starting, child_exit`.

This module must not import `rustchat.metrics`: the master would create metric files of its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ENV = "PROMETHEUS_MULTIPROC_DIR"


def clean_multiprocess_dir() -> Path | None:
    """Empty (or create) PROMETHEUS_MULTIPROC_DIR; call before any process records a metric."""
    raw = os.environ.get(ENV)
    if not raw:
        return None
    directory = Path(raw)
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.glob("*.db"):
        entry.unlink(missing_ok=True)
    return directory


def on_starting(server: Any) -> None:
    directory = clean_multiprocess_dir()
    if directory is not None:
        server.log.info("Prometheus multiprocess directory %s emptied", directory)


def child_exit(server: Any, worker: Any) -> None:
    if not os.environ.get(ENV):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
