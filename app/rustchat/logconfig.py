"""Logging set-up: `RUST_LOG`-style filters, text or JSON lines, a request id on every line.

A filter is `default[,target=level]…`, e.g. `info,rustchat::realtime=debug`. Targets are logger
names; `::` and `.` are both accepted, so the operators' guide's Rust-style filters keep working.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}


class LogFilterError(ValueError):
    pass


def parse_filter(spec: str) -> tuple[int, dict[str, int]]:
    """Return (default level, {logger name: level}); raise LogFilterError naming the bad part."""
    default = logging.INFO
    targets: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "=" in part:
            target, _, level = part.partition("=")
            name = target.strip().replace("::", ".")
            if not name or level.strip().lower() not in _LEVELS:
                raise LogFilterError(part)
            targets[name] = _LEVELS[level.strip().lower()]
        elif part.lower() in _LEVELS:
            default = _LEVELS[part.lower()]
        else:
            # A bare target means "everything from it", as in env_logger.
            targets[part.replace("::", ".")] = logging.DEBUG
    return default, targets


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f" [req={rid}]" if rid else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "target": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(spec: str, fmt: str = "text") -> None:
    default, targets = parse_filter(spec)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(default)
    for name, level in targets.items():
        logging.getLogger(name).setLevel(level)
