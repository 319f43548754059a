#!/usr/bin/env bash
# run-tests.sh - install what is missing, then run every test layer: unit, simulation
# and interop against the Linux kernel (root: the interop tests build private network
# namespaces with netns-setup.sh --prefix and remove them). Before pytest: ruff on stack/,
# tools/ and tests/, and mypy --strict on stack/ (configured in pyproject.toml); either
# failing fails the run. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" -eq 0 ] || { echo "run-tests.sh: must run as root (try: sudo ./run-tests.sh)" >&2; exit 1; }
./tools/install.sh
echo "==> run-tests.sh: .venv/bin/ruff check stack tools tests"
.venv/bin/ruff check stack tools tests \
    || { echo "==> run-tests.sh: FAILED: ruff check stack tools tests" >&2; exit 1; }
echo "==> run-tests.sh: .venv/bin/mypy stack"
.venv/bin/mypy stack \
    || { echo "==> run-tests.sh: FAILED: mypy stack (strict, pyproject.toml)" >&2; exit 1; }
echo "==> run-tests.sh: .venv/bin/python -m pytest -q $*"
rc=0
.venv/bin/python -m pytest -q "$@" || rc=$?
case "$rc" in
    0) echo "==> run-tests.sh: all tests passed" ;;
    5) echo "==> run-tests.sh: FAILED: pytest collected no tests (exit 5)" >&2; exit 1 ;;
    *) echo "==> run-tests.sh: FAILED: pytest exited with status $rc" >&2; exit "$rc" ;;
esac
