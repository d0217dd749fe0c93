"""terraform/ without hosts: formatting, validation, `terraform test` of the module's outputs, and
the rendered inventory read back by Ansible's own ansible-inventory and ansible-playbook.

No provider can be downloaded here: everything except terraform/aws needs none (the module uses
only terraform_data). terraform/aws is validated where the hashicorp/aws provider can be installed
and skipped, saying so, where it cannot.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from rustchat.appliance import sizing
from tests.terraform import tf

pytestmark = pytest.mark.skipif(tf.terraform_binary() is None,
                                reason="no terraform: scripts/bootstrap.sh --test provides one")

RUNS = re.compile(r'^run "([^"]+)"', re.M)


def test_terraform_is_new_enough() -> None:
    assert tf.version() >= (1, 6), "terraform test and terraform_data need Terraform 1.6+"


def test_every_file_is_terraform_fmt_clean() -> None:
    result = tf.terraform(["fmt", "-check", "-recursive", "-diff", str(tf.TERRAFORM_DIR)], cwd=tf.REPO)
    assert result.rc == 0, f"terraform fmt -recursive terraform/ would change:\n{result.output}"


@pytest.mark.parametrize("config", [tf.MODULE, tf.EXAMPLE], ids=["module", "example-existing-hosts"])
def test_provider_free_configurations_validate(config: Path, tmp_path: Path) -> None:
    init = tf.terraform(["init", "-backend=false", "-input=false"], cwd=config, data_dir=tmp_path / "data")
    assert init.rc == 0, init.output
    result = tf.terraform(["validate"], cwd=config, data_dir=tmp_path / "data")
    assert result.rc == 0 and "The configuration is valid" in result.output, result.output


def test_aws_root_module_validates_where_the_provider_can_be_installed(tmp_path: Path) -> None:
    init = tf.terraform(["init", "-backend=false", "-input=false"], cwd=tf.AWS, data_dir=tmp_path / "data", timeout=300)
    if init.rc != 0 and re.search(r"Failed to (query available provider packages|install provider)"
                                  r"|could not connect to registry", init.output):
        first = next((line for line in init.output.splitlines() if line.startswith("Error:")), "")
        pytest.skip(f"terraform validate of terraform/aws skipped: the hashicorp/aws provider cannot be installed "
                    f"on this machine ({first.strip()}); terraform fmt -check covers it here")
    assert init.rc == 0, init.output
    result = tf.terraform(["validate"], cwd=tf.AWS, data_dir=tmp_path / "data")
    assert result.rc == 0 and "The configuration is valid" in result.output, result.output


def test_terraform_test_of_the_modules_outputs(tmp_path: Path) -> None:
    """tests/*.tftest.hcl: inventory, variables, refusals; one run applies and reads the files back."""
    inventory = tmp_path / "inventory"
    init = tf.terraform(["init", "-backend=false", "-input=false"], cwd=tf.MODULE, data_dir=tmp_path / "data")
    assert init.rc == 0, init.output
    result = tf.terraform(["test", f"-var=inventory_dir={inventory}"], cwd=tf.MODULE, data_dir=tmp_path / "data")
    expected = sorted(name for f in (tf.MODULE / "tests").glob("*.tftest.hcl") for name in RUNS.findall(f.read_text()))
    assert result.rc == 0, result.output
    passed = sorted(re.findall(r'^\s*run "([^"]+)"\.\.\. pass$', result.output, re.M))
    assert passed == expected, result.output
    assert re.search(rf"Success! {len(expected)} passed, 0 failed\.", result.output), result.output
    # The apply run wrote the inventory; terraform test's own destroy removed it again.
    assert not inventory.exists(), sorted(inventory.rglob("*"))


def test_the_preset_names_are_the_sizing_codes() -> None:
    text = (tf.MODULE / "variables.tf").read_text()
    block = text[text.index('variable "preset"'):]
    names = json.loads(re.search(r"contains\((\[[^\]]*\]), var\.preset\)", block).group(1))
    assert names == list(sizing.PRESETS)


# ---------------------------------------------------------------------------------------------
# The example, applied with run_playbook = false: the files Ansible reads


HOSTS = {
    "lb": [{"name": "lb1", "address": "198.51.100.10", "private_address": "10.0.0.2"}],
    "postgres": [{"name": "data", "address": "198.51.100.20", "private_address": "10.0.0.5"}],
    "redis": [{"name": "data", "address": "198.51.100.20", "private_address": "10.0.0.5"}],
    "app": [{"name": "app1", "address": "198.51.100.41", "private_address": "10.0.1.1", "workers": 3},
            {"name": "app2", "address": "198.51.100.42", "private_address": "10.0.1.2"}],
}


@pytest.fixture()
def rendered(tmp_path: Path) -> dict[str, Path]:
    """The example applied without running the playbook; destroyed (and checked) afterwards."""
    paths = {"dir": tmp_path, "inventory": tmp_path / "inventory", "log": tmp_path / "terraform.log",
             "vars": tmp_path / "test.tfvars.json", "data": tmp_path / "data"}
    paths["vars"].write_text(json.dumps({
        "hosts": HOSTS, "ssh_user": "debian", "ssh_private_key_file": "/home/ops/.ssh/rustchat",
        "ssh_allow_cidrs": ["192.0.2.0/24"], "preset": "medium", "workers_per_node": 2, "max_connections": 120,
        "server_name": "chat.example.com", "inventory_dir": str(paths["inventory"]), "run_playbook": False,
    }))
    run = _runner(paths)
    init = run(["init", "-input=false", f"-backend-config=path={tmp_path / 'terraform.tfstate'}"])
    assert init.rc == 0, init.output
    apply = run(["apply", "-auto-approve", f"-var-file={paths['vars']}"])
    assert apply.rc == 0, apply.output
    assert "rustchat-ansible: run_playbook is false: not running the playbook" in apply.output, apply.output
    yield paths
    destroy = run(["destroy", "-auto-approve", f"-var-file={paths['vars']}"])
    assert destroy.rc == 0, destroy.output


def _runner(paths: dict[str, Path]):  # noqa: ANN202
    return lambda args: tf.terraform(args, cwd=tf.EXAMPLE, data_dir=paths["data"], log=paths["log"])


def _ansible(tool: str, *args: str, cwd: Path = tf.REPO / "ansible") -> str:
    proc = subprocess.run([str(tf.VENV_BIN / tool), *args], cwd=cwd, env=tf.env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def test_ansible_reads_the_rendered_inventory_with_the_playbooks_groups(rendered: dict[str, Path]) -> None:
    inventory = rendered["inventory"] / "hosts.yml"
    listed = json.loads(_ansible("ansible-inventory", "-i", str(inventory), "--list"))
    groups = {g: sorted(listed[g]["hosts"]) for g in ("lb", "postgres", "redis", "app")}
    assert groups == {"lb": ["lb1"], "postgres": ["data"], "redis": ["data"], "app": ["app1", "app2"]}
    hostvars = listed["_meta"]["hostvars"]
    assert hostvars["data"]["ansible_host"] == "198.51.100.20" and hostvars["data"]["private_address"] == "10.0.0.5"
    # The sizing inputs and the host's own workers, as the playbook sees them (group_vars merged).
    assert hostvars["app1"]["rustchat_workers"] == 3 and hostvars["app2"]["rustchat_workers"] == 2
    for host in hostvars.values():
        assert host["rustchat_preset"] == "medium"
        assert host["postgresql_max_connections"] == 120
        assert host["nginx_server_name"] == "chat.example.com"
        assert host["common_firewall_ssh_allow"] == ["192.0.2.0/24"]
        assert host["ansible_user"] == "debian" and host["ansible_become"] is True
        assert host["ansible_ssh_private_key_file"] == "/home/ops/.ssh/rustchat"


def test_site_yml_plays_run_on_the_rendered_groups(rendered: dict[str, Path]) -> None:
    """ansible-playbook --list-hosts: the project's own site.yml against the rendered inventory."""
    out = _ansible("ansible-playbook", "-i", str(rendered["inventory"] / "hosts.yml"), "site.yml", "--list-hosts")
    plays = re.findall(r"play #\d+ \(([^)]+)\): .*?\n\s+pattern: .*?\n\s+hosts \(\d+\):\n((?:[ ]{6}\S+\n)+)", out)
    hosts = {pattern: sorted(block.split()) for pattern, block in plays}
    assert hosts == {"all": ["app1", "app2", "data", "lb1"], "postgres": ["data"], "redis": ["data"],
                     "app": ["app1", "app2"], "lb": ["lb1"]}, out


def test_only_a_changed_inventory_reruns_and_destroy_keeps_the_secrets(tmp_path: Path) -> None:
    paths = {"dir": tmp_path, "inventory": tmp_path / "inventory", "log": tmp_path / "terraform.log",
             "vars": tmp_path / "test.tfvars.json", "data": tmp_path / "data"}
    paths["vars"].write_text(json.dumps({"hosts": HOSTS, "ssh_allow_cidrs": ["192.0.2.0/24"],
                                         "inventory_dir": str(paths["inventory"]), "run_playbook": False}))
    run = _runner(paths)
    assert run(["init", "-input=false", f"-backend-config=path={tmp_path / 'terraform.tfstate'}"]).rc == 0
    apply = run(["apply", "-auto-approve", f"-var-file={paths['vars']}"])
    assert apply.rc == 0, apply.output
    assert (paths["inventory"] / "hosts.yml").is_file() and (paths["inventory"] / "group_vars/all.yml").is_file()
    assert paths["inventory"].stat().st_mode & 0o777 == 0o700
    # What site.yml generates there (credentials/) is not Terraform's to remove by default.
    secret = paths["inventory"] / "credentials" / "rustchat_admin_password"
    secret.parent.mkdir(mode=0o700)
    secret.write_text("generated-by-site.yml\n")
    again = run(["plan", "-detailed-exitcode", f"-var-file={paths['vars']}"])
    assert again.rc == 0, f"a second plan wants changes:\n{again.output}"
    # Another app host: the rollout (site.yml) runs again; the directory and its secrets stay.
    more = {**HOSTS, "app": [*HOSTS["app"], {"name": "app3", "address": "198.51.100.43"}]}
    bigger = tmp_path / "bigger.tfvars.json"
    bigger.write_text(json.dumps({**json.loads(paths["vars"].read_text()), "hosts": more}))
    plan = run(["plan", "-detailed-exitcode", f"-var-file={bigger}"])
    assert plan.rc == 2, plan.output
    assert "module.rustchat.terraform_data.rollout must be replaced" in plan.output, plan.output
    assert "Plan: 1 to add, 0 to change, 1 to destroy." in plan.output, plan.output
    destroy = run(["destroy", "-auto-approve", f"-var-file={paths['vars']}"])
    assert destroy.rc == 0, destroy.output
    assert sorted(p.relative_to(paths["inventory"]).as_posix() for p in paths["inventory"].rglob("*")) == [
        "credentials", "credentials/rustchat_admin_password"]
    assert "the generated secrets stay in" in destroy.output, destroy.output
    state = json.loads((tmp_path / "terraform.tfstate").read_text())
    assert state["resources"] == []
