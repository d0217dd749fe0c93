"""Sizing arithmetic for the appliance: the one implementation, pure Python, no I/O.

Templates (through `rustchat.appliance.filters`), the Ansible filter plugin that re-exports those
filters, and the running server's live check all call these functions, so the numbers an operator
renders and the numbers the server checks at run time cannot drift apart.

The database connection rule
----------------------------
Every gunicorn worker on every app node is a process with its own pool, so with P processes in the
whole topology::

    reserved        = superuser_reserved_connections + headroom       (headroom >= 1)
    budget          = max_connections - reserved
    per-process max = min(floor(budget / P), ceiling)                  must be >= floor >= 1
    per-process min = min(configured min, per-process max)

hence  sum(per-process max) = P * max <= budget = max_connections - reserved < max_connections.

`superuser_reserved_connections` must stay free because PostgreSQL refuses ordinary roles those
slots anyway; the headroom is for what is not a pool: `psql` sessions, migrations run by a new
worker while old workers still hold their pools during a restart, monitoring, backups.

The live check (`pool_budget_exceeded`) uses the same inequality: it passes while
``sum + max(reserved, 1) <= max_connections``. Everything the templates render passes it, and a
topology one process larger than what fits fails it; tests/appliance proves both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_SUPERUSER_RESERVED = 3  # PostgreSQL's own default
DEFAULT_HEADROOM = 5
DEFAULT_FLOOR = 2  # below two connections a worker serialises every request behind one query
DEFAULT_CEILING = 20  # the contract's per-process default; more rarely helps one event loop
DEFAULT_POOL_MIN = 5
# A pass must always leave at least one connection free, even if reserved is misreported as 0.
MIN_FREE = 1

# Redis: every process holds one pub/sub subscription; presence keys are tiny by comparison.
DEFAULT_PUBSUB_LIMIT = "32mb 8mb 30"
REDIS_DATASET_RESERVE = 64 * 1024 * 1024


class SizingError(ValueError):
    """A topology that cannot work; the message names the numbers to change."""


# ---------------------------------------------------------------------------------------------
# Database pools


@dataclass(frozen=True)
class PoolSize:
    max: int  # per process
    min: int  # per process
    processes: int
    reserved: int
    max_connections: int

    @property
    def total(self) -> int:
        return self.max * self.processes

    @property
    def budget(self) -> int:
        return self.max_connections - self.reserved


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


def describe_processes(workers_per_node: Sequence[int]) -> str:
    """'3 app nodes × 8 workers' (or '… with 4+4+8 workers' when nodes differ), for messages."""
    nodes = len(workers_per_node)
    if len(set(workers_per_node)) == 1:
        return f"{_plural(nodes, 'app node')} × {_plural(workers_per_node[0], 'worker')}"
    return f"{_plural(nodes, 'app node')} with {'+'.join(map(str, workers_per_node))} workers"


def uniform_workers(app_nodes: int, workers: int) -> list[int]:
    return [workers] * app_nodes


def reserved_connections(superuser_reserved: int, headroom: int = DEFAULT_HEADROOM) -> int:
    """Connections no pool may use: PostgreSQL's superuser slots plus the admin/migration headroom."""
    return superuser_reserved + headroom


def required_max_connections(processes: int, floor: int, reserved: int) -> int:
    """The smallest max_connections at which every process still gets `floor` connections."""
    return processes * floor + reserved


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SizingError(f"{name} must be an integer, got {value!r}")
    if value < lo:
        raise SizingError(f"{name} must be >= {lo}, got {value}")
    return value


def size_pool(
    max_connections: int,
    workers_per_node: Sequence[int],
    *,
    superuser_reserved: int = DEFAULT_SUPERUSER_RESERVED,
    headroom: int = DEFAULT_HEADROOM,
    ceiling: int = DEFAULT_CEILING,
    floor: int = DEFAULT_FLOOR,
    configured_min: int = DEFAULT_POOL_MIN,
) -> PoolSize:
    """Per-process pool size for a topology; raise SizingError when it cannot fit."""
    _check_int("postgresql_max_connections", max_connections, 1)
    _check_int("postgresql_superuser_reserved_connections", superuser_reserved, 0)
    _check_int("rustchat_pool_headroom", headroom, 1)
    _check_int("rustchat_pool_floor", floor, 1)
    _check_int("rustchat_pool_ceiling", ceiling, 1)
    _check_int("rustchat_pool_min", configured_min, 0)
    workers = list(workers_per_node)
    if not workers:
        raise SizingError("the topology has no app nodes (group 'app' is empty)")
    for w in workers:
        _check_int("rustchat_workers", w, 1)
    if ceiling < floor:
        raise SizingError(
            f"rustchat_pool_ceiling {ceiling} is below rustchat_pool_floor {floor}; "
            f"raise the ceiling to >= {floor} or lower the floor"
        )
    processes = sum(workers)
    reserved = reserved_connections(superuser_reserved, headroom)
    per_process = min((max_connections - reserved) // processes, ceiling)
    if per_process < floor:
        need = required_max_connections(processes, floor, reserved)
        raise SizingError(
            f"{describe_processes(workers)} = {_plural(processes, 'process')} need at least {need} "
            f"connections ({processes} × rustchat_pool_floor {floor} + {reserved} reserved = "
            f"postgresql_superuser_reserved_connections {superuser_reserved} + rustchat_pool_headroom "
            f"{headroom}), but postgresql_max_connections is {max_connections}; raise postgres "
            f"max_connections to >= {need} or lower rustchat workers/app nodes"
        )
    return PoolSize(
        max=per_process,
        min=min(configured_min, per_process),
        processes=processes,
        reserved=reserved,
        max_connections=max_connections,
    )


def pool_budget_exceeded(sum_of_live_pool_maxima: int, max_connections: int, reserved: int) -> str | None:
    """The server's live check: a reason string when the pools could exhaust PostgreSQL, else None.

    The rule is the sizing rule read backwards: the processes' pool maxima plus the reserved
    connections must fit in max_connections, i.e. pass iff ``sum + max(reserved, 1) <=
    max_connections``. Passing therefore always means ``sum < max_connections``.
    """
    keep_free = max(reserved, MIN_FREE)
    budget = max_connections - keep_free
    if sum_of_live_pool_maxima <= budget:
        return None
    return (
        f"database pool budget exceeded: the live processes' pool maxima add up to "
        f"{sum_of_live_pool_maxima} but PostgreSQL max_connections {max_connections} minus "
        f"{keep_free} reserved leaves {budget}; lower RUSTCHAT_DB_POOL__MAX_CONNECTIONS or the "
        f"number of workers/nodes, or raise max_connections to >= {sum_of_live_pool_maxima + keep_free}"
    )


# ---------------------------------------------------------------------------------------------
# PostgreSQL memory, from the database host's RAM

SHARED_BUFFERS_CAP_MB = 8192  # beyond ~8 GB the OS page cache does the job as well


def shared_buffers_mb(ram_mb: int, cap_mb: int = SHARED_BUFFERS_CAP_MB) -> int:
    """25 % of RAM, capped; never below 16 MB so a tiny test VM still starts."""
    return max(16, min(ram_mb // 4, cap_mb))


def effective_cache_size_mb(ram_mb: int) -> int:
    """75 % of RAM: a planner hint (shared buffers + page cache), allocates nothing."""
    return max(64, ram_mb * 3 // 4)


def work_mem_kb(ram_mb: int, max_connections: int, cap_mb: int = SHARED_BUFFERS_CAP_MB) -> int:
    """What is left after shared_buffers, split over every connection × 3 sort/hash nodes.

    Clamped to 1 MB..64 MB: chat queries are small index lookups, and the clamp keeps a huge
    max_connections on a small host from reaching zero.
    """
    spare_kb = (ram_mb - shared_buffers_mb(ram_mb, cap_mb)) * 1024
    return max(1024, min(spare_kb // (max(max_connections, 1) * 3), 64 * 1024))


def maintenance_work_mem_mb(ram_mb: int) -> int:
    """RAM / 16 for VACUUM and index builds, between 64 MB and 2 GB."""
    return max(64, min(ram_mb // 16, 2048))


def postgres_memory(ram_mb: int, max_connections: int, cap_mb: int = SHARED_BUFFERS_CAP_MB) -> dict[str, str]:
    """postgresql.conf memory settings, as PostgreSQL-style strings with units."""
    return {
        "shared_buffers": f"{shared_buffers_mb(ram_mb, cap_mb)}MB",
        "effective_cache_size": f"{effective_cache_size_mb(ram_mb)}MB",
        "work_mem": f"{work_mem_kb(ram_mb, max_connections, cap_mb)}kB",
        "maintenance_work_mem": f"{maintenance_work_mem_mb(ram_mb)}MB",
    }


# ---------------------------------------------------------------------------------------------
# Redis memory

_REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
_REDIS_SIZE = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$")


def redis_bytes(value: str | int) -> int:
    """A Redis memory value ('256mb', '1gb', '100000') in bytes, with Redis's own unit rules."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _REDIS_SIZE.match(str(value).lower())
    if not match or match.group(2) not in _REDIS_UNITS:
        raise SizingError(f"{value!r} is not a Redis memory size (like 256mb or 1gb)")
    return int(match.group(1)) * _REDIS_UNITS[match.group(2)]


def pubsub_hard_limit_bytes(limit: str) -> int:
    """The hard limit of a `client-output-buffer-limit pubsub` value 'hard soft seconds'."""
    parts = str(limit).split()
    if len(parts) != 3 or not parts[2].isdigit():
        raise SizingError(f"redis_pubsub_buffer_limit {limit!r} must be '<hard> <soft> <seconds>'")
    redis_bytes(parts[1])
    return redis_bytes(parts[0])


def redis_min_maxmemory(processes: int, pubsub_limit: str = DEFAULT_PUBSUB_LIMIT) -> int:
    """Bytes Redis needs when every subscriber sits at its hard limit, plus the presence keys.

    Client output buffers count towards maxmemory, and with `noeviction` a full Redis refuses
    presence writes, so the worst case of every subscriber lagging must still fit.
    """
    return processes * pubsub_hard_limit_bytes(pubsub_limit) + REDIS_DATASET_RESERVE


def check_redis_memory(maxmemory: str | int, processes: int, pubsub_limit: str = DEFAULT_PUBSUB_LIMIT) -> int:
    """Raise SizingError unless maxmemory holds every subscriber's buffer; return the bytes."""
    have = redis_bytes(maxmemory)
    need = redis_min_maxmemory(processes, pubsub_limit)
    if have and have < need:  # 0 means "no limit" to Redis
        raise SizingError(
            f"redis_maxmemory {maxmemory} cannot hold {_plural(processes, 'subscriber')} at the pubsub "
            f"hard limit {str(pubsub_limit).split()[0]} plus {REDIS_DATASET_RESERVE // 2**20}mb of "
            f"presence keys; raise redis_maxmemory to >= {-(-need // 2**20)}mb or lower "
            f"redis_pubsub_buffer_limit or the number of rustchat workers/app nodes"
        )
    return have


# ---------------------------------------------------------------------------------------------
# Size presets (the guide's small / medium / large), chosen with `rustchat_preset`


@dataclass(frozen=True)
class Preset:
    name: str
    app_nodes: int  # what the preset is meant for; the inventory decides the real count
    workers: int  # per app node, one per core
    max_connections: int
    pool_ceiling: int
    pool_min: int
    postgresql_ram_mb: int  # assumed when the topology does not give the database host's RAM
    redis_maxmemory: str
    summary: str

    def variables(self) -> dict[str, Any]:
        """The topology variables this preset sets (explicit variables still win)."""
        return {
            "rustchat_workers": self.workers,
            "rustchat_pool_ceiling": self.pool_ceiling,
            "rustchat_pool_min": self.pool_min,
            "postgresql_max_connections": self.max_connections,
            "postgresql_ram_mb": self.postgresql_ram_mb,
            "redis_maxmemory": self.redis_maxmemory,
        }


PRESETS: Mapping[str, Preset] = {
    p.name: p
    for p in (
        Preset("small", 1, 2, 100, DEFAULT_CEILING, 5, 4096, "512mb",
               "one host running everything; up to a few hundred users"),
        Preset("medium", 3, 4, 200, DEFAULT_CEILING, 3, 16384, "1gb",
               "3 app nodes × 4 cores behind one load balancer; a few thousand users"),
        Preset("large", 6, 8, 500, DEFAULT_CEILING, 2, 65536, "4gb",
               "6 or more app nodes × 8 cores; tens of thousands of users"),
    )
}


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise SizingError(f"rustchat_preset {name!r} is not one of {', '.join(PRESETS)}") from None


def preset_table() -> list[dict[str, Any]]:
    """The presets as rows, for docs and `render --presets`."""
    return [asdict(p) for p in PRESETS.values()]
