#!/usr/bin/env python3
"""The module's runner, called by its local-exec provisioners (python3 rollout.py COMMAND).

    init      create the inventory directory (0700)
    rollout   write hosts.yml and group_vars/all.yml, wait for SSH, run the playbook
    destroy   remove the files Terraform wrote (and the generated secrets if asked)

Everything comes in environment variables (RUSTCHAT_TF_*) set by main.tf, never on a shell
command line, so no value is ever parsed by a shell. Ansible's output goes to Terraform's.
Python's standard library only: it runs with whatever python3 the Ansible controller has.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

WRITTEN = ("hosts.yml", "group_vars/all.yml")


def say(msg: str) -> None:
    print(f"rustchat-ansible: {msg}", flush=True)


def inventory_dir() -> Path:
    return Path(os.environ["RUSTCHAT_TF_INVENTORY_DIR"])


def write(path: Path, text: str) -> None:
    """Write atomically: a half-written inventory is never read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


def init() -> int:
    d = inventory_dir()
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)  # the generated secrets live below it
    return 0


def ansible_env(ansible_dir: Path, ansible_playbook: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in [k for k in env if k.startswith("RUSTCHAT_TF_")]:
        del env[key]  # the inventory text is not Ansible's business
    bindir = str(Path(ansible_playbook).parent) if os.sep in ansible_playbook else ""
    env.update({
        # ansible.cfg (roles_path, pipelining, ...) also when the directory is group-writable.
        "ANSIBLE_CONFIG": str(ansible_dir / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PYTHONUNBUFFERED": "1",
    })
    if bindir:  # ansible-playbook's helpers (ansible-galaxy, ...) next to it
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    return env


def ansible_tool(ansible_playbook: str, tool: str) -> str:
    path = shutil.which(ansible_playbook)
    if path is None:
        raise SystemExit(f"rustchat-ansible: {ansible_playbook} not found; install Ansible (pip install ansible-core) "
                         f"or set the module's ansible_playbook to its path")
    return str(Path(path).with_name(tool))


def wait_for_hosts(inventory: Path, ansible_dir: Path, ansible_playbook: str, timeout: int) -> int:
    ansible = ansible_tool(ansible_playbook, "ansible")
    say(f"waiting up to {timeout} s for every host to accept SSH")
    started = time.monotonic()
    argv = [ansible, "all", "-i", str(inventory), "-m", "ansible.builtin.wait_for_connection",
            "-a", f"timeout={timeout} sleep=2"]
    rc = subprocess.call(argv, cwd=ansible_dir, env=ansible_env(ansible_dir, ansible_playbook))
    if rc == 0:
        say(f"every host reachable after {time.monotonic() - started:.0f} s")
    return rc


def rollout() -> int:
    d = inventory_dir()
    init()
    inventory = d / "hosts.yml"
    write(inventory, os.environ["RUSTCHAT_TF_INVENTORY"])
    write(d / "group_vars" / "all.yml", os.environ["RUSTCHAT_TF_GROUP_VARS"])
    say(f"inventory written to {inventory}")
    if os.environ.get("RUSTCHAT_TF_RUN_PLAYBOOK", "1") != "1":
        say("run_playbook is false: not running the playbook")
        return 0
    ansible_dir = Path(os.environ["RUSTCHAT_TF_ANSIBLE_DIR"])
    playbook = os.environ["RUSTCHAT_TF_PLAYBOOK"]
    ansible_playbook = os.environ["RUSTCHAT_TF_ANSIBLE"]
    if not (ansible_dir / playbook).is_file():
        say(f"{ansible_dir / playbook} does not exist (set the module's ansible_dir)")
        return 2
    timeout = int(float(os.environ.get("RUSTCHAT_TF_WAIT_FOR_HOSTS", "0")))
    if timeout > 0:
        rc = wait_for_hosts(inventory, ansible_dir, ansible_playbook, timeout)
        if rc != 0:
            say(f"some hosts did not accept SSH within {timeout} s (rc {rc})")
            return rc
    argv = [ansible_tool(ansible_playbook, Path(shutil.which(ansible_playbook) or ansible_playbook).name), "-i", str(inventory), playbook,
            *json.loads(os.environ.get("RUSTCHAT_TF_EXTRA_ARGS", "[]"))]
    say(f"cd {ansible_dir} && {' '.join(argv)}")
    started = time.monotonic()
    rc = subprocess.call(argv, cwd=ansible_dir, env=ansible_env(ansible_dir, ansible_playbook))
    say(f"{playbook} finished with {rc} after {time.monotonic() - started:.0f} s")
    return rc


def destroy() -> int:
    d = inventory_dir()
    for name in WRITTEN:
        (d / name).unlink(missing_ok=True)
    if os.environ.get("RUSTCHAT_TF_REMOVE_CREDENTIALS") == "1":
        shutil.rmtree(d / "credentials", ignore_errors=True)
        say(f"removed the inventory and the generated secrets in {d}")
    elif (d / "credentials").exists():
        say(f"removed the inventory; the generated secrets stay in {d / 'credentials'}")
    for sub in (d / "group_vars", d):
        try:
            sub.rmdir()  # only when empty: whatever else is there is not ours
        except OSError:
            pass
    return 0


def main(argv: list[str]) -> int:
    commands = {"init": init, "rollout": rollout, "destroy": destroy}
    if len(argv) != 2 or argv[1] not in commands:
        print(f"usage: {argv[0]} {'|'.join(commands)}", file=sys.stderr)
        return 2
    return commands[argv[1]]()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
