"""The appliance's Jinja filters for Ansible: the same functions `rustchat.appliance.render` uses.

Nothing is computed here. The pool sizing, memory settings and quoting live once, in
app/rustchat/appliance/{sizing,filters}.py; this shim only makes this checkout's copy importable
(the controller's Ansible need not have RustChat installed) and re-exports its FilterModule.
"""

from __future__ import annotations

import sys
from pathlib import Path

_APP_DIR = str(Path(__file__).resolve().parents[2] / "app")
if _APP_DIR not in sys.path:
    # First, so that this checkout's sizing wins over any other installed copy of rustchat.
    sys.path.insert(0, _APP_DIR)

from rustchat.appliance.filters import FilterModule  # noqa: E402,F401
