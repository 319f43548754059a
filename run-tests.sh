#!/usr/bin/env bash
# run-tests.sh - install what is missing, then run every test layer: unit, simulation
# and interop against the Linux kernel (root: the interop tests build private network
# namespaces with netns-setup.sh --prefix and remove them). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" -eq 0 ] || { echo "run-tests.sh: must run as root (try: sudo ./run-tests.sh)" >&2; exit 1; }
./tools/install.sh
echo "==> run-tests.sh: .venv/bin/python -m pytest -q $*"
rc=0
.venv/bin/python -m pytest -q "$@" || rc=$?
case "$rc" in
    0) echo "==> run-tests.sh: all tests passed" ;;
    5) echo "==> run-tests.sh: FAILED: pytest collected no tests (exit 5)" >&2; exit 1 ;;
    *) echo "==> run-tests.sh: FAILED: pytest exited with status $rc" >&2; exit "$rc" ;;
esac
