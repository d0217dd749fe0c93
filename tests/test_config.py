"""Configuration parsing: every setting from the environment, one clear line for a bad value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rustchat.config import ConfigError, load_settings


def test_defaults_match_the_contract() -> None:
    s = load_settings({})
    assert s.database_url is None and s.redis_url is None
    assert (s.host, s.port) == ("0.0.0.0", 3000)
    assert s.pool.max_connections == 20
    assert s.pool.min_connections == 5
    assert s.pool.acquire_timeout_secs == 3
    assert s.pool.idle_timeout_secs == 600
    assert s.pool.max_lifetime_secs == 1800
    assert s.log == "info"


def test_nested_keys_are_read() -> None:
    s = load_settings({
        "RUSTCHAT_DB_POOL__MAX_CONNECTIONS": "7",
        "RUSTCHAT_DB_POOL__MIN_CONNECTIONS": "2",
        "RUSTCHAT_DB_POOL__ACQUIRE_TIMEOUT_SECS": "0.5",
        "RUSTCHAT_SERVER__PORT": "8065",
        "RUST_LOG": "warn,rustchat::realtime=debug",
    })
    assert (s.pool.max_connections, s.pool.min_connections, s.pool.acquire_timeout_secs) == (7, 2, 0.5)
    assert s.port == 8065
    assert s.log == "warn,rustchat::realtime=debug"


def test_rustchat_log_wins_over_rust_log() -> None:
    assert load_settings({"RUST_LOG": "debug", "RUSTCHAT_LOG": "error"}).log == "error"


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("RUSTCHAT_DB_POOL__MAX_CONNECTIONS", "lots", "an integer from 1 to 10000"),
        ("RUSTCHAT_DB_POOL__MAX_CONNECTIONS", "0", "an integer from 1 to 10000"),
        ("RUSTCHAT_DB_POOL__ACQUIRE_TIMEOUT_SECS", "-1", "a number > 0"),
        ("RUSTCHAT_DB_POOL__IDLE_TIMEOUT_SECS", "nan", "a number > 0"),
        ("RUSTCHAT_SERVER__PORT", "70000", "an integer from 0 to 65535"),
        ("RUSTCHAT_REDIS_URL", "localhost:6379", "a URL starting with redis://"),
        ("RUSTCHAT_DATABASE_URL", "mysql://x", "a URL starting with postgresql://"),
        ("RUSTCHAT_LOG_FORMAT", "xml", "one of text/json"),
        ("RUST_LOG", "info,rustchat=loud", "a filter like"),
    ],
)
def test_invalid_value_names_variable_value_and_allowed(env: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({env: value})
    message = str(err.value)
    shown_env = "RUSTCHAT_LOG" if env == "RUST_LOG" else env
    assert shown_env in message and expected in message
    assert "\n" not in message
    if "URL" not in env:
        assert repr(value) in message


def test_min_above_max_is_refused() -> None:
    with pytest.raises(ConfigError, match="RUSTCHAT_DB_POOL__MIN_CONNECTIONS"):
        load_settings({"RUSTCHAT_DB_POOL__MIN_CONNECTIONS": "30"})


def test_secret_values_never_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"RUSTCHAT_DATABASE_URL": "mysql://u:hunter2@h/db"})
    assert "hunter2" not in str(err.value)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rustchat", *args], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=60)


def test_check_config_masks_secrets() -> None:
    out = _cli("check-config", env={
        "RUSTCHAT_DATABASE_URL": "postgresql://chat:hunter2@db.internal/chat",
        "RUSTCHAT_REDIS_URL": "redis://:s3cret@redis.internal:6379/0",
        "RUSTCHAT_ADMIN_USER": "root", "RUSTCHAT_ADMIN_PASSWORD": "topsecret1",
        "RUSTCHAT_DB_POOL__MAX_CONNECTIONS": "16",
    })
    assert out.returncode == 0, out.stderr
    assert "hunter2" not in out.stdout and "s3cret" not in out.stdout and "topsecret1" not in out.stdout
    assert "postgresql://chat:****@db.internal/chat" in out.stdout
    assert "RUSTCHAT_DB_POOL__MAX_CONNECTIONS" in out.stdout and "16" in out.stdout


def test_invalid_value_stops_startup_with_one_line() -> None:
    out = _cli("serve", env={"RUSTCHAT_SERVER__PORT": "http"})
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == ["rustchat: invalid RUSTCHAT_SERVER__PORT='http': expected an integer from 0 to 65535"]
