"""Thousands of rendered topologies: the files themselves keep PostgreSQL's connection budget.

Numbers are read back out of the rendered files (rustchat.env, gunicorn.conf.py, the PostgreSQL
fragment), not taken from the sizing function, so a template that computed or printed anything
differently would be caught.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rustchat.appliance import sizing
from rustchat.appliance.render import render_all
from rustchat.appliance.sizing import SizingError, pool_budget_exceeded
from tests.appliance.support import gunicorn_settings, parse_env, topology

ENV = "/etc/rustchat/rustchat.env"
GUNICORN = "/etc/rustchat/gunicorn.conf.py"
PG_CONF = "/etc/postgresql/15/main/conf.d/rustchat.conf"


def _pg_setting(text: str, name: str) -> int:
    match = re.search(rf"^{name} = (\d+)$", text, re.MULTILINE)
    assert match, f"{name} not in the rendered PostgreSQL config"
    return int(match.group(1))


@st.composite
def topologies(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, int]]:
    """A topology plus the headroom/floor it uses (which appear in no rendered file)."""
    preset = draw(st.sampled_from(sorted(sizing.PRESETS)))
    nodes = draw(st.integers(1, 20))
    variables: dict[str, Any] = {
        "rustchat_preset": preset,
        "postgresql_max_connections": draw(st.integers(20, 2000)),
        "postgresql_superuser_reserved_connections": draw(st.integers(0, 10)),
        "rustchat_pool_headroom": draw(st.integers(1, 20)),
        "rustchat_pool_floor": draw(st.integers(1, 5)),
        # Redis is checked by its own test; keep it out of the way of the database rule here.
        "redis_maxmemory": "64gb",
    }
    # Some topologies keep the preset's workers/ceiling/min, others override them.
    for name, strategy in (("rustchat_workers", st.integers(1, 16)),
                           ("rustchat_pool_ceiling", st.integers(1, 100)),
                           ("rustchat_pool_min", st.integers(0, 10))):
        value = draw(st.none() | strategy)
        if value is not None:
            variables[name] = value
    topo = topology(app_nodes=nodes, **variables)
    # Uneven nodes: a few app hosts get their own worker count.
    uneven = draw(st.lists(st.tuples(st.integers(1, nodes), st.integers(1, 16)), max_size=3))
    if uneven:
        topo["host_vars"] = {f"app{i}": {"rustchat_workers": w} for i, w in uneven}
    params = {
        "headroom": variables["rustchat_pool_headroom"],
        "floor": variables["rustchat_pool_floor"],
        "ceiling": variables.get("rustchat_pool_ceiling", sizing.PRESETS[preset].pool_ceiling),
    }
    return topo, params


def _expected_workers(topo: dict[str, Any]) -> list[int]:
    preset = sizing.PRESETS[topo["vars"]["rustchat_preset"]]
    default = topo["vars"].get("rustchat_workers", preset.workers)
    per_host = topo.get("host_vars", {})
    return [per_host.get(h, {}).get("rustchat_workers", default) for h in topo["groups"]["app"]]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=topologies())
def test_rendered_pools_never_exceed_max_connections(case: tuple[dict[str, Any], dict[str, int]]) -> None:
    topo, params = case
    max_connections = topo["vars"]["postgresql_max_connections"]
    workers = _expected_workers(topo)
    processes = sum(workers)
    reserved_expected = topo["vars"]["postgresql_superuser_reserved_connections"] + params["headroom"]
    fits = params["ceiling"] >= params["floor"] and processes * params["floor"] + reserved_expected <= max_connections

    event("fits" if fits else "cannot fit")
    try:
        rendered = render_all(topo)
    except SizingError as exc:
        assert not fits, f"a topology that fits was refused: {exc}"
        message = str(exc)
        if params["ceiling"] < params["floor"]:
            assert f"rustchat_pool_ceiling {params['ceiling']}" in message
        else:
            assert f"{len(workers)} app node" in message
            assert f"postgresql_max_connections is {max_connections}" in message
            assert f">= {processes * params['floor'] + reserved_expected}" in message
        return
    assert fits, "a topology that cannot fit was rendered"

    pg_conf = rendered["db1"][PG_CONF].content
    rendered_max = _pg_setting(pg_conf, "max_connections")
    rendered_superuser = _pg_setting(pg_conf, "superuser_reserved_connections")
    assert rendered_max == max_connections
    reserved = rendered_superuser + params["headroom"]

    total = 0
    pool_maxima = set()
    for host in topo["groups"]["app"]:
        env = parse_env(rendered[host][ENV].content)
        pool_max = int(env["RUSTCHAT_DB_POOL__MAX_CONNECTIONS"])
        pool_min = int(env["RUSTCHAT_DB_POOL__MIN_CONNECTIONS"])
        host_workers = gunicorn_settings(rendered[host][GUNICORN].content)["workers"]
        assert 0 <= pool_min <= pool_max
        assert pool_max >= params["floor"]
        total += host_workers * pool_max
        pool_maxima.add(pool_max)
    assert len(pool_maxima) == 1, "every process in the topology gets the same pool size"
    pool_max = pool_maxima.pop()

    assert total < rendered_max
    assert total + reserved <= rendered_max

    # The app's live check accepts every rendered topology ...
    assert pool_budget_exceeded(total, rendered_max, reserved) is None
    # ... and reports the overflow as soon as one more process than fits is added.
    fitting = (rendered_max - reserved) // pool_max
    assert fitting >= processes
    assert pool_budget_exceeded(total + (fitting - processes) * pool_max, rendered_max, reserved) is None
    over = total + (fitting - processes + 1) * pool_max
    reason = pool_budget_exceeded(over, rendered_max, reserved)
    assert reason is not None and str(over) in reason and str(rendered_max) in reason
