"""The project's Vagrantfile really brings up a cluster: libvirt VMs, site.yml, a chat through nginx.

Heavy (QEMU software emulation on a 2-core machine): runs only with RUSTCHAT_TEST_VAGRANT=1,
which .ci/run sets; run it by hand under the CPU lock:

    RUSTCHAT_TEST_VAGRANT=1 flock /tmp/rustchat-cpu.lock .venv/bin/pytest tests/vagrant -v

In order, on one cluster (tests/vagrant/cluster.py): the local box is built (or taken from the
cache), `vagrant up` brings up core (postgres+redis+lb), app1 and app2 and its provisioner runs
site.yml once against all three; two users on different app machines chat over WebSocket
through nginx; `vagrant destroy` and the clean-up leave no domain, network, volume or process.
Logs, console logs and timings.txt are kept in LOG_DIR.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.deploy.chat import node_host, ws_url
from tests.support.client import Api
from tests.support.wait import wait_for
from tests.vagrant import cluster as vc

pytestmark = [pytest.mark.vagrant, pytest.mark.timeout(3600)]

LOG_DIR = Path(os.environ.get("RUSTCHAT_VAGRANT_LOG_DIR", "/tmp/rustchat-test-logs/vagrant"))
PROGRESS: dict[str, Any] = {}


def require(step: str) -> None:
    if step not in PROGRESS:
        pytest.skip(f"needs the earlier step '{step}', which did not complete")


@pytest.fixture(scope="module")
def cluster() -> Any:
    if os.environ.get("RUSTCHAT_TEST_VAGRANT") != "1":
        pytest.skip("the Vagrant cluster test runs with RUSTCHAT_TEST_VAGRANT=1 (.ci/run sets it)")
    reason = vc.unavailable_reason()
    if reason:
        pytest.fail(f"RUSTCHAT_TEST_VAGRANT=1 but this machine cannot run it: {reason}", pytrace=False)
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    c = vc.VagrantCluster(LOG_DIR)
    started = time.monotonic()
    try:
        yield c
    finally:
        if "down" not in PROGRESS:  # a step failed before the tear-down test: remove it all anyway
            leftovers = c.down()
            if leftovers:
                vc.log(f"removed after the failure: {', '.join(leftovers)}")
        c.timings.append(("total", time.monotonic() - started))
        (LOG_DIR / "timings.txt").write_text(c.timings_text() + "\n")
        vc.log("timings:\n" + c.timings_text())


def test_vagrant_up_runs_site_yml_once_against_every_machine(cluster: vc.VagrantCluster) -> None:
    rc, output = cluster.up()
    tail = "\n".join(output.splitlines()[-80:])
    assert rc == 0, f"vagrant up exited {rc} (log: {LOG_DIR / 'vagrant-up.log'}):\n{tail}"
    # Once, from the last machine, with every machine in the play.
    assert output.count("Running provisioner: site.yml") == 1, tail
    assert output.count("PLAY RECAP") == 1, tail
    recap = dict(re.findall(r"^\s*[\d.]+\s+(\w+)\s+:\s+(ok=.*)$", output.split("PLAY RECAP", 1)[1], re.M))
    assert set(recap) == set(vc.ADDRESSES), recap
    for host, counts in recap.items():
        values = dict(re.findall(r"(\w+)=(\d+)", counts))
        assert values["failed"] == "0" and values["unreachable"] == "0", (host, counts)
    PROGRESS["up"] = True


def test_the_inventory_has_the_playbooks_groups_and_private_addresses(cluster: vc.VagrantCluster) -> None:
    require("up")
    inventory = json.loads(subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(cluster.inventory), "--list"],
        capture_output=True, text=True, check=True).stdout)
    groups = {g: sorted(inventory.get(g, {}).get("hosts", [])) for g in ("lb", "postgres", "redis", "app")}
    assert groups == {"lb": ["core"], "postgres": ["core"], "redis": ["core"], "app": ["app1", "app2"]}
    for host, address in vc.ADDRESSES.items():
        hostvars = inventory["_meta"]["hostvars"][host]
        # Ansible reached each machine on its private address, which its services also use.
        assert (hostvars["ansible_host"], hostvars["private_address"]) == (address, address), hostvars


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))


async def test_two_users_on_the_two_app_machines_chat_through_nginx(cluster: vc.VagrantCluster) -> None:
    require("up")
    started = time.monotonic()
    base = f"http://{vc.LB}"
    async with _session() as session:
        admin = await Api(session, base).login("admin", cluster.admin_password)
        alice, bob = await admin.new_user(), await admin.new_user()
        team = await admin.new_team(alice, bob)
        channel = await admin.new_channel(team, "public", alice, bob)
        a = await alice.ws(ws_url(base))
        b = await bob.ws(ws_url(base))
        for _ in range(20):  # nginx balances round robin: reconnect Bob until he is on the other machine
            if node_host(b.hello["data"]["node_id"]) != node_host(a.hello["data"]["node_id"]):
                break
            await b.ws.close()
            b = await bob.ws(ws_url(base))
        nodes = {node_host(s.hello["data"]["node_id"]) for s in (a, b)}
        assert nodes == {"app1", "app2"}, nodes
        for sender, receiver, text in ((alice, b, "hello Bob"), (bob, a, "hi Alice")):
            status, post = await sender.post(f"/api/v1/channels/{channel['id']}/posts", {"message": text})
            assert status == 201, post
            got = await _posted(receiver, post["id"])
            assert got["message"] == text, got
        await a.ws.close()
        await b.ws.close()
        # Every gunicorn worker of both app machines has joined the cluster through Redis.
        async def both_app_machines_listed() -> bool:
            status, health = await admin.get("/api/v1/health")
            listed = {node_host(n["node_id"]) for n in health.get("nodes", [])} if status == 200 else set()
            return status == 200 and health["status"] == "ok" and listed == {"app1", "app2"}

        await wait_for(both_app_machines_listed, timeout=60, interval=1)
    cluster.timings.append(("chat through nginx", time.monotonic() - started))


async def _posted(sock: Any, post_id: str, timeout: float = 30) -> dict[str, Any]:
    """The `posted` event of post `post_id` (the socket also gets its own user's posts)."""
    deadline = time.monotonic() + timeout
    while True:
        event = await sock.next_event(max(deadline - time.monotonic(), 0.1), name="posted")
        post = event["data"]["post"]
        post = json.loads(post) if isinstance(post, str) else post
        if post["id"] == post_id:
            return post


def test_destroy_leaves_no_domain_network_volume_or_process(cluster: vc.VagrantCluster) -> None:
    require("up")
    libvirt = cluster.libvirt
    assert libvirt is not None and cluster.before is not None
    PROGRESS["down"] = True
    leftovers = cluster.down()
    assert leftovers == [], f"vagrant destroy left these behind (now removed): {leftovers}"
    assert vc.qemu_processes(vc.PREFIX) == []
    assert vc.ssh_masters(cluster) == []
    assert libvirt.alive() == [], f"libvirt daemons this test started still run: {libvirt.alive()}"
    after = vc.system_traces()
    assert after.interfaces <= cluster.traces_before.interfaces, after.interfaces - cluster.traces_before.interfaces
    assert after.dnsmasq <= cluster.traces_before.dnsmasq, after.dnsmasq - cluster.traces_before.dnsmasq
    assert after.firewall <= cluster.traces_before.firewall, after.firewall - cluster.traces_before.firewall
