"""Our stack over IPv6 against the kernel (issue 10, first part): TCP and MPTCP both
roles with sha256 and the kernel's view, a v6 join, ping -6, a closed port's RST.
The topology gives path i fd00:i::/64: the kernel fd00:i::1, our stack fd00:i::2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.interop import ours
from tests.interop.diagnosis import EXIT_UNMET
from tests.interop.harness import Topology, nstat_diff, nstat_errors, run
from tests.interop.payload import expected_sha256

MB = 1_000_000


def peer6(i: int) -> str:
    return f"fd00:{i:x}::1"


def ours6(i: int) -> str:
    return f"fd00:{i:x}::2"


def kernel_server(topo: Topology, port: int, *args: object) -> subprocess.Popen[str]:
    srv = topo.popen_peer(*topo.kpeer("server", "--port", port, "--once", "--ipv6", *args))
    topo.wait_listening(topo.peer_ns, port)
    return srv


@pytest.mark.parametrize("mptcp", [False, True], ids=["tcp", "mptcp"])
def test_our_client_over_ipv6_to_a_kernel_server_each_way(topology: Topology,
                                                          mptcp: bool) -> None:
    port = 6800 + mptcp
    before = topology.nstat_peer()
    srv = kernel_server(topology, port, "--echo", *(["--mptcp"] if mptcp else []))
    size = 20 * MB
    me = ours.result(ours.start(topology, "connect", peer6(1), port, "--send-bytes", size,
                                "--json", *([] if mptcp else ["--no-mptcp"])), timeout=120)
    kernel = topology.kpeer_result(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert me["local"].startswith(f"[{ours6(1)}]:") and me["remote"] == f"[{peer6(1)}]:{port}"
    assert me["sent"] == me["received"] == size
    assert me["received_sha256"] == me["sent_sha256"] == kernel["rx_sha256"]
    assert me["mptcp"] is mptcp and not me["fallback"] and me["diagnosis"] == []
    if mptcp:
        assert kernel["fallback"] is False and kernel["token"] == me["remote_token"]
    assert nstat_errors(nstat_diff(before, topology.nstat_peer()), me) == {}


@pytest.mark.parametrize("mptcp", [False, True], ids=["tcp", "mptcp"])
def test_kernel_client_over_ipv6_to_our_listener(topology: Topology, mptcp: bool) -> None:
    port = 6810 + mptcp
    before = topology.nstat_peer()
    lst = ours.start_listener(topology, port, "--once", "--json",
                              *([] if mptcp else ["--no-mptcp"]))
    cli = topology.run_peer(*topology.kpeer("client", ours6(1), port, "--send-bytes",
                                            10 * MB, *(["--mptcp"] if mptcp else [])),
                            timeout=60)
    kernel = json.loads(cli.stdout.splitlines()[-1])
    me = ours.result(lst)
    assert me["returncode"] == 0, me["stderr"]
    assert me["local"] == f"[{ours6(1)}]:{port}"
    assert me["received"] == 10 * MB and me["received_sha256"] == expected_sha256(10 * MB)
    assert kernel["tx_sha256"] == me["received_sha256"]
    assert me["mptcp"] is mptcp and not me["fallback"] and me["diagnosis"] == []
    assert nstat_errors(nstat_diff(before, topology.nstat_peer()), me) == {}


def test_an_ipv6_join_carries_data_with_the_kernel(topology: Topology,
                                                   tmp_path: Path) -> None:
    port = 6820
    before = topology.nstat_peer()
    srv = kernel_server(topology, port, "--mptcp")
    events = tmp_path / "ev.jsonl"
    me = ours.result(ours.start(topology, "connect", peer6(1), port, "--send-bytes", 50 * MB,
                                "--subflow", ours6(2), "--json", "--events", events),
                     timeout=120)
    kernel = topology.kpeer_result(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["rx_sha256"] == me["sent_sha256"] and kernel["rx_bytes"] == 50 * MB
    assert me["subflows"] == 2 and all(n > 0 for n in me["subflow_bytes"]), me
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtMPJoinAckRx") == 1 and nstat_errors(diff, me) == {}
    evs = [json.loads(ln) for ln in events.read_text().splitlines()]
    sf = [e for e in evs if e["event"] == "SF_ESTABLISHED"]
    assert sf and sf[0]["saddr6"] == ours6(2) and sf[0]["daddr6"] == peer6(1), sf


def test_ping6_and_a_closed_port(topology: Topology) -> None:
    lst = ours.start_listener(topology, 6830, "--once", "--json")
    try:
        ping = topology.run_peer("ping", "-6", "-c", "2", "-W", "2", "-i", "0.2", ours6(1),
                                 check=False, timeout=10)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        cli = topology.run_peer(*topology.kpeer("client", ours6(1), 6831, "--send-bytes", 1),
                                check=False, timeout=20)
        assert "refused" in (cli.stdout + cli.stderr).lower(), cli.stdout + cli.stderr
        # a protocol we do not serve (253, RFC 3692's experimental number), from a raw
        # socket of the kernel's: ICMPv6 parameter problem (IPv4: protocol unreachable),
        # as the kernel's counters see them
        before = topology.nstat_peer()
        for dst, family in ((ours6(1), "AF_INET6"), (topology.our_addr(1), "AF_INET")):
            topology.run_peer(sys.executable, "-c",
                              f"import socket; s = socket.socket(socket.{family}, "
                              f"socket.SOCK_RAW, 253); s.sendto(b'x' * 8, ({dst!r}, 0))")
        deadline = time.monotonic() + 5
        while True:
            diff = nstat_diff(before, topology.nstat_peer())
            if (diff.get("Icmp6InParmProblems") and diff.get("IcmpInDestUnreachs")) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert diff.get("Icmp6InParmProblems") == 1 and diff.get("IcmpInDestUnreachs") == 1, diff
        assert diff.get("Icmp6InErrors", 0) == 0 and diff.get("IcmpInErrors", 0) == 0, diff
    finally:
        topology.run_peer(*topology.kpeer("client", ours6(1), 6830, "--send-bytes", 1),
                          check=False, timeout=20)
        ours.result(lst)


@pytest.fixture
def peer_endpoints(topology: Topology):  # type: ignore[no-untyped-def]
    """The kernel's endpoints, flushed before and after the test."""
    topology.run_peer("ip", "mptcp", "endpoint", "flush")
    yield lambda *args: topology.run_peer("ip", "mptcp", "endpoint", "add", *args)
    topology.run_peer("ip", "mptcp", "endpoint", "flush")


def test_our_listener_announces_an_ipv6_address_and_the_kernel_joins_it(
        topology: Topology, peer_endpoints: object, tmp_path: Path) -> None:
    port = 6840
    before = topology.nstat_peer()
    events = tmp_path / "ev.jsonl"
    lst = ours.start_listener(topology, port, "--once", "--json", "--announce", ours6(2),
                              "--events", events)
    cli = topology.run_peer(*topology.kpeer("client", ours6(1), port, "--mptcp",
                                            "--send-bytes", 30 * MB), timeout=60)
    kernel = json.loads(cli.stdout.splitlines()[-1])
    me = ours.result(lst)
    assert me["returncode"] == 0 and me["diagnosis"] == [], me["stderr"]
    assert me["received_sha256"] == kernel["tx_sha256"] == expected_sha256(30 * MB)
    # the kernel echoed our ADD_ADDR6 (28 bytes, HMAC over the 16-byte address) and
    # joined it: both subflows carried data
    assert me["subflows"] == 2 and all(n > 0 for n in me["subflow_rx_bytes"]), me
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtAddAddr") == 1 and diff.get("MPTcpExtMPJoinSynAckRx") == 1, diff
    assert nstat_errors(diff, me) == {}
    evs = [json.loads(ln) for ln in events.read_text().splitlines()]
    assert any(e["event"] == "SF_ESTABLISHED" and e.get("saddr6") == ours6(2) for e in evs)


@pytest.mark.parametrize("first", ["ipv6", "v4mapped", "ipv4"])
def test_the_kernel_announces_an_ipv6_address_and_we_join_it(
        topology: Topology, peer_endpoints, first: str) -> None:  # type: ignore[no-untyped-def]
    """ADD_ADDR6 from a dual-stack (AF_INET6) kernel socket, joined from our fd00:2::2.
    `v4mapped`: we connect to ::ffff:10.0.1.1, over IPv4 as an AF_INET6 socket would:
    a mixed-family MPTCP connection, as Linux allows on such a socket. `ipv4`: we connect
    to 10.0.1.1, as an AF_INET socket: echoed, not joined, and said (mptcp_join.sh
    "IPv4 sockets do not use IPv6 addresses": no join SYN)."""
    port = 6850 + ("ipv6", "v4mapped", "ipv4").index(first)
    peer_endpoints(peer6(2), "dev", "path2", "signal")
    before = topology.nstat_peer()
    srv = kernel_server(topology, port, "--mptcp")
    to = {"ipv6": peer6(1), "v4mapped": f"::ffff:{topology.peer_addr(1)}",
          "ipv4": topology.peer_addr(1)}[first]
    me = ours.result(ours.start(topology, "connect", to, port, "--send-bytes", 30 * MB,
                                "--json", "--stats"), timeout=120)
    kernel = topology.kpeer_result(srv)
    assert kernel["rx_sha256"] == me["sent_sha256"] and kernel["rx_bytes"] == 30 * MB
    if first == "ipv4":
        assert me["returncode"] == 0 and me["subflows"] == 1, me["stderr"]
        (f,) = me["diagnosis"]
        assert f["code"] == "add-addr-other-family" and f["severity"] == "info", f
        diff = nstat_diff(before, topology.nstat_peer())
        assert diff.get("MPTcpExtEchoAdd") == 1 and "MPTcpExtMPJoinSynRx" not in diff, diff
        assert nstat_errors(diff, me) == {}
        return
    assert me["returncode"] == 0 and me["diagnosis"] == [], me["stderr"]
    assert me["subflows"] == 2 and all(n > 0 for n in me["subflow_bytes"]), me
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtEchoAdd") == 1 and diff.get("MPTcpExtMPJoinAckRx") == 1, diff
    assert nstat_errors(diff, me) == {}


@pytest.mark.parametrize("sock", ["AF_INET6", "AF_INET"])
def test_mixed_families_with_our_listener(topology: Topology, peer_endpoints: object,
                                          tmp_path: Path, sock: str) -> None:
    """A kernel client connects over IPv4 and we announce fd00:2::2. From an AF_INET6
    socket (v4-mapped ::ffff:10.0.1.2) Linux joins it: one connection, an IPv4 and an
    IPv6 subflow. From an AF_INET socket it echoes and never joins ('IPv4 sockets do
    not use IPv6 addresses', mptcp_join.sh): we say so, and exit 4 (not had)."""
    port = 6842 + (sock == "AF_INET")
    before = topology.nstat_peer()
    lst = ours.start_listener(topology, port, "--once", "--json", "--announce", ours6(2))
    to = f"::ffff:{topology.our_addr(1)}" if sock == "AF_INET6" else topology.our_addr(1)
    cli = topology.run_peer(*topology.kpeer("client", to, port, "--mptcp",
                                            "--send-bytes", 20 * MB), timeout=60)
    kernel = json.loads(cli.stdout.splitlines()[-1])
    me = ours.result(lst)
    assert me["received_sha256"] == kernel["tx_sha256"] == expected_sha256(20 * MB)
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtAddAddr") == 1 and diff.get("MPTcpExtEchoAddTx") == 1, diff
    assert nstat_errors(diff, me) == {}
    if sock == "AF_INET6":
        assert me["returncode"] == 0 and me["diagnosis"] == [], me["stderr"]
        assert me["subflows"] == 2 and all(n > 0 for n in me["subflow_rx_bytes"]), me
        assert diff.get("MPTcpExtMPJoinSynAckRx") == 1, diff
        return
    assert me["returncode"] == EXIT_UNMET and me["subflows"] == 1, me
    (f,) = me["diagnosis"]
    assert f["code"] == "add-addr-ignored" and ours6(2) in f["text"], f
    assert "AF_INET" in f["hint"] and "IPv4 sockets do not use IPv6" in f["hint"], f
    assert "MPTcpExtMPJoinSynTx" not in diff, diff


def test_a_v6_join_to_a_kernel_af_inet_socket_is_refused(topology: Topology,
                                                         peer_endpoints,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path) -> None:
    """The kernel's AF_INET server announces its IPv6 fd00:2::1 on an IPv4 connection
    (Linux announces across families) and we, dual-stack (a connect to the v4-mapped
    ::ffff:10.0.1.1: an AF_INET6 socket's), join it: no socket of the
    kernel listens on IPv6 at that port, so its stack answers our MP_JOIN SYN with a
    plain RST. The bytes all go on the IPv4 subflow; the finding names the cause."""
    port = 6855
    peer_endpoints(peer6(2), "dev", "path2", "signal")
    srv = topology.popen_peer(*topology.kpeer("server", "--port", port, "--once", "--mptcp"))
    topology.wait_listening(topology.peer_ns, port)
    me = ours.result(ours.start(topology, "connect", f"::ffff:{topology.peer_addr(1)}", port,
                                "--send-bytes", 10 * MB, "--json"), timeout=60)
    kernel = topology.kpeer_result(srv)
    assert kernel["rx_bytes"] == 10 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    assert me["returncode"] == EXIT_UNMET and me["subflows"] == 1, me["stderr"]
    (f,) = me["diagnosis"]
    assert f["code"] == "join-refused" and "plain RST" in f["text"], f
    assert f["packet"]["subflow"].startswith(f"[{ours6(2)}]:"), f
    assert "AF_INET" in f["hint"] and "IPv4 sockets do not use IPv6" in f["hint"], f


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_a_smaller_mtu_on_the_path_is_learnt_from_packet_too_big(
        topology: Topology, family: str) -> None:
    """The router's side of path 2 at MTU 1400: our 1500-byte packets (cut from our
    GSO super-packets) cannot go on; it answers 'fragmentation needed' (DF, IPv4) or
    'packet too big' (IPv6), our MSS shrinks and the data goes again at the new size,
    with no stall. (Only that side: the peer's own SYN/ACK would otherwise announce the
    smaller MSS and no packet would ever be too big.)"""
    port = 6860 + (family == "ipv6")
    to = peer6(2) if family == "ipv6" else topology.peer_addr(2)
    topology.run_user("ip", "link", "set", "path2", "mtu", "1400")
    try:
        srv = kernel_server(topology, port, "--mptcp")
        t0 = time.monotonic()
        me = ours.result(ours.start(topology, "connect", to, port, "--send-bytes", 20 * MB,
                                    "--json", "--stats", "--timeout", "30"), timeout=60)
        took = time.monotonic() - t0
        kernel = topology.kpeer_result(srv)
    finally:
        topology.run_user("ip", "link", "set", "path2", "mtu", "1500")
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["rx_bytes"] == 20 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    reduced = re.search(r"^TCPPMTUReduced\s+(\d+)$", me["stderr"], re.MULTILINE)
    assert reduced and int(reduced.group(1)) >= 1, me["stderr"][-2000:]
    assert took < 15, took  # no stall (an RTO-driven crawl would take far longer)


def test_over_ipv6_with_checksums_and_tshark_decodes_the_pcap(topology: Topology,
                                                             tmp_path: Path) -> None:
    port = 6870
    before = topology.nstat_peer()
    srv = kernel_server(topology, port, "--mptcp")
    pcap = tmp_path / "v6.pcap"
    me = ours.result(ours.start(topology, "connect", peer6(1), port, "--send-bytes", 5 * MB,
                                "--json", "--checksum", "--pcap", pcap), timeout=60)
    kernel = topology.kpeer_result(srv)
    assert me["returncode"] == 0 and me["checksum"] and me["mptcp"], me["stderr"]
    assert kernel["csum_enabled"] is True and kernel["rx_sha256"] == me["sent_sha256"]
    assert nstat_errors(nstat_diff(before, topology.nstat_peer()), me) == {}
    t = run(["tshark", "-r", str(pcap), "-o", "mptcp.analyze_mptcp:TRUE", "-T", "fields",
             "-e", "ipv6.src", "-e", "mptcp.stream", "-e", "_ws.malformed"])
    rows = [r.split("\t") for r in t.stdout.splitlines()]
    assert len(rows) > 10 and all(r[0] for r in rows), rows[:3]  # every packet IPv6
    assert [r for r in rows if len(r) > 2 and r[2]] == [], "tshark found malformed packets"
    assert {r[1] for r in rows[1:]} == {"0"}, "not linked to one MPTCP stream"


SIZE = 100 * MB  # at 100 Mbit/s: seconds of transfer left when the commands come


def test_an_ipv6_address_removed_mid_transfer(topology: Topology, shaped_paths: None,
                                              tmp_path: Path) -> None:
    """REMOVE_ADDR of an IPv6 address id: its subflow closes, the rest of the data goes
    on the first; and MP_PRIO on an IPv6 subflow first (backup on). Shaped paths, so
    that the transfer is still running when the commands come."""
    ctl = tmp_path / "ctl"
    port = 6871
    before = topology.nstat_peer()
    srv = kernel_server(topology, port, "--mptcp")
    p = ours.start(topology, "connect", peer6(1), port, "--subflow", ours6(2),
                   "--send-bytes", SIZE, "--json", "--stats", "--control", ctl,
                   "--timeout", "60")

    def v6_sf(c: dict[str, object]) -> dict[str, object] | None:
        return next((s for s in c["subflows"]  # type: ignore[attr-defined]
                     if s["local"].startswith(f"[{ours6(2)}]:")), None)

    ours.wait_for(ctl, lambda c: (v6_sf(c) or {}).get("tx_bytes", 0) > 2 * MB)  # type: ignore[operator]
    assert ours.ctl(ctl, f"backup {ours6(2)} on")["ok"]
    deadline = time.monotonic() + 10  # the MP_PRIO reached the kernel before we remove
    while nstat_diff(before, topology.nstat_peer()).get("MPTcpExtMPPrioRx", 0) < 1:
        assert time.monotonic() < deadline, "the kernel never counted our MP_PRIO"
        time.sleep(0.05)
    status = ours.ctl(ctl, "status")
    # the REMOVE_ADDR must find the connection still running (under load, the MP_PRIO
    # wait could otherwise reach the end of the transfer: a removal after the data-level
    # close is a test of something else)
    assert status["connections"][0]["sent"] < SIZE - 10 * MB, status["connections"][0]
    # and must not be lost: it goes once, on whatever segment is next (as Linux's), and
    # tbf drops a share of what queues behind our data (seen: 1 run in 5 without the
    # kernel's RmAddr). The shaping has done its job (the transfer is still running):
    # lift it
    for ns in (topology.user_ns, topology.peer_ns):
        for i in (1, 2, 3):
            topology.run_in(ns, "tc", "qdisc", "del", "dev", f"path{i}", "root", check=False)
    answer = ours.ctl(ctl, f"remove {ours6(2)}")
    assert answer["ok"] and list(answer["done"].values()) == [1], \
        json.dumps([answer, status["connections"][0]["subflows"]])
    me = ours.result(p, timeout=120)
    kernel = topology.kpeer_result(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["rx_bytes"] == SIZE and kernel["rx_sha256"] == me["sent_sha256"]
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtMPPrioRx") == 1 and diff.get("MPTcpExtRmAddr") == 1, diff
    errors = nstat_errors(diff, me)
    errors.pop("MPTcpExtMPRstRx", None)  # the kernel may reset the removed subflow
    errors.pop("MPTcpExtMPRstTx", None)
    assert errors == {}, diff
