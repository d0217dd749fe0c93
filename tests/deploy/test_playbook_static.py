"""The playbook without hosts: syntax, variable naming and documentation, one sizing implementation.

Fast and needs no root; the real-hosts test is test_cluster_deploy.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rustchat.appliance import filters

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
ROLES = ("common", "postgresql", "redis", "rustchat", "nginx", "monitoring")


def _ansible(*argv: str) -> subprocess.CompletedProcess:
    bindir = Path(sys.executable).parent
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{bindir}:{os.environ.get('PATH', '')}", "ANSIBLE_LOCAL_TEMP": "/tmp/rustchat-ansible-tmp"}
    return subprocess.run([str(bindir / argv[0]), *argv[1:]], cwd=ANSIBLE, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("playbook", ["site.yml", "rolling-update.yml"])
def test_playbook_syntax(playbook: str) -> None:
    proc = _ansible("ansible-playbook", "-i", "inventory.example/hosts.yml", "--syntax-check", playbook)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_role_has_its_tag_and_site_lists_every_role() -> None:
    plays = yaml.safe_load((ANSIBLE / "site.yml").read_text())
    roles = {}
    for play in plays:
        for role in play.get("roles", []):
            roles[role["role"]] = play["tags"]
    assert set(roles) == set(ROLES)
    assert all(tags == [name] for name, tags in roles.items()), roles
    groups = {play["hosts"] for play in plays if "hosts" in play}
    assert groups == {"all", "postgres", "redis", "app", "lb", "monitoring",
                      "{{ 'postgres:redis:lb' if groups.get('monitoring') else 'monitoring' }}"}


@pytest.mark.parametrize("role", ROLES)
def test_role_variables_are_prefixed_and_documented(role: str) -> None:
    """geerlingguy style: every default carries the role's prefix and a comment above it."""
    text = (ANSIBLE / "roles" / role / "defaults" / "main.yml").read_text()
    names = list(yaml.safe_load(text))
    assert names
    assert [n for n in names if not n.startswith(f"{role}_")] == []
    lines = text.splitlines()
    undocumented = []
    for name in names:
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
        above = i - 1
        # Part of a documented group of related variables: the comment may sit above the group.
        while above >= 0 and re.match(r"^[a-z_0-9]+:", lines[above]):
            above -= 1
        if above < 0 or not lines[above].startswith("#"):
            undocumented.append(name)
    assert undocumented == []


def test_every_shared_template_is_used_and_exists() -> None:
    from rustchat.appliance.render import FILES, TEMPLATES_DIR

    used = set()
    for role in ROLES:
        tasks = (ANSIBLE / "roles" / role / "tasks" / "main.yml").read_text()
        used |= set(re.findall(r"role_path \}\}/\.\./\.\./\.\./templates/([\w/.-]+\.j2)", tasks))
    assert used == {spec.template for spec in FILES}
    assert all((TEMPLATES_DIR / t).exists() for t in used)


def test_the_filter_plugin_is_the_apps_sizing_code() -> None:
    """The playbook's filters are rustchat.appliance.filters itself: the sizing is written once."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rustchat_filter_plugin", ANSIBLE / "filter_plugins" / "rustchat.py")
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    assert plugin.FilterModule is filters.FilterModule
    assert plugin.FilterModule().filters() == dict(filters.FILTERS)
    source = (ANSIBLE / "filter_plugins" / "rustchat.py").read_text()
    assert "def " not in source  # nothing computed there


def _adjacent_playbook(name: str, text: str, *args: str) -> subprocess.CompletedProcess:
    """Run a playbook written next to site.yml, so it sees the same filter_plugins/ and roles/."""
    adjacent = ANSIBLE / f".{name}-{os.getpid()}.yml"
    adjacent.write_text(text)
    try:
        return _ansible("ansible-playbook", *args, adjacent.name)
    finally:
        adjacent.unlink()


def test_the_playbook_computes_pools_with_the_filters() -> None:
    """Ansible itself evaluates the pool filter (local connection, no hosts needed)."""
    proc = _adjacent_playbook(
        "pool",
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"{{ (100 | rustchat_pool_size([2, 2, 2, 2])).max }}\"\n",
        "-i", "localhost,", "-c", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r'"msg": "?11"?\n', proc.stdout), proc.stdout


def test_prometheus_config_lists_every_target_and_passes_promtool(tmp_path: Path) -> None:
    """The monitoring role's prometheus.yml, rendered by Ansible from an inventory (local
    connection, no hosts needed): one target per app node and exporter, labelled with the node's
    name; a load balancer without stub_status gets no nginx target. promtool accepts it."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/bootstrap.sh --test installs it)")
    common = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "rustchat_port": 3000,
              "monitoring_postgres_exporter_port": 9187, "monitoring_redis_exporter_port": 9121, "monitoring_nginx_exporter_port": 9113,
              "nginx_status_listen": "127.0.0.1:8080"}
    hosts = {"lb1": ("lb", "10.0.0.2"), "lb2": ("lb", "10.0.0.3"), "db1": ("postgres", "10.0.0.5"),
             "cache1": ("redis", "10.0.0.7"), "app1": ("app", "10.0.1.1"), "app2": ("app", "fd00::12"),
             "mon1": ("monitoring", "10.0.0.9")}
    children: dict[str, dict] = {}
    for name, (group, address) in hosts.items():
        host_vars = {**common, "private_address": address}
        if name == "lb2":
            host_vars["nginx_status_listen"] = ""
        children.setdefault(group, {"hosts": {}})["hosts"][name] = host_vars
    inventory = tmp_path / "hosts.json"
    inventory.write_text(json.dumps({"all": {"children": children}}))
    out = tmp_path / "prometheus.yml"
    proc = _adjacent_playbook(
        "prometheus",
        "- hosts: monitoring\n  gather_facts: false\n  vars_files: [roles/monitoring/defaults/main.yml]\n"
        "  vars: {common_firewall_ssh_allow: [10.0.0.0/8]}\n"
        "  tasks:\n"
        "    - ansible.builtin.template:\n"
        "        src: roles/monitoring/templates/prometheus.yml.j2\n"
        f"        dest: {out}\n"
        "        mode: '0644'\n",
        "-i", str(inventory), "-e", '{"monitoring_alertmanagers": ["10.0.0.9:9093"]}')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check = subprocess.run([promtool, "check", "config", "--syntax-only", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    config = yaml.safe_load(out.read_text())
    jobs = {job["job_name"]: [(c["labels"]["node"], c["targets"]) for c in job["static_configs"]]
            for job in config["scrape_configs"]}
    assert jobs == {
        "prometheus": [("mon1", ["10.0.0.9:9090"])],
        "rustchat": [("app1", ["10.0.1.1:3000"]), ("app2", ["[fd00::12]:3000"])],
        "postgresql": [("db1", ["10.0.0.5:9187"])],
        "redis": [("cache1", ["10.0.0.7:9121"])],
        "nginx": [("lb1", ["10.0.0.2:9113"])],
    }
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["10.0.0.9:9093"]
