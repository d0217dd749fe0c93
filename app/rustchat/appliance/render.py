"""Render every host's configuration from a topology.

    python -m rustchat.appliance.render --topology topo.json --out DIR

writes DIR/<host>/<absolute path on that host> for every host, with the file modes the host
needs (the env file, holding both passwords, is 0600). See docs/sizing.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import jinja2

from rustchat.appliance import topology as topo
from rustchat.appliance.filters import FILTERS
from rustchat.appliance.sizing import SizingError

# app/rustchat/appliance/render.py -> the repository's top-level templates/
TEMPLATES_DIR = Path(__file__).resolve().parents[3] / "templates"


@dataclass(frozen=True)
class FileSpec:
    group: str
    template: str
    dest: str  # str.format()ted with the host's variables
    mode: int
    owner: str  # for the playbook; rendering does not chown


FILES: tuple[FileSpec, ...] = (
    FileSpec("lb", "nginx/rustchat.conf.j2", "/etc/nginx/conf.d/rustchat.conf", 0o644, "root:root"),
    FileSpec("postgres", "postgresql/rustchat.conf.j2",
             "/etc/postgresql/{postgresql_version}/main/conf.d/rustchat.conf", 0o644, "postgres:postgres"),
    FileSpec("postgres", "postgresql/pg_hba.conf.j2",
             "/etc/postgresql/{postgresql_version}/main/pg_hba.conf", 0o640, "postgres:postgres"),
    FileSpec("redis", "redis/redis.conf.j2", "/etc/redis/redis.conf", 0o640, "redis:redis"),
    FileSpec("app", "rustchat/gunicorn.conf.py.j2", "/etc/rustchat/gunicorn.conf.py", 0o644, "root:root"),
    FileSpec("app", "rustchat/rustchat.env.j2", "/etc/rustchat/rustchat.env", 0o600, "root:root"),
    FileSpec("app", "rustchat/rustchat.service.j2", "/etc/systemd/system/rustchat.service", 0o644, "root:root"),
)


class RenderedFile(NamedTuple):
    content: str
    mode: int


@lru_cache(maxsize=4)
def environment(templates_dir: Path = TEMPLATES_DIR) -> jinja2.Environment:
    """The Jinja environment; settings match Ansible's template module (trim_blocks, no lstrip)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # config files, not HTML  # noqa: S701
    )
    env.filters.update(FILTERS)
    # Also callable as functions for ad-hoc use; the templates themselves use only the filter
    # form because that is all an Ansible filter plugin can provide.
    env.globals.update(FILTERS)
    return env


def _render(inventory: topo.Inventory, host: str, templates_dir: Path) -> dict[str, RenderedFile]:
    env = environment(templates_dir)
    context = inventory.context(host)
    out: dict[str, RenderedFile] = {}
    for spec in FILES:
        if host in inventory.groups[spec.group]:
            dest = spec.dest.format(**context)
            out[dest] = RenderedFile(env.get_template(spec.template).render(context), spec.mode)
    return out


def render_host(topology: Mapping[str, Any], host: str, templates_dir: Path = TEMPLATES_DIR) -> dict[str, RenderedFile]:
    """{absolute path on `host`: (content, mode)} for every file that host needs."""
    inventory = topo.load(topology)
    if host not in inventory.hostvars:
        raise topo.TopologyError(f"host {host!r} is not in the topology")
    return _render(inventory, host, templates_dir)


def render_all(topology: Mapping[str, Any], templates_dir: Path = TEMPLATES_DIR) -> dict[str, dict[str, RenderedFile]]:
    """{host: {path: (content, mode)}} for every host in the topology."""
    inventory = topo.load(topology)
    return {host: _render(inventory, host, templates_dir) for host in inventory.hostvars}


def write_tree(rendered: Mapping[str, Mapping[str, RenderedFile]], out: Path) -> list[Path]:
    """Write OUT/<host>/<path>; files are created with their final mode, never briefly wider."""
    written = []
    for host, files in rendered.items():
        for dest, (content, mode) in files.items():
            path = out / host / dest.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                path.unlink()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(content)
            os.chmod(path, mode)  # the umask may have narrowed it
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rustchat.appliance.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--topology", required=True, type=Path, help="topology JSON file")
    parser.add_argument("--out", required=True, type=Path, help="output directory (one subdirectory per host)")
    parser.add_argument("--templates", type=Path, default=TEMPLATES_DIR, help="templates directory")
    args = parser.parse_args(argv)
    try:
        topology = json.loads(args.topology.read_text())
        rendered = render_all(topology, args.templates.resolve())
    except (OSError, json.JSONDecodeError, topo.TopologyError, SizingError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    for path in write_tree(rendered, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
