"""Handshake failures against the Linux kernel (issue 9): the MP_CAPABLE C flag and
MP_CAPABLE SYN blackholes, each checked by sha256, by the kernel's counters and by
our own (`--stats`), our diagnosis (`--json` "diagnosis", else `--events` DIAGNOSIS)
and our pcap.

What the kernel (6.18) does, measured here:
- with `net.mptcp.allow_join_initial_addr_port=0` its SYN/ACK carries MP_CAPABLE flags
  0x21 (C + H); as a listener it still accepts a join to its initial address
  (MPJoinSynRx, MPJoinAckRx; no MPJoinRejected, no RST): the flag is advice;
- an nftables rule dropping SYNs with MP_CAPABLE (`tcp option mptcp subtype 0`): a
  kernel client sends 3 MP_CAPABLE SYNs (0, 1, 2 s: its SYN timeouts are linear,
  `tcp_syn_linear_timeouts` 4), a plain SYN at 3 s, and counts MPCapableSYNTX 1,
  MPCapableSYNTXDrop 1, Blackhole 1; its next active open is plain at once
  (MPCapableSYNTXDisabled 1).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.wire import mptcp as wm
from stack.wire import tcp
from tests.interop import ours
from tests.interop.diagnosis import (
    EXIT_UNMET,
    Frame,
    chain,
    counter,
    diagnosis_events,
    frames,
    peer_nft,
    peer_sysctl,
)
from tests.interop.harness import Topology, nstat_diff, nstat_errors
from tests.interop.payload import expected_sha256
from tests.interop.test_mptcp_join_interop import first_report

MB = 1_000_000
NFT_TABLE = "issue9"


def diagnosis(me: dict[str, Any], events: Path) -> list[tuple[str, str]]:
    """Our findings as (code, text), from `--json`; the same codes as DIAGNOSIS events."""
    found = [(d["code"], d["text"]) for d in me["diagnosis"]]
    assert [e["code"] for e in diagnosis_events(events)] == [c for c, _ in found]
    return found


def frame(pcap: Path, ref: dict[str, Any]) -> Frame:
    """The packet a finding points at (its frame in our pcap), after checking the
    finding's subflow and direction against the packet's addresses."""
    f: Frame = frames(pcap)[ref["frame"] - 1]
    assert f.on(ref["subflow"], ref["direction"]), (f, ref)
    return f


def mpc_flags(pcap: Path, flags: int) -> list[tuple[str, int]]:
    """(source address, MP_CAPABLE flags) of each segment with exactly TCP `flags`
    (SYN, SYN|ACK) in our pcap; flags -1 when it carries no MP_CAPABLE."""
    out = []
    for f in frames(pcap):
        if f.flags & (tcp.SYN | tcp.ACK | tcp.RST) != flags:
            continue
        caps = f.has(wm.MpCapable)
        out.append((f.src, caps[0].flags if caps else -1))
    return out


def kernel_server(topo: Topology, port: int) -> Any:
    srv = topo.popen_peer(*topo.kpeer("server", "--port", port, "--mptcp"))
    topo.wait_listening(topo.peer_ns, port)
    return srv


@pytest.fixture
def peer_denies_join_id0(topology: Topology) -> Iterator[None]:
    with peer_sysctl(topology, "net.mptcp.allow_join_initial_addr_port", 0, 1):
        yield


@pytest.fixture
def mpc_syn_blackhole(topology: Topology) -> Iterator[Any]:
    """nftables in the peer namespace drops every incoming SYN that carries
    MP_CAPABLE (TCP option 30, subtype 0); plain SYNs and MP_JOIN SYNs pass. Yields a
    function giving how many SYNs the rule dropped."""
    with peer_nft(topology, NFT_TABLE) as load:
        counters = load(chain("input", "tcp flags & (syn | ack) == syn "
                                       "tcp option mptcp subtype 0 counter drop"))
        yield lambda: counters()[0]


# ---- (a) the kernel server sets C: our subflow endpoint has nothing to join -------------
def test_kernel_server_c_flag_our_client_does_not_join_its_initial_address(
        topology: Topology, peer_denies_join_id0: None, tmp_path: Path) -> None:
    before = topology.nstat_peer()
    srv = kernel_server(topology, 6900)
    events, pcap = tmp_path / "events.jsonl", tmp_path / "run.pcap"
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6900,
                                "--subflow", topology.our_addr(2), "--send-bytes", 20 * MB,
                                "--json", "--stats", "--events", events, "--pcap", pcap),
                     timeout=120)
    kernel = first_report(srv)
    assert me["clean"] and me["error"] is None, me["stderr"]
    assert me["returncode"] == EXIT_UNMET, me["stderr"]  # the join asked for: not made
    assert kernel["rx_bytes"] == 20 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    assert me["mptcp"] and not me["fallback"] and me["subflows"] == 1
    # the kernel's SYN/ACK said C (0x21), and no MP_JOIN SYN ever reached it
    assert mpc_flags(pcap, tcp.SYN | tcp.ACK) == [(topology.peer_addr(1), 0x21)]
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtMPCapableSYNRX") == 1 and diff.get("MPTcpExtMPJoinSynRx", 0) == 0
    assert nstat_errors(diff, me) == {}
    assert counter(me["stderr"], "JoinInitialDenied") == 1
    assert counter(me["stderr"], "MPJoinSynTx") == 0
    found = diagnosis(me, events)
    want = (f"the peer set the C flag on its SYN/ACK: no join to {topology.peer_addr(1)}:6900; "
            f"not made: from {topology.our_addr(2)}")
    assert found == [("join-initial-denied", want)], found
    synack = frame(pcap, me["diagnosis"][0]["packet"])  # the kernel's SYN/ACK with C
    assert synack.flags == tcp.SYN | tcp.ACK and me["diagnosis"][0]["packet"]["frame"] == 2


# ---- (b) MP_CAPABLE SYNs blackholed: plain SYN, fallback, blackhole remembered ---------
def test_mpc_syns_blackholed_our_client_falls_back_and_completes(
        topology: Topology, mpc_syn_blackhole: Any, tmp_path: Path) -> None:
    before = topology.nstat_peer()
    srv = kernel_server(topology, 6901)
    events, pcap = tmp_path / "events.jsonl", tmp_path / "run.pcap"
    t0 = time.monotonic()
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6901,
                                "--send-bytes", 10 * MB, "--json", "--stats",
                                "--events", events, "--pcap", pcap), timeout=120)
    took = time.monotonic() - t0
    kernel = first_report(srv)
    assert me["clean"] and me["error"] is None, me["stderr"]
    assert me["returncode"] == EXIT_UNMET, me["stderr"]  # MPTCP asked for: not had
    assert kernel["rx_bytes"] == 10 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    assert kernel["fallback"] is True  # the kernel saw a plain TCP connection
    assert me["fallback"] and "MP_CAPABLE SYNs unanswered" in me["fallback_reason"]
    # our 3 MP_CAPABLE SYNs (0, 1, 2 s) dropped by the rule, then a plain SYN (3 s), as
    # the kernel's own (the reference test below)
    assert mpc_syn_blackhole() == 3
    syn_times = [f.time for f in frames(pcap) if f.flags == tcp.SYN]
    assert [f for _, f in mpc_flags(pcap, tcp.SYN)] == [0x01, 0x01, 0x01, -1]
    assert 2.7 < syn_times[3] - syn_times[0] < 3.3 and took < 10
    assert counter(me["stderr"], "MPCapableSYNTXDrop") == 1
    assert counter(me["stderr"], "Blackhole") == 1
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtMPCapableSYNRX", 0) == 0  # none got through
    assert nstat_errors(diff, me) == {}
    found = diagnosis(me, events)
    assert found == [("mpc-syn-blackholed",
                      "3 MP_CAPABLE SYNs unanswered (3.0 s): sent a plain SYN, fell back to "
                      "TCP; MPTCP active opens disabled for 3600 s (blackhole)")], found
    plain = frame(pcap, me["diagnosis"][0]["packet"])  # our plain SYN, the 4th frame
    assert plain.flags == tcp.SYN and me["diagnosis"][0]["packet"]["frame"] == 4
    assert not any(isinstance(o, tcp.UnknownOption) and o.kind == tcp.OPT_MPTCP
                   for o in plain.options)


def test_reference_kernel_client_through_the_same_blackhole(
        topology: Topology, mpc_syn_blackhole: Any) -> None:
    """The kernel as the client behind the same rule (from the router's 10.0.1.254 in
    the user namespace), for the figures above; its blackhole memory is reset after
    (writing net.mptcp.blackhole_timeout clears it)."""
    kernel_server(topology, 6902)
    ns = topology.user_ns
    before = topology.nstat(ns)
    try:
        t0 = time.monotonic()
        cli = topology.run_user(*topology.kpeer("client", topology.peer_addr(1), 6902,
                                                "--mptcp", "--bind",
                                                topology.router_addr(1), "--send-bytes", MB),
                                timeout=60)
        took = time.monotonic() - t0
        first = json.loads(cli.stdout.splitlines()[-1])
        diff = nstat_diff(before, topology.nstat(ns))
        assert first["fallback"] is True and first["tx_bytes"] == MB
        assert mpc_syn_blackhole() == 3 and 2.5 < took < 5
        assert diff.get("MPTcpExtMPCapableSYNTX") == 1
        assert diff.get("MPTcpExtMPCapableSYNTXDrop") == 1
        assert diff.get("MPTcpExtBlackhole") == 1
        # the next active open: plain at once
        topology.run_user(*topology.kpeer("client", topology.peer_addr(1), 6902, "--mptcp",
                                          "--bind", topology.router_addr(1),
                                          "--send-bytes", 1000), timeout=30)
        diff = nstat_diff(before, topology.nstat(ns))
        assert diff.get("MPTcpExtMPCapableSYNTXDisabled") == 1 and mpc_syn_blackhole() == 3
    finally:
        topology.run_user("sysctl", "-qw", "net.mptcp.blackhole_timeout=3600")


# ---- (c) our listener sets C: the kernel client's subflow endpoint does not join ---------
def test_our_listener_deny_join_id0_kernel_client_does_not_join(
        topology: Topology, no_endpoints: None, tmp_path: Path) -> None:
    topology.run_peer("ip", "mptcp", "endpoint", "add", topology.peer_addr(2), "subflow")
    before = topology.nstat_peer()
    pcap = tmp_path / "run.pcap"
    lst = ours.start_listener(topology, 6903, "--once", "--json", "--stats", "--echo",
                              "--deny-join-id0", "--pcap", pcap)
    cli = topology.run_peer(*topology.kpeer("client", topology.our_addr(1), 6903, "--mptcp",
                                            "--send-bytes", 20 * MB, "--echo-check"),
                            timeout=120)
    me = ours.result(lst)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert me["returncode"] == 0 and me["clean"], me["stderr"]
    assert me["received_sha256"] == expected_sha256(20 * MB)
    assert me["mptcp"] and me["subflows"] == 1
    # our SYN/ACK said C; the kernel client (a `subflow` endpoint at 10.0.2.1) made no
    # join: with the flag its endpoint has no address to join (fill_remote_addresses_vec)
    assert mpc_flags(pcap, tcp.SYN | tcp.ACK) == [(topology.our_addr(1), 0x21)]
    assert mpc_flags(pcap, tcp.SYN) == [(topology.peer_addr(1), 0x01)]
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtMPCapableSYNACKRX") == 1
    assert diff.get("MPTcpExtMPJoinSynTx", 0) == 0
    assert counter(me["stderr"], "MPJoinSynRx") == 0
    assert nstat_errors(diff, me) == {}
