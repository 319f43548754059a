"""The diagnosis (issue 9) of joins, announcements and subflows, produced for real
against the Linux kernel: each test makes one finding happen and checks (1) its code,
(2) the packet it points at, decoded from our `--pcap` (frame N there), (3) that no
other code is claimed, (4) the exit status (4: every byte delivered but a join or an
announcement asked for did not happen) and (5) the bytes, by sha256.

What the kernel (6.18) does, measured here:
- `ip mptcp limits set subflows 0`: it takes our MP_JOIN SYN, answers with a SYN/ACK
  and resets the join when our third ACK arrives, with MP_TCPRST reason 3
  (administratively prohibited), counting MPJoinRejected;
- a third ACK with a wrong HMAC (`--fault join-hmac`): the same RST after the third
  ACK, but reason 1 (MPTCP error), counting MPJoinAckHMacFailure;
- a join SYN naming a token it does not know (`--fault join-token`): RST + MP_TCPRST
  reason 1 at once, MPJoinNoTokenFound;
- `ss -K` on an established subflow: RST with MP_TCPRST reason 0 (unspecified);
- a normal close of a two-subflow connection: FINs on both, no RST.
The kernel never sends a bad SYN/ACK HMAC nor skips an ADD_ADDR echo on its own, so
nftables in the peer namespace does it: rewriting 4 bytes of the SYN/ACK's truncated
HMAC (the kernel's SYN/ACK options are MSS, SACK_PERM + timestamps, NOP + window
scale, then MP_JOIN at TCP byte 40), or dropping our pure ACKs that carry ADD_ADDR
(`tcp option mptcp subtype 3` cannot: nft looks at the first MPTCP option only, the
DSS, so the rule matches ADD_ADDR's kind/length/subtype bytes where our stack puts
it, after the timestamps and the DSS).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.wire import ipv4, tcp
from stack.wire import mptcp as wm
from tests.interop import ours
from tests.interop.diagnosis import (
    EXIT_OK,
    EXIT_UNMET,
    Frame,
    Nft,
    chain,
    check_events,
    diagnosis_events,
    finish,
    frame_of,
    frames,
    parse_line,
    peer_nft,
)
from tests.interop.harness import REPO, Topology, nstat_diff
from tests.interop.payload import expected_sha256
from tests.interop.test_mptcp_join_interop import first_report

MB = 1_000_000
NFT_TABLE = "diagjoin"
# our listener's ADD_ADDR timer for the not-echoed test: 5 tries, doubling, given up
# after 0.2 * (1 + 2 + 4 + 8 + 16) = 6.2 s instead of 62 s with the default 2 s


# ---- our pcap ----------------------------------------------------------------------------
def rst_reason(f: Frame) -> int | None:
    rst = f.has(wm.MpTcpRst)
    return rst[0].reason if rst else None


# ---- fixtures ------------------------------------------------------------------------------
def kernel_server(topo: Topology, port: int) -> subprocess.Popen[str]:
    srv = topo.popen_peer(*topo.kpeer("server", "--port", port, "--mptcp"))
    topo.wait_listening(topo.peer_ns, port)
    return srv


@pytest.fixture
def peer_limits(topology: Topology) -> Iterator[Any]:
    """Set the kernel's `ip mptcp limits` for one test; back to 8 8 after."""
    def set_limits(subflows: int, add_addr_accepted: int) -> None:
        topology.run_peer("ip", "mptcp", "limits", "set", "subflows", subflows,
                          "add_addr_accepted", add_addr_accepted)
    yield set_limits
    set_limits(8, 8)


@pytest.fixture
def nft(topology: Topology) -> Iterator[Nft]:
    """nftables chains in table `NFT_TABLE` in the peer namespace (`peer_nft`)."""
    with peer_nft(topology, NFT_TABLE) as load:
        yield load


@pytest.fixture
def path1_10mbit(topology: Topology) -> Iterator[None]:
    """The kernel's sending side of path 1 at 10 Mbit/s (tbf): 12 MB take ~10 s."""
    topology.run_peer("tc", "qdisc", "replace", "dev", "path1", "root", "tbf", "rate", "10mbit",
                      "burst", "32kb", "latency", "50ms")
    yield
    topology.run_peer("tc", "qdisc", "del", "dev", "path1", "root", check=False)


def connect(topo: Topology, port: int, tmp: Path, *args: Any) -> subprocess.Popen[str]:
    return ours.start(topo, "connect", topo.peer_addr(1), port, "--pcap", tmp / "run.pcap",
                      "--events", tmp / "events.jsonl", *args)


def subflow_from(addr: str, min_tx: int) -> Any:
    """A `wait_for` predicate: our subflow from `addr` has sent more than `min_tx` B."""
    def pred(conn: dict[str, Any]) -> bool:
        return any(s["local"].startswith(addr + ":") and s["tx_bytes"] > min_tx
                   for s in conn["subflows"])
    return pred


# ---- join-refused -------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["subflow-limit", "fault-join-hmac", "fault-join-token"])
def test_join_refused_by_the_kernel(topology: Topology, peer_limits: Any, tmp_path: Path,
                                    how: str) -> None:
    """Our connect --subflow 10.0.2.2, refused by the kernel: over its subflow limit
    (reset after our third ACK, reason 3), or our own fault: a wrong third-ACK HMAC
    (reset after the third ACK, reason 1), a wrong token (the SYN reset, reason 1)."""
    port = {"subflow-limit": 7100, "fault-join-hmac": 7101, "fault-join-token": 7102}[how]
    if how == "subflow-limit":
        peer_limits(0, 8)
    fault = () if how == "subflow-limit" else ("--fault", how.removeprefix("fault-"))
    before = topology.nstat_peer()
    srv = kernel_server(topology, port)
    run = finish(connect(topology, port, tmp_path, "--subflow", topology.our_addr(2),
                         "--send-bytes", 5 * MB, "--json", *fault))
    kernel = first_report(srv)
    assert run.summary["clean"] and run.returncode == EXIT_UNMET, run.explain()
    assert kernel["rx_bytes"] == 5 * MB and kernel["rx_sha256"] == run.summary["sent_sha256"]
    assert run.summary["subflows"] == 1
    assert run.codes == ["join-refused"], run.explain()
    f = run.findings[0]
    assert f["severity"] == "error" and f["packet"]["direction"] == "in", run.explain()
    assert f["packet"]["subflow"].startswith(topology.our_addr(2) + ":")
    rst, fs = frame_of(run, tmp_path / "run.pcap", f)
    reason = 3 if how == "subflow-limit" else 1
    assert rst.flags & tcp.RST and rst_reason(rst) == reason, (rst, run.explain())
    assert f"with MP_TCPRST reason {reason} " in f["text"], run.explain()
    # what came before the RST on that subflow: our SYN, the kernel's SYN/ACK, and
    # (unless the token was wrong) our third ACK with MP_JOIN
    sub = f["packet"]["subflow"]
    ours_before = [fr for fr in fs[:rst.n - 1] if fr.on(sub, "out")]
    third_acks = [fr for fr in ours_before if fr.has(wm.MpJoinAck)]
    diff = nstat_diff(before, topology.nstat_peer())
    if how == "fault-join-token":
        assert "the peer answered our MP_JOIN SYN" in f["text"], run.explain()
        assert [fr.flags_text for fr in ours_before] == ["S"], ours_before
        assert diff.get("MPTcpExtMPJoinNoTokenFound") == 1, diff
    else:
        assert "the peer reset our join after our third ACK" in f["text"], run.explain()
        assert len(third_acks) == 1, ours_before
        if how == "subflow-limit":
            assert "subflow limit" in f["hint"], run.explain()
            assert diff.get("MPTcpExtMPJoinRejected") == 1, diff
        else:
            assert "third ACK's HMAC wrong" in f["hint"], run.explain()
            assert diff.get("MPTcpExtMPJoinAckHMacFailure") == 1, diff
    check_events(run, tmp_path / "events.jsonl")


def test_join_refused_syn_answered_with_a_plain_rst(topology: Topology, nft: Any,
                                                   tmp_path: Path) -> None:
    """nftables in the peer namespace answers MP_JOIN SYNs with a TCP reset (no
    MP_TCPRST): the join is refused at its SYN. Checked on the text output (no --json):
    the 'diagnosis:' line follows the summary line."""
    dropped = nft(chain("input", "tcp flags & (syn | ack) == syn tcp option mptcp subtype 1 "
                                 "counter reject with tcp reset"))
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(5 * MB))
    srv = kernel_server(topology, 7103)
    run = finish(connect(topology, 7103, tmp_path, "--subflow", topology.our_addr(2),
                         "--send", data))
    kernel = first_report(srv)
    assert run.returncode == EXIT_UNMET and "clean close" in run.stdout, run.explain()
    assert kernel["rx_bytes"] == 5 * MB
    assert kernel["rx_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert dropped() == [1]
    # the summary line, then exactly one diagnosis line
    out = run.stdout.splitlines()
    assert len(out) == 2 and "-> 10.0.1.1:7103" in out[0] and out[1] == run.lines[0], out
    f = parse_line(run.lines[0])
    assert (f["code"], f["severity"]) == ("join-refused", "error"), run.explain()
    assert "refused: the peer answered our MP_JOIN SYN with a plain RST" in f["text"]
    assert "firewall's reject" in f["hint"], run.explain()
    rst, _ = frame_of(run, tmp_path / "run.pcap", f)
    assert rst.flags & tcp.RST and rst_reason(rst) is None and not rst.mptcp, rst
    assert f["packet"]["subflow"].startswith(topology.our_addr(2) + ":")
    ev = diagnosis_events(tmp_path / "events.jsonl")
    assert [(e["code"], e["packet"]["frame"]) for e in ev] == [("join-refused", rst.n)], ev


# ---- join-bad-hmac ------------------------------------------------------------------------
def test_join_bad_hmac_kernel_synack_rewritten_on_the_way(topology: Topology, nft: Any,
                                                         tmp_path: Path) -> None:
    """nftables rewrites the first 4 bytes of the truncated HMAC in the kernel's
    MP_JOIN SYN/ACK to 0xdeadbeef: our join finds it wrong, resets the subflow (RST +
    MP_TCPRST) and the data goes on the first subflow."""
    # guard: MP_JOIN (kind 30, length 16, subtype 1) at TCP byte 40, the HMAC at 44
    rewritten = nft(chain("output", "tcp flags & (syn | ack) == (syn | ack) "
                                    "tcp option mptcp subtype 1 @th,320,20 0x1e101 "
                                    "counter @th,352,32 set 0xdeadbeef"))
    before = topology.nstat_peer()
    srv = kernel_server(topology, 7104)
    run = finish(connect(topology, 7104, tmp_path, "--subflow", topology.our_addr(2),
                         "--send-bytes", 5 * MB, "--json"))
    kernel = first_report(srv)
    assert rewritten() == [1]
    assert run.summary["clean"] and run.returncode == EXIT_UNMET, run.explain()
    assert kernel["rx_bytes"] == 5 * MB and kernel["rx_sha256"] == run.summary["sent_sha256"]
    assert run.codes == ["join-bad-hmac"], run.explain()
    f = run.findings[0]
    synack, fs = frame_of(run, tmp_path / "run.pcap", f)
    assert synack.flags & (tcp.SYN | tcp.ACK) == tcp.SYN | tcp.ACK, synack
    mpj = synack.has(wm.MpJoinSynAck)
    assert mpj and mpj[0].thmac >> 32 == 0xDEADBEEF, synack
    assert f"truncated HMAC is 0x{mpj[0].thmac:016x}, expected 0x" in f["text"], run.explain()
    # our answer on that subflow: an RST with MP_TCPRST (reason 1), no third ACK
    later = [fr for fr in fs[synack.n:] if fr.on(f["packet"]["subflow"], "out")]
    assert later and later[0].flags & tcp.RST and rst_reason(later[0]) == 1, later[:3]
    assert not any(fr.has(wm.MpJoinAck) for fr in later)
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtMPJoinSynRx") == 1 and not diff.get("MPTcpExtMPJoinAckRx"), diff
    check_events(run, tmp_path / "events.jsonl")


# ---- join-unknown-token (host level) ------------------------------------------------------
RAW_SPORT = 45123


def raw_join_syn(src: str, dst: str, dport: int, token: int, timeout: float = 3.0) -> None:
    """Run in the peer namespace (a raw socket): send one MP_JOIN SYN naming `token`
    from src:RAW_SPORT to dst:dport, built with our own codecs, and print the answer
    (flags, MP_TCPRST reason) as one JSON line. The kernel has no socket for the
    4-tuple, so it lets the answer be."""
    hdr = tcp.TcpHeader(RAW_SPORT, dport, 0x12345678, 0, tcp.SYN, 64240,
                        [tcp.Mss(1460), tcp.SackPermitted(), tcp.Timestamps(1, 0), tcp.Nop(),
                         tcp.WindowScale(7),
                         wm.to_tcp_option(wm.MpJoinSyn(False, 5, token, 0xABCDEF01))])
    seg = tcp.emit(hdr, b"", socket.inet_aton(src), socket.inet_aton(dst))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    s.sendto(seg, (dst, 0))
    answer: dict[str, Any] = {"flags": None, "reason": None}
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not select.select([s], [], [], 0.1)[0]:
            continue
        pkt = s.recv(65535)
        iph, stop = ipv4.parse(pkt, verify_checksum=False)
        h, _ = tcp.parse(pkt[iph.header_len:stop])
        if socket.inet_ntoa(iph.src) == dst and (h.src_port, h.dst_port) == (dport, RAW_SPORT):
            rst = [wm.parse_tcp_option(o) for o in h.options
                   if isinstance(o, tcp.UnknownOption) and o.kind == tcp.OPT_MPTCP]
            answer = {"flags": h.describe(), "ack": h.ack,
                      "reason": next((o.reason for o in rst if isinstance(o, wm.MpTcpRst)),
                                     None)}
            break
    print(json.dumps(answer), flush=True)


def test_join_unknown_token_a_raw_join_syn_to_our_listener(topology: Topology,
                                                           tmp_path: Path) -> None:
    """A hand-made MP_JOIN SYN with a random token reaches our listener (a kernel
    client only ever joins valid tokens): we answer RST + MP_TCPRST reason 1 and say
    so in a host-level 'diagnosis:' line after the summary. A kernel client's MPTCP
    connection to the same listener then runs normally (its own diagnosis empty)."""
    pcap = tmp_path / "run.pcap"
    lst = ours.start_listener(topology, 7105, "--once", "--json", "--pcap", pcap)
    token = int.from_bytes(os.urandom(4), "big")
    code = (f"from tests.interop.test_diagnosis_join_interop import raw_join_syn\n"
            f"raw_join_syn({topology.peer_addr(1)!r}, {topology.our_addr(1)!r}, 7105, {token})")
    answer = json.loads(topology.run_peer(sys.executable, "-c", code, cwd=REPO,
                                          timeout=30).stdout)
    assert answer["flags"] == "R." and answer["ack"] == 0x12345679 and answer["reason"] == 1, \
        answer
    cli = topology.run_peer(*topology.kpeer("client", topology.our_addr(1), 7105, "--mptcp",
                                            "--send-bytes", 2 * MB), timeout=60)
    run = finish(lst)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert run.summary["clean"] and run.summary["received_sha256"] == expected_sha256(2 * MB)
    assert run.summary["mptcp"] and run.codes == [], run.explain()  # the connection's own
    # the host's finding (not the connection's): after the JSON summary
    out = run.stdout.splitlines()
    assert len(out) == 2 and out[0].startswith("{") and out[1] == run.lines[0], out
    f = parse_line(run.lines[0])
    assert (f["code"], f["severity"]) == ("join-unknown-token", "error"), run.explain()
    assert f"names token {token:08x}, which is none of our connections'" in f["text"]
    assert "MP_TCPRST reason 1" in f["text"] and "token" in f["hint"]
    sub = f"{topology.our_addr(1)}:7105 > {topology.peer_addr(1)}:{RAW_SPORT}"
    assert f["packet"]["subflow"] == sub and f["packet"]["direction"] == "in"
    syn, fs = frame_of(run, pcap, f)
    mpj = syn.has(wm.MpJoinSyn)
    assert syn.flags == tcp.SYN and mpj and mpj[0].token == token, syn
    rst = fs[syn.n]  # our answer, the next frame
    assert rst.on(sub, "out") and rst.flags & tcp.RST and rst_reason(rst) == 1, rst
    # a join someone else sent is not something we asked for: the run is clean
    assert run.returncode == EXIT_OK, run.explain()


# ---- add-addr-ignored ---------------------------------------------------------------------
def test_add_addr_ignored_kernel_client_accepts_no_announcement(
        topology: Topology, peer_limits: Any, no_endpoints: None, tmp_path: Path) -> None:
    """Our listener announces 10.0.2.2; the kernel client (add_addr_accepted 0) echoes
    it and never joins it."""
    peer_limits(8, 0)
    before = topology.nstat_peer()
    pcap, events = tmp_path / "run.pcap", tmp_path / "events.jsonl"
    lst = ours.start_listener(topology, 7106, "--once", "--json", "--pcap", pcap,
                              "--events", events, "--announce", topology.our_addr(2))
    cli = topology.run_peer(*topology.kpeer("client", topology.our_addr(1), 7106, "--mptcp",
                                            "--send-bytes", 5 * MB), timeout=60)
    run = finish(lst)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert run.summary["clean"] and run.returncode == EXIT_UNMET, run.explain()
    assert run.summary["received_sha256"] == expected_sha256(5 * MB)
    assert run.summary["subflows"] == 1
    assert run.codes == ["add-addr-ignored"], run.explain()
    f = run.findings[0]
    assert f["severity"] == "warning" and "add_addr_accepted" in f["hint"], run.explain()
    assert f"our ADD_ADDR for {topology.our_addr(2)} (id 1) was echoed" in f["text"]
    echo, fs = frame_of(run, pcap, f)  # the kernel's echo of our announcement
    adds = echo.has(wm.AddAddr)
    assert adds and adds[0].echo and adds[0].addr == socket.inet_aton(topology.our_addr(2)), echo
    assert adds[0].addr_id == 1
    # the first echo we got, and nobody joined
    echoes = [fr.n for fr in fs if any(a.echo for a in fr.has(wm.AddAddr))]
    assert echoes[0] == echo.n
    assert not [fr for fr in fs if fr.has(wm.MpJoinSyn)]
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtAddAddr") == 1 and not diff.get("MPTcpExtMPJoinSynTx"), diff
    check_events(run, events)


# ---- add-addr-not-echoed ------------------------------------------------------------------
@pytest.mark.parametrize("when", ["given-up", "connection-ended"])
def test_add_addr_not_echoed_our_announcements_dropped_on_the_way(
        topology: Topology, nft: Any, no_endpoints: None, path1_10mbit: None,
        tmp_path: Path, when: str) -> None:
    """nftables in the peer namespace drops every segment carrying our ADD_ADDR (our
    pure ACKs: no data is lost), so the kernel never echoes it. Our ADD_ADDR timer is
    the kernel's (the largest subflow RTO, doubling, 3 retransmissions).
    given-up: the kernel client's 12 MB at 10 Mbit/s outlast the 4 tries (a few
    RTOs): we give up. connection-ended: 1 MB (under a second) ends first; the finding
    says how many went, unechoed."""
    port, size = (7107, 12 * MB) if when == "given-up" else (7111, MB)
    # ADD_ADDR v4 with HMAC: kind 30, length 16, subtype 3, E clear, right after NOP NOP
    # TS (12): TCP byte 32 (a pure ACK with an ADD_ADDR carries nothing else, as Linux's)
    dropped = nft(chain("input", "@th,256,24 0x1e1030 counter drop"))
    pcap, events = tmp_path / "run.pcap", tmp_path / "events.jsonl"
    lst = ours.start_listener(topology, port, "--once", "--json", "--pcap", pcap,
                              "--events", events, "--announce", topology.our_addr(2))
    cli = topology.run_peer(*topology.kpeer("client", topology.our_addr(1), port, "--mptcp",
                                            "--send-bytes", size), timeout=60)
    run = finish(lst)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert run.summary["clean"] and run.returncode == EXIT_UNMET, run.explain()
    assert run.summary["received_sha256"] == expected_sha256(size)
    assert run.codes == ["add-addr-not-echoed"], run.explain()
    f = run.findings[0]
    fs = frames(pcap)
    announced = [fr for fr in fs if any(not a.echo for a in fr.has(wm.AddAddr))]
    tries = len(announced)
    assert (tries == 4) if when == "given-up" else (2 <= tries < 4), announced
    assert sum(dropped()) == tries, (announced, dropped())
    end = "never echoed: given up" if when == "given-up" else \
        "not echoed before the connection ended"
    assert f"our ADD_ADDR for {topology.our_addr(2)} (id 1) was sent {tries} times and " \
           + end in f["text"], run.explain()
    # the rule cost no data: every ADD_ADDR rode a pure ACK
    assert all(fr.payload == 0 and not fr.flags & (tcp.SYN | tcp.FIN) for fr in announced)
    assert not any(a.echo for fr in fs for a in fr.has(wm.AddAddr))
    # the finding points at the last announcement
    last, _ = frame_of(run, pcap, f)
    assert f["packet"]["direction"] == "out" and last.n == announced[-1].n, (last, announced)
    check_events(run, events)


# ---- subflow-reset ------------------------------------------------------------------------
@pytest.mark.parametrize("kill", [True, False], ids=["ss-K", "normal-close"])
def test_subflow_reset_kernel_kills_our_join(topology: Topology, shaped_paths: None,
                                            tmp_path: Path, kill: bool) -> None:
    """Our connect with a join on path 2; `ss -K` in the peer namespace destroys the
    kernel's end of the join mid-transfer: RST + MP_TCPRST reason 0, the data goes on
    path 1. The same run without the kill (a normal close of both subflows: FINs)
    claims nothing."""
    port = 7108 if kill else 7109
    ctl = tmp_path / "ctl"
    srv = kernel_server(topology, port)
    p = connect(topology, port, tmp_path, "--subflow", topology.our_addr(2),
                "--send-bytes", 40 * MB, "--json", "--control", ctl, "--timeout", 40)
    if kill:
        ours.wait_for(ctl, subflow_from(topology.our_addr(2), 5 * MB))
        killed = topology.run_peer("ss", "-K", "-tnH", "dst", topology.our_addr(2)).stdout
    run = finish(p)
    if kill:  # a miss here is the kill's, not our stack's: say which
        assert topology.our_addr(2) in killed, f"ss -K destroyed nothing: {killed!r}"
    kernel = first_report(srv)
    assert run.summary["clean"] and run.returncode == EXIT_OK, run.explain()
    assert kernel["rx_bytes"] == 40 * MB and kernel["rx_sha256"] == run.summary["sent_sha256"]
    fs = frames(tmp_path / "run.pcap")
    resets = [fr for fr in fs if fr.flags & tcp.RST and fr.src == topology.peer_addr(1)]
    if not kill:
        assert run.codes == [], run.explain()
        assert resets == [] and len([fr for fr in fs if fr.flags & tcp.FIN]) >= 4
        return
    assert run.codes == ["subflow-reset"], (run.explain(), killed, resets[:3])
    f = run.findings[0]
    assert f["severity"] == "warning" and f["packet"]["direction"] == "in"
    assert f["packet"]["subflow"].startswith(topology.our_addr(2) + ":"), run.explain()
    assert "with MP_TCPRST reason 0: unspecified error" in f["text"], run.explain()
    rst, _ = frame_of(run, tmp_path / "run.pcap", f)
    assert rst.flags & tcp.RST and rst_reason(rst) == 0, rst
    assert rst.n == next(fr.n for fr in resets if fr.has(wm.MpTcpRst)), resets[:3]
    check_events(run, tmp_path / "events.jsonl")


# ---- path-failed --------------------------------------------------------------------------
def test_path_failed_path1_down_mid_transfer(topology: Topology, shaped_paths: None,
                                            tmp_path: Path) -> None:
    """Two subflows; path 1 goes down in the peer namespace while both carry data: the
    first subflow goes stale after its retransmission timeouts, the join takes over,
    every byte arrives."""
    ctl = tmp_path / "ctl"
    srv = kernel_server(topology, 7110)
    p = connect(topology, 7110, tmp_path, "--subflow", topology.our_addr(2),
                "--send-bytes", 60 * MB, "--json", "--control", ctl, "--timeout", 40)
    ours.wait_for(ctl, subflow_from(topology.our_addr(2), 5 * MB))
    topology.run_peer("ip", "link", "set", "path1", "down")
    run = finish(p)
    kernel = first_report(srv)
    assert run.summary["clean"] and run.returncode == EXIT_OK, run.explain()
    assert kernel["rx_bytes"] == 60 * MB and kernel["rx_sha256"] == run.summary["sent_sha256"]
    assert run.codes == ["path-failed"], run.explain()
    f = run.findings[0]
    stale = f["packet"]["subflow"]
    assert stale.startswith(topology.our_addr(1) + ":"), run.explain()
    m = re.match(r"subflow (\S+ > \S+) went stale: (\d+) retransmission timeouts without an "
                 r"ACK .*; its data goes on (\S+ > \S+)$", f["text"])
    assert m and m[1] == stale and m[3].startswith(topology.our_addr(2) + ":"), run.explain()
    assert run.summary["subflow_bytes"][1] > 20 * MB  # path 2 took over
    # the packet: our last one on the stale subflow before it went stale, a
    # retransmission, never answered
    last, fs = frame_of(run, tmp_path / "run.pcap", f)
    assert f["packet"]["direction"] == "out" and last.payload > 0
    assert any(0 <= (last.seq - fr.seq) % (1 << 32) < fr.payload
               for fr in fs[:last.n - 1] if fr.on(stale, "out")), last  # sent before
    assert not any(fr.on(stale, "in") for fr in fs[last.n:]), "an answer came"
    check_events(run, tmp_path / "events.jsonl")
