#!/usr/bin/env bash
# run-tests.sh - install what is missing, then run every test layer: unit, simulation
# and interop against the Linux kernel (root: the interop tests build private network
# namespaces with netns-setup.sh --prefix and remove them). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" -eq 0 ] || { echo "run-tests.sh: must run as root (try: sudo ./run-tests.sh)" >&2; exit 1; }
./tools/install.sh
exec .venv/bin/python -m pytest -q "$@"
