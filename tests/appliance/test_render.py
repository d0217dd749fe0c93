"""Rendering: which host gets which file, what the files say, the CLI, and topology validation."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jinja2
import pytest

from rustchat.appliance import filters, render
from rustchat.appliance.render import render_all, render_host
from rustchat.appliance.sizing import SizingError
from rustchat.appliance.topology import APP_BODY_LIMITS, TopologyError, nginx_bytes
from rustchat.config import load_settings
from tests.appliance.support import parse_env, topology

MEDIUM = topology(app_nodes=3, rustchat_preset="medium", nginx_server_name="chat.example.com")
NGINX = "/etc/nginx/conf.d/rustchat.conf"
ENV = "/etc/rustchat/rustchat.env"


def test_each_group_gets_its_files_with_modes() -> None:
    rendered = render_all(MEDIUM)
    assert set(rendered) == {"lb1", "app1", "app2", "app3", "db1", "cache1"}
    assert set(rendered["lb1"]) == {NGINX}
    assert set(rendered["db1"]) == {"/etc/postgresql/15/main/conf.d/rustchat.conf",
                                    "/etc/postgresql/15/main/pg_hba.conf"}
    assert set(rendered["cache1"]) == {"/etc/redis/redis.conf"}
    assert set(rendered["app2"]) == {"/etc/rustchat/gunicorn.conf.py", ENV, "/etc/systemd/system/rustchat.service"}
    assert rendered["app1"][ENV].mode == 0o600  # both passwords
    assert rendered["cache1"]["/etc/redis/redis.conf"].mode == 0o640  # requirepass
    content, mode = rendered["app1"]["/etc/systemd/system/rustchat.service"]
    assert mode == 0o644 and content.endswith("\n")
    assert render_host(MEDIUM, "app2") == rendered["app2"]


def test_one_host_in_every_group_gets_every_file() -> None:
    topo = topology(app_nodes=1)
    topo["groups"] = {g: {"box": "10.0.0.9"} for g in ("lb", "app", "postgres", "redis")}
    files = render_host(topo, "box")
    assert len(files) == len(render.FILES)
    env = parse_env(files[ENV].content)
    assert "@10.0.0.9:5432/" in env["RUSTCHAT_DATABASE_URL"]
    assert int(env["RUSTCHAT_DB_POOL__MAX_CONNECTIONS"]) == 20  # small: (100 - 8) // 2 = 46, ceiling 20


def test_rendered_env_is_accepted_by_the_app_and_carries_the_secrets() -> None:
    env = parse_env(render_host(MEDIUM, "app1")[ENV].content)
    settings = load_settings(env)  # the app's own parser and validation
    assert settings.pool.max_connections == 16  # floor((200 - 3 - 5) / (3 × 4))
    assert settings.pool.min_connections == 3
    assert settings.host == "10.0.1.1" and settings.port == 3000
    assert settings.public_url == "https://chat.example.com"
    assert settings.ws_ping_interval_secs == 30
    db = urlsplit(settings.database_url)
    assert (db.hostname, db.port, db.path) == ("10.0.0.5", 5432, "/rustchat")
    assert unquote(db.password) == MEDIUM["vars"]["rustchat_db_password"]
    redis = urlsplit(settings.redis_url)
    assert (redis.hostname, redis.port) == ("10.0.0.7", 6379)
    assert unquote(redis.password) == MEDIUM["vars"]["redis_requirepass"]
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/run/rustchat/prometheus"
    assert env["RUST_LOG"] == "info"


def test_nginx_site_upstreams_limits_and_websocket() -> None:
    site = render_all(topology(app_nodes=3, nginx_ip_hash=True))["lb1"][NGINX].content
    start = site.index("upstream rustchat_app")
    upstream = site[start:site.index("}", start)]
    assert re.findall(r"server (\S+) ", upstream) == ["10.0.1.1:3000", "10.0.1.2:3000", "10.0.1.3:3000"]
    assert upstream.index("ip_hash;") < upstream.index("keepalive 32;")  # nginx requires this order
    ws = site[site.index("location = /api/v1/websocket"):]
    ws = ws[:ws.index("}")]
    for line in ("proxy_http_version 1.1;", "proxy_set_header Upgrade           $http_upgrade;",
                 "proxy_set_header Connection        $connection_upgrade;", "proxy_read_timeout 120s;",
                 "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Proto", "Host"):
        assert line in ws
    assert "server_tokens off;" in site
    assert "return 301 https://$host$request_uri;" in site
    assert "Strict-Transport-Security" not in site  # self-signed by default
    assert "ssl_certificate     /etc/ssl/rustchat/selfsigned.crt;" in site
    # Every location's limit is at least the app's limit for that route category.
    limits = {loc: nginx_bytes(size) for loc, size in re.findall(
        r"location (?:= |~ )?(\S+) \{[^}]*?client_max_body_size (\S+);", site)}
    assert limits["/api/v1/auth/"] >= APP_BODY_LIMITS["small"]
    assert limits["/api/v1/files"] >= APP_BODY_LIMITS["large"]
    assert limits["/api/v1/imports"] >= APP_BODY_LIMITS["large"]
    assert nginx_bytes(re.search(r"^    client_max_body_size (\S+);", site, re.M).group(1)) >= APP_BODY_LIMITS["default"]


def test_nginx_without_tls_and_with_a_real_certificate() -> None:
    plain = render_all(topology(nginx_tls=False, nginx_http_port=8080))["lb1"][NGINX].content
    assert "ssl" not in plain and "return 301" not in plain and "listen 8080;" in plain
    assert "listen [::]:8080;" in plain
    v4_only = render_all(topology(nginx_listen_ipv6=False))["lb1"][NGINX].content
    assert "[::]" not in v4_only
    real = render_all(topology(nginx_tls_cert="/etc/letsencrypt/c.pem", nginx_tls_key="/etc/letsencrypt/k.pem"))
    site = real["lb1"][NGINX].content
    assert "ssl_certificate     /etc/letsencrypt/c.pem;" in site and "Strict-Transport-Security" in site


def test_postgres_fragment_and_hba() -> None:
    files = render_all(MEDIUM)["db1"]
    conf = files["/etc/postgresql/15/main/conf.d/rustchat.conf"].content
    assert "listen_addresses = 'localhost,10.0.0.5'" in conf
    assert "max_connections = 200" in conf and "superuser_reserved_connections = 3" in conf
    assert "shared_buffers = '4096MB'" in conf  # medium preset assumes 16 GB
    assert "password_encryption = 'scram-sha-256'" in conf
    hba = [line.split("#")[0].split() for line in files["/etc/postgresql/15/main/pg_hba.conf"].content.splitlines()
           if line.strip() and not line.startswith("#")]
    assert hba == [["local", "all", "postgres", "peer"]] + [
        ["host", "rustchat", "rustchat", f"10.0.1.{i}/32", "scram-sha-256"] for i in (1, 2, 3)
    ]


def test_ipv6_addresses_are_bracketed_and_sized_as_host_networks() -> None:
    topo = topology(app_nodes=2)
    topo["groups"] = {"lb": {"lb1": "fd00::2"}, "app": {"app1": "fd00::11", "app2": "fd00::12"},
                      "postgres": {"db1": "fd00::5"}, "redis": {"cache1": "fd00::7"}}
    rendered = render_all(topo)
    assert "server [fd00::11]:3000 " in rendered["lb1"][NGINX].content
    assert "fd00::11/128" in rendered["db1"]["/etc/postgresql/15/main/pg_hba.conf"].content
    assert "bind = ['[fd00::11]:3000']" in rendered["app1"]["/etc/rustchat/gunicorn.conf.py"].content
    env = parse_env(rendered["app1"][ENV].content)
    assert "@[fd00::5]:5432/" in env["RUSTCHAT_DATABASE_URL"]
    assert "@[fd00::7]:6379/" in env["RUSTCHAT_REDIS_URL"]


def test_redis_binds_private_and_loopback_once() -> None:
    conf = render_all(topology())["cache1"]["/etc/redis/redis.conf"].content
    assert "\nbind 10.0.0.7 127.0.0.1\n" in conf
    topo = topology()
    topo["groups"]["redis"] = {"cache1": "127.0.0.1"}
    assert "\nbind 127.0.0.1\n" in render_all(topo)["cache1"]["/etc/redis/redis.conf"].content


def test_unit_has_no_reload_that_would_double_the_pools() -> None:
    unit = render_all(topology())["app1"]["/etc/systemd/system/rustchat.service"].content
    assert "\nExecReload=" not in unit


@pytest.mark.parametrize(("persistence", "expect"), [
    ("none", ['save ""', "appendonly no"]),
    ("rdb", ["save 900 1", "appendonly no"]),
    ("aof", ['save ""', "appendonly yes", "appendfsync everysec"]),
])
def test_redis_persistence_is_configurable(persistence: str, expect: list[str]) -> None:
    conf = render_all(topology(redis_persistence=persistence))["cache1"]["/etc/redis/redis.conf"].content
    for line in expect:
        assert line in conf


@pytest.mark.parametrize(("change", "message"), [
    ({"rustchat_wokers": 3}, "unknown variable 'rustchat_wokers'"),
    ({"rustchat_workers": "4"}, "rustchat_workers must be int"),
    ({"rustchat_preset": "huge"}, "rustchat_preset must be one of small, medium, large"),
    ({"rustchat_graceful_timeout": 10}, "rustchat_graceful_timeout 10 leaves too little time"),
    ({"nginx_ws_read_timeout": 30}, "nginx_ws_read_timeout 30 must exceed rustchat_ws_ping_interval_secs 30"),
    ({"nginx_upstream_keepalive_timeout": 90}, "must be below rustchat_keepalive 75"),
    ({"nginx_body_limit_small": "32k"}, "nginx_body_limit_small 32k is below the app's 65536 bytes"),
    ({"nginx_tls_cert": "/c.pem"}, "set both nginx_tls_cert and nginx_tls_key"),
    ({"rustchat_metrics_dir": "/var/tmp/prom"}, "must be a directory under /run/"),
    ({"redis_maxmemory": "100mb", "rustchat_preset": "medium"}, "redis_maxmemory 100mb cannot hold 12 subscribers"),
])
def test_invalid_topologies_name_the_variable(change: dict, message: str) -> None:
    with pytest.raises((TopologyError, SizingError), match=re.escape(message)):
        render_all(topology(**change))


def test_structural_topology_errors() -> None:
    topo = topology()
    del topo["vars"]["redis_requirepass"]
    with pytest.raises(TopologyError, match="missing redis_requirepass"):
        render_all(topo)
    topo = topology()
    topo["groups"]["postgres"]["db2"] = "10.0.0.6"
    with pytest.raises(TopologyError, match="exactly one host"):
        render_all(topo)
    topo = topology()
    topo["groups"]["app"]["app1"] = "not-an-ip"
    with pytest.raises(TopologyError, match="not an IP address"):
        render_all(topo)
    topo = topology()
    topo["host_vars"] = {"app1": {"postgresql_max_connections": 500}}
    with pytest.raises(TopologyError, match="cluster-wide"):
        render_all(topo)
    with pytest.raises(TopologyError, match="not in the topology"):
        render_host(topology(), "nope")


def test_sizing_errors_surface_for_every_host() -> None:
    # Even the load balancer's files are refused when the database cannot hold the pools.
    topo = topology(app_nodes=3, rustchat_workers=8, postgresql_max_connections=50)
    with pytest.raises(SizingError, match="3 app nodes × 8 workers"):
        render_host(topo, "lb1")


def test_cli_writes_every_host_with_modes(tmp_path: Path) -> None:
    topo_file = tmp_path / "topo.json"
    topo_file.write_text(json.dumps(MEDIUM))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "rustchat.appliance.render", "--topology", str(topo_file),
                           "--out", str(out)], capture_output=True, text=True, check=True)
    env_file = out / "app3/etc/rustchat/rustchat.env"
    assert str(env_file) in proc.stdout.splitlines()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "lb1/etc/nginx/conf.d/rustchat.conf").stat().st_mode) == 0o644
    assert env_file.read_text() == render_host(MEDIUM, "app3")[ENV].content
    # Rendering again over the same tree replaces the files.
    subprocess.run([sys.executable, "-m", "rustchat.appliance.render", "--topology", str(topo_file),
                    "--out", str(out)], capture_output=True, check=True)


def test_cli_reports_an_impossible_topology(tmp_path: Path) -> None:
    topo_file = tmp_path / "topo.json"
    topo_file.write_text(json.dumps(topology(app_nodes=3, rustchat_workers=8, postgresql_max_connections=50)))
    proc = subprocess.run([sys.executable, "-m", "rustchat.appliance.render", "--topology", str(topo_file),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "raise postgres max_connections to >= 56" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_ansible_filter_plugin_renders_the_same_files() -> None:
    """An environment with only the FilterModule's filters (what Ansible has) renders identically."""
    plugin_filters = filters.FilterModule().filters()
    assert plugin_filters == dict(filters.FILTERS)
    ansible_like = jinja2.Environment(loader=jinja2.FileSystemLoader(str(render.TEMPLATES_DIR)),
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    ansible_like.filters.update(plugin_filters)
    from rustchat.appliance import topology as topo_module

    inventory = topo_module.load(MEDIUM)
    rendered = render_all(MEDIUM)
    for host in inventory.hostvars:
        context = inventory.context(host)
        for spec in render.FILES:
            if host in inventory.groups[spec.group]:
                text = ansible_like.get_template(spec.template).render(context)
                assert text == rendered[host][spec.dest.format(**context)].content, (host, spec.template)


def test_docs_cover_every_variable_and_preset() -> None:
    from rustchat.appliance import sizing
    from rustchat.appliance.topology import VARIABLES

    docs = (Path(__file__).resolve().parents[2] / "docs" / "sizing.md").read_text()
    missing = [name for name in VARIABLES if f"`{name}`" not in docs]
    assert not missing, f"docs/sizing.md does not describe {missing}"
    for p in sizing.PRESETS.values():
        row = next(line for line in docs.splitlines() if line.startswith(f"| {p.name} "))
        cells = [c.strip() for c in row.split("|")]
        assert cells[3] == str(p.workers) and cells[4] == str(p.max_connections), row
        assert cells[7] == f"{p.postgresql_ram_mb} MB" and cells[8] == p.redis_maxmemory, row
