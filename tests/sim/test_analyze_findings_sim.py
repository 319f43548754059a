"""`mptcp-tun analyze`'s offline diagnosis on captures of failures our simulator makes
(two of our stacks, one of them the capture point): each failure is found, with the
code the live diagnosis uses and the frame that shows it; a clean transfer has none."""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path
from typing import Any

from stack.host import Stack, ip
from stack.mptcp.connection import MptcpConfig
from stack.wire import ipv4, tcp
from stack.wire.gso import complete_checksum
from stack.wire.tcp import OPT_MPTCP, RST
from tests.sim.apps import Side, bulk, mptcp_pair, multipath_pair
from tests.sim.middlebox import corrupt_payload
from tests.sim.net import LinkProfile, PathCut, SimNet
from tools import analyze
from tools.capture import PcapWriter

A2, B2 = ip("10.0.2.2"), ip("10.0.2.1")
FAST = LinkProfile(delay=0.002, rate_bps=100e6)
DATA = random.Random(5).randbytes(600_000)


def record(tmp: Path, a: Stack, b: Stack, net: SimNet, at: Stack | None = None,
           **kw: Any) -> tuple[Path, Side, Side]:
    """`bulk` (DATA each way) with `at`'s packets (default the client's) in a pcap:
    a capture point sees what its host sends before the network changes it."""
    path = tmp / "f.pcap"
    with path.open("wb") as f:
        w = PcapWriter(f)
        (at or a).tap = lambda _d, pkt, now: w.write(1_700_000_000 + now, pkt)
        sa, sb = bulk(a, b, net, DATA, DATA[::-1], max_time=kw.pop("max_time", 120), **kw)
    return path, sa, sb


def findings(path: Path) -> tuple[list[dict[str, Any]], str]:
    p = argparse.ArgumentParser()
    analyze.configure(p)
    out = io.StringIO()
    assert analyze.run(p.parse_args([str(path), "--json", "--connection", "1"]), out) == 0
    got = json.loads(out.getvalue())["findings"]
    text = io.StringIO()
    assert analyze.run(p.parse_args([str(path)]), text) == 0
    return got, text.getvalue()


def codes(got: list[dict[str, Any]]) -> list[str]:
    return [f["code"] for f in got]


def frame(path: Path, n: int) -> tcp.TcpHeader:
    pkt = analyze.read_capture(path).frames[n - 1].packet
    assert pkt is not None
    h, end = ipv4.parse(pkt, verify_checksum=False)
    return tcp.parse(memoryview(pkt)[h.header_len:end])[0]


def mptcp_sub(pkt: bytes) -> list[bytes]:
    """The MPTCP option bodies of an IPv4 TCP packet."""
    h, end = ipv4.parse(pkt, verify_checksum=False)
    hdr, _ = tcp.parse(memoryview(pkt)[h.header_len:end])
    return [o.data for o in hdr.options if isinstance(o, tcp.UnknownOption)
            and o.kind == OPT_MPTCP]


def test_a_clean_transfer_has_no_findings(tmp_path: Path) -> None:
    a, b, net = multipath_pair(seed=31, profile=FAST)
    path, _, sb = record(tmp_path, a, b, net, join_from=[(A2, False)], announce=[B2])
    assert bytes(sb.got) == DATA
    got, text = findings(path)
    assert got == [] and "connection 1: no findings" in text


def test_a_join_over_the_servers_limit_is_refused_at_the_rst(tmp_path: Path) -> None:
    a, b, net = multipath_pair(seed=32, profile=FAST, cfg_b=MptcpConfig(subflows_max=0))
    path, _, sb = record(tmp_path, a, b, net, join_from=[(A2, False)])
    assert bytes(sb.got) == DATA
    got, text = findings(path)
    assert codes(got) == ["join-refused"], got
    f = got[0]
    assert "after the joiner's third ACK with MP_TCPRST reason" in f["text"], f
    assert f["severity"] == "error" and f["packet"]["direction"] == "in"
    assert f["packet"]["subflow"].startswith("10.0.2.2:")
    assert frame(path, f["packet"]["frame"]).flags & RST
    assert "error join-refused: sf2: join 10.0.2.2:" in text


def test_a_path_cut_mid_transfer_is_a_failed_path_and_the_other_took_over(
        tmp_path: Path) -> None:
    cut = PathCut(A2)
    a, b, net = multipath_pair(seed=33, profile=LinkProfile(delay=0.002, rate_bps=50e6,
                                                            drop_filter=cut))

    def step(_sa: Side, sb: Side) -> None:
        cut.down = cut.down or len(sb.got) >= len(DATA) // 4

    path, _, sb = record(tmp_path, a, b, net, join_from=[(A2, False)], on_step=step)
    assert bytes(sb.got) == DATA and cut.down
    got, _ = findings(path)
    failed = [f for f in got if f["code"] == "path-failed"]
    assert failed and "sf2 10.0.2.2:" in failed[0]["text"], got
    assert "data went on over sf1" in failed[0]["text"]
    assert failed[0]["packet"]["direction"] == "out"


def test_an_add_addr_whose_echo_is_lost_is_not_echoed(tmp_path: Path) -> None:
    def echo(pkt: bytes) -> bool:  # the client's ADD_ADDR echoes, dropped on the way
        return pkt[12:16] != ip("10.0.1.1") and any(
            d and d[0] >> 4 == 3 and d[0] & 1 for d in mptcp_sub(pkt))

    a, b, net = multipath_pair(seed=34, profile=LinkProfile(delay=0.002, rate_bps=100e6,
                                                            drop_filter=echo))
    path, _, sb = record(tmp_path, a, b, net, at=b, announce=[B2])
    assert bytes(sb.got) == DATA
    got, _ = findings(path)
    assert "add-addr-not-echoed" in codes(got), got
    f = next(f for f in got if f["code"] == "add-addr-not-echoed")
    assert "the server's ADD_ADDR for 10.0.2.1 (id 1)" in f["text"], f
    assert f["packet"]["direction"] == "in"  # sent by the server: received by the client


def test_a_join_hmac_changed_on_the_path_is_a_mismatch_and_the_join_refused(
        tmp_path: Path) -> None:
    def corrupt(pkt: bytes) -> bytes:  # the joiner's third ACK: MP_JOIN of length 24
        i = pkt.find(bytes((OPT_MPTCP, 24, 0x10)))
        if i < 0 or pkt[9] != 6:
            return pkt
        return complete_checksum(pkt[:i + 8] + bytes((pkt[i + 8] ^ 0xFF,)) + pkt[i + 9:])

    a, b, net = multipath_pair(seed=35, profile=LinkProfile(delay=0.002, rate_bps=100e6,
                                                            mangle=corrupt))
    path, _, sb = record(tmp_path, a, b, net, at=b, join_from=[(A2, False)])
    assert bytes(sb.got) == DATA
    got, _ = findings(path)
    assert codes(got)[:2] == ["join-bad-hmac", "join-refused"], got
    bad = got[0]
    assert "join HMAC" in bad["text"] and "MISMATCH" in bad["text"]
    assert bad["packet"]["direction"] == "out"  # the joiner is the client
    assert frame(path, got[1]["packet"]["frame"]).flags & RST


def test_payload_changed_on_the_path_fails_the_dss_checksum(tmp_path: Path) -> None:
    a, b, net = mptcp_pair(seed=36, profile=FAST, csum_a=True, csum_b=True)
    # one byte of the client's 200th data segment, the TCP checksum fixed: past the first
    # (64 KB) mapping, so the server says MP_FAIL (`test_mptcp_sim`)
    net.profiles[(0, 1)] = LinkProfile(delay=0.002, rate_bps=100e6,
                                       mangle=corrupt_payload(200))
    path, _, sb = record(tmp_path, a, b, net, at=b)
    assert sum(x != y for x, y in zip(sb.got, DATA, strict=True)) == 1  # as Linux does
    got, text = findings(path)
    csum = [f for f in got if f["code"] == "dss-checksum-failed"]
    assert len(csum) == 2, got
    bad, fail = csum
    assert "from 46 segments: MISMATCH" in bad["text"], bad
    assert bad["packet"]["direction"] == "out"  # the client's data, as it arrived
    assert "the server reported a DSS checksum failure: MP_FAIL" in fail["text"], fail
    assert fail["packet"]["direction"] == "in" and fail["packet"]["frame"] > \
        bad["packet"]["frame"]
    assert "fallback" in codes(got)  # the infinite mapping
    assert text.count("MISMATCH") >= 2  # the ladder shows that segment, and the finding


def test_an_abort_is_a_fast_close_by_the_client(tmp_path: Path) -> None:
    a, b, net = mptcp_pair(seed=37, profile=FAST)

    aborted: list[bool] = []

    def step(sa: Side, sb: Side) -> None:
        if len(sb.got) >= len(DATA) // 2 and sa.conn is not None and not aborted:
            sa.conn.sock.abort()
            a.touch(sa.conn)
            aborted.append(True)

    path, _, _ = record(tmp_path, a, b, net, on_step=step)
    got, text = findings(path)
    assert codes(got) == ["fastclose"], got
    assert got[0]["severity"] == "info" and "the client fast-closed" in got[0]["text"]
    assert "MP_FASTCLOSE key 0x" in text and "MISMATCH" not in text
