"""libvirt for a test run: started when no libvirtd answers, and left as it was found.

These machines run no systemd, so nothing starts libvirtd; `Libvirt.start()` then runs virtlogd
and libvirtd as child processes of the test and `stop()` ends them by their PIDs. Either way,
`snapshot()` before the run and `clean(before)` after it remove whatever the run added that
`vagrant destroy` left behind: domains, networks (and the dnsmasq and bridge behind each),
storage volumes and pools.
"""

from __future__ import annotations

import contextlib
import grp
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

URI = "qemu:///system"


def log(msg: str) -> None:
    print(f"[libvirt] {msg}", file=sys.stderr, flush=True)


def virsh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _names(*args: str) -> set[str]:
    return {line.strip() for line in virsh(*args).stdout.splitlines() if line.strip()}


@dataclass(frozen=True)
class Snapshot:
    domains: frozenset[str]
    networks: frozenset[str]
    active_networks: frozenset[str]
    pools: frozenset[str]
    volumes: frozenset[tuple[str, str]]  # (pool, volume)


@dataclass
class Libvirt:
    log_dir: Path
    pids: dict[str, int] = field(default_factory=dict)  # the daemons this object started
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _kvm_before: tuple[int, int] | None = None  # (gid, mode) of /dev/kvm, when this object changed it
    _firewall_before: tuple[bool, frozenset[str]] | None = None  # (LIBVIRT_ chains?, nft tables)

    @staticmethod
    def answers() -> bool:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            return virsh("version", check=False, timeout=60).returncode == 0
        return False

    def start(self) -> None:
        """Run virtlogd and libvirtd unless a libvirtd is already serving qemu:///system."""
        if self.answers():
            log("using the libvirtd that is already running")
            return
        Path("/run/libvirt").mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._kvm_like_udev()
        self._firewall_before = (libvirt_chains_exist(), nft_tables())
        for daemon in ("virtlogd", "libvirtd"):
            out = open(self.log_dir / f"{daemon}.log", "ab")  # noqa: SIM115 (closed with the process)
            # In the foreground (no --daemon): the PID is then the daemon's own, to stop it by.
            proc = subprocess.Popen([daemon], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            out.close()
            self._procs.append(proc)
            self.pids[daemon] = proc.pid
        deadline = time.monotonic() + 180
        while not self.answers():
            if any(p.poll() is not None for p in self._procs) or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"libvirtd did not start; see {self.log_dir}/libvirtd.log")
            time.sleep(0.2)
        log(f"started virtlogd (PID {self.pids['virtlogd']}) and libvirtd (PID {self.pids['libvirtd']})")

    def _kvm_like_udev(self) -> None:
        """Give /dev/kvm the group and mode udev gives it on Debian (root:kvm 0660).

        Without udev it is root:root 0600: libvirt then finds KVM usable when it probes QEMU as
        root but not for its QEMU user afterwards, judges its capability cache stale on every
        lookup and probes QEMU again (seconds each: 30-80 s per machine that `vagrant up` defines).
        The guests still run under TCG (driver = "qemu"); stop() restores the old owner and mode.
        """
        kvm = Path("/dev/kvm")
        if not kvm.exists():
            return
        try:
            gid = grp.getgrnam("kvm").gr_gid
        except KeyError:
            return
        st = kvm.stat()
        if st.st_gid == gid and st.st_mode & 0o060 == 0o060:
            return
        self._kvm_before = (st.st_gid, stat.S_IMODE(st.st_mode))
        os.chown(kvm, -1, gid)
        kvm.chmod(0o660)

    def snapshot(self) -> Snapshot:
        pools = _names("pool-list", "--all", "--name")
        volumes = set()
        for pool in pools:
            proc = virsh("vol-list", "--pool", pool, check=False)
            volumes |= {(pool, line.split()[0]) for line in proc.stdout.splitlines() if line.strip()}
        return Snapshot(frozenset(_names("list", "--all", "--name")), frozenset(_names("net-list", "--all", "--name")),
                        frozenset(_names("net-list", "--name")), frozenset(pools), frozenset(volumes))

    def clean(self, before: Snapshot) -> list[str]:
        """Remove what was added since `before`; return what had to be removed."""
        now = self.snapshot()
        removed = []
        for dom in sorted(now.domains - before.domains):
            virsh("destroy", dom, check=False)
            virsh("undefine", dom, "--remove-all-storage", "--nvram", check=False)
            removed.append(f"domain {dom}")
        for pool, vol in sorted(now.volumes - before.volumes):
            virsh("vol-delete", vol, "--pool", pool, check=False)
            removed.append(f"volume {pool}/{vol}")
        for pool in sorted(now.pools - before.pools):
            virsh("pool-destroy", pool, check=False)
            virsh("pool-undefine", pool, check=False)
            removed.append(f"pool {pool}")
        # A network outlives libvirtd (its bridge and dnsmasq stay): stop every network this run
        # started, and forget those it defined.
        for net in sorted(now.active_networks - before.active_networks):
            virsh("net-destroy", net, check=False)
            removed.append(f"active network {net}")
        for net in sorted(now.networks - before.networks):
            virsh("net-undefine", net, check=False)
            removed.append(f"network {net}")
        return removed

    def stop(self) -> None:
        """End the daemons this object started, by PID (libvirtd first: it talks to virtlogd)."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    log(f"PID {proc.pid} did not stop within 30 s; killing it")
                    proc.kill()
                    proc.wait(10)
        self._procs.clear()
        if self._firewall_before is not None:
            _remove_libvirt_firewall(*self._firewall_before)
            self._firewall_before = None
        if self._kvm_before is not None:
            gid, mode = self._kvm_before
            os.chown("/dev/kvm", -1, gid)
            os.chmod("/dev/kvm", mode)
            self._kvm_before = None

    def alive(self) -> list[int]:
        return [p.pid for p in self._procs if p.poll() is None]


# libvirt's network driver hooks chains of its own (LIBVIRT_INP, LIBVIRT_FWX, ...) into the
# iptables tables when it first starts a network, and never removes them. When this run's
# libvirtd put them there, they go with it (emptied: the networks are gone by then).
IPTABLES_TABLES = ("filter", "nat", "mangle")


def _run_quiet(argv: list[str]) -> str:
    with contextlib.suppress(OSError):
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    return ""


def libvirt_chains_exist() -> bool:
    return any(":LIBVIRT_" in _run_quiet([f"{tool}-save"]) for tool in ("iptables", "ip6tables"))


def nft_tables() -> frozenset[str]:
    return frozenset(line.strip() for line in _run_quiet(["nft", "list", "tables"]).splitlines() if line.strip())


def _remove_libvirt_firewall(chains_before: bool, tables_before: frozenset[str]) -> None:
    if chains_before:
        return
    for tool in ("iptables", "ip6tables"):
        for table in IPTABLES_TABLES:
            rules = _run_quiet([f"{tool}-save", "-t", table]).splitlines()
            for rule in rules:
                parts = rule.split()
                if parts[:1] == ["-A"] and len(parts) == 4 and parts[2] == "-j" and parts[3].startswith("LIBVIRT_"):
                    _run_quiet([tool, "-t", table, "-D", parts[1], "-j", parts[3]])
            for rule in rules:
                if rule.startswith(":LIBVIRT_"):
                    chain = rule[1:].split()[0]
                    _run_quiet([tool, "-t", table, "-F", chain])
                    _run_quiet([tool, "-t", table, "-X", chain])
    # iptables-nft made its tables for libvirt's rules: drop those that appeared and hold no rule.
    for table in sorted(nft_tables() - tables_before):
        family_name = table.removeprefix("table ").split()
        listing = _run_quiet(["nft", "list", "table", *family_name])
        if len(family_name) == 2 and not any(
                line.strip() and not line.strip().startswith(("table", "chain", "type", "}"))
                for line in listing.splitlines()):
            _run_quiet(["nft", "delete", "table", *family_name])


def qemu_processes(name_prefix: str) -> list[int]:
    """PIDs of QEMU processes running a guest whose libvirt name starts with `name_prefix`."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv and b"qemu-system" in argv[0]:
                name = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == b"-name"), b"")
                if name.decode().removeprefix("guest=").startswith(name_prefix):
                    out.append(int(entry.name))
    return out


def kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
