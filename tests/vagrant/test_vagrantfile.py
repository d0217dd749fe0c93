"""The Vagrantfile as Vagrant itself reads it (Debian's vagrant): valid, and the layouts it makes.

Fast (no machine is created); the real cluster is test_vagrant_cluster.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None,
                                reason="vagrant is not installed (scripts/bootstrap.sh --test installs it)")


def vagrant(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUSTCHAT_VAGRANT_")}
    env.update({f"RUSTCHAT_VAGRANT_{k}": v for k, v in settings.items()})
    # Nothing of a developer's own Vagrant state is read or written, and Vagrant asks no server
    # for news of itself or the box.
    env.update(VAGRANT_HOME=str(tmp_path / "home"), VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),
               VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_BOX_UPDATE_CHECK_DISABLE="1")
    return subprocess.run(["vagrant", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def machines(tmp_path: Path, **settings: str) -> list[tuple[str, str]]:
    """(name, provider) of every machine, in definition order (the provisioner's is last)."""
    proc = vagrant(tmp_path, "status", "--machine-readable", **settings)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = [line.split(",") for line in proc.stdout.splitlines()]
    return [(row[1], row[3]) for row in rows if len(row) > 3 and row[2] == "provider-name"]


def test_vagrant_validate_accepts_the_vagrantfile(tmp_path: Path) -> None:
    proc = vagrant(tmp_path, "validate")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Vagrantfile validated successfully" in proc.stdout


def test_the_default_layout_is_lb_db_redis_and_three_app_nodes(tmp_path: Path) -> None:
    assert machines(tmp_path) == [(n, "libvirt") for n in ("lb", "db", "redis", "app1", "app2", "app3")]


def test_app_nodes_and_the_other_machines_come_from_the_environment(tmp_path: Path) -> None:
    assert [n for n, _ in machines(tmp_path, APP_NODES="5")] == ["lb", "db", "redis", "app1", "app2", "app3",
                                                                "app4", "app5"]
    reduced = machines(tmp_path, MACHINES="core:lb,postgres,redis", APP_NODES="2")
    assert [n for n, _ in reduced] == ["core", "app1", "app2"]


def test_the_local_box_settings_validate(tmp_path: Path) -> None:
    kernel, initrd, key = (tmp_path / name for name in ("vmlinuz", "initrd.img", "id_ed25519"))
    for path in (kernel, initrd, key):
        path.write_text("")
    proc = vagrant(tmp_path, "validate", BOX="rustchat/bookworm-local", KERNEL=str(kernel), INITRD=str(initrd),
                   SSH_KEY=str(key), LIBVIRT_DRIVER="qemu", CPUS="2", MEMORY="2048", APP_MEMORY="1536")
    assert proc.returncode == 0, proc.stderr + proc.stdout


@pytest.mark.parametrize(("settings", "message"), [
    ({"MACHINES": "core:lb,redis"}, "0 machines in group postgres (exactly one needed)"),
    ({"MACHINES": "db1:postgres db2:postgres redis:redis lb:lb"}, "2 machines in group postgres"),
    ({"MACHINES": "db:postgres redis:redis"}, "0 machines in group lb"),
    ({"APP_NODES": "0"}, "0 machines in group app"),
    ({"MACHINES": "db:postgres,mysql redis:redis lb:lb"}, 'entry "db:postgres,mysql" is not NAME:GROUP'),
    ({"APP_NODES": "three"}, "RUSTCHAT_VAGRANT_APP_NODES must be a whole number"),
    ({"NETWORK": "192.168.56.0/24"}, "RUSTCHAT_VAGRANT_NETWORK is the first three octets"),
])
def test_a_layout_the_playbook_cannot_serve_is_refused(tmp_path: Path, settings: dict[str, str], message: str) -> None:
    proc = vagrant(tmp_path, "validate", **settings)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout


def test_every_setting_of_the_vagrantfile_is_in_the_docs_table() -> None:
    used = set(re.findall(r'\b(?:setting|flag|number)\("([A-Z_]+)"', (REPO / "Vagrantfile").read_text()))
    docs = (REPO / "docs" / "vagrant.md").read_text()
    documented = set(re.findall(r"^\| `RUSTCHAT_VAGRANT_([A-Z_]+)` \|", docs, re.M))
    assert used and used == documented, (sorted(used - documented), sorted(documented - used))
