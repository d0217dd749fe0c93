"""Real test hosts on this machine: systemd containers on a private bridge, reached over SSH.

    python -m tests.deploy.hosts up [--no-deploy]   # create lb, db, redis, app1..app3, mon; run site.yml
    python -m tests.deploy.hosts deploy [PLAYBOOK] [ANSIBLE ARGS...]
    python -m tests.deploy.hosts add app4           # one more host (inventory updated, not deployed)
    python -m tests.deploy.hosts status
    python -m tests.deploy.hosts down               # remove every trace

(`make cluster` / `make cluster-down`.) Each host is a Debian 12 with its own systemd as PID 1,
its own root file system (an overlay over one cached debootstrap image), its own network
namespace with one address on the bridge 10.231.0.0/24, and sshd with the harness's key, so
Ansible and testinfra reach it exactly as they would a VM. See ../shared/notes/test-hosts.md.

Everything created is recorded in STATE_DIR/state.json as it is created, and `down` removes
exactly that (containers stopped by the PID that started them, overlays unmounted, netns, bridge,
the controller's nftables table, ip_forward restored), also after a crash half-way through `up`.
Only addresses on the private bridge are ever targets. The base image and an apt package cache
are kept under CACHE_DIR between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support import forwarding, system_bus

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
CACHE_DIR = Path(os.environ.get("RUSTCHAT_TEST_HOSTS_CACHE", "/var/cache/rustchat-test-hosts"))
STATE_DIR = Path(os.environ.get("RUSTCHAT_TEST_HOSTS_STATE", "/var/lib/rustchat-test-hosts"))

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "python3", "openssh-server")
BASE_VERSION = "1"  # bump to rebuild cached images after changing how they are made
BASE_DIR = CACHE_DIR / f"base-{SUITE}-v{BASE_VERSION}"
APT_CACHE = CACHE_DIR / "apt-archives"
SSH_KEY = CACHE_DIR / "ssh" / "id_ed25519"

BRIDGE = "rchosts0"
NETWORK = "10.231.0"
CONTROLLER = f"{NETWORK}.1"
NFT_TABLE = "rustchat_test_hosts"
PREFIX = "rch-"  # network namespaces and host-side veths

# name -> (last octet, inventory group)
DEFAULT_HOSTS: dict[str, tuple[int, str]] = {
    "lb": (10, "lb"),
    "db": (20, "postgres"),
    "redis": (30, "redis"),
    "app1": (41, "app"),
    "app2": (42, "app"),
    "app3": (43, "app"),
    # The optional monitoring group: Prometheus and the exporters (role monitoring).
    "mon": (50, "monitoring"),
}

# The cluster's variables: small enough for a 2-core machine running all six hosts; SSH only from
# the controller, which also exercises the firewall.
GROUP_VARS = {
    "rustchat_preset": "small",
    "rustchat_workers": 2,
    "postgresql_ram_mb": 1024,
    "redis_maxmemory": "512mb",
    "common_firewall_ssh_allow": [f"{CONTROLLER}/32"],
    "common_apt_cache_valid_time": 86400,
    # Targets turn up within seconds, not the default 15 s.
    "monitoring_scrape_interval": "5s",
}

TOOLS = {"systemd-nspawn": "systemd-container", "debootstrap": "debootstrap", "nft": "nftables",
         "ssh": "openssh-client", "ssh-keygen": "openssh-client", "ip": "iproute2"}


class HostsError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[test-hosts] {msg}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], *, check: bool = True, quiet: bool = False, **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise HostsError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    if not quiet and proc.returncode != 0:
        log(f"(ignored) {' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def which(tool: str) -> str | None:
    return shutil.which(tool) or next((str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / tool).exists()), None)


# ---------------------------------------------------------------------------------------------
# Can this machine run the hosts at all?


def unavailable_reason(install: bool = True) -> str | None:
    """None when containers can run here; else why not (after trying to install the tools)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, bridges, systemd-nspawn)"
    if sys.platform != "linux":
        return "needs Linux"
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not which(tool)})
    if missing and install:
        log(f"installing {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # Another apt run (a second checkout bootstrapping) may hold the lock for a while: wait for it.
        install = ["apt-get", "install", "-o", "DPkg::Lock::Timeout=600", "-y", "-qq", "--no-install-recommends"]
        proc = run([*install, *missing], check=False, env=env)
        if proc.returncode != 0:
            run(["apt-get", "update", "-qq"], check=False, env=env)
            run([*install, *missing], check=False, env=env)
        missing = sorted({pkg for tool, pkg in TOOLS.items() if not which(tool)})
    if missing:
        return f"missing {', '.join(missing)} (apt-get install -y {' '.join(missing)} failed)"
    if "overlay" not in Path("/proc/filesystems").read_text() and not shutil.which("cp"):
        return "neither overlayfs nor cp"
    return None


# ---------------------------------------------------------------------------------------------
# The cached base image and SSH key


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_ssh_key() -> Path:
    with locked(CACHE_DIR / ".ssh.lock"):
        if not SSH_KEY.exists():
            SSH_KEY.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rustchat-test-hosts", "-f", str(SSH_KEY)])
    return SSH_KEY


def ensure_base_image() -> Path:
    """Debian 12 with systemd, sshd and python3, built once with debootstrap and cached."""
    with locked(CACHE_DIR / ".base.lock"):
        if (BASE_DIR / ".complete").exists():
            return BASE_DIR
        tmp = CACHE_DIR / f".base-build-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        started = time.monotonic()
        log(f"building the base image with debootstrap into {BASE_DIR} (once; about a minute)")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(tmp), MIRROR])
        # Per-host identity is created per host: machine id at first boot, SSH host keys, host name.
        (tmp / "etc/machine-id").write_text("")
        for key in (tmp / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        for path in (tmp / "etc/hostname",):
            path.unlink(missing_ok=True)
        for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        # Keep downloaded packages (the harness reuses them between runs; see APT_CACHE).
        (tmp / "etc/apt/apt.conf.d/90rustchat-test-keep-debs").write_text('Binary::apt::APT::Keep-Downloaded-Packages "true";\n')
        (tmp / ".complete").write_text(json.dumps({"suite": SUITE, "packages": BASE_PACKAGES,
                                                   "built": time.time()}) + "\n")
        shutil.rmtree(BASE_DIR, ignore_errors=True)
        tmp.rename(BASE_DIR)
        log(f"base image ready in {time.monotonic() - started:.0f} s")
        return BASE_DIR


# ---------------------------------------------------------------------------------------------
# State: what exists, recorded before it is created so `down` can always remove it


@dataclass
class Host:
    name: str
    address: str
    group: str

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def veth(self) -> str:
        return f"{PREFIX}{self.name}"[:15]

    @property
    def dir(self) -> Path:
        return STATE_DIR / "hosts" / self.name

    @property
    def root(self) -> Path:
        return self.dir / "root"


class State:
    def __init__(self, path: Path = STATE_DIR / "state.json") -> None:
        self.path = path
        self.data: dict = json.loads(path.read_text()) if path.exists() else {}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)

    def __getitem__(self, key: str):  # noqa: ANN204
        return self.data.get(key)

    def __setitem__(self, key: str, value) -> None:  # noqa: ANN001
        self.data[key] = value
        self.save()

    @property
    def hosts(self) -> dict[str, dict]:
        return self.data.setdefault("hosts", {})

    def set_host(self, name: str, **values) -> None:  # noqa: ANN003
        self.hosts.setdefault(name, {}).update(values)
        self.save()


def _mtu() -> int:
    """The machine's uplink MTU: the hosts' packets are masqueraded out through it."""
    route = run(["ip", "-o", "route", "get", "1.1.1.1"], check=False, quiet=True).stdout
    match = re.search(r"\bdev (\S+)", route)
    if match:
        try:
            return int(Path(f"/sys/class/net/{match.group(1)}/mtu").read_text())
        except (OSError, ValueError):
            pass
    return 1500


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_dirs(name: str) -> list[Path]:
    """The cgroups (one per hierarchy systemd uses) that host `name`'s container lives in.

    Each container needs a cgroup of its own: systemd-nspawn makes its own cgroup the container's
    root, and the machine here runs no systemd to give each one a scope, so six containers
    started from one cgroup would share one subtree, and each container's systemd would remove
    cgroups the others are just moving processes into (units failing with 219/CGROUP).
    """
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # unified hierarchy only
        bases = [CGROUP_ROOT]
    else:  # legacy or hybrid: systemd's named hierarchy, and the unified one if mounted
        bases = [CGROUP_ROOT / h for h in ("systemd", "unified") if (CGROUP_ROOT / h / "cgroup.procs").exists()]
    return [base / "rustchat-test-hosts" / name for base in bases]


def _remove_cgroups(dirs: Sequence[Path]) -> None:
    for top in dirs:
        if not top.exists():
            continue
        for root, _dirs, _files in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(root)
        with contextlib.suppress(OSError):
            os.rmdir(top.parent)  # rustchat-test-hosts/, once the last host is gone


class Cluster:
    """The test hosts of this machine (one cluster at a time: one bridge, one subnet)."""

    def __init__(self) -> None:
        self.state = State()

    # -- network ------------------------------------------------------------------------------

    def _network_up(self) -> None:
        if self.state["network"]:
            return
        if run(["ip", "link", "show", BRIDGE], check=False, quiet=True).returncode == 0:
            raise HostsError(f"bridge {BRIDGE} already exists but is not in {self.state.path}; "
                             f"is another cluster running? (python -m tests.deploy.hosts down)")
        mtu = _mtu()
        self.state["network"] = {"bridge": BRIDGE, "nft_table": NFT_TABLE, "mtu": mtu}
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "link", "set", BRIDGE, "mtu", str(mtu)])
        run(["ip", "addr", "add", f"{CONTROLLER}/24", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])
        # The hosts reach the package mirror through the machine: forward and masquerade their
        # subnet, in a table of our own that `down` deletes whole.
        run(["nft", "-f", "-"], input=f"""
table ip {NFT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {NETWORK}.0/24 oifname != "{BRIDGE}" masquerade
    }}
}}
""")
        forwarding.enable()
        # systemd-nspawn talks to the system bus even with --register=no.
        pid = system_bus.start()
        if pid:
            self.state["dbus_pid"] = pid

    # -- hosts --------------------------------------------------------------------------------

    def hosts(self) -> list[Host]:
        return [Host(n, h["address"], h["group"]) for n, h in self.state.hosts.items()]

    def _create_host(self, host: Host, base: Path, key: Path) -> None:
        self.state.set_host(host.name, address=host.address, group=host.group)
        mtu = self.state["network"]["mtu"]
        # Root file system: an overlay over the base image (a copy where overlayfs is missing).
        for sub in ("upper", "work", "root"):
            (host.dir / sub).mkdir(parents=True, exist_ok=True)
        overlay = "overlay" in Path("/proc/filesystems").read_text()
        # Packages downloaded by earlier runs, hard-linked into the host's apt archive (in the
        # overlay's upper layer: same file system): apt finds them there and skips the download.
        archives = (host.dir / "upper" if overlay else host.root) / "var/cache/apt/archives"
        archives.mkdir(parents=True, exist_ok=True)
        for deb in APT_CACHE.glob("*.deb") if APT_CACHE.exists() else ():
            with contextlib.suppress(OSError):
                os.link(deb, archives / deb.name)
        if overlay:
            run(["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={base},upperdir={host.dir / 'upper'},workdir={host.dir / 'work'}", str(host.root)])
            self.state.set_host(host.name, mounted=str(host.root))
        else:
            run(["cp", "-a", f"{base}/.", str(host.root)])
        root = host.root
        (root / "etc/hostname").write_text(host.name + "\n")
        hosts_file = root / "etc/hosts"
        hosts_file.write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{host.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        run(["ssh-keygen", "-A", "-f", str(root)])
        # Remounting the root file system is the container manager's business; in a container this
        # unit only fails (sometimes), which would leave the host "degraded" for no reason.
        mask = root / "etc/systemd/system/systemd-remount-fs.service"
        if not mask.is_symlink():
            mask.symlink_to("/dev/null")
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(Path(str(key) + ".pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        # Network namespace on the bridge.
        self.state.set_host(host.name, netns=host.netns, veth=host.veth)
        run(["ip", "netns", "add", host.netns])
        run(["ip", "link", "add", host.veth, "mtu", str(mtu), "type", "veth", "peer", "name", "eth0",
             "mtu", str(mtu), "netns", host.netns])
        run(["ip", "link", "set", host.veth, "master", BRIDGE, "up"])
        ns = ["ip", "netns", "exec", host.netns]
        run([*ns, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0"])
        run([*ns, "ip", "link", "set", "eth0", "up"])
        run([*ns, "ip", "link", "set", "lo", "up"])
        run([*ns, "ip", "route", "add", "default", "via", CONTROLLER])

    def _boot(self, host: Host) -> None:
        console = open(host.dir / "console.log", "ab")
        cgroups = _cgroup_dirs(host.name)
        self.state.set_host(host.name, cgroups=[str(d) for d in cgroups])
        for d in cgroups:
            d.mkdir(parents=True, exist_ok=True)

        def own_cgroup() -> None:  # in the child, before systemd-nspawn starts
            for d in cgroups:
                (d / "cgroup.procs").write_text(str(os.getpid()))
        proc = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "-D", str(host.root), "-b", "--register=no", "--keep-unit",
             "--console=pipe", f"--network-namespace-path=/run/netns/{host.netns}", "-M", host.name,
             # The firewall role needs nftables inside the host's own network namespace. No
             # CAP_SYS_TIME: time sync must not set the machine's clock.
             "--capability=CAP_NET_ADMIN"],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=own_cgroup)  # noqa: PLW1509
        console.close()
        self.state.set_host(host.name, pid=proc.pid, booted=time.time())

    def ssh_argv(self, host: Host | str, *command: str) -> list[str]:
        address = host.address if isinstance(host, Host) else host
        return ["ssh", "-i", str(SSH_KEY), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=3",
                f"root@{address}", *command]

    def ssh(self, host: Host | str, command: str, *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return run(self.ssh_argv(host, command), check=check, quiet=True, timeout=timeout)

    def _wait_ready(self, hosts: list[Host], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        pending = list(hosts)
        while pending:
            for host in list(pending):
                pid = self.state.hosts[host.name].get("pid")
                if pid and not _alive(pid, host):
                    raise HostsError(f"{host.name}'s container exited; see {host.dir / 'console.log'}")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc = self.ssh(host, "systemctl is-system-running --wait", check=False, timeout=30)
                    if proc.stdout.strip() in ("running", "degraded"):
                        if proc.stdout.strip() == "degraded":
                            failed = self.ssh(host, "systemctl --failed --no-legend --plain", check=False).stdout
                            log(f"{host.name} is up, degraded: {failed.strip()}")
                        pending.remove(host)
            if pending and time.monotonic() > deadline:
                raise HostsError(f"hosts not up within {timeout:.0f} s: {', '.join(h.name for h in pending)}")
            if pending:
                time.sleep(0.5)

    def up(self, hosts: dict[str, tuple[int, str]] | None = None, owner: str = "make cluster") -> list[Host]:
        reason = unavailable_reason()
        if reason:
            raise HostsError(f"this machine cannot run the test hosts: {reason}")
        if self.state.hosts:
            raise HostsError(f"a cluster is already up ({', '.join(self.state.hosts)}); "
                             f"remove it first: python -m tests.deploy.hosts down")
        started = time.monotonic()
        base, key = ensure_base_image(), ensure_ssh_key()
        self.state["created"] = time.time()
        self.state["owner"] = owner
        self._network_up()
        wanted = [Host(name, f"{NETWORK}.{octet}", group) for name, (octet, group) in (hosts or DEFAULT_HOSTS).items()]
        for host in wanted:
            self._create_host(host, base, key)
        for host in wanted:
            self._boot(host)
        self._wait_ready(wanted)
        self.write_inventory()
        log(f"{len(wanted)} hosts up in {time.monotonic() - started:.0f} s: "
            + ", ".join(f"{h.name} {h.address}" for h in wanted))
        return wanted

    def add(self, name: str, group: str = "app", octet: int | None = None) -> Host:
        if name in self.state.hosts:
            raise HostsError(f"{name} exists already")
        used = {int(h["address"].rsplit(".", 1)[1]) for h in self.state.hosts.values()}
        if octet is None:
            match = re.search(r"(\d+)$", name)
            octet = 40 + int(match.group(1)) if match and group == "app" else max(used) + 1
        if octet in used:
            raise HostsError(f"{NETWORK}.{octet} is taken")
        host = Host(name, f"{NETWORK}.{octet}", group)
        self._create_host(host, ensure_base_image(), ensure_ssh_key())
        self._boot(host)
        self._wait_ready([host])
        self.write_inventory()
        return host

    # -- inventory ----------------------------------------------------------------------------

    @property
    def inventory_dir(self) -> Path:
        return STATE_DIR / "inventory"

    @property
    def inventory(self) -> Path:
        return self.inventory_dir / "hosts.yml"

    def write_inventory(self) -> Path:
        """An ordinary Ansible inventory (YAML is JSON) with the groups the playbook expects."""
        groups: dict[str, dict] = {g: {"hosts": {}} for g in ("lb", "postgres", "redis", "app")}
        for host in self.hosts():
            groups.setdefault(host.group, {"hosts": {}})["hosts"][host.name] = {"ansible_host": host.address, "private_address": host.address}
        inventory = {"all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(SSH_KEY),
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
                "ansible_python_interpreter": "/usr/bin/python3",
            },
            "children": groups,
        }}
        (self.inventory_dir / "group_vars").mkdir(parents=True, exist_ok=True)
        self.inventory.write_text(json.dumps(inventory, indent=2) + "\n")
        (self.inventory_dir / "group_vars" / "all.yml").write_text(json.dumps(GROUP_VARS, indent=2) + "\n")
        return self.inventory

    # -- Ansible ------------------------------------------------------------------------------

    @staticmethod
    def snapshot_source(dest: Path) -> Path:
        """Copy what the wheel is built from (pyproject.toml, README.md, app/) to `dest`.

        Deploying a snapshot (-e rustchat_source_dir=DEST) pins the code for a whole test run even
        while the checkout is being edited, and lets a test change it for a rolling update.
        """
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("pyproject.toml", "README.md", "LICENSE", "app"):
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, dest / name, ignore=ignore, dirs_exist_ok=True)
            elif src.exists():
                shutil.copy2(src, dest / name)
        return dest

    def ansible_env(self) -> dict[str, str]:
        bindir = str(Path(sys.executable).parent)
        return {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
                "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_HOST_KEY_CHECKING": "False",
                "ANSIBLE_LOCAL_TEMP": str(STATE_DIR / "ansible-tmp"), "PYTHONUNBUFFERED": "1"}

    def playbook(self, playbook: str = "site.yml", *args: str, log_name: str | None = None) -> PlaybookRun:
        """Run a playbook from ansible/ against the cluster; output goes to stderr and a log file."""
        log_dir = Path(os.environ.get("RUSTCHAT_TEST_HOSTS_LOG_DIR", STATE_DIR / "logs"))
        log_path = log_dir / (log_name or f"{Path(playbook).stem}-{int(time.time())}.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.inventory), playbook, *args]
        log(f"{' '.join(argv[1:])}  (log: {log_path})")
        started = time.monotonic()
        with open(log_path, "w", buffering=1) as out:  # line-buffered: tail -f works
            proc = subprocess.Popen(argv, cwd=ANSIBLE_DIR, env=self.ansible_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(f"{time.monotonic() - started:7.1f} {line}" if line.startswith(("TASK", "RUNNING", "PLAY")) else line)
                if os.environ.get("RUSTCHAT_TEST_HOSTS_QUIET") != "1":
                    sys.stderr.write(line)
            rc = proc.wait()
        result = PlaybookRun(rc, log_path.read_text(), time.monotonic() - started, log_path)
        log(f"{playbook} finished with {rc} in {result.seconds:.0f} s")
        return result

    def url(self) -> str:
        lb = next(h for h in self.hosts() if h.group == "lb")
        return f"https://{lb.address}/"

    # -- tear-down ----------------------------------------------------------------------------

    def down(self) -> None:
        """Remove everything `up` and `add` created; safe to run at any point, and twice."""
        self._harvest_packages()
        hosts = self.hosts()
        for host in hosts:
            pid = self.state.hosts[host.name].get("pid")
            if pid and _alive(pid, host):
                os.kill(pid, signal.SIGTERM)  # nspawn halts the container cleanly on SIGTERM
        for host in hosts:
            pid = self.state.hosts[host.name].get("pid")
            if pid:
                _wait_gone(pid, host, 30)
            self.state.set_host(host.name, pid=None)
        for host in hosts:
            info = self.state.hosts[host.name]
            if info.get("mounted"):
                if run(["umount", info["mounted"]], check=False, quiet=True).returncode != 0:
                    run(["umount", "-l", info["mounted"]], check=False)
                self.state.set_host(host.name, mounted=None)
            _remove_cgroups([Path(d) for d in info.get("cgroups") or ()])
            if info.get("netns"):
                run(["ip", "netns", "del", info["netns"]], check=False, quiet=True)
            if info.get("veth"):
                run(["ip", "link", "del", info["veth"]], check=False, quiet=True)
            shutil.rmtree(host.dir, ignore_errors=True)
            del self.state.hosts[host.name]
            self.state.save()
        network = self.state["network"]
        if network:
            run(["ip", "link", "del", network["bridge"]], check=False, quiet=True)
            run(["nft", "delete", "table", "ip", network["nft_table"]], check=False, quiet=True)
            log(f"ip_forward: {forwarding.release((network['bridge'],))}")
            self.state["network"] = None
        pid = self.state["dbus_pid"]
        if pid:
            system_bus.stop(pid)
            self.state["dbus_pid"] = None
        shutil.rmtree(STATE_DIR, ignore_errors=True)

    def _harvest_packages(self) -> None:
        """Keep the packages the hosts downloaded for the next run (hard links, no copies)."""
        APT_CACHE.mkdir(parents=True, exist_ok=True)
        for host in self.hosts():
            upper = host.dir / "upper" if self.state.hosts[host.name].get("mounted") else host.root
            for deb in (upper / "var/cache/apt/archives").glob("*.deb"):
                target = APT_CACHE / deb.name
                if not target.exists():
                    with contextlib.suppress(OSError):
                        os.link(deb, target)

    def status(self) -> str:
        lines = []
        for host in self.hosts():
            pid = self.state.hosts[host.name].get("pid")
            lines.append(f"{host.name:8} {host.group:9} {host.address:15} pid {pid} "
                         f"{'running' if pid and _alive(pid, host) else 'stopped'}")
        return "\n".join(lines) or "no cluster"


@dataclass
class PlaybookRun:
    rc: int
    output: str
    seconds: float
    log: Path

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP: {host: {ok, changed, unreachable, failed, skipped, rescued, ignored}}."""
        out = {}
        for line in self.output.split("PLAY RECAP", 1)[-1].splitlines():
            match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
            if match:
                out[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
        return out

    def changed_tasks(self) -> list[str]:
        """'TASK [...] on host' for every task that reported a change."""
        out, task = [], "?"
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                task = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed: ["):
                out.append(f"{task} on {line.split('[', 1)[1].split(']', 1)[0]}")
        return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int, host: Host) -> bool:
    """Whether `pid` is still the systemd-nspawn this harness started for `host` (not a reused PID)."""
    cmd = _cmdline(pid)
    return "systemd-nspawn" in cmd and str(host.root) in cmd


def _wait_gone(pid: int, host: Host, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid, host):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            log(f"{host.name} did not halt within {timeout:.0f} s; killing PID {pid}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            timeout = 10
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.deploy.hosts", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create the hosts and deploy site.yml")
    up.add_argument("--no-deploy", action="store_true", help="only create the hosts and the inventory")
    deploy = sub.add_parser("deploy", help="run a playbook against the cluster")
    deploy.add_argument("playbook", nargs="?", default="site.yml")
    deploy.add_argument("ansible_args", nargs=argparse.REMAINDER)
    add = sub.add_parser("add", help="add a host (default group app) and update the inventory")
    add.add_argument("name")
    add.add_argument("--group", default="app", choices=("app", "lb"))
    sub.add_parser("down", help="remove every trace of the cluster")
    sub.add_parser("status", help="list the hosts")
    args = parser.parse_args(argv)
    cluster = Cluster()
    try:
        if args.command == "up":
            try:
                cluster.up()
            except BaseException:
                log("up failed; removing what was created")
                cluster.down()
                raise
            if not args.no_deploy:
                result = cluster.playbook("site.yml")
                if result.rc != 0:
                    log(f"site.yml failed (log: {result.log}); the hosts stay up for inspection: "
                        f"ssh -i {SSH_KEY} root@ADDRESS; remove them with make cluster-down")
                    return result.rc
            print(f"cluster URL: {cluster.url()}  (self-signed certificate)")
            print(f"inventory:   {cluster.inventory}")
            print(f"admin:       admin / {cluster.inventory_dir / 'credentials' / 'rustchat_admin_password'}")
            print(f"ssh:         ssh -i {SSH_KEY} root@{NETWORK}.41")
            for host in cluster.hosts():
                if host.group == "monitoring":
                    print(f"prometheus:  http://{host.address}:9090/targets")
        elif args.command == "deploy":
            return cluster.playbook(args.playbook, *args.ansible_args).rc
        elif args.command == "add":
            host = cluster.add(args.name, args.group)
            print(f"{host.name} {host.address} added to {cluster.inventory}; run: python -m tests.deploy.hosts deploy")
        elif args.command == "down":
            cluster.down()
            log("cluster removed")
        elif args.command == "status":
            print(cluster.status())
    except HostsError as exc:
        log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
