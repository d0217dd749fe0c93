"""Topology: an inventory-like dict turned into Ansible-shaped per-host variables.

    {
      "groups": {"lb": {"lb1": "10.0.0.2"}, "app": {"app1": "10.0.0.11", ...},
                 "postgres": {"db1": "10.0.0.5"}, "redis": {"cache1": "10.0.0.7"}},
      "vars": {"rustchat_preset": "medium", "rustchat_db_password": "...", ...},
      "host_vars": {"app3": {"rustchat_workers": 8}}
    }

Hosts map a name to the private address every service binds to and every peer uses. A host may
sit in several groups (the small preset is one host in all four). Variables resolve as
built-in default < preset (`rustchat_preset`) < `vars` < `host_vars`, mirroring Ansible's role
defaults < group_vars < host_vars, and are validated here so a typo or an impossible value
fails with the variable's name instead of a broken config file on a host.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rustchat.appliance import sizing

GROUPS = ("lb", "app", "postgres", "redis")

# The app's limits from CONTRACT.md ("Body limits"), in bytes. nginx's must not be lower, or
# nginx would answer some requests the app would have accepted.
APP_BODY_LIMITS = {"small": 64 * 1024, "default": 1024 * 1024, "large": 50 * 1024 * 1024}


class TopologyError(ValueError):
    """A malformed topology; the message names the key."""


_REQUIRED = object()


@dataclass(frozen=True)
class Var:
    default: Any
    kind: type | tuple[type, ...]
    doc: str
    choices: tuple[Any, ...] = ()
    host_scoped: bool = False  # may differ per host (host_vars); others are cluster-wide


VARIABLES: dict[str, Var] = {
    # -- sizing
    "rustchat_preset": Var("small", str, "size preset: small / medium / large", tuple(sizing.PRESETS)),
    "rustchat_workers": Var(_REQUIRED, int, "gunicorn workers per app node (preset)", host_scoped=True),
    "rustchat_pool_ceiling": Var(_REQUIRED, int, "upper bound of each process's pool max (preset)"),
    "rustchat_pool_floor": Var(sizing.DEFAULT_FLOOR, int, "smallest acceptable per-process pool max"),
    "rustchat_pool_min": Var(_REQUIRED, int, "configured pool min; capped at the pool max (preset)"),
    "rustchat_pool_headroom": Var(sizing.DEFAULT_HEADROOM, int, "connections kept for admin/migrations"),
    "postgresql_max_connections": Var(_REQUIRED, int, "PostgreSQL max_connections (preset)"),
    "postgresql_superuser_reserved_connections": Var(sizing.DEFAULT_SUPERUSER_RESERVED, int,
                                                     "PostgreSQL superuser_reserved_connections"),
    "postgresql_ram_mb": Var(_REQUIRED, int, "database host RAM in MB (preset; Ansible: ansible_memtotal_mb)",
                             host_scoped=True),
    "postgresql_shared_buffers_cap_mb": Var(sizing.SHARED_BUFFERS_CAP_MB, int, "cap on shared_buffers"),
    "redis_maxmemory": Var(_REQUIRED, (str, int), "Redis maxmemory, e.g. 1gb (preset)"),
    # -- the app
    "rustchat_port": Var(3000, int, "gunicorn listen port on the private address", host_scoped=True),
    "rustchat_db_name": Var("rustchat", str, "database name"),
    "rustchat_db_user": Var("rustchat", str, "database role"),
    "rustchat_db_password": Var(_REQUIRED, str, "database role's password (secret)"),
    "rustchat_log": Var("info", str, "RUST_LOG filter"),
    "rustchat_public_url": Var("", str, "external URL; empty = derived from nginx_server_name"),
    "rustchat_pool_acquire_timeout_secs": Var(3, (int, float), "RUSTCHAT_DB_POOL__ACQUIRE_TIMEOUT_SECS"),
    "rustchat_pool_idle_timeout_secs": Var(600, (int, float), "RUSTCHAT_DB_POOL__IDLE_TIMEOUT_SECS"),
    "rustchat_pool_max_lifetime_secs": Var(1800, (int, float), "RUSTCHAT_DB_POOL__MAX_LIFETIME_SECS"),
    "rustchat_ws_ping_interval_secs": Var(30, (int, float), "server WebSocket ping interval"),
    "rustchat_drain_secs": Var(10, (int, float), "time the app needs to drain on SIGTERM"),
    "rustchat_graceful_timeout": Var(30, int, "gunicorn graceful_timeout (> drain)"),
    "rustchat_worker_timeout": Var(30, int, "gunicorn timeout: a silent worker is restarted"),
    "rustchat_keepalive": Var(75, int, "gunicorn keepalive (> nginx_upstream_keepalive_timeout)"),
    "rustchat_venv": Var("/opt/rustchat/venv", str, "virtualenv holding gunicorn and rustchat"),
    "rustchat_user": Var("rustchat", str, "system user the service runs as"),
    "rustchat_state_dir": Var("/var/lib/rustchat", str, "the service's writable state directory"),
    "rustchat_metrics_dir": Var("/run/rustchat/prometheus", str, "PROMETHEUS_MULTIPROC_DIR (wiped per start)"),
    # -- PostgreSQL
    "postgresql_version": Var(15, int, "PostgreSQL major version (config paths)"),
    "postgresql_port": Var(5432, int, "PostgreSQL port"),
    # -- Redis
    "redis_port": Var(6379, int, "Redis port"),
    "redis_requirepass": Var(_REQUIRED, str, "Redis password (secret)"),
    "redis_maxmemory_policy": Var("noeviction", str, "Redis maxmemory-policy",
                                  ("noeviction", "volatile-ttl", "volatile-lru", "allkeys-lru")),
    "redis_pubsub_buffer_limit": Var(sizing.DEFAULT_PUBSUB_LIMIT, str, "client-output-buffer-limit pubsub"),
    "redis_persistence": Var("none", str, "none / rdb / aof", ("none", "rdb", "aof")),
    "redis_dir": Var("/var/lib/redis", str, "Redis working directory (snapshots, AOF)"),
    # -- nginx
    "nginx_server_name": Var("_", str, "server_name; '_' = any"),
    "nginx_ip_hash": Var(False, bool, "pin clients to an app node by address"),
    "nginx_keepalive": Var(32, int, "idle upstream connections kept per nginx worker"),
    "nginx_upstream_keepalive_timeout": Var(5, int, "idle upstream connection lifetime (< rustchat_keepalive); a restarting node waits this + 1 s for nginx to close them"),
    "nginx_ws_read_timeout": Var(120, int, "WebSocket proxy_read_timeout (> ping interval)"),
    "nginx_tls": Var(True, bool, "serve HTTPS and redirect HTTP to it"),
    "nginx_tls_cert": Var("", str, "certificate path; empty = the self-signed pair below"),
    "nginx_tls_key": Var("", str, "private key path; empty = the self-signed pair below"),
    "nginx_tls_selfsigned_cert": Var("/etc/ssl/rustchat/selfsigned.crt", str, "where the playbook generates a self-signed certificate"),
    "nginx_tls_selfsigned_key": Var("/etc/ssl/rustchat/selfsigned.key", str, "and its key"),
    "nginx_listen_ipv6": Var(True, bool, "also listen on [::] (turn off on hosts without IPv6)"),
    "nginx_http_port": Var(80, int, "plain HTTP port"),
    "nginx_https_port": Var(443, int, "HTTPS port"),
    "nginx_body_limit_small": Var("64k", str, "client_max_body_size for auth/status (>= app's 64 KB)"),
    "nginx_body_limit_default": Var("1m", str, "client_max_body_size for the API (>= app's 1 MB)"),
    "nginx_body_limit_large": Var("50m", str, "client_max_body_size for files/imports (>= app's 50 MB)"),
    "nginx_large_body_locations": Var(["/api/v1/files", "/api/v1/imports"], list, "prefixes with the large limit"),
    "nginx_metrics_allow": Var([], list, "networks allowed to read /metrics through nginx (default none)"),
    "nginx_status_listen": Var("127.0.0.1:8080", str, "loopback host:port serving stub_status for the exporter; '' = none"),
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
_NGINX_SIZE = re.compile(r"^(\d+)([kKmMgG]?)$")


def nginx_bytes(value: str) -> int:
    match = _NGINX_SIZE.match(str(value))
    if not match:
        raise TopologyError(f"{value!r} is not an nginx size (like 64k, 1m, 50m)")
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]


@dataclass
class Inventory:
    groups: dict[str, list[str]]
    hostvars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def context(self, host: str) -> dict[str, Any]:
        """A template's variables for `host`, named as Ansible names them."""
        groups = {"all": list(self.hostvars), **self.groups}
        return {
            **self.hostvars[host],
            "inventory_hostname": host,
            "group_names": [g for g in GROUPS if host in self.groups[g]],
            "groups": groups,
            "hostvars": self.hostvars,
        }


def _check_type(name: str, value: Any, spec: Var) -> None:
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise TopologyError(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise TopologyError(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise TopologyError(f"{name} must be one of {', '.join(map(str, spec.choices))}, got {value!r}")


def _check_vars(where: str, given: Any, *, host_level: bool) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        raise TopologyError(f"{where} must be a mapping")
    out = {}
    for name, value in given.items():
        if name.startswith("ansible_"):
            continue  # an Ansible inventory may carry its own connection variables
        spec = VARIABLES.get(name)
        if spec is None:
            raise TopologyError(f"{where}: unknown variable {name!r}")
        if host_level and not spec.host_scoped:
            raise TopologyError(f"{where}: {name} is cluster-wide; set it in vars, not per host")
        _check_type(name, value, spec)
        out[name] = value
    return out


def _groups(topology: Mapping[str, Any]) -> tuple[dict[str, list[str]], dict[str, str]]:
    given = topology.get("groups")
    if not isinstance(given, Mapping):
        raise TopologyError("topology needs 'groups' with lb, app, postgres and redis")
    unknown = set(given) - set(GROUPS)
    if unknown:
        raise TopologyError(f"unknown group(s) {', '.join(sorted(unknown))}; expected {', '.join(GROUPS)}")
    groups: dict[str, list[str]] = {}
    addresses: dict[str, str] = {}
    for group in GROUPS:
        hosts = given.get(group)
        if not isinstance(hosts, Mapping) or not hosts:
            raise TopologyError(f"group {group!r} needs at least one host (name → private address)")
        for host, address in hosts.items():
            if not isinstance(host, str) or not _NAME.match(host):
                raise TopologyError(f"host name {host!r} in group {group!r} is not a plain name")
            try:
                ipaddress.ip_address(address)
            except (ValueError, TypeError):
                raise TopologyError(f"host {host!r}: private address {address!r} is not an IP address") from None
            if addresses.setdefault(host, address) != address:
                raise TopologyError(f"host {host!r} has two addresses: {addresses[host]} and {address}")
        groups[group] = list(hosts)
    for group in ("postgres", "redis"):
        if len(groups[group]) != 1:
            raise TopologyError(f"group {group!r} must have exactly one host (no replication yet), "
                                f"got {len(groups[group])}")
    return groups, addresses


def _check_cluster(v: Mapping[str, Any]) -> None:
    """Cross-variable rules that are not pool sizing (that is `sizing`'s job)."""
    for name in ("rustchat_db_name", "rustchat_db_user", "rustchat_user"):
        if not _IDENT.match(v[name]):
            raise TopologyError(f"{name} {v[name]!r} must be a lower-case identifier")
    for name in ("rustchat_db_password", "redis_requirepass"):
        if not v[name] or any(ord(c) < 32 for c in v[name]):
            raise TopologyError(f"{name} must be non-empty and free of control characters")
    if v["nginx_upstream_keepalive_timeout"] >= v["rustchat_keepalive"]:
        raise TopologyError(
            f"nginx_upstream_keepalive_timeout {v['nginx_upstream_keepalive_timeout']} must be below "
            f"rustchat_keepalive {v['rustchat_keepalive']}, or nginx reuses connections gunicorn is closing (502s)")
    # On SIGTERM the worker first waits for nginx to close its idle connections (upstream keepalive
    # timeout + 1 s, rustchat.worker), then gives the app 95 % of graceful_timeout to shut down;
    # gunicorn kills what is left graceful_timeout after the signal.
    needed = v["rustchat_drain_secs"] + v["nginx_upstream_keepalive_timeout"] + 1 + 2
    if v["rustchat_graceful_timeout"] * 0.95 < needed:
        raise TopologyError(
            f"rustchat_graceful_timeout {v['rustchat_graceful_timeout']} leaves too little time for "
            f"rustchat_drain_secs {v['rustchat_drain_secs']} after waiting nginx_upstream_keepalive_timeout "
            f"{v['nginx_upstream_keepalive_timeout']} + 1 s for idle connections; raise it to >= "
            f"{int(needed / 0.95) + 1}")
    if v["nginx_ws_read_timeout"] <= v["rustchat_ws_ping_interval_secs"]:
        raise TopologyError(
            f"nginx_ws_read_timeout {v['nginx_ws_read_timeout']} must exceed rustchat_ws_ping_interval_secs "
            f"{v['rustchat_ws_ping_interval_secs']}, or nginx cuts idle WebSockets between pings")
    for kind, app_limit in APP_BODY_LIMITS.items():
        name = f"nginx_body_limit_{kind}"
        if nginx_bytes(v[name]) < app_limit:
            raise TopologyError(f"{name} {v[name]} is below the app's {app_limit} bytes; clients would get "
                                f"nginx's 413 for bodies the app accepts")
    if not re.match(r"^/run/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", v["rustchat_metrics_dir"]) or ".." in v["rustchat_metrics_dir"]:
        # systemd's RuntimeDirectory= is what empties it at every start.
        raise TopologyError(f"rustchat_metrics_dir {v['rustchat_metrics_dir']!r} must be a directory under /run/")
    if not re.match(r"^/var/lib/[A-Za-z0-9_.-]+$", v["rustchat_state_dir"]):
        raise TopologyError(f"rustchat_state_dir {v['rustchat_state_dir']!r} must be /var/lib/<name> (systemd StateDirectory=)")
    if bool(v["nginx_tls_cert"]) != bool(v["nginx_tls_key"]):
        raise TopologyError("set both nginx_tls_cert and nginx_tls_key, or neither (self-signed)")
    for cidr in v["nginx_metrics_allow"]:
        try:
            ipaddress.ip_network(cidr)
        except (ValueError, TypeError):
            raise TopologyError(f"nginx_metrics_allow entry {cidr!r} is not a network") from None
    for loc in v["nginx_large_body_locations"]:
        if not isinstance(loc, str) or not re.match(r"^/[A-Za-z0-9/_.-]*$", loc):
            raise TopologyError(f"nginx_large_body_locations entry {loc!r} is not a plain path prefix")


def load(topology: Mapping[str, Any]) -> Inventory:
    """Validate a topology and resolve every host's variables; sizing errors surface here too."""
    if not isinstance(topology, Mapping):
        raise TopologyError("a topology is a mapping with 'groups', 'vars' and optional 'host_vars'")
    groups, addresses = _groups(topology)
    cluster = _check_vars("vars", topology.get("vars", {}), host_level=False)
    chosen = sizing.preset(cluster.get("rustchat_preset", VARIABLES["rustchat_preset"].default))
    base = {name: spec.default for name, spec in VARIABLES.items()}
    base.update(chosen.variables())
    base.update(cluster)
    missing = [name for name, value in base.items() if value is _REQUIRED]
    if missing:
        raise TopologyError(f"topology vars is missing {', '.join(missing)}")
    if not base["rustchat_public_url"] and base["nginx_server_name"] != "_":
        base["rustchat_public_url"] = f"{'https' if base['nginx_tls'] else 'http'}://{base['nginx_server_name']}"
    _check_cluster(base)

    host_vars = topology.get("host_vars", {})
    if not isinstance(host_vars, Mapping) or set(host_vars) - set(addresses):
        raise TopologyError(f"host_vars names hosts not in any group: {sorted(set(host_vars) - set(addresses))}")
    inventory = Inventory(groups=groups)
    for host, address in addresses.items():
        own = _check_vars(f"host_vars.{host}", host_vars.get(host, {}), host_level=True)
        inventory.hostvars[host] = {**base, **own, "private_address": address}

    # Size the whole topology once up front, with the functions the templates use, so an
    # impossible topology fails before any file is written, whichever host is being rendered.
    db = inventory.hostvars[groups["postgres"][0]]
    workers = [inventory.hostvars[h]["rustchat_workers"] for h in groups["app"]]
    pool = sizing.size_pool(
        db["postgresql_max_connections"], workers,
        superuser_reserved=db["postgresql_superuser_reserved_connections"],
        headroom=base["rustchat_pool_headroom"], ceiling=base["rustchat_pool_ceiling"],
        floor=base["rustchat_pool_floor"], configured_min=base["rustchat_pool_min"],
    )
    redis = inventory.hostvars[groups["redis"][0]]
    sizing.check_redis_memory(redis["redis_maxmemory"], pool.processes, redis["redis_pubsub_buffer_limit"])
    return inventory
