"""The machine's system D-Bus, for test harnesses on a machine that runs no systemd.

systemd-nspawn (the container test hosts) talks to the system bus even with --register=no, and
libvirtd (the Vagrant cluster) joins it when one is there and exits when it goes away. So a bus
the harnesses start must outlive every one of them that runs at the same time: tests/phases.py
starts one for the whole run, and a harness that started its own stops it when it is done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

SOCKET = "/run/dbus/system_bus_socket"


def is_up() -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
        s.connect(SOCKET)
        return True
    return False


def start() -> int | None:
    """Start a system bus if none answers; its PID, or None when one was already up."""
    if is_up():
        return None
    Path("/run/dbus").mkdir(parents=True, exist_ok=True)
    # A pid file without a bus behind it is left over from a bus that died.
    Path("/run/dbus/pid").unlink(missing_ok=True)
    out = subprocess.run(["dbus-daemon", "--system", "--fork", "--print-pid"], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[0])


def stop(pid: int) -> None:
    """Stop the bus `start` started (by its PID, and only if that PID is still a dbus-daemon)."""
    with contextlib.suppress(OSError):
        if b"dbus-daemon" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)
