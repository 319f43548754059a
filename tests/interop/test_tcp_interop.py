"""Plain TCP between our stack (on the TUN, in the user namespace) and the Linux kernel
(in the peer namespace), both roles, checked by sha256 and by the kernel's counters."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop import ours
from tests.interop.harness import Topology, nstat_diff, run
from tests.interop.payload import expected_sha256

MB = 1_000_000
KERNEL_CSUM_ERRORS = ("TcpInCsumErrors", "TcpExtTCPInCsumErrors", "IpExtInCsumErrors")


@pytest.fixture(autouse=True)
def kernel_sees_no_checksum_errors(topology: Topology) -> Iterator[None]:
    """Across every test here, the kernel peer never receives a bad checksum from us."""
    before = topology.nstat_peer()
    yield
    diff = nstat_diff(before, topology.nstat_peer())
    assert {k: diff[k] for k in KERNEL_CSUM_ERRORS if diff.get(k)} == {}


def kernel_server(topo: Topology, port: int, *args: object) -> object:
    srv = topo.popen_peer(*topo.kpeer("server", "--port", port, "--once", *args))
    topo.wait_listening(topo.peer_ns, port)
    return srv


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
def test_our_client_sends_50mb_to_kernel_server(topology: Topology, offload: bool) -> None:
    port = 5100 + offload
    srv = kernel_server(topology, port)
    extra = [] if offload else ["--no-offload"]
    me = ours.result(ours.start(topology, "connect", "--no-mptcp", topology.peer_addr(1), port,
                                "--send-bytes", 50 * MB, "--json", *extra))
    got = topology.kpeer_result(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert me["clean"] and me["sent"] == 50 * MB
    assert got["rx_bytes"] == 50 * MB and got["rx_sha256"] == me["sent_sha256"]
    assert got["ok"]


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
def test_kernel_client_sends_50mb_to_our_listener(topology: Topology, offload: bool) -> None:
    port = 5110 + offload
    extra = [] if offload else ["--no-offload"]
    lst = ours.start_listener(topology, "--no-mptcp", port, "--once", "--json", *extra)
    cli = topology.run_peer(*topology.kpeer("client", topology.our_addr(1), port,
                                            "--send-bytes", 50 * MB), timeout=120)
    me = ours.result(lst)
    assert cli.returncode == 0
    assert me["returncode"] == 0, me["stderr"]
    assert me["received"] == 50 * MB and me["received_sha256"] == expected_sha256(50 * MB)


@pytest.mark.parametrize("mptcp", [False, True], ids=["tcp", "mptcp"])
def test_kernel_clients_reach_our_listener_through_syn_cookies(topology: Topology,
                                                               mptcp: bool) -> None:
    """`listen --syncookies 2`: no state before the ACK; the connection is rebuilt from
    the cookie it echoes (window scale and SACK from the timestamp, MPTCP keys from the
    third ACK). The kernel's own view: nothing failed, every byte arrived."""
    port = 5114 + mptcp
    lst = ours.start_listener(topology, *([] if mptcp else ["--no-mptcp"]), port, "--once",
                              "--echo", "--json", "--stats", "--syncookies", 2)
    before = topology.nstat_peer()
    cli = topology.popen_peer(*topology.kpeer("client", topology.our_addr(1), port,
                                              *(["--mptcp"] if mptcp else []),
                                              "--send-bytes", 10 * MB))
    got = topology.kpeer_result(cli, timeout=120)
    me = ours.result(lst)
    diff = nstat_diff(before, topology.nstat_peer())
    assert me["returncode"] == 0, me["stderr"]
    assert got["rx_bytes"] == 10 * MB and got["rx_sha256"] == expected_sha256(10 * MB)
    assert me["received_sha256"] == expected_sha256(10 * MB)
    counts = {m.group(1): int(m.group(2)) for m in
              re.finditer(r"^(\w+)\s+(\d+)$", me["stderr"], re.MULTILINE)}
    assert counts.get("SyncookiesSent") == 1 and counts.get("SyncookiesRecv") == 1, counts
    assert not counts.get("SyncookiesFailed")
    assert not diff.get("TcpExtTCPSACKReneging") and not diff.get("TcpAttemptFails"), diff
    if mptcp:
        assert me["mptcp"] and not me["fallback"] and got["fallback"] is False, got
        assert diff.get("MPTcpExtMPCapableSYNACKRX") == 1, diff


def test_our_client_with_kernel_echo_both_directions_at_once(topology: Topology) -> None:
    srv = kernel_server(topology, 5120, "--echo")
    me = ours.result(ours.start(topology, "connect", "--no-mptcp", topology.peer_addr(1), 5120,
                                "--send-bytes", 20 * MB, "--json"))
    assert me["returncode"] == 0, me["stderr"]
    assert me["received"] == me["sent"] == 20 * MB
    assert me["received_sha256"] == me["sent_sha256"]
    assert topology.kpeer_result(srv)["ok"]


def test_kernel_client_with_our_echo_listener(topology: Topology) -> None:
    lst = ours.start_listener(topology, "--no-mptcp", 5121, "--once", "--echo", "--json")
    cli = topology.run_peer(*topology.kpeer("client", topology.our_addr(1), 5121,
                                            "--send-bytes", 20 * MB, "--echo-check"),
                            timeout=120)
    me = ours.result(lst)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert me["returncode"] == 0 and me["received"] == me["sent"] == 20 * MB


@pytest.fixture
def lossy_path1(topology: Topology) -> Iterator[None]:
    """3% random loss on path1, both directions, dropped in the router namespace's
    forward hook, with TSO/GSO off on the kernel's sending veth so that a drop is one
    real segment (docs/interop.md, "Observations on these machines")."""
    ns = topology.user_ns
    topology.run_in(ns, "nft", "-f", "-", input=(
        "table inet lossy {\n chain lossy_forward {\n  type filter hook forward priority 0;\n"
        "  iifname \"path1\" numgen random mod 100 < 3 counter drop\n"
        "  oifname \"path1\" numgen random mod 100 < 3 counter drop\n }\n}\n"))
    topology.run_peer("ethtool", "-K", "path1", "tso", "off", "gso", "off")
    try:
        yield
    finally:
        out = topology.run_in(ns, "nft", "list", "table", "inet", "lossy", check=False).stdout
        topology.run_in(ns, "nft", "delete", "table", "inet", "lossy", check=False)
        topology.run_peer("ethtool", "-K", "path1", "tso", "on", "gso", "on", check=False)
        dropped = sum(int(n) for n in re.findall(r"counter packets (\d+)", out))
        assert dropped > 0, "the loss rule dropped nothing: the test did not test loss"


def test_3pct_loss_our_client(topology: Topology, lossy_path1: None) -> None:
    # --no-offload: MTU-sized frames, so one drop is one segment (not a GSO burst).
    srv = kernel_server(topology, 5130)
    me = ours.result(ours.start(topology, "connect", "--no-mptcp", topology.peer_addr(1), 5130,
                                "--send-bytes", 20 * MB, "--json", "--stats", "--no-offload"),
                     timeout=300)
    got = topology.kpeer_result(srv, timeout=300)
    assert me["returncode"] == 0, me["stderr"]
    assert got["rx_bytes"] == 20 * MB and got["rx_sha256"] == me["sent_sha256"]
    retrans = re.search(r"^RetransSegs\s+(\d+)", me["stderr"], re.M)
    assert retrans and int(retrans.group(1)) > 0  # --stats: we really retransmitted


def test_3pct_loss_kernel_client(topology: Topology, lossy_path1: None) -> None:
    lst = ours.start_listener(topology, "--no-mptcp", 5131, "--once", "--json", "--no-offload")
    before = topology.nstat_peer()
    cli = topology.run_peer(*topology.kpeer("client", topology.our_addr(1), 5131,
                                            "--send-bytes", 20 * MB), timeout=300)
    me = ours.result(lst, timeout=300)
    assert nstat_diff(before, topology.nstat_peer()).get("TcpRetransSegs", 0) > 0
    assert cli.returncode == 0
    assert me["returncode"] == 0, me["stderr"]
    assert me["received"] == 20 * MB and me["received_sha256"] == expected_sha256(20 * MB)


def test_connect_to_closed_kernel_port_fails_with_a_clear_error(topology: Topology) -> None:
    p = ours.start(topology, "connect", "--no-mptcp", topology.peer_addr(1), 5999,
                   "--send-bytes", 10)
    _out, err = p.communicate(timeout=30)
    assert p.returncode == 1
    assert f"peer {topology.peer_addr(1)}:5999 refused the connection (RST)" in err


def test_kernel_connect_to_our_closed_port_gets_rst_and_ping_is_answered(
        topology: Topology) -> None:
    lst = ours.start_listener(topology, "--no-mptcp", 5140)  # our stack runs; port 5141 is closed
    try:
        cli = topology.run_peer(*topology.kpeer("client", topology.our_addr(1), 5141,
                                                "--send-bytes", 10), check=False, timeout=30)
        assert cli.returncode != 0
        assert "refused" in (cli.stdout + cli.stderr).lower()
        ping = topology.run_peer("ping", "-c", "3", "-i", "0.2", "-W", "2",
                                 topology.our_addr(1), check=False)
        assert ping.returncode == 0 and " 0% packet loss" in ping.stdout
    finally:
        lst.terminate()
        lst.communicate(timeout=10)


def test_missing_tun_device_is_a_clear_setup_error(topology: Topology) -> None:
    p = ours.start(topology, "connect", "--no-mptcp", topology.peer_addr(1), 5000,
                   "--dev", "nosuchtun0")
    _out, err = p.communicate(timeout=30)
    assert p.returncode == 3
    assert "TUN device nosuchtun0 not found: run ./netns-setup.sh up" in err


def test_pcap_decodes_cleanly_in_tshark_and_events_are_written(topology: Topology,
                                                               tmp_path: Path) -> None:
    srv = kernel_server(topology, 5150)
    pcap, events = tmp_path / "run.pcap", tmp_path / "events.jsonl"
    me = ours.result(ours.start(topology, "connect", "--no-mptcp", topology.peer_addr(1), 5150,
                                "--send-bytes", 2 * MB, "--json", "--pcap", pcap,
                                "--events", events, "--trace"))
    assert me["returncode"] == 0 and topology.kpeer_result(srv)["ok"]
    # the ladder: SYN, SYN/ACK, ACK, and our FIN, each with its options decoded
    for step in ("-- SYN -", "- SYN/ACK --", "mss 1460", "sackOK", "wscale", "FIN"):
        assert step in me["stderr"]
    tshark = run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.number",
                  "-e", "_ws.malformed", "-e", "_ws.expert.severity"])
    rows = [r.split("\t") for r in tshark.stdout.splitlines()]
    assert len(rows) > 10
    assert [r for r in rows if r[1]] == [], "tshark found malformed packets"
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert kinds == ["CREATED", "ESTABLISHED", "CLOSED"]


def test_connect_to_an_absent_host_fails_with_the_kernels_icmp_reason(
        topology: Topology) -> None:
    # Nobody has 10.0.1.77: the router namespace's ARP fails and its kernel answers our
    # SYN with ICMP host unreachable, which must end the connect with that reason.
    p = ours.start(topology, "connect", "--no-mptcp", "10.0.1.77", 5000)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert "10.0.1.77:5000 is unreachable: host unreachable (ICMP)" in err
