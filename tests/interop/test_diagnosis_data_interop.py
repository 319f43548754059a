"""The diagnosis (issue 9) of the MP_CAPABLE handshake, the data path and the end of a
connection, produced for real against the Linux kernel. Each test makes one finding
happen and checks (1) its code, (2) the packet it points at, decoded from our `--pcap`
(frame N there), (3) that no other code is claimed, (4) the exit status (1 failed, 4
every byte delivered but something asked for did not happen), (5) the bytes on both
sides by sha256 (or byte by byte where a middlebox changed one), and (6) the kernel's
counters where they tell.

The middlebox is nftables in the peer namespace: `reset tcp option mptcp` turns the
kernel's MPTCP option into NOPs (on its SYN/ACK, its SYN, or its data after the
handshake); `@ih,0,16 set @ih,0,16 ^ 0xff00` flips the first payload byte of one
packet (the first data packet, or the first after 150 / 100 KB: conntrack's byte count,
`net.netfilter.nf_conntrack_acct=1`), so that a DSS checksum fails.

What the kernel (6.18) does, measured here:
- a v0 MP_CAPABLE SYN is answered as plain TCP; a SYN/ACK whose MP_CAPABLE is stripped
  makes our third ACK plain: the kernel counts MPCapableFallbackACK; its SYN stripped,
  our plain SYN/ACK makes it count MPCapableFallbackSYNACK;
- a checksum failing after the first mapping: the receiver sends MP_FAIL, the sender
  answers MP_FAIL on a pure ACK at once and puts an infinite mapping on the next skb it
  builds. That skb's segments are sized without the DSS option (1448 payload + 24 bytes
  of DSS: 1524 > 1500): IpFragFails, ICMP to itself, retransmitted forever, the transfer
  stalls (kernel to kernel too). Our kernel sender pauses after 300 KB and writes 1000
  bytes alone (`kpeer --pause-after`), so its infinite mapping rides on a small skb;
- a checksum failing in the first mapping: the receiver falls back without MP_FAIL
  (DSSFallback), its ACKs carry no MPTCP option from then on. A Linux sender does not
  notice, retransmits at the data level, and the receiver, now plain TCP, delivers the
  same bytes again (kernel to kernel: 11.5 MB from a 300 KB send); ours falls back too;
- `close()` with SO_LINGER 0 and unread data: RST + MP_FASTCLOSE (MPFastcloseTx,
  MPRstTx).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.mptcp import crypto
from stack.wire import ipv4, tcp
from stack.wire import mptcp as wm
from stack.wire.pcap import read as read_pcap
from tests.interop import diagnosis, ours
from tests.interop.diagnosis import (
    EXIT_CONN,
    EXIT_UNMET,
    Frame,
    Nft,
    Run,
    chain,
    counter,
    diagnosis_events,
    finish,
    frames,
    last_json,
    peer_nft,
    peer_sysctl,
)
from tests.interop.harness import REPO, Topology, nstat_diff, nstat_errors
from tests.interop.payload import expected_sha256, payload

MB = 1_000_000
NFT_TABLE = "diagdata"
M32, M64 = (1 << 32) - 1, (1 << 64) - 1
FLIP = "@ih,0,16 set @ih,0,16 ^ 0xff00"  # the first payload byte, xor 0xff


# ---- our stack, our pcap ------------------------------------------------------------------
def no_traceback(run: Run) -> list[str]:
    """Our stderr has no traceback; its 'mptcp-tun:' lines."""
    assert "Traceback" not in run.stderr, run.stderr
    return [ln for ln in run.stderr.splitlines() if ln.startswith("mptcp-tun:")]


def frame_of(run: Run, pcap: Path, finding: dict[str, Any]) -> tuple[Frame, list[Frame]]:
    """The packet a finding points at and every frame (`diagnosis.frame_of`), also
    checked against the finding's time: one subflow in every test here."""
    return diagnosis.frame_of(run, pcap, finding, timed=True)


def of_port(fs: list[Frame], port: int) -> list[Frame]:
    """The frames to or from `port` (a kernel socket of an earlier test may knock)."""
    return [g for g in fs if port in (g.sport, g.dport)]


def mapping_len(g: Frame) -> int | None:
    """The data-level length of the mapping `g` carries (a DSS, or the MP_CAPABLE on a
    client's first data)."""
    d = g.dss()
    if d is not None and d.dsn is not None:
        return d.data_len
    mpc = g.has(wm.MpCapable)
    return mpc[0].data_len if mpc else None


def sent_stream(fs: list[Frame], pcap: Path, addr: str, port: int) -> bytes:
    """The subflow bytes we sent from addr:port, in sequence order, from our pcap."""
    isn = next(f.seq for f in fs if f.src == addr and f.sport == port and f.flags & tcp.SYN)
    buf = bytearray()
    for _, pkt in read_pcap(pcap.read_bytes()):
        iph, end = ipv4.parse(pkt, verify_checksum=False)
        seg = memoryview(pkt)[iph.header_len:end]
        hdr, doff = tcp.parse(seg)
        if socket.inet_ntoa(iph.src) != addr or hdr.src_port != port or len(seg) == doff:
            continue
        off = (hdr.seq - isn - 1) & M32
        data = bytes(seg[doff:])
        if len(buf) < off + len(data):
            buf.extend(bytes(off + len(data) - len(buf)))
        buf[off:off + len(data)] = data
    return bytes(buf)


def one_byte_flipped(got: bytes, want: bytes) -> int:
    """`got` is `want` with exactly one byte xor 0xff (what our nft rule does); its
    offset."""
    assert len(got) == len(want), (len(got), len(want))
    diff = [i for i in range(len(want)) if got[i] != want[i]] if got != want else []
    assert len(diff) == 1, f"bytes that differ: {diff[:10]} ({len(diff)})"
    assert got[diff[0]] ^ want[diff[0]] == 0xFF
    return diff[0]


def dsn_in(text: str) -> int:
    m = re.search(r"DSN 0x([0-9a-f]+)", text)
    assert m, text
    return int(m.group(1), 16)


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def nft(topology: Topology) -> Iterator[Nft]:
    """nftables chains in table `NFT_TABLE` in the peer namespace (`peer_nft`)."""
    with peer_nft(topology, NFT_TABLE) as load:
        yield load


@pytest.fixture
def conntrack_acct(topology: Topology) -> Iterator[None]:
    """conntrack counts bytes in the peer namespace (`ct original|reply bytes`)."""
    with peer_sysctl(topology, "net.netfilter.nf_conntrack_acct", 1, 0):
        yield


@pytest.fixture
def kernel_moved(topology: Topology) -> Callable[[], dict[str, int]]:
    """The kernel's (peer namespace) counter movements since the test started."""
    before = topology.nstat_peer()
    return lambda: nstat_diff(before, topology.nstat_peer())


def mptcp_moved(diff: dict[str, int]) -> dict[str, int]:
    """The MPTcpExt counters that moved, without the handshake's and MPCurrEstab."""
    return {k: v for k, v in diff.items() if k.startswith("MPTcpExt")
            and k not in ("MPTcpExtMPCapableSYNRX", "MPTcpExtMPCapableACKRX",
                          "MPTcpExtMPCapableSYNTX", "MPTcpExtMPCapableSYNACKRX",
                          "MPTcpExtMPCurrEstab")}


def kernel_server(topo: Topology, port: int, *args: Any, mptcp: bool = True) -> Any:
    srv = topo.popen_peer(*topo.kpeer("server", "--port", port, "--once",
                                      *(["--mptcp"] if mptcp else []), *args))
    topo.wait_listening(topo.peer_ns, port)
    return srv


def connect(topo: Topology, port: int, tmp: Path, *args: Any) -> subprocess.Popen[str]:
    return ours.start(topo, "connect", topo.peer_addr(1), port, "--pcap", tmp / "run.pcap",
                      "--timeout", 30, *args)


def listen(topo: Topology, port: int, tmp: Path, *args: Any) -> subprocess.Popen[str]:
    return ours.start_listener(topo, port, "--once", "--pcap", tmp / "run.pcap",
                               "--timeout", 30, *args)


def kernel_client(topo: Topology, port: int, *args: Any) -> dict[str, Any]:
    cp = topo.run_peer(*topo.kpeer("client", topo.our_addr(1), port, "--mptcp", *args),
                       timeout=60)
    return json.loads(cp.stdout.splitlines()[-1])  # type: ignore[no-any-return]


# ---- the MP_CAPABLE handshake --------------------------------------------------------------
def test_mpc_version_unsupported_our_v0_syn_to_a_kernel_mptcp_server(
        topology: Topology, tmp_path: Path, kernel_moved: Callable[[], dict[str, int]]) -> None:
    srv = kernel_server(topology, 7200)
    run = finish(connect(topology, 7200, tmp_path, "--mptcp-version", 0, "--send-bytes",
                         2 * MB, "--json"))
    kernel = topology.kpeer_result(srv)
    me = run.summary
    assert run.codes == ["mpc-version-unsupported"], run.explain()
    assert run.returncode == EXIT_UNMET, run.explain()
    assert me["clean"] and me["fallback"] and not me["mptcp"]
    f, fs = frame_of(run, tmp_path / "run.pcap", run.findings[0])
    # our SYN said MP_CAPABLE v0; the kernel's SYN/ACK, the packet pointed at, says nothing
    assert fs[0].flags & (tcp.SYN | tcp.ACK) == tcp.SYN
    assert [m.version for m in fs[0].has(wm.MpCapable)] == [0]
    assert f.flags & (tcp.SYN | tcp.ACK) == tcp.SYN | tcp.ACK
    assert f.is_from(topology.peer_addr(1)) and f.mptcp == [] and f.nops < 4
    assert kernel["rx_bytes"] == me["sent"] == me["written"] == 2 * MB
    assert kernel["rx_sha256"] == me["sent_sha256"]
    assert kernel["fallback"] is True
    moved = kernel_moved()
    assert moved.get("MPTcpExtMPCapableSYNRX", 0) == 0  # a v0 option is not MPTCP to it
    assert nstat_errors(moved) == {} and mptcp_moved(moved) == {}, moved


def test_mpc_stripped_from_the_kernel_synack_our_connect(
        topology: Topology, tmp_path: Path, nft: Any,
        kernel_moved: Callable[[], dict[str, int]]) -> None:
    counters = nft(chain("output", "tcp flags & (syn | ack) == syn | ack "
                                   "counter reset tcp option mptcp"))
    srv = kernel_server(topology, 7201)
    run = finish(connect(topology, 7201, tmp_path, "--send-bytes", 2 * MB, "--json"))
    kernel = topology.kpeer_result(srv)
    me = run.summary
    assert run.codes == ["mpc-stripped"], run.explain()
    assert run.returncode == EXIT_UNMET, run.explain()
    assert me["clean"] and me["fallback"] and not me["mptcp"]
    f, _ = frame_of(run, tmp_path / "run.pcap", run.findings[0])
    assert f.flags & (tcp.SYN | tcp.ACK) == tcp.SYN | tcp.ACK and f.mptcp == []
    assert f.nops >= 12 and f"with {f.nops} NOPs where an option was" in \
        run.findings[0]["text"], (f, run.explain())
    assert counters() == [1]
    assert kernel["rx_bytes"] == me["sent"] == 2 * MB
    assert kernel["rx_sha256"] == me["sent_sha256"]
    assert kernel["fallback"] is True
    moved = kernel_moved()
    # it sent MP_CAPABLE, our third ACK came without: it fell back there
    assert moved.get("MPTcpExtMPCapableSYNRX") == 1
    assert mptcp_moved(moved) == {"MPTcpExtMPCapableFallbackACK": 1}, moved


def test_mpc_stripped_from_the_kernel_syn_our_listener(
        topology: Topology, tmp_path: Path, nft: Any,
        kernel_moved: Callable[[], dict[str, int]]) -> None:
    counters = nft(chain("output", "tcp flags & (syn | ack) == syn "
                                   "counter reset tcp option mptcp"))
    events = tmp_path / "events.jsonl"
    lst = listen(topology, 7202, tmp_path, "--json", "--events", events)
    kernel = kernel_client(topology, 7202, "--send-bytes", 2 * MB)
    run = finish(lst)
    me = run.summary
    assert run.codes == ["mpc-stripped"], run.explain()
    assert run.returncode == EXIT_UNMET, run.explain()
    assert me["clean"] and not me["mptcp"]
    f, _ = frame_of(run, tmp_path / "run.pcap", run.findings[0])
    assert f.flags & (tcp.SYN | tcp.ACK) == tcp.SYN and f.is_from(topology.peer_addr(1))
    assert f.mptcp == [] and f.nops >= 4
    assert f"with {f.nops} NOPs where an option was" in run.findings[0]["text"]
    assert counters() == [1]
    assert kernel["ok"] and kernel["tx_bytes"] == me["received"] == 2 * MB
    assert me["received_sha256"] == kernel["tx_sha256"] == expected_sha256(2 * MB)
    assert kernel["fallback"] is True
    assert [e["code"] for e in diagnosis_events(events)] == ["mpc-stripped"]
    moved = kernel_moved()
    assert moved.get("MPTcpExtMPCapableSYNTX") == 1
    assert mptcp_moved(moved) == {"MPTcpExtMPCapableFallbackSYNACK": 1}, moved


def test_fallback_a_kernel_server_without_mptcp(
        topology: Topology, tmp_path: Path, kernel_moved: Callable[[], dict[str, int]]) -> None:
    srv = kernel_server(topology, 7203, mptcp=False)
    run = finish(connect(topology, 7203, tmp_path, "--send-bytes", 2 * MB, "--json"))
    kernel = topology.kpeer_result(srv)
    me = run.summary
    assert run.codes == ["fallback"], run.explain()  # not mpc-stripped: no NOPs
    assert run.returncode == EXIT_UNMET, run.explain()  # MPTCP was asked for
    assert run.findings[0]["text"].startswith("the SYN/ACK carried no MP_CAPABLE")
    assert me["clean"] and me["fallback"] and not me["mptcp"]
    f, _ = frame_of(run, tmp_path / "run.pcap", run.findings[0])
    assert f.flags & (tcp.SYN | tcp.ACK) == tcp.SYN | tcp.ACK and f.mptcp == [] and f.nops < 4
    assert kernel["rx_bytes"] == me["sent"] == 2 * MB
    assert kernel["rx_sha256"] == me["sent_sha256"]
    assert not kernel["mptcp"]
    moved = kernel_moved()
    assert {k: v for k, v in moved.items() if k.startswith("MPTcpExt")} == {}, moved


# ---- the data path: options stripped after the handshake --------------------------------
@pytest.mark.parametrize("role", ["connect", "listen"])
def test_dss_stripped_after_the_handshake_we_take_exactly_the_kernels_bytes(
        topology: Topology, tmp_path: Path, nft: Any, role: str,
        kernel_moved: Callable[[], dict[str, int]]) -> None:
    """Regression: the kernel, whose options we no longer see, resent at the data level
    what we had taken in, and we took it in again (121 MB from a 300 KB send). Its
    segments with data (IP length > 100: its pure ACKs and the third ACK pass) lose
    their MPTCP option."""
    size = 300_000
    counters = nft(chain("output", "tcp flags & (syn | rst) == 0 ip length > 100 "
                                   "counter reset tcp option mptcp"))
    got = tmp_path / "got.bin"
    if role == "connect":
        srv = kernel_server(topology, 7204, "--send-bytes", size)
        run = finish(connect(topology, 7204, tmp_path, "--json", "--output", got))
        kernel = topology.kpeer_result(srv)
    else:
        lst = listen(topology, 7205, tmp_path, "--json", "--output", got)
        kernel = kernel_client(topology, 7205, "--send-bytes", size)
        run = finish(lst)
    me = run.summary
    assert run.codes == ["dss-stripped"], run.explain()
    assert run.returncode == EXIT_UNMET, run.explain()
    assert me["clean"] and me["fallback"]
    f, _ = frame_of(run, tmp_path / "run.pcap", run.findings[0])
    assert f.is_from(topology.peer_addr(1)) and f.payload > 0 and f.mptcp == []
    assert f.nops >= 20, f  # a DSS, NOPs now
    assert counters()[0] >= 1
    # exactly the kernel's bytes, once
    assert me["received"] == got.stat().st_size == kernel["tx_bytes"] == size
    assert me["received_sha256"] == kernel["tx_sha256"] == expected_sha256(size)
    assert hashlib.sha256(got.read_bytes()).hexdigest() == expected_sha256(size)
    # the kernel stayed MPTCP (it sees our options): our data ACKs kept it from
    # resending at the data level
    assert kernel["ok"] and kernel["fallback"] is False
    moved = kernel_moved()
    assert moved.get("MPTcpExtMPTCPRetrans", 0) == 0, moved
    assert nstat_errors(moved) == {}, moved


# ---- the data path: DSS checksums -----------------------------------------------------------
def checksum_run(topology: Topology, tmp_path: Path, nft: Nft, port: int, *, theirs: bool,
                 past: int | None, server: tuple[Any, ...], args: tuple[Any, ...]
                 ) -> tuple[Run, dict[str, Any], Callable[[], list[int]]]:
    """Our connect (`args`) with DSS checksums to a kernel server on `port` (`server`),
    while nftables in the peer namespace flips one byte (`FLIP`) of one data packet: the
    kernel's (`theirs`) or ours, the first past `past` bytes that way (conntrack's count)
    or the first of all. The run, the kernel's report and the rule's counters."""
    way, hook, match = ("reply", "output", f"tcp sport {port}") if theirs \
        else ("original", "input", f"tcp dport {port}")
    after = f"ct {way} bytes > {past} " if past is not None else ""
    counters = nft(chain(hook, f"{match} ip length > 1000 {after}"
                               f"numgen inc mod 1000000 == 0 counter {FLIP}"))
    srv = kernel_server(topology, port, *server)
    run = finish(connect(topology, port, tmp_path, "--checksum", *args))
    return run, topology.kpeer_result(srv), counters


def test_dss_checksum_failed_kernel_to_us_after_the_first_mapping(
        topology: Topology, tmp_path: Path, nft: Any, conntrack_acct: None,
        kernel_moved: Callable[[], dict[str, int]]) -> None:
    """One byte of the kernel's data past 150 KB flipped: we send MP_FAIL, the kernel
    answers MP_FAIL and (after the pause, on 1000 bytes alone) an infinite mapping; both
    fall back and the rest arrives as plain TCP."""
    size, port, got = 1 * MB, 7206, tmp_path / "got.bin"
    run, kernel, counters = checksum_run(
        topology, tmp_path, nft, port, theirs=True, past=150_000,
        server=("--send-bytes", size, "--pause-after", 300_000, "--pause", 1),
        args=("--json", "--stats", "--output", got))
    me = run.summary
    assert run.codes == ["dss-checksum-failed"], run.explain()
    assert run.returncode == EXIT_UNMET, run.explain()
    text = run.findings[0]["text"]
    assert re.fullmatch(r"the DSS checksum of the mapping at DSN 0x[0-9a-f]+ \(\d+ bytes\) "
                        r"failed: MP_FAIL sent; the peer is to answer with an infinite "
                        r"mapping \(fallback to TCP\)", text), text
    assert me["clean"] and me["fallback"] and me["checksum"]
    assert me["fallback_reason"] == ("a DSS checksum failed: MP_FAIL sent, the peer answered "
                                     "with an infinite mapping")
    # the bytes: all of them, one changed (TCP semantics), past the first mapping
    assert counters() == [1]
    assert me["received"] == kernel["tx_bytes"] == size
    data = got.read_bytes()
    at = one_byte_flipped(data, payload(size))
    assert me["received_sha256"] == hashlib.sha256(data).hexdigest()
    # the packet: the kernel's, with the mapping that failed, which holds that byte
    f, fs = frame_of(run, tmp_path / "run.pcap", run.findings[0])
    dss = f.dss()
    assert f.is_from(topology.peer_addr(1)) and dss is not None and dss.dsn == dsn_in(text)
    start = (dss.dsn - me["remote_idsn"] - 1) & M64
    assert start <= at < start + dss.data_len, (start, at, dss)
    first = mapping_len(next(g for g in of_port(fs, port)
                             if g.is_from(topology.peer_addr(1)) and g.payload))
    assert first is not None and start >= first  # not the first mapping
    # the exchange: our MP_FAIL, its MP_FAIL, its infinite mapping, in that order
    conn = of_port(fs, port)
    ours_fail = [g.n for g in conn if g.is_from(topology.our_addr(1)) and g.has(wm.MpFail)]
    its_fail = [g.n for g in conn if g.is_from(topology.peer_addr(1)) and g.has(wm.MpFail)]
    its_inf = [g.n for g in conn if g.is_from(topology.peer_addr(1)) and g.payload
               and (d := g.dss()) is not None and d.dsn is not None and d.data_len == 0]
    assert ours_fail and its_fail and its_inf, (ours_fail, its_fail, its_inf)
    assert f.n <= ours_fail[0] < its_fail[0] < its_inf[0]
    for name in ("DataCsumErr", "MPFailTx", "MPFailRx", "InfiniteMapRx"):
        assert counter(run.stderr, name) == 1, (name, run.stderr)
    assert kernel["ok"] and kernel["fallback"] is True
    moved = kernel_moved()
    assert mptcp_moved(moved) == {"MPTcpExtMPFailRx": 1, "MPTcpExtMPFailTx": 1,
                                  "MPTcpExtInfiniteMapTx": 1}, moved
    assert moved.get("IpFragFails", 0) == 0, moved


def test_dss_checksum_failed_us_to_kernel_after_the_first_mapping(
        topology: Topology, tmp_path: Path, nft: Any, conntrack_acct: None,
        kernel_moved: Callable[[], dict[str, int]]) -> None:
    """One byte of ours past 100 KB flipped: the kernel sends MP_FAIL, we answer with
    MP_FAIL and an infinite mapping (both on one segment, the MP_FAIL first to count)
    and the transfer completes (regression: it stalled at 192,240 of 300,000 bytes)."""
    size, port = 300_000, 7207
    src, kgot = tmp_path / "src.bin", tmp_path / "kernel.bin"
    src.write_bytes(payload(size))
    run, kernel, counters = checksum_run(
        topology, tmp_path, nft, port, theirs=False, past=100_000, server=("--output", kgot),
        args=("--json", "--stats", "--send", src))
    me = run.summary
    assert run.codes == ["dss-checksum-failed"], run.explain()
    assert run.returncode == EXIT_UNMET, run.explain()
    text = run.findings[0]["text"]
    assert text.startswith("the peer's MP_FAIL: a DSS checksum of our data failed at DSN 0x")
    assert text.endswith("answered with MP_FAIL and an infinite mapping: plain TCP from here on")
    assert me["clean"] and me["fallback"] and me["checksum"]
    assert me["sent"] == me["written"] == kernel["rx_bytes"] == size
    assert counters() == [1]
    at = one_byte_flipped(kgot.read_bytes(), src.read_bytes())
    assert kernel["rx_sha256"] == hashlib.sha256(kgot.read_bytes()).hexdigest()
    assert me["sent_sha256"] == expected_sha256(size)
    # the packet: the kernel's MP_FAIL, naming the mapping that holds the changed byte
    f, fs = frame_of(run, tmp_path / "run.pcap", run.findings[0])
    fail = f.has(wm.MpFail)
    assert f.is_from(topology.peer_addr(1)) and fail and fail[0].dsn == dsn_in(text)
    assert (fail[0].dsn - me["idsn"] - 1) & M64 <= at
    # our answer: MP_FAIL no later than the infinite mapping, both after its MP_FAIL
    me_addr = topology.our_addr(1)
    our_fail = [g.n for g in fs if g.is_from(me_addr) and g.has(wm.MpFail)]
    our_inf = [g.n for g in fs if g.is_from(me_addr) and g.payload
               and (d := g.dss()) is not None and d.dsn is not None and d.data_len == 0]
    assert our_fail and our_inf and f.n < our_fail[0] <= our_inf[0], (our_fail, our_inf)
    for name in ("MPFailRx", "MPFailTx", "InfiniteMapTx"):
        assert counter(run.stderr, name) == 1, (name, run.stderr)
    assert kernel["ok"] and kernel["fallback"] is True
    moved = kernel_moved()
    # MPFailRx: it took our answer (before the infinite mapping made it fall back);
    # DssFallback: Linux counts its fallback on an infinite mapping so too
    assert mptcp_moved(moved) == {"MPTcpExtDataCsumErr": 1, "MPTcpExtMPFailTx": 1,
                                  "MPTcpExtMPFailRx": 1, "MPTcpExtInfiniteMapRx": 1,
                                  "MPTcpExtDssFallback": 1}, moved


def test_dss_checksum_failed_kernel_to_us_in_the_first_mapping(
        topology: Topology, tmp_path: Path, nft: Any,
        kernel_moved: Callable[[], dict[str, int]]) -> None:
    """The kernel's first data packet changed: we fall back without MP_FAIL, as Linux
    does (no good checksum seen yet); our data ACKs go on, the kernel completes. Run
    without --json: the summary line says 'checksum on until the fallback'."""
    size, port, got = 300_000, 7208, tmp_path / "got.bin"
    run, kernel, counters = checksum_run(
        topology, tmp_path, nft, port, theirs=True, past=None,
        server=("--send-bytes", size), args=("--output", got))
    assert run.codes == ["dss-checksum-failed"], run.explain()
    assert run.returncode == EXIT_UNMET, run.explain()
    summary = run.stdout.splitlines()[0]
    assert re.fullmatch(
        rf"{re.escape(topology.our_addr(1))}:\d+ -> {re.escape(topology.peer_addr(1))}:{port}: "
        rf"sent 0 B, received {size} B in [\d.]+ s, [\d.]+ Mbit/s, 1 subflow, fallback to TCP "
        r"\(the first mapping's DSS checksum failed\), checksum on until the fallback, "
        r"clean close", summary), summary
    text = run.findings[0]["text"]
    assert re.fullmatch(r"the DSS checksum of the mapping at DSN 0x[0-9a-f]+ \(\d+ bytes\) "
                        r"failed, the first one: fell back to TCP without MP_FAIL \(as Linux\)",
                        text), text
    assert counters() == [1]
    data = got.read_bytes()
    assert len(data) == kernel["tx_bytes"] == size
    at = one_byte_flipped(data, payload(size))
    f, fs = frame_of(run, tmp_path / "run.pcap", run.findings[0])
    kdata = [g for g in of_port(fs, port) if g.is_from(topology.peer_addr(1)) and g.payload]
    first = kdata[0].dss()
    dss = f.dss()
    assert first is not None and dss is not None and f in kdata
    assert dss.dsn == first.dsn == dsn_in(text) and at < first.data_len
    assert [g.n for g in fs if g.has(wm.MpFail)] == []  # nobody sent MP_FAIL
    assert counter(run.stderr, "MPFailTx") == 0
    assert kernel["ok"] and kernel["fallback"] is False  # it never knew
    moved = kernel_moved()
    assert moved.get("MPTcpExtMPTCPRetrans", 0) == 0, moved
    assert nstat_errors(moved) == {}, moved


def test_dss_checksum_failed_us_to_kernel_in_the_first_mapping(
        topology: Topology, tmp_path: Path, nft: Any,
        kernel_moved: Callable[[], dict[str, int]]) -> None:
    """Our first data packet changed: the kernel falls back without MP_FAIL and its ACKs
    carry no MPTCP option from then on. We fall back too at its first such ACK
    (regression: we went on as MPTCP, resent at the data level what the kernel, plain
    TCP now, had taken in, and it got 377,936 bytes from our 300,000)."""
    size, port = 300_000, 7209
    src, kgot = tmp_path / "src.bin", tmp_path / "kernel.bin"
    src.write_bytes(payload(size))
    run, kernel, counters = checksum_run(
        topology, tmp_path, nft, port, theirs=False, past=None, server=("--output", kgot),
        args=("--json", "--stats", "--send", src))
    me = run.summary
    assert run.codes == ["dss-checksum-failed"], run.explain()
    assert run.returncode == EXIT_UNMET, run.explain()
    assert run.findings[0]["text"] == (
        "the peer acknowledged our data without any MPTCP option: it fell back to TCP "
        "without MP_FAIL, as Linux does when the DSS checksum of the first mapping fails; "
        "fell back too")
    assert me["clean"] and me["fallback"] and me["resent_bytes"] == 0
    assert counters() == [1]
    assert kernel["rx_bytes"] == me["sent"] == size
    at = one_byte_flipped(kgot.read_bytes(), src.read_bytes())
    f, fs = frame_of(run, tmp_path / "run.pcap", run.findings[0])
    assert f.is_from(topology.peer_addr(1)) and f.mptcp == [] and f.payload == 0
    # the kernel's ACKs carried DSS before this one; this one acknowledges our data
    kacks = [g for g in of_port(fs, port)
             if g.is_from(topology.peer_addr(1)) and not g.flags & tcp.SYN]
    assert all(g.dss() is not None for g in kacks if g.n < f.n)
    first = mapping_len(next(g for g in of_port(fs, port)
                             if g.is_from(topology.our_addr(1)) and g.payload))
    assert first is not None and at < first  # our first mapping
    assert [g.n for g in fs if g.has(wm.MpFail)] == []
    assert counter(run.stderr, "MPFailRx") == counter(run.stderr, "MPTCPRetrans") == 0
    moved = kernel_moved()
    assert mptcp_moved(moved) == {"MPTcpExtDataCsumErr": 1, "MPTcpExtDssFallback": 1}, moved


# ---- the end of a connection: fast close ----------------------------------------------------
def test_fastclose_the_kernel_aborts_while_we_send(
        topology: Topology, tmp_path: Path, shaped_paths: None,
        kernel_moved: Callable[[], dict[str, int]]) -> None:
    """Regression: `TcpError: send() after close()` came out of api.push as a
    traceback. Now one line says what happened."""
    port = 7210
    srv = kernel_server(topology, port, "--abort-after", 1.0)
    run = finish(connect(topology, port, tmp_path, "--send-bytes", 100 * MB, "--json"))
    kernel = topology.kpeer_result(srv)
    me = run.summary
    assert run.codes == ["fastclose"], run.explain()
    assert run.returncode == EXIT_CONN, run.explain()
    assert no_traceback(run) == [
        f"mptcp-tun: peer {topology.peer_addr(1)}:{port} reset the connection: the peer "
        "fast-closed the connection (MP_FASTCLOSE)"], run.stderr
    finding = run.findings[0]
    assert finding["severity"] == "info" and "(verified)" in finding["text"]
    assert finding["text"].startswith(
        f"the peer fast-closed the connection: MP_FASTCLOSE with our key 0x{me['local_key']}")
    f, fs = frame_of(run, tmp_path / "run.pcap", finding)
    fc = f.has(wm.MpFastclose)
    assert f.is_from(topology.peer_addr(1)) and f.flags & tcp.RST
    assert fc and fc[0].receiver_key == int(me["local_key"], 16)
    # the kernel got a prefix of what we sent: the bytes, from our pcap
    assert kernel["aborted"] and 0 < kernel["rx_bytes"] <= me["sent"] < 100 * MB
    stream = sent_stream(fs, tmp_path / "run.pcap", topology.our_addr(1),
                         int(me["local"].rsplit(":", 1)[1]))
    assert hashlib.sha256(stream[:kernel["rx_bytes"]]).hexdigest() == kernel["rx_sha256"]
    assert me["resent_bytes"] == 0 and not me["clean"]
    moved = kernel_moved()
    assert moved.get("MPTcpExtMPFastcloseTx") == 1, moved
    assert nstat_errors(moved, me) == {"MPTcpExtMPRstTx": 1}, moved


def test_fastclose_ours_by_ctl(topology: Topology, tmp_path: Path,
                               kernel_moved: Callable[[], dict[str, int]]) -> None:
    port, ctl = 7211, tmp_path / "ctl"
    srv = kernel_server(topology, port)
    p = connect(topology, port, tmp_path, "--send-bytes", 2000 * MB, "--json", "--stats",
                "--control", ctl)
    ours.wait_for(ctl, lambda c: c["sent"] > 5 * MB)
    assert ours.ctl(ctl, "fastclose")["ok"]
    run = finish(p)
    kernel = topology.kpeer_result(srv)
    me = run.summary
    assert run.codes == ["fastclose"], run.explain()
    assert run.returncode == EXIT_CONN, run.explain()
    lines = no_traceback(run)
    assert len(lines) == 1 and "aborted" in lines[0], run.stderr
    finding = run.findings[0]
    assert finding["severity"] == "info" and finding["packet"] is None
    m = re.fullmatch(r"we fast-closed the connection: MP_FASTCLOSE with the peer's key "
                     r"0x([0-9a-f]{16}) on an RST on every subflow", finding["text"])
    assert m, finding["text"]
    key = int(m.group(1), 16)
    assert f"{crypto.key_token(key):08x}" == me["remote_token"]
    fs = frames(tmp_path / "run.pcap")
    rsts = [g for g in of_port(fs, port) if g.is_from(topology.our_addr(1)) and g.flags & tcp.RST]
    assert rsts and all(g.has(wm.MpFastclose)[0].receiver_key == key for g in rsts)
    assert counter(run.stderr, "MPFastcloseTx") >= 1
    # the kernel got a prefix of what we sent
    assert kernel["error"] is not None and 0 < kernel["rx_bytes"] <= me["written"]
    stream = sent_stream(fs, tmp_path / "run.pcap", topology.our_addr(1),
                         int(me["local"].rsplit(":", 1)[1]))
    assert hashlib.sha256(stream[:kernel["rx_bytes"]]).hexdigest() == kernel["rx_sha256"]
    moved = kernel_moved()
    assert moved.get("MPTcpExtMPFastcloseRx") == 1, moved


# ---- the end of a connection: a window that stays shut ----------------------------------------
def test_window_stall_the_kernel_never_reads(
        topology: Topology, tmp_path: Path, kernel_moved: Callable[[], dict[str, int]]) -> None:
    """Regression: `--timeout` running out said 'interrupted' and exited 130."""
    port = 7212
    # accepts, reads nothing until we have given up (then all, for the sha256)
    srv = kernel_server(topology, port, "--read-delay", 6.5, "--timeout", 1.5)
    run = finish(ours.start(topology, "connect", topology.peer_addr(1), port, "--pcap",
                            tmp_path / "run.pcap", "--send-bytes", 50 * MB, "--json",
                            "--timeout", 5))
    me = run.summary
    assert run.codes == ["window-stall"], run.explain()
    assert run.returncode == EXIT_CONN, run.explain()
    assert no_traceback(run) == ["mptcp-tun: gave up after 5.0 s (--timeout)"], run.stderr
    assert "interrupted" not in run.stderr and me["error"] == "gave up after 5.0 s (--timeout)"
    finding = run.findings[0]
    m = re.fullmatch(r"the peer's data-level window has been 0 since (\d+\.\d{3}) s "
                     r"\((\d+\.\d) s\), with (\d+) bytes waiting to be sent", finding["text"])
    assert m, finding["text"]
    assert float(m.group(1)) == round(finding["packet"]["time"], 3)
    assert float(m.group(2)) >= 4.0 and int(m.group(3)) > 0
    # the packet: the kernel's data ACK whose window we filled, and which never opened
    f, fs = frame_of(run, tmp_path / "run.pcap", finding)
    theirs = [g for g in of_port(fs, port) if g.is_from(topology.peer_addr(1))]
    wscale = theirs[0].wscale
    assert wscale is not None

    def right_edge(g: Frame) -> int | None:
        d = g.dss()
        if d is None or d.data_ack is None:
            return None
        return ((d.data_ack - me["idsn"] - 1) & M64) + (g.window << wscale)
    edges = [(g.n, right_edge(g)) for g in theirs if right_edge(g) is not None]
    assert right_edge(f) == me["sent"] == edges[-1][1], (edges[-3:], me["sent"])
    assert next(n for n, e in edges if e == me["sent"]) == f.n
    assert theirs[-1].window == 0
    # the bytes: all we sent was acknowledged; the kernel read them once we were gone
    kernel = topology.kpeer_result(srv)
    assert kernel["rx_bytes"] == me["sent"] < me["written"] <= 50 * MB
    stream = sent_stream(fs, tmp_path / "run.pcap", topology.our_addr(1),
                         int(me["local"].rsplit(":", 1)[1]))
    assert hashlib.sha256(stream[:me["sent"]]).hexdigest() == kernel["rx_sha256"]
    moved = kernel_moved()
    assert moved.get("TcpExtTCPToZeroWindowAdv", 0) >= 1, moved
    assert nstat_errors(moved, me) == {}, moved


def test_window_stall_our_output_pipe_nobody_reads(
        topology: Topology, tmp_path: Path, kernel_moved: Callable[[], dict[str, int]]) -> None:
    port = 7213
    srv = kernel_server(topology, port, "--send-bytes", 50 * MB, "--timeout", 15)
    p = topology.popen_user(*ours.argv("connect", topology.peer_addr(1), port, "--output", "-",
                                       "--json", "--timeout", 5, "--pcap", tmp_path / "run.pcap"),
                            cwd=REPO, stdout=subprocess.PIPE, text=False)
    t0 = time.monotonic()
    rc = p.wait(timeout=30)  # its stdout, a pipe, is never read
    took = time.monotonic() - t0
    assert p.stderr is not None
    err = p.stderr.read().decode()
    run = Run(last_json(err), [], "", err, rc)  # the summary on stderr
    me = run.summary
    assert run.codes == ["window-stall"], run.explain()
    assert rc == EXIT_CONN and took < 15, run.explain()
    assert no_traceback(run) == ["mptcp-tun: gave up after 5.0 s (--timeout)"], err
    finding = run.findings[0]
    assert finding["text"] == ("our receive buffer is full: our application is not reading, "
                               "so our window is 0") and finding["packet"] is None
    # our last ACKs said window 0
    fs = frames(tmp_path / "run.pcap")
    last = [g for g in of_port(fs, port) if g.is_from(topology.our_addr(1))][-1]
    assert last.window == 0, last
    # what we took in is the start of the kernel's stream
    assert 0 < me["received"] < 50 * MB
    assert me["received_sha256"] == expected_sha256(me["received"])
    srv.kill()
    moved = kernel_moved()
    assert moved.get("TcpExtTCPWinProbe", 0) >= 1, moved  # it probed our shut window


# ---- the summary of a connection that never got going ----------------------------------------
SUMMARY = (r"{me}:\d+ -> {peer}:{port}: sent 0 B, received 0 B in [\d.]+ s, 0\.0 Mbit/s, "
           r"1 subflow, MPTCP token [0-9a-f]{{8}}, not established, checksum off, FAILED: {why}")


def test_summary_of_a_connect_refused_by_the_kernel(topology: Topology, tmp_path: Path) -> None:
    port = 7214  # nothing listens: the kernel answers our SYN with an RST
    run = finish(connect(topology, port, tmp_path))
    assert run.returncode == EXIT_CONN and run.codes == [], run.explain()
    why = f"peer {topology.peer_addr(1)}:{port} refused the connection (RST)"
    assert re.fullmatch(SUMMARY.format(me=re.escape(topology.our_addr(1)),
                                       peer=re.escape(topology.peer_addr(1)), port=port,
                                       why=re.escape(why)), run.stdout.strip()), run.stdout
    assert no_traceback(run) == [f"mptcp-tun: {why}"]
    fs = of_port(frames(tmp_path / "run.pcap"), port)
    assert [(g.is_from(topology.our_addr(1)), g.flags & (tcp.SYN | tcp.RST)) for g in fs] \
        == [(True, tcp.SYN), (False, tcp.RST)]
    assert [m.version for m in fs[0].has(wm.MpCapable)] == [1]


def test_summary_of_a_connect_into_a_blackhole(topology: Topology, tmp_path: Path,
                                               nft: Any) -> None:
    port = 7215
    counters = nft(chain("input", f"tcp dport {port} counter drop"))
    run = finish(ours.start(topology, "connect", topology.peer_addr(1), port, "--pcap",
                            tmp_path / "run.pcap", "--timeout", 2.5))
    assert run.returncode == EXIT_CONN and run.codes == [], run.explain()
    why = "gave up after 2.5 s (--timeout)"
    assert re.fullmatch(SUMMARY.format(me=re.escape(topology.our_addr(1)),
                                       peer=re.escape(topology.peer_addr(1)), port=port,
                                       why=re.escape(why)), run.stdout.strip()), run.stdout
    assert no_traceback(run) == [f"mptcp-tun: {why}"]
    fs = of_port(frames(tmp_path / "run.pcap"), port)
    assert all(g.is_from(topology.our_addr(1)) and g.flags == tcp.SYN for g in fs)
    assert counters() == [len(fs)] and len(fs) == 3  # at 0, 1 and 2 s
    assert all([m.version for m in g.has(wm.MpCapable)] == [1] for g in fs)
