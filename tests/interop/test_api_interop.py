"""The asyncio API (stack/api.py) used as the README shows it, against the Linux kernel.

A script of a few lines (tests/interop/api_app.py: `TunShell("mptun0")`, no
configuration, then `open_connection` or `start_server`) runs in the user namespace
with the venv's python; a kernel MPTCP socket (kpeer.py --mptcp) is the other end, in
both roles. MPTCP is the API's default as it is the CLI's: the bytes arrive (sha256
both ways), the kernel's socket reports MPTCP, not fallback (MPTCP_INFO), and none of
its MPTcpExt fallback or error counters moves. `TunShell(..., mptcp=False)` asks for
plain TCP, and the kernel counts exactly that fallback (MPCapableFallbackSYNACK).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.interop import ours
from tests.interop.harness import REPO, Topology, nstat_diff, nstat_errors, parse_report
from tests.interop.payload import expected_sha256

MB = 1_000_000
SIZE = 5 * MB


@pytest.fixture
def kernel_counters(topology: Topology) -> Callable[[], dict[str, int]]:
    """A function giving the kernel's counter movements since the test started."""
    before = topology.nstat_peer()
    return lambda: nstat_diff(before, topology.nstat_peer())


def api_app(topo: Topology, *args: Any) -> subprocess.Popen[str]:
    """tests/interop/api_app.py in the user namespace, with the venv's python."""
    return topo.popen_user(sys.executable, "-m", "tests.interop.api_app", *args, cwd=REPO)


def app_result(p: subprocess.Popen[str], timeout: float = 120.0) -> dict[str, Any]:
    out, err = p.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert p.returncode == 0 and lines, \
        f"api_app failed (rc={p.returncode}): stdout={out[-2000:]!r} stderr={err[-2000:]!r}"
    rec: dict[str, Any] = json.loads(lines[-1])
    return rec


def fallbacks(moved: dict[str, int]) -> dict[str, int]:
    """The kernel's MPTcpExt counters about falling back to TCP that moved."""
    return {k: v for k, v in moved.items() if k.startswith("MPTcpExt") and "Fallback" in k}


def kernel_client(topo: Topology, port: int, size: int) -> dict[str, Any]:
    """A kernel MPTCP client in the peer namespace: sends `size` bytes to our first
    address, checks it gets them back (--echo-check); its report."""
    cp = topo.run_peer(*topo.kpeer("client", topo.our_addr(1), port, "--mptcp",
                                   "--send-bytes", size, "--echo-check"),
                       check=False, timeout=120)
    return parse_report(cp.stdout, cp.stderr, cp.returncode)


def test_api_client_speaks_mptcp_to_a_kernel_server(
        topology: Topology, kernel_counters: Callable[[], dict[str, int]]) -> None:
    srv = topology.popen_peer(*topology.kpeer("server", "--port", 6400, "--once", "--mptcp",
                                              "--echo"))
    topology.wait_listening(topology.peer_ns, 6400)
    app = app_result(api_app(topology, "client", topology.peer_addr(1), 6400,
                             "--send-bytes", SIZE))
    kernel = topology.kpeer_result(srv)
    assert kernel["ok"] and kernel["returncode"] == 0, kernel
    assert app["tx_bytes"] == app["rx_bytes"] == kernel["rx_bytes"] == SIZE
    assert app["tx_sha256"] == kernel["rx_sha256"] == expected_sha256(SIZE)
    assert app["rx_sha256"] == kernel["tx_sha256"] == expected_sha256(SIZE)
    assert kernel["fallback"] is False, "the kernel's socket fell back to TCP"
    moved = kernel_counters()
    assert fallbacks(moved) == {}
    assert nstat_errors(moved, app) == {}
    assert moved.get("MPTcpExtMPCapableSYNRX") == 1
    assert moved.get("MPTcpExtMPCapableACKRX") == 1


def test_kernel_client_speaks_mptcp_to_an_api_server(
        topology: Topology, kernel_counters: Callable[[], dict[str, int]]) -> None:
    app_proc = ours.wait_listening(api_app(topology, "server", 6401))
    kernel = kernel_client(topology, 6401, SIZE)
    app = app_result(app_proc)
    assert kernel["ok"] and kernel["returncode"] == 0, kernel  # --echo-check: all came back
    assert app["rx_bytes"] == app["tx_bytes"] == kernel["tx_bytes"] == SIZE
    assert app["rx_sha256"] == kernel["tx_sha256"] == expected_sha256(SIZE)
    assert app["tx_sha256"] == kernel["rx_sha256"] == expected_sha256(SIZE)
    assert kernel["fallback"] is False, "the kernel's socket fell back to TCP"
    moved = kernel_counters()
    assert fallbacks(moved) == {}
    assert nstat_errors(moved, app) == {}
    assert moved.get("MPTcpExtMPCapableSYNACKRX") == 1


def test_api_server_asked_for_plain_tcp_is_a_fallback_the_kernel_counts(
        topology: Topology, kernel_counters: Callable[[], dict[str, int]]) -> None:
    """What the two tests above guard against: an API stack without MPTCP answers the
    kernel's MP_CAPABLE SYN with a plain SYN/ACK, and the kernel falls back."""
    app_proc = ours.wait_listening(api_app(topology, "--no-mptcp", "server", 6402))
    kernel = kernel_client(topology, 6402, MB)
    app = app_result(app_proc)
    assert kernel["ok"] and app["rx_sha256"] == kernel["tx_sha256"] == expected_sha256(MB)
    assert kernel["fallback"] is True
    assert fallbacks(kernel_counters()) == {"MPTcpExtMPCapableFallbackSYNACK": 1}
