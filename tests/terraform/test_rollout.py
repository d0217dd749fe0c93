"""A real rollout through Terraform: the existing-hosts example applied onto test hosts.

tests.deploy.hosts creates four Debian 12 hosts (systemd containers on the private bridge
10.231.0.0/24) without deploying anything: lb1, data (PostgreSQL and Redis on one host), app1 and
app2. Then, like a user with existing machines:

0. an apply with max_connections too small for the pools fails in site.yml's first play, before
   any host is changed;
1. `terraform apply` of terraform/modules/rustchat-ansible/examples/existing-hosts with those hosts
   renders the inventory and runs ansible/site.yml (the project's own, not a copy);
2. through nginx, two users on different app nodes chat, and /api/v1/health lists every worker
   with the pool size the Terraform sizing inputs lead to (max_connections 60, app1 2 workers,
   app2 1 worker: rustchat.appliance.sizing computes the expected size);
3. a second plan has nothing to do; 4. `terraform destroy` empties the state and removes the
   rendered inventory (the hosts keep running, as existing hosts should); then the hosts go.

Needs root; hold /tmp/rustchat-testhosts.lock and /tmp/rustchat-cpu.lock around it (see
tests/deploy). Logs and timings are kept in LOG_DIR.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rustchat.appliance import sizing
from tests.deploy import hosts
from tests.deploy.chat import ResumingClient, node_host
from tests.deploy.fixtures import clean_cluster
from tests.support.client import Api
from tests.terraform import tf

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800),
              pytest.mark.skipif(tf.terraform_binary() is None, reason="no terraform: scripts/bootstrap.sh --test")]

LOG_DIR = Path(os.environ.get("RUSTCHAT_TERRAFORM_LOG_DIR", "/tmp/rustchat-test-logs/terraform"))
# A reduced cluster for speed: name -> (last octet, the harness's group); data is also Redis.
TEST_HOSTS: dict[str, tuple[int, str]] = {"lb1": (10, "lb"), "data": (20, "postgres"), "app1": (41, "app"),
                                          "app2": (42, "app")}
MAX_CONNECTIONS = 60
WORKERS = {"app1": 2, "app2": 1}

STEPS: dict[str, Any] = {}
TIMINGS: list[tuple[str, float]] = []


def require(step: str) -> None:
    if step not in STEPS:
        pytest.skip(f"needs the earlier step '{step}', which did not complete")


def tfvars(cluster: hosts.Cluster, source: Path, inventory: Path) -> dict[str, Any]:
    """The example's variables for the hosts the harness made: what a user writes for theirs."""
    by_group: dict[str, list[dict[str, Any]]] = {"lb": [], "postgres": [], "redis": [], "app": []}
    for host in cluster.hosts():
        entry: dict[str, Any] = {"name": host.name, "address": host.address, "private_address": host.address}
        if host.group == "app":
            entry["workers"] = WORKERS[host.name]
        by_group[host.group].append(entry)
        if host.group == "postgres":
            by_group["redis"].append(entry)
    return {
        "hosts": by_group,
        "ssh_private_key_file": str(hosts.SSH_KEY),
        # New hosts every run: nothing to remember of their keys.
        "ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        "ssh_allow_cidrs": [f"{hosts.CONTROLLER}/32"],
        "preset": "small",
        "max_connections": MAX_CONNECTIONS,
        "postgresql_ram_mb": 1024,
        "redis_maxmemory": "512mb",
        "extra_vars": {"common_apt_cache_valid_time": 86400},
        "inventory_dir": str(inventory),
        "ansible_playbook": str(tf.VENV_BIN / "ansible-playbook"),
        # A snapshot of the checkout: the code deployed stays fixed while the checkout is edited.
        "ansible_extra_args": ["-e", f"rustchat_source_dir={source}"],
    }


class Rollout:
    def __init__(self, cluster: hosts.Cluster, work: Path) -> None:
        self.cluster = cluster
        self.work = work
        self.inventory = work / "inventory"
        self.state = work / "terraform.tfstate"
        self.vars = work / "rollout.tfvars.json"
        self.log = LOG_DIR / "terraform.log"

    def terraform(self, *args: str, step: str, timeout: float = 1500) -> tf.Result:
        result = tf.terraform(list(args), cwd=tf.EXAMPLE, data_dir=self.work / "data", log=self.log, timeout=timeout)
        TIMINGS.append((step, result.seconds))
        return result

    def admin_password(self) -> str:
        return (self.inventory / "credentials" / "rustchat_admin_password").read_text().strip()


@pytest.fixture(scope="module")
def rollout(request: pytest.FixtureRequest) -> Any:
    cluster = clean_cluster(LOG_DIR)
    work = Path(tempfile.mkdtemp(prefix="rustchat-terraform-"))
    source = hosts.Cluster.snapshot_source(work / "source")
    r = Rollout(cluster, work)
    started = time.monotonic()
    failed_before = request.session.testsfailed
    try:
        cluster.up(TEST_HOSTS, owner="pytest")
        TIMINGS.append(("hosts up (no deploy)", time.monotonic() - started))
        r.vars.write_text(json.dumps(tfvars(cluster, source, r.inventory), indent=2) + "\n")
        init = r.terraform("init", "-input=false", f"-backend-config=path={r.state}", step="terraform init")
        assert init.rc == 0, init.output
        yield r
    finally:
        if r.state.exists() and "destroyed" not in STEPS:
            r.terraform("destroy", "-auto-approve", f"-var-file={r.vars}", step="terraform destroy (clean-up)")
        if request.session.testsfailed > failed_before:
            for host in cluster.hosts():
                proc = cluster.ssh(host, "journalctl -b --no-pager -n 300; systemctl --failed --no-pager",
                                   check=False, timeout=60)
                (LOG_DIR / f"journal-{host.name}.log").write_text(proc.stdout + proc.stderr)
        t = time.monotonic()
        cluster.down()
        TIMINGS.append(("hosts down", time.monotonic() - t))
        shutil.rmtree(work, ignore_errors=True)
        summary = "\n".join(f"{name:32} {secs:6.0f} s" for name, secs in TIMINGS)
        summary += f"\n{'total':32} {time.monotonic() - started:6.0f} s"
        (LOG_DIR / "timings.txt").write_text(summary + "\n")
        hosts.log("terraform rollout timings:\n" + summary)


def test_a_topology_that_does_not_fit_fails_the_apply_before_touching_a_host(rollout: Rollout) -> None:
    """max_connections 10 cannot give 3 processes 2 connections each plus 8 reserved: site.yml's
    first play says so, the apply fails, and no later play starts."""
    too_small = rollout.work / "too-small.tfvars.json"
    too_small.write_text(json.dumps({**json.loads(rollout.vars.read_text()), "max_connections": 10}))
    result = rollout.terraform("apply", "-auto-approve", f"-var-file={too_small}", step="terraform apply (too small)")
    need = sizing.required_max_connections(sum(WORKERS.values()), 2, sizing.reserved_connections(3))
    assert result.rc != 0, result.tail()
    assert f"need at least {need} connections" in result.output and "max_connections is 10" in result.output, result.tail()
    assert "PLAY [Every host]" not in result.output, result.tail()
    assert "rustchat-ansible: site.yml finished with 2" in result.output, result.tail()


def test_terraform_apply_runs_site_yml_on_the_hosts(rollout: Rollout) -> None:
    # The failed rollout above is tainted: this apply replaces it.
    result = rollout.terraform("apply", "-auto-approve", f"-var-file={rollout.vars}", step="terraform apply (site.yml)")
    assert result.rc == 0, f"terraform apply failed ({rollout.log}):\n{result.tail(80)}"
    ansible_dir = tf.REPO / "ansible"
    assert f"rustchat-ansible: cd {ansible_dir} && {tf.VENV_BIN / 'ansible-playbook'} -i {rollout.inventory}/hosts.yml site.yml" \
        in result.output, result.tail()
    recap = dict(re.findall(r"\(local-exec\): (\S+)\s+: (ok=\d+\s+changed=\d+\s+unreachable=\d+\s+failed=\d+)", result.output))
    assert sorted(recap) == sorted(TEST_HOSTS), result.tail()
    assert all(" unreachable=0 " in f" {v} " and v.endswith("failed=0") for v in recap.values()), recap
    assert "Apply complete! Resources: 1 added, 0 changed, 1 destroyed." in result.output, result.tail()
    STEPS["applied"] = True


def _session() -> aiohttp.ClientSession:
    # The load balancer's certificate is the self-signed one site.yml generated.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), timeout=aiohttp.ClientTimeout(total=30))


def _gunicorn_workers(cluster: hosts.Cluster) -> set[str]:
    """'app1-<pid>' for every gunicorn worker on the app hosts, read on the hosts themselves."""
    found = set()
    for host in (h for h in cluster.hosts() if h.group == "app"):
        pids = cluster.ssh(host, "pgrep -P \"$(systemctl show -p MainPID --value rustchat)\"").stdout.split()
        found |= {f"{host.name}-{pid}" for pid in pids}
    return found


async def _wait_for_health(api: Api, workers: set[str], timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await api.get("/api/v1/health")
        listed = {n["node_id"].rsplit("-", 1)[0] for n in body.get("nodes", [])} if status == 200 else set()
        if status == 200 and body["status"] == "ok" and listed == workers:
            return body
        assert time.monotonic() < deadline, f"health {status}: {body}; expected the workers {sorted(workers)}"
        await asyncio.sleep(1)


async def test_two_users_on_different_app_nodes_chat_through_nginx(rollout: Rollout) -> None:
    require("applied")
    started = time.monotonic()
    base = rollout.cluster.url().rstrip("/")
    async with _session() as session:
        admin = await Api(session, base).login("admin", rollout.admin_password())
        alice, bob = await admin.new_user(), await admin.new_user()
        channel = await admin.new_channel(await admin.new_team(alice, bob), "public", alice, bob)
        a, b = ResumingClient(alice, "alice"), ResumingClient(bob, "bob")
        await a.connect()
        await b.connect()
        for _ in range(20):  # nginx balances round robin: reconnect Bob until he is on the other node
            if node_host(b.node_id) != node_host(a.node_id):
                break
            await b.close()
            await b.connect()
        assert {node_host(a.node_id), node_host(b.node_id)} == {"app1", "app2"}, (a.nodes, b.nodes)
        stop = asyncio.Event()
        readers = [asyncio.create_task(c.run(stop)) for c in (a, b)]
        sent = {}
        for who, api, text in (("alice", alice, "hello Bob"), ("bob", bob, "hi Alice")):
            status, post = await api.post(f"/api/v1/channels/{channel['id']}/posts", {"message": text})
            assert status == 201, post
            sent[who] = post["id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (sent["alice"] in b.received and sent["bob"] in a.received):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        stop.set()
        for c in (a, b):
            await c.close()
        await asyncio.gather(*readers)
        assert b.received.count(sent["alice"]) == 1, b.received
        assert a.received.count(sent["bob"]) == 1, a.received

        health = await _wait_for_health(admin, _gunicorn_workers(rollout.cluster))
    # The sizing inputs given to Terraform, as sizing.py turns them into each process's pool.
    expected = sizing.size_pool(MAX_CONNECTIONS, list(WORKERS.values()))
    assert len(health["nodes"]) == sum(WORKERS.values()) == expected.processes
    assert {n["pool_max"] for n in health["nodes"]} == {expected.max}, health["nodes"]
    TIMINGS.append(("chat through nginx + health", time.monotonic() - started))
    STEPS["chatted"] = True


def test_a_second_plan_has_nothing_to_do(rollout: Rollout) -> None:
    require("applied")
    result = rollout.terraform("plan", "-detailed-exitcode", f"-var-file={rollout.vars}", step="terraform plan again")
    assert result.rc == 0, f"the second plan wants changes (exit {result.rc}):\n{result.tail()}"
    assert "No changes." in result.output, result.tail()


async def test_terraform_destroy_is_clean(rollout: Rollout) -> None:
    require("applied")
    result = rollout.terraform("destroy", "-auto-approve", f"-var-file={rollout.vars}", step="terraform destroy")
    assert result.rc == 0, result.tail()
    assert "Destroy complete! Resources: 2 destroyed." in result.output, result.tail()
    STEPS["destroyed"] = True
    assert json.loads(rollout.state.read_text())["resources"] == []
    # What Terraform wrote is gone; the secrets site.yml generated stay for hosts that outlive it.
    left = sorted(p.relative_to(rollout.inventory).as_posix() for p in rollout.inventory.rglob("*") if p.is_file())
    assert left == sorted(f"credentials/{n}" for n in ("rustchat_admin_password", "rustchat_db_password",
                                                       "redis_requirepass")), left
    for path in [rollout.inventory / "credentials", *(rollout.inventory / "credentials").iterdir()]:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    # Existing hosts are not Terraform's to delete: the cluster still serves.
    async with _session() as session:
        status, body = await Api(session, rollout.cluster.url().rstrip("/")).get("/api/v1/health/ready")
    assert status == 200, body
