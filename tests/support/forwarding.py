"""IPv4 forwarding, shared by the test networks that need it at the same time.

The container test hosts (tests/deploy/hosts.py, bridge rchosts0) and the Vagrant cluster's
libvirt NAT network (virbr*) both reach the package mirror through this machine, so both need
net.ipv4.ip_forward on, and tests/phases.py runs them side by side. The first to need it records
the machine's own setting in ORIGINAL; each releases it when done, and the last one out (no other
test network still up) puts the machine's setting back. (Seen before this rule: the test hosts'
tear-down switched forwarding off under the running Vagrant guests, whose next package download
failed.)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
NET = Path("/sys/class/net")
ORIGINAL = Path(os.environ.get("RUSTCHAT_TEST_IP_FORWARD_STATE", "/run/rustchat-test-ip-forward"))


def current() -> str:
    return IP_FORWARD.read_text().strip()


def record_original() -> None:
    """Remember the machine's setting, unless another test network already did (it may be on now)."""
    with contextlib.suppress(FileExistsError), open(ORIGINAL, "x") as fh:
        fh.write(current() + "\n")


def enable() -> None:
    record_original()
    IP_FORWARD.write_text("1\n")


def other_users(own_interfaces: tuple[str, ...]) -> list[str]:
    """Test networks other than the caller's that are up and forward through this machine."""
    return sorted(p.name for p in NET.iterdir()
                  if p.name.startswith(("rchosts", "virbr")) and p.name not in own_interfaces)


def release(own_interfaces: tuple[str, ...]) -> str:
    """Put the machine's own setting back, unless another test network still needs forwarding."""
    users = other_users(own_interfaces)
    if users:
        return f"left on for {', '.join(users)}"
    try:
        original = ORIGINAL.read_text().strip()
    except FileNotFoundError:
        return f"unchanged ({current()}): no recorded setting"
    IP_FORWARD.write_text(original + "\n")
    ORIGINAL.unlink(missing_ok=True)
    return f"back to {original}"
