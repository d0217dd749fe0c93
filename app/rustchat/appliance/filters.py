"""Jinja filters over `sizing`, shared by `render` and Ansible.

Every filter is a plain function named `rustchat_*`, so an Ansible `filter_plugins/rustchat.py`
is only::

    from rustchat.appliance.filters import FilterModule  # noqa: F401

and the playbook's templates compute exactly what `render` computes. Templates call these only
as filters (`{{ x | rustchat_pool_size(...) }}`), never as globals, because Ansible has no
plugin type for globals. Filters take `hostvars` and host lists the way Ansible exposes them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from rustchat.appliance import sizing


def rustchat_app_workers(hostvars: Mapping[str, Mapping[str, Any]], app_hosts: Sequence[str]) -> list[int]:
    """Workers per app node, in group order: `hostvars | rustchat_app_workers(groups['app'])`."""
    return [int(hostvars[h]["rustchat_workers"]) for h in app_hosts]


def rustchat_pool_size(
    max_connections: int,
    workers_per_node: Sequence[int],
    superuser_reserved: int = sizing.DEFAULT_SUPERUSER_RESERVED,
    headroom: int = sizing.DEFAULT_HEADROOM,
    ceiling: int = sizing.DEFAULT_CEILING,
    floor: int = sizing.DEFAULT_FLOOR,
    configured_min: int = sizing.DEFAULT_POOL_MIN,
) -> dict[str, int]:
    """Per-process pool {max, min, processes, reserved, total}; raises SizingError if it cannot fit."""
    size = sizing.size_pool(
        int(max_connections),
        [int(w) for w in workers_per_node],
        superuser_reserved=int(superuser_reserved),
        headroom=int(headroom),
        ceiling=int(ceiling),
        floor=int(floor),
        configured_min=int(configured_min),
    )
    return {"max": size.max, "min": size.min, "processes": size.processes,
            "reserved": size.reserved, "total": size.total}


def rustchat_pool_reserved(superuser_reserved: int, headroom: int = sizing.DEFAULT_HEADROOM) -> int:
    return sizing.reserved_connections(int(superuser_reserved), int(headroom))


def rustchat_pool_budget_exceeded(total: int, max_connections: int, reserved: int) -> str:
    """The live check as a filter; '' when within budget (Jinja tests it as false)."""
    return sizing.pool_budget_exceeded(int(total), int(max_connections), int(reserved)) or ""


def rustchat_pg_memory(ram_mb: int, max_connections: int, cap_mb: int = sizing.SHARED_BUFFERS_CAP_MB) -> dict[str, str]:
    return sizing.postgres_memory(int(ram_mb), int(max_connections), int(cap_mb))


def rustchat_redis_maxmemory(maxmemory: str | int, processes: int, pubsub_limit: str = sizing.DEFAULT_PUBSUB_LIMIT) -> str:
    """Pass maxmemory through after checking it holds every subscriber's buffer."""
    sizing.check_redis_memory(maxmemory, int(processes), str(pubsub_limit))
    return str(maxmemory)


def rustchat_preset(name: str) -> dict[str, Any]:
    return sizing.preset(str(name)).variables()


# ---------------------------------------------------------------------------------------------
# Quoting and addresses: each config syntax has its own escaping rules, so values never reach a
# file unquoted.


def rustchat_hostport(address: str, port: int | str) -> str:
    """'10.0.0.5:3000', or '[fd00::5]:3000' for IPv6 (nginx, gunicorn and URLs all need brackets)."""
    return f"[{address}]:{port}" if ipaddress.ip_address(address).version == 6 else f"{address}:{port}"


def rustchat_host_cidr(address: str) -> str:
    """A single-address network for pg_hba.conf: /32 or /128."""
    return str(ipaddress.ip_network(address))


def rustchat_urlquote(value: str) -> str:
    """Percent-encode a URL component (passwords), leaving nothing with a meaning in URLs."""
    return quote(str(value), safe="")


def rustchat_pg_quote(value: Any) -> str:
    """A postgresql.conf string literal."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def rustchat_redis_quote(value: Any) -> str:
    """A redis.conf double-quoted string (Redis's sdssplitargs rules)."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


_ENV_BARE = re.compile(r"^[A-Za-z0-9_./:@%+,=~*-]*$")


def rustchat_env_value(value: Any) -> str:
    """A value for a systemd EnvironmentFile (bare when safe, else double-quoted)."""
    text = str(value)
    if any(ord(c) < 32 for c in text):
        raise ValueError(f"environment values cannot contain control characters: {text!r}")
    if _ENV_BARE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rustchat_py_literal(value: Any) -> str:
    """A Python literal for gunicorn.conf.py (repr is valid Python for str/int/float/bool/list)."""
    return repr(value)


def rustchat_runtime_dirs(path: str) -> list[str]:
    """systemd RuntimeDirectory= entries for a directory under /run: '/run/a/b' -> ['a', 'a/b'].

    Listing every level makes systemd create (and own, and wipe at stop) each of them.
    """
    parts = [p for p in str(path).removeprefix("/run/").split("/") if p]
    if not str(path).startswith("/run/") or not parts or ".." in parts:
        raise ValueError(f"{path!r} is not a directory under /run/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


FILTERS: Mapping[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        rustchat_app_workers,
        rustchat_pool_size,
        rustchat_pool_reserved,
        rustchat_pool_budget_exceeded,
        rustchat_pg_memory,
        rustchat_redis_maxmemory,
        rustchat_preset,
        rustchat_hostport,
        rustchat_host_cidr,
        rustchat_urlquote,
        rustchat_pg_quote,
        rustchat_redis_quote,
        rustchat_env_value,
        rustchat_py_literal,
        rustchat_runtime_dirs,
    )
}


class FilterModule:
    """Ansible's filter plugin protocol."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return dict(FILTERS)
