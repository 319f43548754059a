"""The impairment layer (`--impair`) against the Linux kernel: the delay it adds is the
kernel's round trip, the losses it makes are recovered with every byte intact (and the
kernel retransmits what we lose of its data), and a dropped suboption or stripped
options are what the kernel sees, with our diagnosis saying so."""

from __future__ import annotations

import re
import time

from tests.interop import ours
from tests.interop.harness import Topology, nstat_diff
from tests.interop.payload import expected_sha256

MB = 1_000_000


def kernel_rtts(topo: Topology, our_addr: str) -> list[float]:
    """The kernel's smoothed RTTs (ms) of its TCP sockets (subflows) to `our_addr`."""
    out = topo.run_peer("ss", "-tinH", "dst", our_addr, check=False).stdout
    return [float(m.group(1)) for m in re.finditer(r"\brtt:([\d.]+)/", out)]


def our_counter(stderr: str, name: str) -> int:
    """A counter from our `--stats` dump (0 if absent)."""
    m = re.search(rf"^{name}\s+(\d+)$", stderr, re.MULTILINE)
    return int(m.group(1)) if m else 0


def impairments(me: dict) -> dict[str, dict]:
    return {r["rule"]: r for r in me["impairments"]["rules"]}


def test_a_delay_on_one_path_is_the_kernels_round_trip(topology: Topology) -> None:
    """40 ms each way on path 1 only: the kernel measures an RTT of 80 ms and more on its
    subflow to our path-1 address, and well under that on path 2."""
    port = 6900
    lst = ours.start_listener(topology, port, "--once", "--json", "--impair-seed", 5,
                              "--impair", f"{topology.our_addr(1)}:delay=40ms")
    cli = topology.popen_peer(*topology.kpeer("client", topology.our_addr(1), port,
                                              "--mptcp", "--send-bytes", 20 * MB))
    seen: list[float] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and cli.poll() is None and not seen:
        time.sleep(0.2)
        seen = kernel_rtts(topology, topology.our_addr(1))
    kernel = topology.kpeer_result(cli, timeout=60)
    me = ours.result(lst, timeout=30)
    assert me["returncode"] == 0, me["stderr"][-2000:]
    assert me["received_sha256"] == kernel["tx_sha256"] == expected_sha256(20 * MB)
    assert seen and min(seen) >= 80, f"the kernel's RTT to our path-1 address: {seen}"
    rule = impairments(me)[f"{topology.our_addr(1)}:delay=40ms"]
    assert rule["delayed"] == rule["packets"] > 100
    assert me["impairments"]["seed"] == 5


def test_losses_on_both_paths_both_ways_lose_no_byte(topology: Topology) -> None:
    """3% of segments lost on path 2 and 1% on path 1, each way, while 10 MB cross in
    each direction over two subflows: the bytes arrive intact both ways, the kernel
    retransmitted what we dropped of its data, and our counters say what was done."""
    port = 6902
    srv = topology.popen_peer(*topology.kpeer("server", "--port", port, "--once", "--mptcp",
                                              "--send-bytes", 10 * MB))
    topology.wait_listening(topology.peer_ns, port)
    before = topology.nstat_peer()
    me = ours.result(ours.start(
        topology, "connect", topology.peer_addr(1), port, "--json", "--stats", "--timeout", 120,
        "--subflow", topology.our_addr(2), "--send-bytes", 10 * MB, "--impair-seed", 11,
        "--impair", f"{topology.our_addr(2)}:loss=3%",
        "--impair", f"{topology.our_addr(1)}:loss=1%"), timeout=150)
    kernel = topology.kpeer_result(srv, timeout=30)
    diff = nstat_diff(before, topology.nstat_peer())
    assert me["returncode"] == 0, me["stderr"][-2000:]
    assert kernel["rx_bytes"] == 10 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    assert me["received_sha256"] == kernel["tx_sha256"] == expected_sha256(10 * MB)
    assert me["subflows"] == 2 and me["mptcp"]
    rules = impairments(me)
    path2 = rules[f"{topology.our_addr(2)}:loss=3%"]
    path1 = rules[f"{topology.our_addr(1)}:loss=1%"]
    for rule, rate in ((path2, 0.03), (path1, 0.01)):
        assert rule["packets"] > 500
        assert 0.3 * rate < rule["lost"] / rule["packets"] < 2.5 * rate, rule
    assert diff.get("TcpRetransSegs", 0) > 0, diff  # the kernel resent what we dropped
    # and we resent what it lost of ours (subflow retransmissions: no data-level resend)
    assert our_counter(me["stderr"], "RetransSegs") > 0, me["stderr"][-3000:]


def test_dropping_add_addr_on_the_way_out_leaves_the_kernel_without_it(
        topology: Topology, shaped_paths: None) -> None:
    """Our listener announces path 2; every packet carrying an ADD_ADDR is dropped on
    its way out: the kernel counts no ADD_ADDR and opens no join, we count what we
    dropped (the announcement and its repetitions, during a transfer of about a
    second), and our diagnosis says the announcement was never echoed."""
    port = 6904
    before = topology.nstat_peer()
    lst = ours.start_listener(topology, port, "--once", "--json",
                              "--announce", topology.our_addr(2),
                              "--impair", "*:drop=add_addr,dir=out")
    cli = topology.popen_peer(*topology.kpeer("client", topology.our_addr(1), port,
                                              "--mptcp", "--send-bytes", 10 * MB))
    kernel = topology.kpeer_result(cli, timeout=60)
    me = ours.result(lst, timeout=30)
    diff = nstat_diff(before, topology.nstat_peer())
    assert me["received_sha256"] == kernel["tx_sha256"] == expected_sha256(10 * MB)
    assert diff.get("MPTcpExtAddAddr", 0) == 0 and diff.get("MPTcpExtMPJoinSynTx", 0) == 0
    assert impairments(me)["*:drop=add_addr,dir=out"]["dropped"] >= 2
    codes = {f["code"] for f in me["diagnosis"]}
    assert "add-addr-not-echoed" in codes, me["diagnosis"]


def test_stripping_our_mptcp_options_makes_the_kernel_fall_back(topology: Topology) -> None:
    """A middlebox (ours, on the way out) strips MPTCP options: the kernel answers our
    SYN as plain TCP, both ends fall back, every byte arrives, and we say why."""
    port = 6906
    srv = topology.popen_peer(*topology.kpeer("server", "--port", port, "--once", "--mptcp",
                                              "--send-bytes", MB))
    topology.wait_listening(topology.peer_ns, port)
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), port, "--json",
                                "--send-bytes", MB, "--impair", "*:strip,dir=out"))
    kernel = topology.kpeer_result(srv, timeout=30)
    assert kernel["rx_sha256"] == me["sent_sha256"]
    assert me["received_sha256"] == kernel["tx_sha256"] == expected_sha256(MB)
    assert me["fallback"] and kernel["fallback"] is not False
    assert impairments(me)["*:strip,dir=out"]["stripped"] >= 1
    assert me["diagnosis"], "a fallback without a word"
