"""Identifiers and timestamps in the shapes the API exposes."""

import re
import secrets
import time

# What new_id makes. \Z, not $: `$` also matches before a trailing newline.
ID_RE = re.compile(r"^[a-z0-9]{26}\Z")


def new_id() -> str:
    """26 lowercase hex characters (104 random bits), the same length as Mattermost's ids."""
    return secrets.token_hex(13)


def now_ms() -> int:
    return time.time_ns() // 1_000_000
