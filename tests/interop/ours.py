"""Running our stack (`mptcp-tun`) inside the topology's user namespace, for interop
tests: start it, wait for its listener, collect its JSON summary."""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.interop.harness import REPO, Topology
from tools import control


def argv(*args: Any) -> list[str]:
    return [sys.executable, "-m", "tools.cli", *[str(a) for a in args]]


def start(topo: Topology, *args: Any) -> subprocess.Popen[str]:
    return topo.popen_user(*argv(*args), cwd=REPO)


def start_listener(topo: Topology, *args: Any, timeout: float = 15.0) -> subprocess.Popen[str]:
    """`mptcp-tun listen ...`; returns once it says it is listening."""
    return wait_listening(start(topo, "listen", *args), timeout)


def wait_listening(p: subprocess.Popen[str], timeout: float = 15.0) -> subprocess.Popen[str]:
    """`p` (our stack, or an app on it) once it says `listening on` on stderr (a
    listener of ours is no kernel socket: `ss` cannot see it)."""
    assert p.stderr is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stderr], [], [], 0.1)
        if r:
            line = p.stderr.readline()
            seen += line
            if "listening on" in line:
                return p
            if not line and p.poll() is not None:
                break
    p.kill()
    raise AssertionError(f"our listener did not start (rc={p.poll()}): {seen!r}")


def result(p: subprocess.Popen[str], timeout: float = 120.0) -> dict[str, Any]:
    """Wait for a `--json` run; its summary plus `returncode` and `stderr`."""
    out, err = p.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise AssertionError(f"mptcp-tun printed no summary (rc={p.returncode}): "
                             f"stdout={out[-2000:]!r} stderr={err[-2000:]!r}")
    rec: dict[str, Any] = json.loads(lines[-1])
    rec["returncode"] = p.returncode
    rec["stderr"] = err
    return rec


def ctl(path: str | Path, command: str, timeout: float = 5.0) -> dict[str, Any]:
    """One `--control` command to a running mptcp-tun; its JSON answer (the Unix socket
    lives in the filesystem, so no namespace is needed to reach it)."""
    return control.request(str(path), command, timeout)


def wait_for(path: str | Path, pred: Callable[[dict[str, Any]], bool],
             timeout: float = 30.0) -> dict[str, Any]:
    """Poll `status` until `pred(connection)` holds for our (only) connection; that
    connection's status."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            last = ctl(path, "status")
            for conn in last.get("connections", []):
                if pred(conn):
                    return conn  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"condition not reached in {timeout} s; last status: {last}")
