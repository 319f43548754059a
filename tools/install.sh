#!/usr/bin/env bash
# tools/install.sh - install what this project needs on a fresh Debian/Ubuntu machine:
# Debian packages (skipped when present), the TUN device node, and .venv with this
# package and its test extras (pytest, hypothesis, ruff, mypy). Idempotent and quick
# when everything is there.
# Used by demo.sh, run-tests.sh and (through run-tests.sh) CI.
set -euo pipefail

cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "==> install: $*"; }
die() { echo "install: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (try: sudo $0)"

# ip/ss/nstat (iproute2), nft, ethtool, modprobe (kmod), sysctl (procps), ping
# (iputils-ping), setpriv (util-linux), tshark (an independent MPTCP decoder), tcpdump
# (the captures `analyze` is tested on), venv.
PKGS=(iproute2 nftables ethtool kmod procps iputils-ping util-linux tshark tcpdump python3-venv)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
    say "apt-get install ${missing[*]}"
    apt-get update -q
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

if [ ! -c /dev/net/tun ]; then
    say "loading tun"
    modprobe tun 2>/dev/null || true
    if [ ! -c /dev/net/tun ]; then
        mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun
    fi
fi
[ -e /proc/sys/net/mptcp/enabled ] || modprobe mptcp 2>/dev/null || true

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $($PY --version 2>&1)"
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import stack, pytun, cryptography, dpkt, matplotlib, pytest, hypothesis" 2>/dev/null \
        || [ ! -x .venv/bin/ruff ] || [ ! -x .venv/bin/mypy ] \
        || [ pyproject.toml -nt .venv/.installed ]; then
    say "pip install -e '.[test]'"
    .venv/bin/python -m pip install -q -e '.[test]' </dev/null
    touch .venv/.installed
fi
