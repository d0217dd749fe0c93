"""A Debian 12 Vagrant box for the libvirt provider, built on this machine from Debian packages.

    python -m tests.vagrant.box build   # build once (cached), add it to Vagrant, print the settings
    python -m tests.vagrant.box env     # the same settings as shell exports (eval "$(...)")

Where public boxes cannot be downloaded (these machines reach only package registries), the
project's Vagrantfile runs on this box instead of debian/bookworm64. It is a debootstrap of
bookworm with a kernel, systemd, sshd, sudo, ifupdown and python3 (what Vagrant and Ansible need
on a guest), a `vagrant` user with passwordless sudo and a generated SSH key, on one ext4 file
system without a partition table or bootloader: libvirt boots the kernel and initrd copied out of
it directly (RUSTCHAT_VAGRANT_KERNEL / _INITRD / _CMDLINE). Everything is kept under CACHE_DIR
and rebuilt only when BOX_VERSION changes. See ../shared/notes/vagrant-here.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.hosts import locked

CACHE_DIR = Path(os.environ.get("RUSTCHAT_VAGRANT_CACHE", "/var/cache/rustchat-vagrant"))
BOX_VERSION = "3"  # bump to rebuild the cached box after changing how it is made
BOX_NAME = "rustchat/bookworm-local"
BOX_DIR = CACHE_DIR / f"box-v{BOX_VERSION}"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
DISK_GB = 6
CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
# What Vagrant (sshd, sudo, ifupdown + dhclient for its network configuration, rsync) and Ansible
# (python3, python3-apt for the apt module) need on a guest, and a kernel with its initramfs.
# The base packages every host gets from role common (and python3-venv, openssl) come with the
# box too, as with a cloud image: under emulation each install costs minutes, and the roles' own
# services (PostgreSQL, Redis, nginx) are still installed by the playbook on their machines only.
PACKAGES = (
    "linux-image-amd64", "initramfs-tools", "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo",
    "ifupdown", "isc-dhcp-client", "iproute2", "netbase", "rsync", "procps", "python3", "python3-apt",
    "ca-certificates", "curl", "nftables", "chrony", "python3-venv", "openssl",
)
TOOLS = {"debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs", "qemu-img": "qemu-utils",
         "ssh-keygen": "openssh-client", "vagrant": "vagrant"}


class BoxError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[vagrant-box] {msg}", file=sys.stderr, flush=True)


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise BoxError(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


@dataclass(frozen=True)
class Box:
    """The built box and what the Vagrantfile needs to boot it."""

    file: Path
    kernel: Path
    initrd: Path
    ssh_key: Path
    name: str = BOX_NAME

    def vagrant_env(self) -> dict[str, str]:
        """The Vagrantfile's settings for this box (docs/vagrant.md lists them all)."""
        return {
            "RUSTCHAT_VAGRANT_BOX": self.name,
            "RUSTCHAT_VAGRANT_KERNEL": str(self.kernel),
            "RUSTCHAT_VAGRANT_INITRD": str(self.initrd),
            "RUSTCHAT_VAGRANT_CMDLINE": CMDLINE,
            "RUSTCHAT_VAGRANT_SSH_KEY": str(self.ssh_key),
            # KVM does not boot a stock kernel on these (nested) machines; QEMU's emulation does.
            "RUSTCHAT_VAGRANT_LIBVIRT_DRIVER": "qemu",
        }


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _configure_rootfs(root: Path, public_key: str) -> None:
    """Turn the debootstrap tree into a guest Vagrant can log in to and configure."""
    run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", "vagrant"])
    _write(root / "etc/sudoers.d/vagrant", "vagrant ALL=(ALL) NOPASSWD: ALL\n", 0o440)
    ssh_dir = root / "home/vagrant/.ssh"
    _write(ssh_dir / "authorized_keys", public_key, 0o600)
    ssh_dir.chmod(0o700)
    run(["chroot", str(root), "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"])
    _write(root / "etc/fstab", "/dev/vda / ext4 defaults 0 1\n")
    # eth0 is the provider's management network (DHCP); Vagrant writes the private network's
    # static address into this file itself.
    _write(root / "etc/network/interfaces",
           "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
           "allow-hotplug eth0\niface eth0 inet dhcp\n")
    _write(root / "etc/hostname", "bookworm\n")
    _write(root / "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tbookworm\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    # Per-machine identity is made at each machine's first boot: machine id (an empty file makes
    # systemd generate one) and SSH host keys (so no two machines share one).
    _write(root / "etc/machine-id", "", 0o444)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _write(root / "etc/systemd/system/ssh.service.d/host-keys.conf",
           "[Service]\n# Host keys are generated at first boot (the box ships none).\n"
           "ExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n")
    # No reverse lookups of the controller on every login: a first SSH login is then seconds faster.
    _write(root / "etc/ssh/sshd_config.d/vagrant.conf", "UseDNS no\n")
    # A throwaway test box: dpkg need not fsync every file it unpacks (slow on an emulated disk).
    _write(root / "etc/dpkg/dpkg.cfg.d/rustchat-unsafe-io", "force-unsafe-io\n")
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def _build(ssh_pub: str) -> None:
    tmp = CACHE_DIR / f".box-build-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    root = tmp / "rootfs"
    started = time.monotonic()
    log(f"debootstrap {SUITE} into {root} (once; a few minutes)")
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR])
        _configure_rootfs(root, ssh_pub)
        # The kernel and initrd are booted directly by libvirt: copy them out of the tree.
        kernel = max((root / "boot").glob("vmlinuz-*"))
        initrd = max((root / "boot").glob("initrd.img-*"))
        shutil.copy2(kernel, tmp / "vmlinuz")
        shutil.copy2(initrd, tmp / "initrd.img")
        raw = tmp / "box.raw"
        with open(raw, "wb") as fh:
            fh.truncate(DISK_GB * 1024**3)
        log("making the disk image")
        run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(raw)])
        run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(tmp / "box.img")])
        raw.unlink()
        shutil.rmtree(root)
        _write(tmp / "metadata.json", json.dumps({"provider": "libvirt", "format": "qcow2", "virtual_size": DISK_GB}) + "\n")
        _write(tmp / "Vagrantfile", "# Built by tests/vagrant/box.py; the project's Vagrantfile sets the rest.\n"
                                    "Vagrant.configure('2') { |config| }\n")
        # Uncompressed: `vagrant box add` unpacks it once, and gzip would only cost time here.
        run(["tar", "-C", str(tmp), "-cf", str(tmp / "rustchat-bookworm.box"), "metadata.json", "Vagrantfile", "box.img"])
        (tmp / "box.img").unlink()
        _write(tmp / ".complete", json.dumps({"suite": SUITE, "packages": PACKAGES, "built": time.time()}) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(BOX_DIR, ignore_errors=True)
    tmp.rename(BOX_DIR)
    log(f"box built in {time.monotonic() - started:.0f} s: {BOX_DIR}")


def missing_tools() -> list[str]:
    return sorted({pkg for tool, pkg in TOOLS.items() if not (shutil.which(tool) or Path("/usr/sbin", tool).exists())})


def ensure_box() -> Box:
    """The cached box, built first if it is not there (or was made by another BOX_VERSION)."""
    with locked(CACHE_DIR / ".box.lock"):
        key = CACHE_DIR / "ssh" / "id_ed25519"
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rustchat-vagrant", "-f", str(key)])
        if not (BOX_DIR / ".complete").exists():
            _build(key.with_suffix(".pub").read_text())
        for old in CACHE_DIR.glob("box-v*"):
            if old != BOX_DIR:
                shutil.rmtree(old, ignore_errors=True)
        return Box(BOX_DIR / "rustchat-bookworm.box", BOX_DIR / "vmlinuz", BOX_DIR / "initrd.img", key)


def add_to_vagrant(box: Box, env: dict[str, str] | None = None) -> None:
    """`vagrant box add` the box unless this VAGRANT_HOME has this very build of it."""
    env = env or dict(os.environ)
    home = Path(env.get("VAGRANT_HOME", Path.home() / ".vagrant.d"))
    stamp = home / "rustchat-box-added"
    built = (BOX_DIR / ".complete").read_text()
    listed = run(["vagrant", "box", "list", "--machine-readable"], env=env).stdout
    if stamp.exists() and stamp.read_text() == built and f",box-name,{box.name}" in listed:
        return
    log(f"vagrant box add --name {box.name} {box.file}")
    run(["vagrant", "box", "add", "--force", "--name", box.name, str(box.file)], env=env)
    home.mkdir(parents=True, exist_ok=True)
    stamp.write_text(built)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vagrant.box", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("build", "env"))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        log("needs root (debootstrap, chroot)")
        return 1
    missing = missing_tools()
    if missing:
        log(f"missing tools; install them with: apt-get install {' '.join(missing)}  (or scripts/bootstrap.sh --test)")
        return 1
    try:
        box = ensure_box()
        add_to_vagrant(box)
    except BoxError as exc:
        log(str(exc))
        return 1
    for name, value in box.vagrant_env().items():
        print(f"export {name}={shlex.quote(value)}" if args.command == "env" else f"{name}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
