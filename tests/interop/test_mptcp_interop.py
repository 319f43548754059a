"""MPTCP v1 between our stack and the Linux kernel, both roles, checksums off and on.

Each transfer is checked by sha256 and by the kernel's own view: the token `ip mptcp
monitor` prints for the connection is the `remote_token` we report; the IDSN the
kernel derived from our key (its data-level `rcv_nxt` in MPTCP_INFO and `ss -Mi`) is
ours; `ss -M` lists the connection as MPTCP; none of the kernel's MPTcpExt error
counters moves while the MP_CAPABLE ones do.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop import ours
from tests.interop.harness import Topology, nstat_diff, nstat_errors, run
from tests.interop.payload import expected_sha256

MB = 1_000_000
M64 = (1 << 64) - 1
CHECKSUM_MODES = ["off", "ours", "kernel"]  # who asks for DSS checksums


@pytest.fixture
def kernel_counters(topology: Topology) -> Callable[[], dict[str, int]]:
    """A function giving the kernel's counter movements since the test started."""
    before = topology.nstat_peer()
    return lambda: nstat_diff(before, topology.nstat_peer())


def assert_no_kernel_errors(diff: dict[str, int], me: dict[str, Any],
                            allowed: tuple[str, ...] = ()) -> None:
    errors = {k: v for k, v in nstat_errors(diff, me).items() if k not in allowed}
    assert errors == {}, f"the kernel counted errors: {errors}"


@pytest.fixture
def checksum(request: pytest.FixtureRequest, topology: Topology) -> Iterator[str]:
    """Parametrised: which side asks for DSS checksums (kernel: its sysctl)."""
    mode: str = request.param
    topology.run_peer("sysctl", "-qw", f"net.mptcp.checksum_enabled={int(mode == 'kernel')}")
    try:
        yield mode
    finally:
        topology.run_peer("sysctl", "-qw", "net.mptcp.checksum_enabled=0")


class Monitor:
    """`ip mptcp monitor` in the peer namespace for the duration of a test."""

    def __init__(self, topo: Topology) -> None:
        self.p = topo.popen_peer("ip", "mptcp", "monitor")
        time.sleep(0.2)  # let it subscribe before the connection starts

    def events(self) -> list[dict[str, str]]:
        self.p.terminate()
        out, _ = self.p.communicate(timeout=10)
        evs = []
        for line in out.splitlines():
            m = re.match(r"\[\s*(\w+)\]\s*(.*)", line)
            if m:
                ev = dict(kv.split("=", 1) for kv in m.group(2).split() if "=" in kv)
                ev["event"] = m.group(1)
                evs.append(ev)
        return evs


@pytest.fixture
def monitor(topology: Topology) -> Monitor:
    return Monitor(topology)


def kernel_server(topo: Topology, port: int, *args: object) -> subprocess.Popen[str]:
    srv = topo.popen_peer(*topo.kpeer("server", "--port", port, "--once", "--mptcp", *args))
    topo.wait_listening(topo.peer_ns, port)
    return srv


def check_kernel_view(me: dict[str, Any], kernel: dict[str, Any], evs: list[dict[str, str]],
                      our_port: int, received_by_kernel: int, csum: bool) -> None:
    """The kernel's view of the connection agrees with ours."""
    assert me["mptcp"] and not me["fallback"], me.get("fallback_reason")
    assert kernel["fallback"] is False
    # the kernel's token is the remote token we derived from its key
    assert kernel["token"] == me["remote_token"]
    created = [e for e in evs if e["event"] == "CREATED" and e.get("token") == me["remote_token"]]
    assert created, f"ip mptcp monitor never printed CREATED for {me['remote_token']}: {evs}"
    assert str(our_port) in (created[0].get("dport"), created[0].get("sport"))
    assert any(e["event"] == "CLOSED" and e.get("token") == me["remote_token"] for e in evs)
    # the kernel derived our IDSN from our key: its data-level rcv_nxt at EOF is
    # IDSN + 1 + every byte we sent + 1 for our DATA_FIN
    assert kernel["rcv_nxt"] == (me["idsn"] + 1 + received_by_kernel + 1) & M64
    assert kernel["csum_enabled"] is csum and me["checksum"] is csum


@pytest.mark.parametrize("checksum", CHECKSUM_MODES, indirect=True)
def test_our_client_kernel_server_20mb_each_way(topology: Topology, checksum: str,
                                                 monitor: Monitor,
                                                 kernel_counters: Callable[[], dict[str, int]],
                                                 ) -> None:
    port = 6100 + CHECKSUM_MODES.index(checksum)
    srv = kernel_server(topology, port, "--echo")
    extra = ["--checksum"] if checksum == "ours" else []
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), port,
                                "--send-bytes", 20 * MB, "--json", *extra), timeout=180)
    kernel = topology.kpeer_result(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert me["sent"] == me["received"] == 20 * MB
    assert me["received_sha256"] == me["sent_sha256"] == kernel["rx_sha256"]
    our_port = int(me["local"].rsplit(":", 1)[1])
    check_kernel_view(me, kernel, monitor.events(), our_port, 20 * MB, checksum != "off")
    moved = kernel_counters()
    assert moved.get("MPTcpExtMPCapableSYNRX") == 1
    assert moved.get("MPTcpExtMPCapableACKRX") == 1
    assert_no_kernel_errors(moved, me)


@pytest.mark.parametrize("checksum", CHECKSUM_MODES, indirect=True)
def test_kernel_client_our_listener_20mb_each_way(topology: Topology, checksum: str,
                                                   monitor: Monitor,
                                                   kernel_counters: Callable[[], dict[str, int]],
                                                   ) -> None:
    port = 6110 + CHECKSUM_MODES.index(checksum)
    extra = ["--checksum"] if checksum == "ours" else []
    lst = ours.start_listener(topology, port, "--once", "--echo", "--json", *extra)
    cli = topology.run_peer(*topology.kpeer("client", topology.our_addr(1), port, "--mptcp",
                                            "--send-bytes", 20 * MB, "--echo-check"),
                            timeout=180)
    kernel = json.loads(cli.stdout.splitlines()[-1])
    me = ours.result(lst)
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["ok"], kernel
    assert me["received"] == me["sent"] == 20 * MB
    assert me["received_sha256"] == expected_sha256(20 * MB) == kernel["rx_sha256"]
    check_kernel_view(me, kernel, monitor.events(), port, 20 * MB, checksum != "off")
    moved = kernel_counters()
    assert moved.get("MPTcpExtMPCapableSYNACKRX") == 1
    assert_no_kernel_errors(moved, me)


def test_ss_shows_the_kernel_side_as_mptcp_with_our_idsn(topology: Topology) -> None:
    srv = kernel_server(topology, 6120, "--echo")
    me = ours.start(topology, "connect", topology.peer_addr(1), 6120, "--json", "--seed", "7")
    try:
        out = ""
        for _ in range(100):
            out = topology.run_peer("ss", "-MHni", "sport = :6120", check=False).stdout
            if "token:" in out:
                break
            time.sleep(0.05)
        assert "token:" in out, f"ss -M shows no MPTCP connection: {out!r}"
        token = re.search(r"token:([0-9a-f]+)", out)
        rcv_nxt = re.search(r"rcv_nxt:([0-9a-f]+)", out)
        assert token and rcv_nxt
    finally:
        me.terminate()
        mine = ours.result(me, timeout=30)
        srv.terminate()
    # --seed 7 makes our key deterministic; the summary reports it and its IDSN
    assert mine["remote_token"] == f"{int(token.group(1), 16):08x}"
    assert int(rcv_nxt.group(1), 16) == (mine["idsn"] + 1) & M64


def test_pcap_of_an_mptcp_connection_decodes_in_tshark(topology: Topology,
                                                       tmp_path: Path) -> None:
    srv = kernel_server(topology, 6121)
    pcap = tmp_path / "mptcp.pcap"
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6121,
                                "--send-bytes", 2 * MB, "--json", "--pcap", pcap, "--checksum"))
    assert me["returncode"] == 0 and topology.kpeer_result(srv)["ok"]
    t = run(["tshark", "-r", str(pcap), "-o", "mptcp.analyze_mptcp:TRUE",
             "-o", "mptcp.analyze_mappings:TRUE", "-T", "fields", "-e", "tcp.stream",
             "-e", "mptcp.stream", "-e", "_ws.malformed", "-e", "mptcp.expected_token"])
    rows = [r.split("\t") for r in t.stdout.splitlines()]
    assert len(rows) > 10
    assert [r for r in rows if r[2]] == [], "tshark found malformed packets"
    # only our connection (a kernel socket of an earlier test may still knock: RST)
    rows = [r for r in rows if r[0] == rows[0][0]]
    # a v1 SYN carries no key, so tshark links the connection from the SYN/ACK on
    streams = {r[1] for r in rows[1:]}
    assert len(streams) == 1 and "" not in streams, \
        f"tshark did not link our packets to one MPTCP stream: {sorted(streams)}"


# --- fallback ------------------------------------------------------------------------------
def test_fallback_to_a_plain_tcp_listener(topology: Topology, tmp_path: Path) -> None:
    srv = topology.popen_peer(*topology.kpeer("server", "--port", 6130, "--once"))
    topology.wait_listening(topology.peer_ns, 6130)
    events = tmp_path / "ev.jsonl"
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6130,
                                "--send-bytes", 5 * MB, "--json", "--events", events))
    kernel = topology.kpeer_result(srv)
    # every byte through, but MPTCP asked for and not had: exit 4, said why
    assert me["returncode"] == 4 and me["fallback"] and not me["mptcp"]
    assert [d["code"] for d in me["diagnosis"]] == ["fallback"]
    assert "no MP_CAPABLE" in me["fallback_reason"]
    assert kernel["rx_sha256"] == me["sent_sha256"] and kernel["rx_bytes"] == 5 * MB
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert kinds[0] == "FALLBACK" and kinds[-1] == "CLOSED"


def test_fallback_when_the_kernel_has_mptcp_disabled(topology: Topology) -> None:
    topology.run_peer("sysctl", "-qw", "net.mptcp.enabled=0")
    try:
        srv = topology.popen_peer(*topology.kpeer("server", "--port", 6131, "--once"))
        topology.wait_listening(topology.peer_ns, 6131)
        me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6131,
                                    "--send-bytes", 5 * MB, "--json"))
        kernel = topology.kpeer_result(srv)
    finally:
        topology.run_peer("sysctl", "-qw", "net.mptcp.enabled=1")
    assert me["returncode"] == 4 and me["fallback"]
    assert [d["code"] for d in me["diagnosis"]] == ["fallback"]
    assert kernel["rx_sha256"] == me["sent_sha256"]


def test_v0_syn_is_answered_as_plain_tcp_and_the_transfer_succeeds(
        topology: Topology, kernel_counters: Callable[[], dict[str, int]]) -> None:
    srv = kernel_server(topology, 6132)
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6132,
                                "--send-bytes", 5 * MB, "--json", "--mptcp-version", "0",
                                "--trace"))
    kernel = topology.kpeer_result(srv)
    assert me["returncode"] == 4 and me["fallback"]
    assert [d["code"] for d in me["diagnosis"]] == ["mpc-version-unsupported"]
    assert kernel["fallback"] is True and kernel["rx_sha256"] == me["sent_sha256"]
    assert "MP_CAPABLE v0" in me["stderr"]  # the ladder shows the v0 SYN we sent
    assert_no_kernel_errors(kernel_counters(), me)


def test_plain_tcp_client_to_our_mptcp_listener(topology: Topology) -> None:
    lst = ours.start_listener(topology, 6133, "--once", "--json")
    topology.run_peer(*topology.kpeer("client", topology.our_addr(1), 6133,
                                      "--send-bytes", 5 * MB), timeout=60)
    me = ours.result(lst)
    assert me["returncode"] == 0 and not me["mptcp"] and me["diagnosis"] == []
    assert me["received_sha256"] == expected_sha256(5 * MB)


# --- resets -----------------------------------------------------------------------------------
def test_kernel_fastclose_with_mp_tcprst_is_received(topology: Topology,
                                                     kernel_counters: Callable[[], dict[str, int]],
                                                     tmp_path: Path) -> None:
    # A kernel MPTCP socket closed with unread data aborts: RST + MP_FASTCLOSE (+ MP_TCPRST).
    events = tmp_path / "ev.jsonl"
    lst = ours.start_listener(topology, 6140, "--once", "--json", "--send-bytes", 4 * MB,
                              "--stats", "--events", events)
    topology.kernel_abort(topology.our_addr(1), 6140, after=0.5)
    me = ours.result(lst, timeout=30)
    assert me["returncode"] == 1 and not me["clean"]
    assert re.search(r"^MPFastcloseRx\s+1$", me["stderr"], re.MULTILINE), me["stderr"]
    assert re.search(r"^MPRstRx\s+1$", me["stderr"], re.MULTILINE)
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert "MP_FASTCLOSE" in kinds and kinds[-1] == "CLOSED"
    moved = kernel_counters()
    assert moved.get("MPTcpExtMPFastcloseTx", 0) == 1
    assert_no_kernel_errors(moved, me, allowed=("MPTcpExtMPRstTx",))
