"""Configuration from the environment.

Every setting is one `RUSTCHAT_…` variable; nested keys use `__` (`RUSTCHAT_DB_POOL__MAX_CONNECTIONS`).
The table `FIELDS` is the single source for parsing, validation, `rustchat check-config` and the
README's configuration table, so a new setting is added in exactly one place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class ConfigError(Exception):
    """An invalid setting; the message is the one line printed before exiting."""


@dataclass(frozen=True)
class PoolSettings:
    max_connections: int = 20
    min_connections: int = 5
    acquire_timeout_secs: float = 3.0
    idle_timeout_secs: float = 600.0
    max_lifetime_secs: float = 1800.0


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path("data")
    host: str = "0.0.0.0"
    port: int = 3000
    public_url: str | None = None
    log: str = "info"
    log_format: str = "text"
    admin_user: str | None = None
    admin_password: str | None = None
    admin_email: str | None = None
    pool: PoolSettings = field(default_factory=PoolSettings)
    token_ttl_secs: int = 30 * 24 * 3600
    token_check_secs: float = 30.0
    login_max_failures_per_account: int = 10
    login_max_failures_per_address: int = 50
    login_failure_window_secs: int = 900
    ws_ping_interval_secs: float = 30.0
    ws_idle_timeout_secs: float = 90.0
    ws_send_queue: int = 256
    ws_replay_events: int = 512
    ws_resume_window_secs: float = 120.0
    ws_max_frame_bytes: int = 65536
    ws_compression: bool = False
    allowed_origins: tuple[str, ...] = ()
    cluster_heartbeat_secs: float = 5.0
    trusted_proxies: tuple = ()
    ws_reconnect_jitter_secs: float = 5.0
    drain_idle_connections_secs: float = 0.0
    cluster_log_maxlen: int = 100_000
    cluster_backlog: int = 10_000
    body_limit_small: int = 64 * 1024
    body_limit_medium: int = 1024 * 1024
    body_limit_large: int = 50 * 1024 * 1024
    conn_heartbeat_ttl_secs: float = 60.0
    conn_heartbeat_refresh_secs: float = 20.0


def _int(lo: int | None = None, hi: int | None = None) -> tuple[Callable[[str], Any], str]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError
        return value

    if hi is None:
        allowed = f"an integer >= {lo}" if lo is not None else "an integer"
    else:
        allowed = f"an integer from {lo} to {hi}"
    return parse, allowed


def _float(lo: float = 0.0, *, strictly_positive: bool = False) -> tuple[Callable[[str], Any], str]:
    def parse(raw: str) -> float:
        value = float(raw.strip())
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError
        if value < lo or (strictly_positive and value <= 0):
            raise ValueError
        return value

    return parse, "a number > 0" if strictly_positive else f"a number >= {lo:g}"


def _bool() -> tuple[Callable[[str], Any], str]:
    table = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}

    def parse(raw: str) -> bool:
        return table[raw.strip().lower()]

    return parse, "one of true/false/1/0/yes/no/on/off"


def _choice(*options: str) -> tuple[Callable[[str], Any], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError
        return value

    return parse, "one of " + "/".join(options)


def _url(*schemes: str) -> tuple[Callable[[str], Any], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw.strip())
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise ValueError
        return raw.strip()

    return parse, "a URL starting with " + " or ".join(f"{s}://" for s in schemes)


def _text(nonempty: bool = True) -> tuple[Callable[[str], Any], str]:
    def parse(raw: str) -> str:
        if nonempty and not raw.strip():
            raise ValueError
        return raw

    return parse, "a non-empty string"


def _log_filter() -> tuple[Callable[[str], Any], str]:
    from rustchat.logconfig import LogFilterError, parse_filter

    def parse(raw: str) -> str:
        try:
            parse_filter(raw)
        except LogFilterError:
            raise ValueError from None
        return raw

    return parse, "a filter like info,rustchat::realtime=debug (levels: trace/debug/info/warn/error/off)"


def _networks() -> tuple[Callable[[str], Any], str]:
    def parse(raw: str) -> tuple:
        from rustchat.api.client_address import parse_networks

        return parse_networks(raw)

    return parse, "a comma-separated list of IP addresses or CIDR networks"


def _origins() -> tuple[Callable[[str], Any], str]:
    def parse(raw: str) -> tuple[str, ...]:
        out = []
        for item in raw.split(","):
            item = item.strip().rstrip("/")
            if not item:
                continue
            parts = urlsplit(item)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError
            out.append(f"{parts.scheme}://{parts.netloc}".lower())
        return tuple(out)

    return parse, "a comma-separated list of origins like https://chat.example.com"


@dataclass(frozen=True)
class Field:
    env: str
    attr: str  # dotted path into Settings, e.g. "pool.max_connections"
    parser: tuple[Callable[[str], Any], str]
    doc: str
    secret: bool = False


FIELDS: tuple[Field, ...] = (
    Field("RUSTCHAT_DATABASE_URL", "database_url", _url("postgresql", "postgres"),
          "PostgreSQL URL; unset = embedded PostgreSQL under the data dir", secret=True),
    Field("RUSTCHAT_REDIS_URL", "redis_url", _url("redis", "rediss", "unix"),
          "Redis URL; set = cluster mode, nothing else to configure", secret=True),
    Field("RUSTCHAT_DATA_DIR", "data_dir", (lambda raw: Path(raw), "a directory path"),
          "where the embedded PostgreSQL keeps its data"),
    Field("RUSTCHAT_DB_POOL__MAX_CONNECTIONS", "pool.max_connections", _int(1, 10000),
          "pool maximum, per process"),
    Field("RUSTCHAT_DB_POOL__MIN_CONNECTIONS", "pool.min_connections", _int(0, 10000),
          "connections kept open"),
    Field("RUSTCHAT_DB_POOL__ACQUIRE_TIMEOUT_SECS", "pool.acquire_timeout_secs", _float(strictly_positive=True),
          "wait for a free connection, then fail the request (503 db.pool.timeout)"),
    Field("RUSTCHAT_DB_POOL__IDLE_TIMEOUT_SECS", "pool.idle_timeout_secs", _float(strictly_positive=True),
          "close connections idle this long (down to MIN)"),
    Field("RUSTCHAT_DB_POOL__MAX_LIFETIME_SECS", "pool.max_lifetime_secs", _float(strictly_positive=True),
          "replace connections older than this"),
    Field("RUSTCHAT_SERVER__HOST", "host", _text(), "listen address"),
    Field("RUSTCHAT_SERVER__PORT", "port", _int(0, 65535), "listen port"),
    Field("RUSTCHAT_SERVER__PUBLIC_URL", "public_url", _url("http", "https"),
          "the site's external URL; its origin is accepted for WebSocket upgrades"),
    Field("RUSTCHAT_SERVER__ALLOWED_ORIGINS", "allowed_origins", _origins(),
          "extra origins allowed to open WebSockets (comma-separated)"),
    Field("RUSTCHAT_TRUSTED_PROXIES", "trusted_proxies", _networks(),
          "proxies whose X-Forwarded-For / X-Real-IP name the client (IPs or CIDRs, comma-separated)"),
    Field("RUSTCHAT_LOG", "log", _log_filter(), "log filter, e.g. info,rustchat::realtime=debug (RUST_LOG also read)"),
    Field("RUSTCHAT_LOG_FORMAT", "log_format", _choice("text", "json"), "log line format"),
    Field("RUSTCHAT_ADMIN_USER", "admin_user", _text(), "first admin's username, created at start if missing"),
    Field("RUSTCHAT_ADMIN_PASSWORD", "admin_password", _text(), "first admin's password", secret=True),
    Field("RUSTCHAT_ADMIN_EMAIL", "admin_email", _text(), "first admin's email (default USER@localhost)"),
    Field("RUSTCHAT_AUTH__TOKEN_TTL_SECS", "token_ttl_secs", _int(1), "bearer token lifetime"),
    Field("RUSTCHAT_AUTH__TOKEN_CHECK_SECS", "token_check_secs", _float(strictly_positive=True),
          "how often each process re-checks its open sockets' tokens (expiry, revocation) in PostgreSQL"),
    Field("RUSTCHAT_AUTH__MAX_FAILED_LOGINS_PER_ACCOUNT", "login_max_failures_per_account", _int(1),
          "failed logins per account within the window before 429"),
    Field("RUSTCHAT_AUTH__MAX_FAILED_LOGINS_PER_ADDRESS", "login_max_failures_per_address", _int(1),
          "failed logins per client address within the window before 429"),
    Field("RUSTCHAT_AUTH__FAILED_LOGIN_WINDOW_SECS", "login_failure_window_secs", _int(1),
          "window of the failed-login limits"),
    Field("RUSTCHAT_WS__PING_INTERVAL_SECS", "ws_ping_interval_secs", _float(strictly_positive=True),
          "server WebSocket ping interval"),
    Field("RUSTCHAT_WS__IDLE_TIMEOUT_SECS", "ws_idle_timeout_secs", _float(strictly_positive=True),
          "close a WebSocket that sent nothing (not even a pong) for this long"),
    Field("RUSTCHAT_WS__SEND_QUEUE", "ws_send_queue", _int(1, 1_000_000),
          "frames kept per connection while its socket takes no more, before the client is dropped"),
    Field("RUSTCHAT_WS__REPLAY_EVENTS", "ws_replay_events", _int(0, 1_000_000),
          "events kept per connection for resume"),
    Field("RUSTCHAT_WS__RESUME_WINDOW_SECS", "ws_resume_window_secs", _float(strictly_positive=True),
          "how long a closed connection can be resumed"),
    Field("RUSTCHAT_WS__MAX_FRAME_BYTES", "ws_max_frame_bytes", _int(1024, 16 * 1024 * 1024),
          "largest client frame accepted (larger closes with 1009)"),
    Field("RUSTCHAT_CLUSTER__HEARTBEAT_SECS", "cluster_heartbeat_secs", _float(strictly_positive=True),
          "heartbeat interval; a process unheard for three intervals is gone"),
    Field("RUSTCHAT_CLUSTER__LOG_MAXLEN", "cluster_log_maxlen", _int(1000, 100_000_000),
          "events kept in the Redis replay log (gap refill, resume on another node)"),
    Field("RUSTCHAT_CLUSTER__BACKLOG", "cluster_backlog", _int(100, 10_000_000),
          "events held in memory while Redis is unreachable"),
    Field("RUSTCHAT_WS__RECONNECT_JITTER_SECS", "ws_reconnect_jitter_secs", _float(),
          "on shutdown, clients are told to reconnect after a random delay up to this"),
    Field("RUSTCHAT_DRAIN__IDLE_CONNECTIONS_SECS", "drain_idle_connections_secs", _float(),
          "on SIGTERM under gunicorn, how long to wait for the load balancer to close its idle "
          "keep-alive connections (set above its upstream keepalive timeout) before stopping"),
    Field("RUSTCHAT_WS__COMPRESSION", "ws_compression", _bool(),
          "per-message deflate (costs ~300 KB and CPU per connection)"),
    Field("RUSTCHAT_BODY_LIMIT__SMALL", "body_limit_small", _int(1024, 1 << 40),
          "request body limit in bytes for auth, status and simple queries (GET/DELETE)"),
    Field("RUSTCHAT_BODY_LIMIT__MEDIUM", "body_limit_medium", _int(1024, 1 << 40),
          "request body limit in bytes for posts, users, channels, teams, webhooks, admin config"),
    Field("RUSTCHAT_BODY_LIMIT__LARGE", "body_limit_large", _int(1024, 1 << 40),
          "request body limit in bytes for file uploads and imports"),
    Field("RUSTCHAT_CONN__HEARTBEAT_TTL_SECS", "conn_heartbeat_ttl_secs", _float(strictly_positive=True),
          "TTL of a WebSocket connection's Redis heartbeat key; a dead node's connections stop counting after it"),
    Field("RUSTCHAT_CONN__HEARTBEAT_REFRESH_SECS", "conn_heartbeat_refresh_secs", _float(strictly_positive=True),
          "how often each process refreshes its connections' heartbeat keys (keep well below the TTL)"),
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse the environment; raise ConfigError with a one-line message on the first bad value."""
    env = os.environ if environ is None else environ
    top: dict[str, Any] = {}
    pool: dict[str, Any] = {}
    for f in FIELDS:
        raw = env.get(f.env)
        if f.env == "RUSTCHAT_LOG" and not raw:
            raw = env.get("RUST_LOG")
        if raw is None or raw == "":
            continue
        parse, allowed = f.parser
        try:
            value = parse(raw)
        except (ValueError, KeyError, TypeError):
            shown = "****" if f.secret else raw
            raise ConfigError(f"invalid {f.env}={shown!r}: expected {allowed}") from None
        if f.attr.startswith("pool."):
            pool[f.attr.removeprefix("pool.")] = value
        else:
            top[f.attr] = value
    settings = Settings(pool=PoolSettings(**pool), **top)
    if settings.pool.min_connections > settings.pool.max_connections:
        raise ConfigError(
            f"invalid RUSTCHAT_DB_POOL__MIN_CONNECTIONS={settings.pool.min_connections}: expected at most "
            f"RUSTCHAT_DB_POOL__MAX_CONNECTIONS ({settings.pool.max_connections})"
        )
    if bool(settings.admin_user) != bool(settings.admin_password):
        missing = "RUSTCHAT_ADMIN_PASSWORD" if settings.admin_user else "RUSTCHAT_ADMIN_USER"
        raise ConfigError(f"invalid admin settings: {missing} must be set together with the other")
    return settings


def get(settings: Settings, attr: str) -> Any:
    obj: Any = settings
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def mask_url(url: str) -> str:
    """Hide the password in a URL, keep the rest readable for operators."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":****"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[1]}"))


def effective(settings: Settings) -> list[tuple[str, str, str]]:
    """(variable, effective value with secrets masked, meaning) for `rustchat check-config`."""
    rows = []
    for f in FIELDS:
        value = get(settings, f.attr)
        if value is None:
            shown = "(unset)"
        elif f.secret and f.attr.endswith("_url"):
            shown = mask_url(str(value))
        elif f.secret:
            shown = "****"
        elif isinstance(value, tuple):
            shown = ",".join(str(v) for v in value) or "(none)"
        else:
            shown = str(value)
        rows.append((f.env, shown, f.doc))
    return rows
