"""`mptcp-tun bench` end to end (a short run in its own namespaces), and `--no-sha256`,
which its timed runs use: the bytes still arrive whole, the summary says nothing of
their hash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.interop import ours
from tests.interop.harness import Topology

REPO = Path(__file__).resolve().parents[2]
MB = 1_000_000


def test_bench_measures_unhashed_and_checks_the_bytes_apart() -> None:
    prefix = f"bn{os.getpid() % 100000}"
    p = subprocess.run([sys.executable, "-m", "tools.cli", "bench", "--bytes", str(20 * MB),
                        "--kernel-seconds", "0.5", "--verify-bytes", str(3 * MB), "--json",
                        "--prefix", prefix], cwd=REPO, capture_output=True, text=True,
                       timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(p.stdout.splitlines()[-1])
    assert res["verify_bytes"] == 3 * MB and isinstance(res["pinned"], bool)
    for proto in ("tcp", "mptcp"):
        r = res[proto]
        assert r["ours_to_kernel_verified"] and r["kernel_to_ours_verified"], r
        assert r["ours_to_kernel_ok"] and r["kernel_to_ours_ok"], r
        assert r["ours_to_kernel_mbps"] > 0 and r["kernel_to_ours_mbps"] > 0, r
    # its namespaces are gone
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in left


def test_no_sha256_delivers_everything_and_reports_no_hash(topology: Topology) -> None:
    srv = topology.popen_peer(*topology.kpeer("server", "--port", 6890, "--once", "--mptcp"))
    topology.wait_listening(topology.peer_ns, 6890)
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6890,
                                "--send-bytes", 5 * MB, "--json", "--no-sha256"))
    kernel = topology.kpeer_result(srv)
    assert me["returncode"] == 0 and kernel["rx_bytes"] == 5 * MB, me["stderr"]
    assert me["sent_sha256"] is None and me["received_sha256"] is None


def test_bench_connections_measures_rates_and_idle_connections() -> None:
    """`bench --connections`, short: 100 short MPTCP connections each way and
    kernel-to-kernel, then 300 idle connections around a 20 MB transfer (the full run,
    2000 and 10,000, is the benchmark: its figures are in the issue notes)."""
    prefix = f"bc{os.getpid() % 100000}"
    p = subprocess.run([sys.executable, "-m", "tools.cli", "bench", "--connections", "100",
                        "--idle", "300", "--bytes", str(20 * MB), "--json", "--prefix",
                        prefix], cwd=REPO, capture_output=True, text=True, timeout=600,
                       check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(p.stdout.splitlines()[-1])
    assert res["rates_ok"] and res["idle_opened"] == 300, res
    for k in ("kernel_to_kernel_cps", "kernel_to_ours_cps", "ours_to_kernel_cps",
              "bulk_alone_mbps", "bulk_with_idle_mbps"):
        assert res[k] > 0, (k, res)
    assert res["rss_kib_idle"] >= res["rss_kib_before_idle"] > 0, res
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in left


def test_send_seconds_sends_for_that_long_and_the_peer_gets_every_byte(
        topology: Topology) -> None:
    srv = topology.popen_peer(*topology.kpeer("server", "--port", 6892, "--once", "--mptcp"))
    topology.wait_listening(topology.peer_ns, 6892)
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6892,
                                "--send-seconds", 1.5, "--json"), timeout=60)
    got = topology.kpeer_result(srv)
    assert me["returncode"] == 0 and me["clean"], me["stderr"][-1000:]
    assert 1.5 <= me["seconds"] < 10, me["seconds"]
    assert got["rx_bytes"] == me["sent"] > 0 and got["rx_sha256"] == me["sent_sha256"]
