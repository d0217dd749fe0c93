"""The whole test suite as phases that run side by side, with the time each took and the slowest tests.

    .venv/bin/python -m tests.phases                 # everything (scripts/test, .ci/run)
    .venv/bin/python -m tests.phases --fast          # no test hosts, VMs or browser: the everyday loop
    .venv/bin/python -m tests.phases --only hosts    # one phase (vagrant, hosts, local)

Each phase is one pytest process selecting tests by marker, so the phases together select every
collected test exactly once; that is checked before anything runs (a test that no phase selects,
or that two select, stops the run). Why side by side: on its own no phase keeps this machine's
two cores busy for long (guests booting one after another, downloads, restarts, waits for
services); one after the other they took 54 min, side by side about as long as the slowest of
them (docs/testing.md has the figures).

  vagrant  the real Vagrant cluster: libvirt VMs under QEMU emulation, started first (the long pole)
  hosts    systemd-container test hosts: the deploy test, then the Terraform rollout (one bridge,
           so one after the other, in one process)
  local    everything else: unit, integration against real PostgreSQL and Redis, fuzzing, the
           browser tests in Chromium, the static checks of the appliance

Output of every phase streams with its name in front; each phase's full log, JUnit XML and the
heavy tests' own step timings are kept in LOG_DIR. At the end: each phase's wall time and result,
the slowest tests of the run, and the steps inside the heavy tests, so a regression shows in the
CI log. The exit status is non-zero if any phase failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import system_bus

REPO = Path(__file__).resolve().parents[1]
LOG_DIR = Path(os.environ.get("RUSTCHAT_TEST_PHASE_LOG_DIR", "/tmp/rustchat-test-logs/phases"))
# The step timings the heavy tests write (see each test's LOG_DIR).
STEP_TIMINGS = {
    "deploy": Path("/tmp/rustchat-test-logs/deploy/timings.txt"),
    "terraform": Path("/tmp/rustchat-test-logs/terraform/timings.txt"),
    "vagrant": Path("/tmp/rustchat-test-logs/vagrant/timings.txt"),
}
SLOWEST = 15


@dataclass
class Phase:
    name: str
    markers: str
    why: str
    proc: subprocess.Popen[str] | None = None
    started: float = 0.0
    seconds: float = 0.0
    rc: int | None = None
    summary: str = ""
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return LOG_DIR / f"{self.name}.log"

    @property
    def junit(self) -> Path:
        return LOG_DIR / f"{self.name}.xml"


FULL = [
    Phase("vagrant", "vagrant", "libvirt VMs through the Vagrantfile, site.yml, a chat through nginx"),
    Phase("hosts", "deploy", "systemd-container hosts: site.yml, testinfra, scale-out, rolling update; Terraform rollout"),
    Phase("local", "not deploy and not vagrant", "unit, integration, fuzzing, browser, static checks"),
]
FAST = [Phase("local", "not deploy and not vagrant and not browser", "unit, integration, fuzzing, static checks")]


def pytest_argv(phase: Phase, *extra: str) -> list[str]:
    python = sys.executable
    return [python, "-m", "pytest", "-m", phase.markers, "-o", f"cache_dir=.pytest_cache/{phase.name}", *extra]


def collected(markers: str | None) -> set[str]:
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    if markers is not None:
        argv += ["-m", markers]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if proc.returncode not in (0, 5):  # 5: nothing selected
        sys.exit(f"[phases] collecting tests failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return {line for line in proc.stdout.splitlines() if "::" in line}


def check_partition(phases: list[Phase]) -> None:
    """Every collected test in exactly one phase (in a full run)."""
    everything = collected(None)
    seen: dict[str, str] = {}
    for phase in phases:
        for test in collected(phase.markers):
            if test in seen:
                sys.exit(f"[phases] {test} is selected by both {seen[test]} and {phase.name}")
            seen[test] = phase.name
    missing = sorted(everything - set(seen))
    if missing:
        sys.exit(f"[phases] no phase selects {len(missing)} tests: {', '.join(missing[:10])}")
    counts = {p.name: sum(1 for v in seen.values() if v == p.name) for p in phases}
    print(f"[phases] {len(everything)} tests: " + ", ".join(f"{n} {c}" for n, c in counts.items()), flush=True)


def _pump(phase: Phase, lock: threading.Lock) -> None:
    assert phase.proc is not None and phase.proc.stdout is not None
    with open(phase.log, "w", buffering=1) as out:
        for line in phase.proc.stdout:
            out.write(line)
            with lock:
                sys.stdout.write(f"[{phase.name}] {line}")
                sys.stdout.flush()
            if line.startswith("=") and (" passed" in line or " failed" in line or " error" in line
                                         or " skipped" in line or "no tests ran" in line):
                phase.summary = line.strip("= \n")


def start(phase: Phase, extra: list[str], lock: threading.Lock) -> None:
    argv = pytest_argv(phase, "--durations=10", f"--junitxml={phase.junit}", *extra)
    print(f"[phases] start {phase.name}: {shlex.join(argv[1:])}", flush=True)
    phase.started = time.monotonic()
    phase.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, stdin=subprocess.DEVNULL)
    thread = threading.Thread(target=_pump, args=(phase, lock), daemon=True)
    thread.start()
    phase.threads.append(thread)


def wait(phase: Phase) -> None:
    assert phase.proc is not None
    phase.rc = phase.proc.wait()
    for thread in phase.threads:
        thread.join()
    phase.seconds = time.monotonic() - phase.started
    print(f"[phases] {phase.name} finished with {phase.rc} in {phase.seconds:.0f} s", flush=True)


def slowest(phases: list[Phase], n: int = SLOWEST) -> list[tuple[float, str, str]]:
    """(seconds, phase, test id) of the n slowest tests: setup, call and teardown together."""
    out = []
    for phase in phases:
        if not phase.junit.exists():
            continue
        for case in ET.parse(phase.junit).getroot().iter("testcase"):
            path = case.get("classname", "").replace(".", "/")
            out.append((float(case.get("time", 0)), phase.name, f"{path}.py::{case.get('name')}"))
    return sorted(out, reverse=True)[:n]


def report(phases: list[Phase], total: float) -> str:
    lines = ["", "=" * 30 + " test phases (wall time) " + "=" * 30]
    for p in phases:
        state = "ok" if p.rc in (0, 5) else f"FAILED (exit {p.rc})"
        lines.append(f"{p.name:8} {p.seconds:6.0f} s  {state:18} {p.summary}")
    lines.append(f"{'all':8} {total:6.0f} s  (phases side by side; wall time of the whole run)")
    lines.append(f"--- {SLOWEST} slowest tests (setup + call + teardown) ---")
    lines += [f"{secs:7.1f} s  {name:8} {test}" for secs, name, test in slowest(phases)]
    for name, path in STEP_TIMINGS.items():
        if path.exists() and path.stat().st_mtime >= time.time() - total - 5:
            lines.append(f"--- steps of the {name} test ({path}) ---")
            lines += path.read_text().rstrip().splitlines()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.phases", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="only the tests that need no test hosts, VMs or browser")
    parser.add_argument("--only", choices=[p.name for p in FULL], help="run one phase of the full suite")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments, for every phase")
    args = parser.parse_args(argv)
    phases = FAST if args.fast else [p for p in FULL if args.only in (None, p.name)]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    if not args.fast and not args.only:
        check_partition(phases)
    started = time.monotonic()
    lock = threading.Lock()
    # One system bus for every phase (tests/support/system_bus.py): a harness that stopped its own
    # would take libvirtd, which joined it, down with it.
    bus = system_bus.start() if os.geteuid() == 0 and len(phases) > 1 else None
    for phase in phases:  # in order: the longest first
        start(phase, args.pytest_args, lock)
    try:
        running = list(phases)
        while running:  # report each phase as it ends, not in start order
            for phase in [p for p in running if p.proc is not None and p.proc.poll() is not None]:
                wait(phase)
                running.remove(phase)
            time.sleep(0.5)
    except KeyboardInterrupt:
        for phase in phases:
            if phase.proc and phase.proc.poll() is None:
                phase.proc.wait()  # pytest got the same SIGINT and is tearing its hosts down
        raise
    finally:
        if bus:
            system_bus.stop(bus)
    text = report(phases, time.monotonic() - started)
    (LOG_DIR / "summary.txt").write_text(text)
    print(text, flush=True)
    return 0 if all(p.rc in (0, 5) for p in phases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
