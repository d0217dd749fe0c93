#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (or an existing checkout) to run RustChat:
# Python 3.11 with venv, the project's virtualenv in .venv, and with --test the tools the test
# suite drives (redis-server, promtool). Idempotent: a second run only checks.
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
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.rustchat-installed
extras=""
[ "$want_test" -eq 1 ] && extras="[test]"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! grep -qx "$extras" "$stamp" 2>/dev/null; then
    .venv/bin/pip install -q -e ".${extras}"
    echo "$extras" > "$stamp"
fi
