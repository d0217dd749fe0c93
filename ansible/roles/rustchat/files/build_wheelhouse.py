#!/usr/bin/env python3
"""Build the rustchat wheel from a checkout and fetch its dependencies for the app nodes.

    build_wheelhouse.py --source CHECKOUT --out DIR --python-version 3.11 --arch x86_64 --glibc 2.36

Runs on the Ansible controller. Writes DIR/wheels/ (the rustchat wheel plus every dependency as a
binary wheel for the app nodes' Python, architecture and C library, so the nodes install offline),
the same as one archive DIR/wheelhouse.tar (one file to copy), and prints JSON:
{"wheel": name, "wheels": [names], "archive": path, "fingerprint": sha256 over all of them}.

Reproducible: the checkout is copied without caches and build leftovers and built with a fixed
SOURCE_DATE_EPOCH, so the same source gives the same bytes, the copy to the nodes reports no
change, and nothing is reinstalled or restarted. Dependencies are downloaded again only when the
wheel's requirements or the target change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip file can record
COPY = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE", "app")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.egg-info", ".*")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path, mode and content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}\0{path.stat().st_mode & 0o777:o}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_wheel(source: Path, wheels: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="rustchat-build-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in COPY:
            path = source / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=IGNORE)
            elif path.exists():
                shutil.copy2(path, src / name)
        # Unchanged source: the wheel built from it last time is the same wheel (see above).
        digest = tree_digest(src)
        stamp = wheels / ".source"
        existing = sorted(wheels.glob("rustchat-*.whl"))
        if len(existing) == 1 and stamp.exists() and stamp.read_text().strip() == digest:
            return existing[0]
        dist = Path(tmp) / "dist"
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(src)],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"building the wheel failed:\n{proc.stdout}\n{proc.stderr}")
        (built,) = dist.glob("rustchat-*.whl")
        target = wheels / built.name
        if not target.exists() or sha256(target) != sha256(built):
            for old in wheels.glob("rustchat-*.whl"):
                old.unlink()
            shutil.move(str(built), target)
        stamp.write_text(digest + "\n")
        return target


def requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(name).decode()
    reqs = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    return sorted(r for r in reqs if "extra ==" not in r)


def platforms(arch: str, glibc: str) -> list[str]:
    """manylinux tags a C library of this version accepts, newest first."""
    major, minor = (int(x) for x in glibc.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{arch}" for m, name in legacy.items() if major == 2 and minor >= m]
    return tags


def fetch_dependencies(wheel: Path, wheels: Path, python_version: str, arch: str, glibc: str) -> None:
    reqs = requirements(wheel)
    key = hashlib.sha256(json.dumps([reqs, python_version, arch, glibc]).encode()).hexdigest()
    stamp = wheels / ".dependencies"
    if stamp.exists() and stamp.read_text().strip() == key:
        return
    for old in wheels.glob("*.whl"):
        if old != wheel:
            old.unlink()
    abi = "cp" + python_version.replace(".", "")
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
            "--abi", abi, "--abi", "abi3", "--abi", "none", "--dest", str(wheels)]
    for tag in [*platforms(arch, glibc), "any"]:
        argv += ["--platform", tag]
    proc = subprocess.run([*argv, *reqs], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"downloading the dependencies for Python {python_version} on {arch} (glibc {glibc}) failed:\n"
                 f"{proc.stdout}\n{proc.stderr}")
    stamp.write_text(key + "\n")


def write_archive(wheels: Path, names: list[str], archive: Path) -> None:
    """A tar of the wheels with fixed metadata: the same wheels give the same bytes."""
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tar.gettarinfo(str(wheels / name), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = int(SOURCE_DATE_EPOCH), 0, 0, "root", "root", 0o644
            with open(wheels / name, "rb") as fh:
                tar.addfile(info, fh)
    if archive.exists() and sha256(archive) == sha256(tmp):
        tmp.unlink()
    else:
        tmp.replace(archive)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--python-version", required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--glibc", required=True)
    args = parser.parse_args()
    wheels = args.out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(args.source.resolve(), wheels)
    fetch_dependencies(wheel, wheels, args.python_version, args.arch, args.glibc)
    names = sorted(p.name for p in wheels.glob("*.whl"))
    fingerprint = hashlib.sha256("".join(f"{n} {sha256(wheels / n)}\n" for n in names).encode()).hexdigest()
    archive = args.out / "wheelhouse.tar"
    write_archive(wheels, names, archive)
    print(json.dumps({"wheel": wheel.name, "wheels": names, "archive": str(archive), "fingerprint": fingerprint}))


if __name__ == "__main__":
    main()
