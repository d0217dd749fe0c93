"""A reduced RustChat cluster on libvirt VMs through the project's own Vagrantfile.

One machine `core` carries postgres, redis and lb, and app1 and app2 are the app nodes, on the
private network NETWORK.0/24; the Vagrantfile's provisioner runs ansible/site.yml once after all
three are up. Everything this creates is removed by `down()`: the machines (`vagrant destroy`),
then any domain, network, volume or pool that libvirt still has from this run, the SSH control
masters Ansible left, and the libvirt daemons if this run started them (by PID).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import forwarding
from tests.vagrant import box as boxes
from tests.vagrant.libvirt import (
    IPTABLES_TABLES,
    Libvirt,
    Snapshot,
    kill,
    libvirt_chains_exist,
    nft_tables,
    qemu_processes,
)

REPO = Path(__file__).resolve().parents[2]
NETWORK = "192.168.58"  # not the Vagrantfile's default, so a developer's own cluster can stay up
PREFIX = "rustchat-test-"
MACHINES = "core:lb,postgres,redis"
APP_NODES = 2
LB = f"{NETWORK}.10"
ADDRESSES = {"core": LB, "app1": f"{NETWORK}.21", "app2": f"{NETWORK}.22"}
TOOLS = ("virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "ansible-playbook")


def log(msg: str) -> None:
    print(f"[vagrant-cluster] {msg}", file=sys.stderr, flush=True)


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (libvirt's system instance, debootstrap)"
    bindir = Path(sys.executable).parent
    missing = [t for t in TOOLS if not (shutil.which(t) or (bindir / t).exists() or Path("/usr/sbin", t).exists())]
    missing += boxes.missing_tools()
    if missing:
        return f"missing {', '.join(missing)} (scripts/bootstrap.sh --test installs them)"
    return None


@dataclass(frozen=True)
class Traces:
    """What a libvirt run leaves on the machine itself: network interfaces (bridges, taps) and
    the dnsmasq processes libvirt runs for its networks."""

    interfaces: frozenset[str]  # libvirt's bridges (virbrN) and taps (vnetN)
    dnsmasq: frozenset[int]
    firewall: frozenset[str]  # iptables-nft's tables, and "LIBVIRT_ chains" while libvirt's exist


def system_traces() -> Traces:
    dnsmasq = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes()
                if argv.split(b"\0")[0].endswith(b"dnsmasq") and b"libvirt" in argv:
                    dnsmasq.add(int(entry.name))
    # Only libvirt's kinds of traces: other work on the machine (the test hosts' bridge and nftables
    # table) may come and go meanwhile.
    firewall = {t for t in nft_tables() if t.split()[1:2] in (["ip"], ["ip6"]) and t.split()[-1] in IPTABLES_TABLES}
    firewall |= {"LIBVIRT_ chains"} if libvirt_chains_exist() else set()
    interfaces = {p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(("virbr", "vnet"))}
    return Traces(frozenset(interfaces), frozenset(dnsmasq), frozenset(firewall))


@dataclass
class VagrantCluster:
    work: Path  # this run's Vagrant state, logs and console logs
    timings: list[tuple[str, float]] = field(default_factory=list)
    libvirt: Libvirt | None = None
    before: Snapshot | None = None
    up_output: str = ""
    traces_before: Traces = field(default_factory=system_traces)

    @property
    def dotfile(self) -> Path:
        return self.work / "dot"

    @property
    def inventory(self) -> Path:
        return self.dotfile / "provisioners/ansible/inventory/vagrant_ansible_inventory"

    @property
    def admin_password(self) -> str:
        return (self.inventory.parent / "credentials" / "rustchat_admin_password").read_text().strip()

    def env(self, box: boxes.Box) -> dict[str, str]:
        bindir = str(Path(sys.executable).parent)  # ansible-playbook, and the Python that builds the wheel
        return {
            **os.environ, **box.vagrant_env(),
            "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
            "VAGRANT_HOME": str(boxes.CACHE_DIR / "vagrant.d"),
            "VAGRANT_DOTFILE_PATH": str(self.dotfile),
            "VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
            "VAGRANT_DEFAULT_PROVIDER": "libvirt",
            "RUSTCHAT_VAGRANT_MACHINES": MACHINES, "RUSTCHAT_VAGRANT_APP_NODES": str(APP_NODES),
            "RUSTCHAT_VAGRANT_NETWORK": NETWORK,
            "RUSTCHAT_VAGRANT_LIBVIRT_PREFIX": PREFIX, "RUSTCHAT_VAGRANT_LIBVIRT_NETWORK": "rustchat-test",
            "RUSTCHAT_VAGRANT_CONSOLE_LOG_DIR": str(self.work / "console"),
            "RUSTCHAT_VAGRANT_LIBVIRT_DISK_CACHE": "unsafe",
            # The box's package lists are as old as the cached box: refresh them once a day (as
            # the test hosts do), not on every run.
            "RUSTCHAT_VAGRANT_ANSIBLE_ARGS": "-e common_apt_cache_valid_time=86400",
            # Ansible's SSH control masters in a directory of this run's, to end them afterwards.
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.work / "ansible-cp"),
            "ANSIBLE_LOCAL_TEMP": str(self.work / "ansible-tmp"),
        }

    def _timed(self, name: str, started: float) -> None:
        self.timings.append((name, time.monotonic() - started))

    def vagrant(self, *args: str, log_name: str, env: dict[str, str], timeout: float = 2400) -> tuple[int, str]:
        """Run vagrant from the checkout (its Vagrantfile); output to stderr and LOG_DIR/log_name."""
        log(f"vagrant {' '.join(args)}  (log: {self.work / log_name})")
        started = time.monotonic()
        lines: list[str] = []
        with open(self.work / log_name, "w", buffering=1) as out:
            proc = subprocess.Popen(["vagrant", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
            assert proc.stdout is not None
            for line in proc.stdout:
                stamped = f"{time.monotonic() - started:7.1f} {line}"
                if "Progress: " in line:  # the box upload's progress bar, hundreds of lines
                    continue
                out.write(stamped)
                lines.append(stamped)
                sys.stderr.write(line)
                if time.monotonic() - started > timeout:
                    proc.send_signal(signal.SIGINT)  # vagrant stops cleanly on one SIGINT
            rc = proc.wait()
        return rc, "".join(lines)

    def up(self) -> tuple[int, str]:
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "console").mkdir(exist_ok=True)
        started = time.monotonic()
        box = boxes.ensure_box()
        self._timed("box (built or cached)", started)
        forwarding.record_original()  # before libvirtd turns it on for its NAT network
        t = time.monotonic()
        self.libvirt = Libvirt(self.work / "libvirt")
        self.libvirt.start()
        self.before = self.libvirt.snapshot()
        self._timed("libvirt ready", t)
        env = self.env(box)
        t = time.monotonic()
        boxes.add_to_vagrant(box, env)
        self._timed("vagrant box add (or cached)", t)
        t = time.monotonic()
        rc, self.up_output = self.vagrant("up", "--provider=libvirt", log_name="vagrant-up.log", env=env)
        self._timed("vagrant up (3 machines + site.yml)", t)
        provision = re.search(r"^\s*([\d.]+) .*Running provisioner: site\.yml", self.up_output, re.M)
        if provision:
            boot = float(provision.group(1))
            self.timings += [("  of which machines up", boot), ("  of which site.yml", time.monotonic() - t - boot)]
        return rc, self.up_output

    def destroy(self) -> tuple[int, str]:
        t = time.monotonic()
        box = boxes.Box(boxes.BOX_DIR / "rustchat-bookworm.box", boxes.BOX_DIR / "vmlinuz",
                        boxes.BOX_DIR / "initrd.img", boxes.CACHE_DIR / "ssh" / "id_ed25519")
        result = self.vagrant("destroy", "-f", log_name="vagrant-destroy.log", env=self.env(box), timeout=600)
        self._timed("vagrant destroy -f", t)
        return result

    def down(self) -> list[str]:
        """Remove every trace (also after a failed or half-finished up); returns what was left over."""
        leftovers: list[str] = []
        if self.dotfile.exists():
            rc, _ = self.destroy()
            if rc != 0:
                leftovers.append(f"vagrant destroy exited {rc}")
        t = time.monotonic()
        if self.libvirt is not None and self.before is not None:
            # vagrant-libvirt uploads the box into a storage pool (creating the pool if there was
            # none) and `vagrant destroy` leaves that copy for the next `up`: expected, and removed
            # here like everything else. Anything more is a leftover.
            leftovers += [item for item in self.libvirt.clean(self.before)
                          if "_vagrant_box_image_" not in item and not item.startswith("pool ")]
        stray = qemu_processes(PREFIX)
        if stray:
            leftovers.append(f"qemu PIDs {stray}")
            kill(stray)
        masters = _ssh_masters(self.work / "ansible-cp")
        for pid in masters:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self.libvirt is not None:
            self.libvirt.stop()
        # libvirtd turned forwarding on for its NAT network (tests/support/forwarding.py).
        # libvirt's own bridges are gone by now (destroy, clean-up): any left belong to others.
        log(f"ip_forward: {forwarding.release(())}")
        self._timed("clean-up after destroy", t)
        return leftovers

    def timings_text(self) -> str:
        return "\n".join(f"{name:38} {secs:7.0f} s" for name, secs in self.timings)


def _ssh_masters(control_dir: Path) -> list[int]:
    """PIDs of ssh processes whose control socket is in `control_dir` (Ansible's ControlPersist)."""
    out = []
    needle = str(control_dir).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes()
                if argv.startswith(b"ssh\0") and needle in argv:
                    out.append(int(entry.name))
    return out


def ssh_masters(cluster: VagrantCluster) -> list[int]:
    return _ssh_masters(cluster.work / "ansible-cp")
