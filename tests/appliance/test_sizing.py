"""The sizing arithmetic: worked examples, presets, memory settings, and a property over the rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rustchat.appliance import sizing
from rustchat.appliance.sizing import SizingError, pool_budget_exceeded, size_pool


def test_worked_example_from_the_docs() -> None:
    # docs/sizing.md: 3 app nodes × 4 workers, max_connections 200, superuser_reserved 3, headroom 5.
    size = size_pool(200, sizing.uniform_workers(3, 4), superuser_reserved=3, headroom=5, ceiling=50, floor=2)
    assert (size.max, size.processes, size.reserved, size.total) == (16, 12, 8, 192)
    assert size.total < 200
    assert pool_budget_exceeded(size.total, 200, size.reserved) is None


def test_ceiling_bounds_a_generous_budget_and_min_never_exceeds_max() -> None:
    size = size_pool(1000, [2], ceiling=20, configured_min=50)
    assert size.max == 20 and size.min == 20
    assert size_pool(1000, [2], ceiling=20, configured_min=3).min == 3


def test_a_topology_that_cannot_fit_says_which_numbers_to_change() -> None:
    with pytest.raises(SizingError) as err:
        size_pool(50, sizing.uniform_workers(3, 8), superuser_reserved=3, headroom=5, floor=2)
    message = str(err.value)
    # 24 processes × 2 + 8 reserved = 56
    assert "3 app nodes × 8 workers" in message
    assert "at least 56" in message and ">= 56" in message
    assert "postgresql_max_connections is 50" in message
    assert "lower rustchat workers/app nodes" in message


def test_uneven_nodes_are_described_per_node() -> None:
    with pytest.raises(SizingError, match=r"3 app nodes with 4\+4\+8 workers = 16 processes"):
        size_pool(30, [4, 4, 8])


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"ceiling": 1, "floor": 2}, "rustchat_pool_ceiling 1 is below rustchat_pool_floor 2"),
        ({"headroom": 0}, "rustchat_pool_headroom must be >= 1"),
        ({"floor": 0}, "rustchat_pool_floor must be >= 1"),
        ({"superuser_reserved": -1}, "postgresql_superuser_reserved_connections must be >= 0"),
    ],
)
def test_invalid_parameters_are_named(kwargs: dict, pattern: str) -> None:
    with pytest.raises(SizingError, match=pattern):
        size_pool(100, [2], **kwargs)


def test_no_app_nodes_or_zero_workers_is_an_error() -> None:
    with pytest.raises(SizingError, match="no app nodes"):
        size_pool(100, [])
    with pytest.raises(SizingError, match="rustchat_workers must be >= 1"):
        size_pool(100, [2, 0])


def test_live_check_rule() -> None:
    # Passing means sum + reserved <= max_connections, so sum < max_connections always.
    assert pool_budget_exceeded(192, 200, 8) is None
    reason = pool_budget_exceeded(193, 200, 8)
    assert reason is not None and "193" in reason and "200" in reason and "192" in reason
    # A reserved of 0 still keeps one connection free.
    assert pool_budget_exceeded(199, 200, 0) is None
    assert pool_budget_exceeded(200, 200, 0) is not None


@pytest.mark.parametrize("name", ["small", "medium", "large"])
def test_presets_fit_the_topology_they_are_meant_for(name: str) -> None:
    p = sizing.preset(name)
    size = size_pool(p.max_connections, sizing.uniform_workers(p.app_nodes, p.workers),
                     ceiling=p.pool_ceiling, configured_min=p.pool_min)
    assert size.total + size.reserved <= p.max_connections
    assert size.max >= sizing.DEFAULT_FLOOR
    sizing.check_redis_memory(p.redis_maxmemory, size.processes)


def test_presets_grow_and_unknown_preset_is_named() -> None:
    small, medium, large = (sizing.PRESETS[n] for n in ("small", "medium", "large"))
    assert (small.app_nodes, small.workers, small.max_connections) == (1, 2, 100)
    assert (medium.app_nodes, medium.workers, medium.max_connections) == (3, 4, 200)
    assert (large.app_nodes, large.workers, large.max_connections) == (6, 8, 500)
    assert small.postgresql_ram_mb < medium.postgresql_ram_mb < large.postgresql_ram_mb
    with pytest.raises(SizingError, match="huge"):
        sizing.preset("huge")


def test_postgres_memory_from_ram() -> None:
    mem = sizing.postgres_memory(16384, 200)
    assert mem["shared_buffers"] == "4096MB"  # 25 %
    assert mem["effective_cache_size"] == "12288MB"  # 75 %
    assert mem["work_mem"] == f"{(16384 - 4096) * 1024 // 600}kB"
    assert mem["maintenance_work_mem"] == "1024MB"
    assert sizing.shared_buffers_mb(262144) == sizing.SHARED_BUFFERS_CAP_MB  # capped
    assert sizing.work_mem_kb(1024, 5000) == 1024  # clamped, never zero


def test_redis_memory_units_and_subscriber_budget() -> None:
    assert sizing.redis_bytes("1gb") == 2**30
    assert sizing.redis_bytes("1g") == 10**9
    assert sizing.redis_bytes("256mb") == 256 * 2**20
    with pytest.raises(SizingError):
        sizing.redis_bytes("lots")
    sizing.check_redis_memory("0", 10_000)  # 0 = no limit
    with pytest.raises(SizingError, match="redis_maxmemory 256mb cannot hold 12 subscribers") as err:
        sizing.check_redis_memory("256mb", 12)
    assert ">= 448mb" in str(err.value)  # 12 × 32mb + 64mb


# ---------------------------------------------------------------------------------------------
# The rule itself, over a wide space of topologies (the pure function; test_render_property.py
# does the same through rendered files).


@settings(max_examples=2000, deadline=None)
@given(
    workers=st.one_of(
        st.tuples(st.integers(1, 20), st.integers(1, 16)).map(lambda t: [t[1]] * t[0]),
        st.lists(st.integers(1, 16), min_size=1, max_size=20),
    ),
    max_connections=st.integers(20, 2000),
    superuser_reserved=st.integers(0, 10),
    headroom=st.integers(1, 20),
    ceiling=st.integers(1, 100),
    floor=st.integers(1, 5),
    configured_min=st.integers(0, 10),
)
def test_pool_rule_property(workers: list[int], max_connections: int, superuser_reserved: int,
                            headroom: int, ceiling: int, floor: int, configured_min: int) -> None:
    processes = sum(workers)
    reserved = superuser_reserved + headroom
    should_fit = ceiling >= floor and processes * floor + reserved <= max_connections
    try:
        size = size_pool(max_connections, workers, superuser_reserved=superuser_reserved, headroom=headroom,
                         ceiling=ceiling, floor=floor, configured_min=configured_min)
    except SizingError as exc:
        assert not should_fit, f"refused a topology that fits: {exc}"
        message = str(exc)
        if ceiling < floor:
            assert f"rustchat_pool_ceiling {ceiling}" in message and f"rustchat_pool_floor {floor}" in message
        else:
            need = processes * floor + reserved
            assert f"at least {need} connections" in message
            assert f"postgresql_max_connections is {max_connections}" in message
            assert f"{len(workers)} app node" in message
        return
    assert should_fit
    total = size.max * processes
    assert floor <= size.max <= ceiling
    assert size.min == min(configured_min, size.max) <= size.max
    assert total + reserved <= max_connections
    assert total < max_connections
    # As large as the rule allows: either at the ceiling, or one more per process would not fit.
    assert size.max == ceiling or (size.max + 1) * processes + reserved > max_connections
    # The live check agrees: this topology passes, one process beyond what fits does not.
    assert pool_budget_exceeded(total, max_connections, reserved) is None
    fitting = (max_connections - reserved) // size.max
    assert pool_budget_exceeded(fitting * size.max, max_connections, reserved) is None
    assert pool_budget_exceeded((fitting + 1) * size.max, max_connections, reserved) is not None
