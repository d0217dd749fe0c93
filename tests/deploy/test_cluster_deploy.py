"""ansible/site.yml on real hosts: lb, db, redis and app1..app3, each a Debian 12 with systemd.

In order, on one cluster (tests.deploy.hosts; see ../shared/notes/test-hosts.md):

1. site.yml deploys bare hosts; a second run changes nothing; --check --diff changes nothing.
2. testinfra on every host: packages, services enabled and running and not restart-looping,
   TCP listeners only on the addresses they should use, rendered configs (pool sizes and their
   sum against the live max_connections), modes and owners of secrets, the firewall tables; and
   real connection attempts showing each port open to exactly the peers that need it. The
   monitoring host's Prometheus reports every app node and every exporter up, with the alert
   rules loaded.
3. Through nginx: two users on different app nodes exchange messages over WebSocket, and
   /api/v1/health lists every gunicorn worker of every app node as a cluster node.
4. Scale out: app4 is added to the inventory, site.yml rerun; every node's pool shrank as the
   sizing rule says, app4 serves, and Prometheus scrapes it.
5. rolling-update.yml while two clients chat: every message reaches the other side exactly once,
   the clients resuming their connections (close 1012) in other server processes: another node,
   or their own node once it is back with new workers.

Skipped only when this machine cannot run the hosts (not root, or the container tools cannot be
installed). Playbook logs and, on failure, the hosts' journals are kept in LOG_DIR.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rustchat.appliance import sizing
from tests.appliance.support import gunicorn_settings, parse_env
from tests.deploy import hosts
from tests.deploy.chat import ResumingClient, Sender, channel_posts, node_host
from tests.deploy.fixtures import clean_cluster
from tests.support.client import Api

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
LOG_DIR = Path(os.environ.get("RUSTCHAT_DEPLOY_LOG_DIR", "/tmp/rustchat-test-logs/deploy"))
WORKERS = hosts.GROUP_VARS["rustchat_workers"]
MAX_CONNECTIONS = sizing.preset(hosts.GROUP_VARS["rustchat_preset"]).max_connections
APPS = [n for n, (_, g) in hosts.DEFAULT_HOSTS.items() if g == "app"]

# What the earlier steps established, for the later ones (the tests run in file order).
PROGRESS: dict[str, Any] = {}
# Every playbook run deploys a snapshot of the checkout taken at the start (other work may edit
# the checkout meanwhile); the rolling update deploys a changed snapshot.
SOURCE: list[Path] = []
TIMINGS: list[tuple[str, float]] = []


def expected_pool(app_nodes: int) -> sizing.PoolSize:
    return sizing.size_pool(MAX_CONNECTIONS, [WORKERS] * app_nodes)


def require(step: str) -> None:
    if step not in PROGRESS:
        pytest.skip(f"needs the earlier step '{step}', which did not complete")


@pytest.fixture(scope="module")
def cluster() -> Any:
    c = clean_cluster(LOG_DIR)
    # testinfra's ansible backend calls ansible-inventory, which lives next to this Python.
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{old_path}"
    started = time.monotonic()
    source = Path(tempfile.mkdtemp(prefix="rustchat-deploy-source-"))
    SOURCE.append(hosts.Cluster.snapshot_source(source))
    try:
        c.up(owner="pytest")
        TIMINGS.append(("hosts up", time.monotonic() - started))
        yield c
    finally:
        failed = PROGRESS.get("failed")
        if failed:
            _collect_journals(c)
        t = time.monotonic()
        c.down()
        TIMINGS.append(("hosts down", time.monotonic() - t))
        os.environ["PATH"] = old_path
        shutil.rmtree(source, ignore_errors=True)
        summary = "\n".join(f"{name:34} {secs:6.0f} s" for name, secs in TIMINGS)
        (LOG_DIR / "timings.txt").write_text(summary + f"\n{'total':34} {time.monotonic() - started:6.0f} s\n")
        hosts.log("timings:\n" + summary)


@pytest.fixture(autouse=True)
def _note_failures(request: pytest.FixtureRequest) -> Any:
    yield
    report = getattr(request.node, "rep_call", None)  # set by conftest's makereport hook
    if report is not None and report.failed:
        PROGRESS["failed"] = True


def _collect_journals(c: hosts.Cluster) -> None:
    for host in c.hosts():
        proc = c.ssh(host, "journalctl -b --no-pager -n 400; systemctl --failed --no-pager", check=False, timeout=60)
        (LOG_DIR / f"journal-{host.name}.log").write_text(proc.stdout + proc.stderr)


def playbook(c: hosts.Cluster, name: str, *args: str, step: str) -> hosts.PlaybookRun:
    result = c.playbook(name, "-e", f"rustchat_source_dir={SOURCE[0]}", *args, log_name=f"{step}.log")
    TIMINGS.append((step, result.seconds))
    if result.rc != 0:
        tail = "\n".join(result.output.splitlines()[-60:])
        pytest.fail(f"{name} {' '.join(args)} failed with {result.rc} (log: {result.log}):\n{tail}", pytrace=False)
    return result


def infra(c: hosts.Cluster, name: str) -> Any:
    import testinfra

    return testinfra.get_host(f"ansible://{name}", ansible_inventory=str(c.inventory))


def forget_inventory() -> None:
    """testinfra caches a parsed inventory and its hosts; after adding a host, read it again."""
    import testinfra.host
    from testinfra.utils.ansible_runner import AnsibleRunner

    AnsibleRunner._runners.clear()
    testinfra.host.Host._host_cache.clear()


def address(name: str) -> str:
    return f"{hosts.NETWORK}.{hosts.DEFAULT_HOSTS[name][0]}" if name in hosts.DEFAULT_HOSTS else f"{hosts.NETWORK}.{40 + int(name[3:])}"


# ---------------------------------------------------------------------------------------------
# 1. The playbook


def test_site_yml_deploys_bare_hosts(cluster: hosts.Cluster) -> None:
    playbook(cluster, "site.yml", step="site.yml on bare hosts")
    PROGRESS["deployed"] = True


def test_a_second_run_changes_nothing(cluster: hosts.Cluster) -> None:
    require("deployed")
    result = playbook(cluster, "site.yml", step="site.yml again (idempotence)")
    changed = {host: r["changed"] for host, r in result.recap().items() if r.get("changed")}
    assert set(result.recap()) == set(hosts.DEFAULT_HOSTS), result.recap()
    assert not changed, f"the second run changed {changed}: " + "; ".join(result.changed_tasks())


def test_check_diff_mode_runs_and_changes_nothing(cluster: hosts.Cluster) -> None:
    require("deployed")
    result = playbook(cluster, "site.yml", "--check", "--diff", step="site.yml --check --diff")
    changed = {host: r["changed"] for host, r in result.recap().items() if r.get("changed")}
    assert not changed, f"--check reported changes {changed}: " + "; ".join(result.changed_tasks())


# ---------------------------------------------------------------------------------------------
# 2. testinfra on every host

PRIVATE_ONLY = {"lb": [], "db": [5432], "redis": [6379], "app": [3000]}


def _service_is_healthy(h: Any, unit: str) -> None:
    service = h.service(unit)
    assert service.is_enabled, f"{unit} is not enabled"
    assert service.is_running, f"{unit} is not running"
    props = dict(line.split("=", 1) for line in h.check_output(
        f"systemctl show -p NRestarts -p ActiveState -p SubState -p ActiveEnterTimestampMonotonic {unit}").splitlines())
    assert props["ActiveState"] == "active" and props["NRestarts"] == "0", (unit, props)
    # Not restart-looping: the same main process a moment later.
    pid = h.check_output(f"systemctl show -p MainPID --value {unit}")
    time.sleep(1)
    assert h.check_output(f"systemctl show -p MainPID --value {unit}") == pid, f"{unit} restarted within a second"


def _allows(table: str, port: int | str, sources: list[str]) -> bool:
    """Whether `nft list table` output has the accept rule for `port` from exactly `sources`."""
    written = sources[0] if len(sources) == 1 else "{ " + ", ".join(sources) + " }"  # nft's own format
    return f"tcp dport {port} ip saddr {written} accept" in table


def _tcp_listeners(h: Any) -> set[str]:
    return {s for s in h.socket.get_listening_sockets() if s.startswith("tcp")}


@pytest.mark.parametrize("name", list(hosts.DEFAULT_HOSTS))
def test_every_host_base(cluster: hosts.Cluster, name: str) -> None:
    require("deployed")
    h = infra(cluster, name)
    for package in ("nftables", "chrony", "curl", "ca-certificates"):
        assert h.package(package).is_installed, package
    assert h.service("chrony").is_enabled  # not running in a container: it may not set the clock
    assert h.service("nftables").is_enabled
    assert h.check_output("systemctl --failed --no-legend --plain") == ""
    assert h.check_output("systemctl is-system-running") == "running"
    table = h.check_output("nft list table inet rustchat_firewall")
    assert "policy drop" in table
    assert _allows(table, 22, [hosts.CONTROLLER])  # ssh from the controller only
    assert h.file("/etc/nftables.d/rustchat.nft").mode == 0o644
    assert h.file("/etc/nftables.conf").contains('include "/etc/nftables.d/\\*.nft"')


def test_load_balancer(cluster: hosts.Cluster) -> None:
    require("deployed")
    h = infra(cluster, "lb")
    assert h.package("nginx").is_installed
    _service_is_healthy(h, "nginx")
    assert h.run("nginx -t").rc == 0
    site = h.file("/etc/nginx/conf.d/rustchat.conf")
    assert site.user == "root" and site.mode == 0o644
    for app in APPS:
        assert site.contains(f"server {address(app)}:3000 max_fails=3 fail_timeout=10s;  # {app}")
    assert not h.file("/etc/nginx/sites-enabled/default").exists
    key = h.file("/etc/ssl/rustchat/selfsigned.key")
    assert key.user == "root" and key.mode == 0o600
    listeners = _tcp_listeners(h)
    assert {"tcp://0.0.0.0:80", "tcp://0.0.0.0:443", "tcp://0.0.0.0:22"} <= listeners
    # stub_status on loopback only, and its exporter on the private address.
    extra = {"tcp://127.0.0.1:8080", f"tcp://{address('lb')}:9113"}
    assert {s for s in listeners - extra if not s.endswith((":80", ":443", ":22"))} == set(), listeners
    assert extra <= listeners, listeners
    assert "Active connections:" in h.check_output("curl -fsS http://127.0.0.1:8080/stub_status")
    table = h.check_output("nft list table inet rustchat_firewall")
    assert _allows(table, "{ 80, 443 }", ["0.0.0.0/0"])


def test_database(cluster: hosts.Cluster) -> None:
    require("deployed")
    h = infra(cluster, "db")
    assert h.package("postgresql-15").is_installed
    _service_is_healthy(h, "postgresql@15-main")
    assert _tcp_listeners(h) == {"tcp://0.0.0.0:22", "tcp://:::22", "tcp://127.0.0.1:5432", "tcp://::1:5432",
                                 f"tcp://{address('db')}:5432", f"tcp://{address('db')}:9187"}
    fragment = h.file("/etc/postgresql/15/main/conf.d/rustchat.conf")
    assert fragment.user == "postgres" and fragment.mode == 0o644
    assert fragment.contains(f"^max_connections = {MAX_CONNECTIONS}$")
    hba = h.file("/etc/postgresql/15/main/pg_hba.conf")
    assert hba.user == "postgres" and hba.mode == 0o640
    rules = [line.split() for line in hba.content_string.splitlines() if line and not line.startswith("#")]
    assert rules[0][:4] == ["local", "all", "postgres", "peer"]
    # The exporter (the monitoring group exists): its own role, peer over the socket, one database.
    assert rules[1][:4] == ["local", "postgres", "prometheus", "peer"]
    assert sorted(r[3] for r in rules[2:]) == sorted(f"{address(a)}/32" for a in APPS)
    assert all(r[:3] == ["host", "rustchat", "rustchat"] and r[4] == "scram-sha-256" for r in rules[2:])
    psql = "runuser -u postgres -- psql -XAtq -c "
    assert h.check_output(psql + "'SHOW max_connections'") == str(MAX_CONNECTIONS)
    scram = "\"SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'rustchat'\""
    assert h.check_output(psql + scram) == "t"
    owner = "\"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'rustchat'\""
    assert h.check_output(psql + owner) == "rustchat"
    table = h.check_output("nft list table inet rustchat_firewall")
    assert _allows(table, 5432, [address(a) for a in APPS])


def test_redis(cluster: hosts.Cluster) -> None:
    require("deployed")
    h = infra(cluster, "redis")
    assert h.package("redis-server").is_installed
    _service_is_healthy(h, "redis-server")
    assert _tcp_listeners(h) == {"tcp://0.0.0.0:22", "tcp://:::22", "tcp://127.0.0.1:6379",
                                 f"tcp://{address('redis')}:6379", f"tcp://{address('redis')}:9121"}
    conf = h.file("/etc/redis/redis.conf")
    assert conf.user == "redis" and conf.group == "redis" and conf.mode == 0o640
    password = (cluster.inventory_dir / "credentials" / "redis_requirepass").read_text().strip()
    assert "NOAUTH" in h.run("redis-cli -h 127.0.0.1 PING").stdout
    cli = f"REDISCLI_AUTH={password} redis-cli --no-auth-warning -h 127.0.0.1"
    assert h.check_output(f"{cli} CONFIG GET maxmemory").split() == ["maxmemory", str(512 * 1024 * 1024)]
    assert h.check_output(f"{cli} CONFIG GET maxmemory-policy").split()[1] == "noeviction"
    assert h.check_output(f"{cli} CONFIG GET client-output-buffer-limit").count("pubsub 33554432 8388608 30") == 1
    table = h.check_output("nft list table inet rustchat_firewall")
    assert _allows(table, 6379, [address(a) for a in APPS])


def _prometheus(path: str) -> Any:
    """A Prometheus API answer's data, asked from the controller (in monitoring_prometheus_allow)."""
    with urllib.request.urlopen(f"http://{address('mon')}:9090{path}", timeout=10) as response:  # noqa: S310
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def _wait_for_targets(apps: list[str], timeout: float = 90) -> list[dict[str, Any]]:
    """Every scrape target, once the expected ones are all up (or the last answer, to fail on)."""
    expected = {("prometheus", "mon"), ("postgresql", "db"), ("redis", "redis"), ("nginx", "lb"),
                *(("rustchat", a) for a in apps)}
    deadline = time.monotonic() + timeout
    while True:
        targets = _prometheus("/api/v1/targets?state=active")["activeTargets"]
        up = {(t["labels"]["job"], t["labels"]["node"]) for t in targets if t["health"] == "up"}
        if up == expected or time.monotonic() > deadline:
            return targets
        time.sleep(2)


def _scraped_pool_max() -> dict[str, int]:
    """Each app node's pool max as Prometheus scraped it from the node's /metrics."""
    query = urllib.parse.quote("max by (node) (rustchat_db_pool_max)")
    return {r["metric"]["node"]: int(float(r["value"][1])) for r in _prometheus(f"/api/v1/query?query={query}")["result"]}


def _target_summary(targets: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return sorted((t["labels"]["job"], t["labels"]["node"], t["health"], t.get("lastError", "")) for t in targets)


def test_monitoring_scrapes_every_node_and_exporter_with_the_alert_rules_loaded(cluster: hosts.Cluster) -> None:
    require("deployed")
    mon = infra(cluster, "mon")
    assert mon.package("prometheus").is_installed
    _service_is_healthy(mon, "prometheus")
    assert _tcp_listeners(mon) == {"tcp://0.0.0.0:22", "tcp://:::22", f"tcp://{address('mon')}:9090"}
    rules = mon.file("/etc/prometheus/rules/rustchat-alerts.yml")
    assert rules.user == "root" and rules.mode == 0o644
    assert rules.content_string == (REPO / "deploy" / "prometheus" / "rustchat-alerts.yml").read_text()
    assert mon.run("promtool check config /etc/prometheus/prometheus.yml").rc == 0
    for name, unit in (("db", "prometheus-postgres-exporter"), ("redis", "prometheus-redis-exporter"),
                       ("lb", "prometheus-nginx-exporter")):
        _service_is_healthy(infra(cluster, name), unit)
    # The Redis password reaches its exporter through a root-only file, not its command line.
    redis = infra(cluster, "redis")
    defaults = redis.file("/etc/default/prometheus-redis-exporter")
    assert (defaults.user, defaults.mode) == ("root", 0o600)
    password = (cluster.inventory_dir / "credentials" / "redis_requirepass").read_text().strip()
    assert password not in redis.check_output("ps -eo args")

    targets = _wait_for_targets(APPS)
    assert all(t["health"] == "up" for t in targets), _target_summary(targets)
    assert len(targets) == 4 + len(APPS), _target_summary(targets)
    # The exporters see their services, and every app node reports its own figures.
    for query in ("pg_up", "redis_up", "nginx_up"):
        result = _prometheus(f"/api/v1/query?query={query}")["result"]
        assert [r["value"][1] for r in result] == ["1"], (query, result)
    assert _scraped_pool_max() == {a: expected_pool(len(APPS)).max for a in APPS}
    loaded = {rule["name"] for group in _prometheus("/api/v1/rules")["groups"] for rule in group["rules"]}
    in_file = set(re.findall(r"^\s*- alert: (\w+)$", rules.content_string, re.M))
    assert in_file and in_file <= loaded, (in_file, loaded)


def _app_env(h: Any) -> dict[str, str]:
    return parse_env(h.file("/etc/rustchat/rustchat.env").content_string)


@pytest.mark.parametrize("name", APPS)
def test_app_node(cluster: hosts.Cluster, name: str) -> None:
    require("deployed")
    h = infra(cluster, name)
    _service_is_healthy(h, "rustchat")
    assert h.package("python3-venv").is_installed
    assert h.file("/opt/rustchat/venv/bin/gunicorn").exists
    assert _tcp_listeners(h) == {"tcp://0.0.0.0:22", "tcp://:::22", f"tcp://{address(name)}:3000"}
    user = h.user("rustchat")
    assert user.exists and user.shell == "/usr/sbin/nologin"
    main_pid = h.check_output("systemctl show -p MainPID --value rustchat")
    workers = h.check_output(f"pgrep -P {main_pid}").split()
    assert len(workers) == WORKERS
    for pid in [main_pid, *workers]:
        assert h.check_output(f"ps -o user= -p {pid}") == "rustchat"
    env_file = h.file("/etc/rustchat/rustchat.env")
    assert (env_file.user, env_file.group, env_file.mode) == ("root", "root", 0o600)
    env = _app_env(h)
    pool = expected_pool(len(APPS))
    assert int(env["RUSTCHAT_DB_POOL__MAX_CONNECTIONS"]) == pool.max == 15
    assert int(env["RUSTCHAT_DB_POOL__MIN_CONNECTIONS"]) == pool.min
    assert env["RUSTCHAT_DATABASE_URL"].endswith(f"@{address('db')}:5432/rustchat")
    assert env["RUSTCHAT_REDIS_URL"].endswith(f"@{address('redis')}:6379/0")
    assert env["RUSTCHAT_TRUSTED_PROXIES"] == address("lb")
    assert env["RUSTCHAT_SERVER__HOST"] == address(name)
    settings = gunicorn_settings(h.file("/etc/rustchat/gunicorn.conf.py").content_string)
    assert settings["workers"] == WORKERS and settings["bind"] == [f"{address(name)}:3000"]
    unit = h.file("/etc/systemd/system/rustchat.service")
    for line in ("User=rustchat", "ProtectSystem=strict", "NoNewPrivileges=true", "LimitNOFILE=65536",
                 "EnvironmentFile=/etc/rustchat/rustchat.env"):
        assert unit.contains(f"^{line}$"), line
    assert h.run(f"curl -fsS http://{address(name)}:3000/api/v1/health/ready").rc == 0
    table = h.check_output("nft list table inet rustchat_firewall")
    assert _allows(table, 3000, [address("lb")])


def test_pools_add_up_below_the_live_max_connections(cluster: hosts.Cluster) -> None:
    require("deployed")
    db = infra(cluster, "db")
    max_connections = int(db.check_output("runuser -u postgres -- psql -XAtq -c 'SHOW max_connections'"))
    reserved = int(db.check_output("runuser -u postgres -- psql -XAtq -c 'SHOW superuser_reserved_connections'"))
    total = 0
    for name in APPS:
        h = infra(cluster, name)
        pool_max = int(_app_env(h)["RUSTCHAT_DB_POOL__MAX_CONNECTIONS"])
        workers = gunicorn_settings(h.file("/etc/rustchat/gunicorn.conf.py").content_string)["workers"]
        total += pool_max * workers
    assert total + reserved + 5 <= max_connections  # + the headroom
    assert total < max_connections
    assert sizing.pool_budget_exceeded(total, max_connections, sizing.reserved_connections(reserved)) is None


def _port(host_address: str, port: int, *, via: Any = None) -> bool:
    """Whether a TCP connection to host_address:port succeeds, from a host or the controller."""
    if via is None:
        try:
            with socket.create_connection((host_address, port), timeout=1.5):
                return True
        except OSError:
            return False
    result = via.run(f"timeout 1.5 bash -c 'exec 3<>/dev/tcp/{host_address}/{port}'")
    return result.rc == 0


def test_firewall_admits_exactly_the_peers_that_need_each_port(cluster: hosts.Cluster) -> None:
    require("deployed")
    lb, app1, db, mon = (infra(cluster, n) for n in ("lb", "app1", "db", "mon"))
    expectations = [
        ("controller", None, address("lb"), 443, True),
        ("controller", None, address("lb"), 80, True),
        ("controller", None, address("app1"), 22, True),
        ("controller", None, address("app1"), 3000, False),
        ("controller", None, address("db"), 5432, False),
        ("controller", None, address("redis"), 6379, False),
        ("lb", lb, address("app1"), 3000, True),
        ("lb", lb, address("db"), 5432, False),
        ("lb", lb, address("redis"), 6379, False),
        ("lb", lb, address("app1"), 22, False),
        ("app1", app1, address("db"), 5432, True),
        ("app1", app1, address("redis"), 6379, True),
        ("app1", app1, address("app2"), 3000, False),
        ("db", db, address("app1"), 3000, False),
        ("db", db, address("redis"), 6379, False),
        # Monitoring: the exporters and /metrics only to the monitoring host; Prometheus only to
        # the admin network (here the controller).
        ("mon", mon, address("app1"), 3000, True),
        ("mon", mon, address("db"), 9187, True),
        ("mon", mon, address("redis"), 9121, True),
        ("mon", mon, address("lb"), 9113, True),
        ("mon", mon, address("db"), 5432, False),
        ("mon", mon, address("redis"), 6379, False),
        ("controller", None, address("mon"), 9090, True),
        ("controller", None, address("db"), 9187, False),
        ("controller", None, address("redis"), 9121, False),
        ("controller", None, address("lb"), 9113, False),
        ("app1", app1, address("db"), 9187, False),
        ("app1", app1, address("mon"), 9090, False),
        ("lb", lb, address("lb"), 8080, False),
    ]
    wrong = [f"{src} -> {dst}:{port} {'refused' if ok else 'allowed'}"
             for src, via, dst, port, ok in expectations if _port(dst, port, via=via) != ok]
    assert not wrong, wrong


# ---------------------------------------------------------------------------------------------
# 3. End to end through nginx


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), timeout=aiohttp.ClientTimeout(total=30))


async def _admin(session: aiohttp.ClientSession, c: hosts.Cluster) -> Api:
    password = (c.inventory_dir / "credentials" / "rustchat_admin_password").read_text().strip()
    return await Api(session, c.url().rstrip("/")).login("admin", password)


async def _two_users_in_a_channel(admin: Api) -> tuple[Api, Api, dict[str, Any]]:
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await admin.new_team(alice, bob)
    channel = await admin.new_channel(team, "public", alice, bob)
    return alice, bob, channel


def _worker_node_prefixes(c: hosts.Cluster, apps: list[str]) -> set[str]:
    """'app1-<pid>' for every gunicorn worker running on the app nodes."""
    out = set()
    for name in apps:
        h = infra(c, name)
        main_pid = h.check_output("systemctl show -p MainPID --value rustchat")
        out |= {f"{name}-{pid}" for pid in h.check_output(f"pgrep -P {main_pid}").split()}
    return out


async def _health_lists_every_worker(api: Api, expected: set[str], timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await api.get("/api/v1/health")
        listed = {n["node_id"].rsplit("-", 1)[0] for n in body["nodes"]} if status == 200 else set()
        if status == 200 and listed == expected and body["status"] == "ok":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"/api/v1/health lists {sorted(listed)} (status {status}, {body.get('status')}, "
                                 f"problems {body.get('problems')}), expected every worker: {sorted(expected)}")
        await asyncio.sleep(1)


async def test_two_users_on_different_app_nodes_chat_through_nginx(cluster: hosts.Cluster) -> None:
    require("deployed")
    started = time.monotonic()
    async with _session() as session:
        admin = await _admin(session, cluster)
        alice, bob, channel = await _two_users_in_a_channel(admin)
        a, b = ResumingClient(alice, "alice"), ResumingClient(bob, "bob")
        await a.connect()
        await b.connect()
        for _ in range(20):  # round robin: a few reconnects put Bob on another node
            if node_host(b.node_id) != node_host(a.node_id):
                break
            await b.close()
            await b.connect()
        assert node_host(a.node_id) != node_host(b.node_id), (a.nodes, b.nodes)
        stop = asyncio.Event()
        readers = [asyncio.create_task(x.run(stop)) for x in (a, b)]
        status, from_alice = await alice.post(f"/api/v1/channels/{channel['id']}/posts", {"message": "hello Bob"})
        assert status == 201, from_alice
        status, from_bob = await bob.post(f"/api/v1/channels/{channel['id']}/posts", {"message": "hi Alice"})
        assert status == 201, from_bob
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (from_alice["id"] in b.received and from_bob["id"] in a.received):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        stop.set()
        await a.close()
        await b.close()
        await asyncio.gather(*readers)
        assert b.received.count(from_alice["id"]) == 1, (node_host(a.node_id), node_host(b.node_id), b.received)
        assert a.received.count(from_bob["id"]) == 1, (node_host(a.node_id), node_host(b.node_id), a.received)
        await _health_lists_every_worker(admin, _worker_node_prefixes(cluster, APPS))
    TIMINGS.append(("chat through nginx + health", time.monotonic() - started))
    PROGRESS["chatted"] = True


# ---------------------------------------------------------------------------------------------
# 4. Scale out


async def test_adding_an_app_host_shrinks_every_pool_and_the_new_node_serves(cluster: hosts.Cluster) -> None:
    require("chatted")
    started = time.monotonic()
    await asyncio.to_thread(cluster.add, "app4")
    forget_inventory()
    TIMINGS.append(("app4 host up", time.monotonic() - started))
    await asyncio.to_thread(playbook, cluster, "site.yml", step="site.yml with app4")
    apps = [*APPS, "app4"]
    before, after = expected_pool(len(APPS)), expected_pool(len(apps))
    assert after.max < before.max
    for name in apps:
        env = _app_env(infra(cluster, name))
        assert int(env["RUSTCHAT_DB_POOL__MAX_CONNECTIONS"]) == after.max == 11, name
        assert int(env["RUSTCHAT_DB_POOL__MIN_CONNECTIONS"]) == after.min, name
    assert after.total < MAX_CONNECTIONS
    lb, db = infra(cluster, "lb"), infra(cluster, "db")
    assert lb.file("/etc/nginx/conf.d/rustchat.conf").contains(f"server {address('app4')}:3000 ")
    assert db.file("/etc/postgresql/15/main/pg_hba.conf").contains(f"{address('app4')}/32")
    assert lb.run(f"curl -fsS http://{address('app4')}:3000/api/v1/health/ready").rc == 0
    async with _session() as session:
        admin = await _admin(session, cluster)
        await _health_lists_every_worker(admin, _worker_node_prefixes(cluster, apps))
        client = ResumingClient(admin, "admin")
        for _ in range(24):  # round robin over four nodes
            await client.connect()
            await client.close()
            if node_host(client.node_id) == "app4":
                break
        assert "app4" in {node_host(n) for n in client.nodes}, client.nodes
        status, body = await admin.get("/api/v1/health")
        assert {n["pool_max"] for n in body["nodes"]} == {after.max}, body["nodes"]
    # Prometheus gained the new node's target, and sees every node's smaller pool.
    targets = await asyncio.to_thread(_wait_for_targets, apps)
    assert all(t["health"] == "up" for t in targets) and len(targets) == 4 + len(apps), _target_summary(targets)
    deadline = time.monotonic() + 30
    while (scraped := await asyncio.to_thread(_scraped_pool_max)) != dict.fromkeys(apps, after.max):
        assert time.monotonic() < deadline, scraped
        await asyncio.sleep(2)
    PROGRESS["scaled"] = apps


# ---------------------------------------------------------------------------------------------
# 5. Rolling update while two users chat


async def test_rolling_update_while_two_users_chat_loses_and_duplicates_nothing(cluster: hosts.Cluster) -> None:
    require("scaled")
    apps = PROGRESS["scaled"]
    async with _session() as session:
        admin = await _admin(session, cluster)
        alice, bob, channel = await _two_users_in_a_channel(admin)
        a, b = ResumingClient(alice, "alice"), ResumingClient(bob, "bob")
        await a.connect()
        await b.connect()
        stop_sending, stop_reading = asyncio.Event(), asyncio.Event()
        senders = [Sender(alice, channel["id"], "from alice"), Sender(bob, channel["id"], "from bob")]
        tasks = [asyncio.create_task(a.run(stop_reading)), asyncio.create_task(b.run(stop_reading)),
                 *(asyncio.create_task(s.run(stop_sending, 0.5)) for s in senders)]
        workers_before = _worker_node_prefixes(cluster, apps)
        # The update: new code (a new version string, which every hello carries).
        init = SOURCE[0] / "app" / "rustchat" / "__init__.py"
        old_version = re.search(r'__version__ = "([^"]+)"', init.read_text()).group(1)
        new_version = f"{old_version}+rolling"
        init.write_text(init.read_text().replace(f'__version__ = "{old_version}"', f'__version__ = "{new_version}"'))
        await asyncio.sleep(2)
        update_started = int(time.time())
        try:
            await asyncio.to_thread(playbook, cluster, "rolling-update.yml", step="rolling-update.yml (4 nodes)")
            await asyncio.sleep(3)
        finally:
            stop_sending.set()
            await asyncio.gather(*tasks[2:])
        posts = await channel_posts(alice, channel["id"])
        by = {alice.user["id"]: [], bob.user["id"]: []}
        for post in posts:
            by[post["user_id"]].append(post["id"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (set(by[alice.user["id"]]) <= set(b.received)  # noqa: ASYNC110
                                                   and set(by[bob.user["id"]]) <= set(a.received)):
            await asyncio.sleep(0.2)
        stop_reading.set()
        await a.close()
        await b.close()
        await asyncio.gather(*tasks[:2])

        hosts.log(f"rolling update: {len(posts)} messages; alice closed {[c for c, _ in a.closes]}, resumed on "
                  f"{[r.node for r in a.resumes]}; bob closed {[c for c, _ in b.closes]}, resumed on {[r.node for r in b.resumes]}")
        assert not senders[0].failures and not senders[1].failures, senders[0].failures + senders[1].failures
        assert sorted(by[alice.user["id"]]) == sorted(senders[0].sent)
        assert sorted(by[bob.user["id"]]) == sorted(senders[1].sent)
        assert len(posts) > 40, len(posts)
        for reader, writer in ((b, alice), (a, bob)):
            counts = {pid: reader.received.count(pid) for pid in by[writer.user["id"]]}
            missing = [pid for pid, n in counts.items() if n == 0]
            doubled = [pid for pid, n in counts.items() if n > 1]
            assert not missing and not doubled, (
                f"{reader.name}: {len(missing)} of {len(counts)} messages missing, {len(doubled)} delivered twice; "
                f"closes {reader.closes}, resumes {reader.resumes}, nodes {reader.nodes}")
            # The updates moved the client: it was closed with 1012 and resumed elsewhere.
            assert any(code == 1012 for code, _ in reader.closes), reader.closes
            assert reader.resumes and all(r.ok for r in reader.resumes), reader.resumes
            # Resumed in another process: a client's reconnect delay may outlast its node's restart,
            # so it can land on the same node, whose workers are new.
            assert len(set(reader.nodes)) > 1, reader.nodes
            assert reader.versions[0] == old_version and reader.versions[-1] == new_version, reader.versions
        workers_after = _worker_node_prefixes(cluster, apps)
        assert not workers_before & workers_after, "some node was not restarted"
        # Each node was started exactly once: in its own turn, while drained, never in another's.
        starts = {name: infra(cluster, name).check_output(
                      f"journalctl -u rustchat -o cat --since @{update_started} | grep -c '^Started ' || true")
                  for name in apps}
        assert starts == dict.fromkeys(apps, "1"), starts
        await _health_lists_every_worker(admin, workers_after)
    lb = infra(cluster, "lb")
    assert " down" not in lb.check_output("rustchat-lb status")
