"""A clean close never resets (issue 14): every close ordering between our stack and the
kernel, each run several times, in both roles, with one subflow and with two. We close
first (the peer still sends, then closes), the peer closes first (we still send), or
both at once. After each: every byte right both ways, no RST either way (the kernel's
TcpOutRsts and TcpExtTCPAbortOn*, MPTcpExtMPRstRx/Tx and MPFastclose*, our OutRsts and
MPRstTx), no finding of ours, no MPTCP error counter on the kernel.

The orderings come from the senders' sizes and pauses: every sender pauses 0.1 s half
way (so a join is up before anyone closes: a join still in its handshake when the
peer's DATA_FIN arrives is given up by Linux itself, with a plain RST, which `analyze`
explains), and the side that closes last sends 1 MB, pauses 0.3 s, then the rest, so
its DATA_FIN comes well after the other's."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.interop import ours
from tests.interop.harness import Topology, nstat_diff, nstat_errors
from tests.interop.payload import expected_sha256

MB = 1_000_000
SMALL, BIG = 200_000, 3 * MB
LATE = ("--send-bytes", BIG, "--pause-after", MB, "--pause", 0.3)  # closes last
SOON = ("--send-bytes", SMALL, "--pause-after", SMALL // 2, "--pause", 0.1)
# ordering -> (our sending, the kernel's sending)
ORDERINGS: dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]] = {
    "we close first": (SOON, LATE),
    "the kernel closes first": (LATE, SOON),
    "both at once": (SOON, SOON),
}
RUNS = 3
RESETS = ("TcpOutRsts", "TcpExtTCPAbortOnData", "TcpExtTCPAbortOnClose",
          "TcpExtTCPAbortOnMemory", "TcpExtTCPAbortOnTimeout", "TcpExtTCPAbortOnLinger",
          "MPTcpExtMPRstRx", "MPTcpExtMPRstTx", "MPTcpExtMPFastcloseRx",
          "MPTcpExtMPFastcloseTx")


def sent_bytes(args: tuple[Any, ...]) -> int:
    return int(args[args.index("--send-bytes") + 1])


def our_counters(stderr: str) -> dict[str, int]:
    """`--stats`: our counters, one `Name value` line each, at exit."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\w+)\s+(\d+)$", stderr, re.MULTILINE)}


def check(topology: Topology, before: dict[str, int], me: dict[str, Any],
          got: dict[str, Any], ours_sent: int, kernel_sent: int, what: str) -> None:
    diff = nstat_diff(before, topology.nstat_peer())
    assert me["returncode"] == 0 and me["clean"], (what, me["error"], me["stderr"][-1500:])
    assert got["ok"], (what, got)
    assert got["rx_bytes"] == me["sent"] == ours_sent, what
    assert got["rx_sha256"] == me["sent_sha256"], what
    assert me["received"] == got["tx_bytes"] == kernel_sent, what
    assert me["received_sha256"] == got["tx_sha256"] == expected_sha256(kernel_sent), what
    resets = {k: diff[k] for k in RESETS if diff.get(k)}
    assert resets == {}, (what, resets)
    assert nstat_errors(diff, me) == {}, (what, nstat_errors(diff, me))
    counts = our_counters(me["stderr"])
    assert not counts.get("OutRsts") and not counts.get("MPRstTx"), (what, counts)
    assert me["diagnosis"] == [], (what, me["diagnosis"])


@pytest.fixture
def two_paths_on_the_kernel(topology: Topology) -> Any:
    """The kernel client's second address as a `subflow` endpoint (peer namespace),
    once called; none before or after. Not bound to path2's device: its join goes to
    our first address, whose answers leave the user namespace by path1 (source
    routing), which a device-bound socket would not take (the kernel answers such a
    SYN/ACK with an RST: seen here, and why the scenario runner plays
    link-failure tests in one role only)."""
    ns = topology.peer_ns
    topology.run_in(ns, "ip", "mptcp", "endpoint", "flush")
    yield lambda: topology.run_in(ns, "ip", "mptcp", "endpoint", "add",
                                  topology.peer_addr(2), "subflow")
    topology.run_in(ns, "ip", "mptcp", "endpoint", "flush", check=False)


@pytest.mark.parametrize("subflows", [1, 2])
@pytest.mark.parametrize("ordering", list(ORDERINGS))
def test_our_client_and_a_kernel_server_close_without_a_reset(
        topology: Topology, ordering: str, subflows: int) -> None:
    mine, theirs = ORDERINGS[ordering]
    join = ("--subflow", topology.our_addr(2)) if subflows == 2 else ()
    for run in range(RUNS):
        port = 7600 + run
        srv = topology.popen_peer(*topology.kpeer("server", "--port", port, "--once",
                                                  "--mptcp", *theirs))
        topology.wait_listening(topology.peer_ns, port)
        before = topology.nstat_peer()
        me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), port,
                                    *join, *mine, "--json", "--stats"), timeout=60)
        got = topology.kpeer_result(srv)
        what = f"{ordering}, {subflows} subflow(s), run {run + 1}"
        check(topology, before, me, got, sent_bytes(mine), sent_bytes(theirs), what)
        assert me["subflows"] == subflows, (what, me["subflows"])


@pytest.mark.parametrize("subflows", [1, 2])
@pytest.mark.parametrize("ordering", list(ORDERINGS))
def test_a_kernel_client_and_our_listener_close_without_a_reset(
        topology: Topology, two_paths_on_the_kernel: Any, ordering: str,
        subflows: int) -> None:
    mine, theirs = ORDERINGS[ordering]
    if subflows == 2:
        two_paths_on_the_kernel()
    for run in range(RUNS):
        port = 7620 + run
        lst = ours.start_listener(topology, port, "--once", *mine, "--json", "--stats")
        before = topology.nstat_peer()
        cli = topology.popen_peer(*topology.kpeer("client", topology.our_addr(1), port,
                                                  "--mptcp", *theirs))
        got = topology.kpeer_result(cli)
        me = ours.result(lst, timeout=60)
        what = f"{ordering}, {subflows} subflow(s), run {run + 1}"
        check(topology, before, me, got, sent_bytes(mine), sent_bytes(theirs), what)
        assert me["subflows"] == subflows, (what, me["subflows"])
