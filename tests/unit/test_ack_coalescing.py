"""`Stack.feed_batch`: of the pure ACKs read in one batch, those a later pure ACK of the
same flow supersedes are counted and not processed; everything else goes through
`feed` in order (duplicate ACKs, SACK blocks, data, MPTCP signals, unvouched checksums,
and anything between two ACKs of the flow)."""

from __future__ import annotations

import random

from stack.host import Stack, _superseded_acks, ip
from stack.wire import mptcp as wm
from stack.wire import tcp
from stack.wire.tcp import ACK, PSH, Sack, TcpHeader, Timestamps

US, PEER, PEER2 = ip("10.0.1.2"), ip("10.0.1.1"), ip("10.0.2.1")
US6, PEER6 = ip("fd00:1::2"), ip("fd00:1::1")


def seg(ack: int, *, src: bytes = PEER, dst: bytes = US, sport: int = 5000,
        flags: int = ACK, payload: bytes = b"", dss: wm.Dss | None = None,
        sack: bool = False, ts: bool = True) -> bytes:
    opts: list[tcp.TcpOption] = [tcp.NOP, tcp.NOP, Timestamps(7, 9)] if ts else []
    if dss is not None:
        opts.append(wm.to_tcp_option(dss))
    if sack:
        opts += [tcp.NOP, tcp.NOP, Sack(((ack + 1000, ack + 2000),))]
    hdr = TcpHeader(sport, 40000, 1, ack, flags, 500, opts)
    if len(src) == 16:
        return tcp.emit_ipv6_segment(src, dst, 0, 64, hdr, payload)[0]
    return tcp.emit_ipv4_segment(src, dst, 1, 64, hdr, payload)[0]


def skipped(*pkts: bytes, ok: bool = True) -> list[int]:
    return sorted(_superseded_acks([(p, ok) for p in pkts]))


def test_a_run_of_advancing_pure_acks_keeps_only_the_last() -> None:
    assert skipped(seg(100), seg(200), seg(300)) == [0, 1]
    assert skipped(seg(100, flags=ACK | PSH), seg(200)) == [0]
    assert skipped(seg(100, ts=False), seg(200, ts=False)) == [0]
    # wrapping sequence numbers
    assert skipped(seg(0xFFFFFF00), seg(0x10)) == [0]
    # IPv6 alike
    assert skipped(seg(100, src=PEER6, dst=US6), seg(200, src=PEER6, dst=US6)) == [0]


def test_duplicate_and_older_acks_are_never_skipped() -> None:
    assert skipped(seg(100), seg(100), seg(100)) == []  # loss detection counts them
    assert skipped(seg(200), seg(100)) == []            # reordered: the full path judges


def test_anything_else_of_the_flow_in_between_stops_the_run() -> None:
    assert skipped(seg(100), seg(150, payload=b"x" * 10), seg(200)) == []
    assert skipped(seg(100), seg(200, sack=True)) == []  # SACK blocks: never superseded
    assert skipped(seg(100, sack=True), seg(200)) == []
    # another flow in between does not matter; each flow has its own run
    assert skipped(seg(100), seg(5, sport=6000), seg(200), seg(9, sport=6000)) == [0, 1]
    assert skipped(seg(100), seg(200, src=PEER2)) == []


def test_mptcp_data_acks_must_not_go_back_and_nothing_else_may_ride() -> None:
    d = lambda a, **kw: wm.Dss(data_ack=a, **kw)  # noqa: E731
    assert skipped(seg(100, dss=d(10)), seg(200, dss=d(20))) == [0]
    assert skipped(seg(100, dss=d(10)), seg(200, dss=d(10))) == [0]   # no data ACK news
    assert skipped(seg(100, dss=d(20)), seg(200, dss=d(10))) == []    # it went back
    assert skipped(seg(100, dss=d(10, data_ack64=True)),
                   seg(200, dss=d(2**40, data_ack64=True))) == [0]
    assert skipped(seg(100, dss=d(10)), seg(200)) == []  # one with, one without
    mapping = wm.Dss(data_ack=30, dsn=5, ssn=1, data_len=100)
    assert skipped(seg(100, dss=mapping), seg(200, dss=d(40))) == []
    fin = wm.Dss(data_ack=30, dsn=5, ssn=0, data_len=1, data_fin=True)
    assert skipped(seg(100, dss=d(10)), seg(200, dss=fin)) == []


def test_only_packets_whose_checksum_the_device_vouched_for() -> None:
    assert skipped(seg(100), seg(200), ok=False) == []


def test_feed_batch_counts_every_packet_and_processes_the_rest_in_order() -> None:
    s = Stack([US], rng=random.Random(1))
    seen: list[bytes] = []
    s.tap = lambda direction, data, now: seen.append(data)
    pkts = [seg(100), seg(200), seg(150, payload=b"y"), seg(300)]
    before = s.frames.n
    s.feed_batch([(p, True) for p in pkts], 0.0)
    c = s.counters
    assert c["TCPAckCoalesced"] == 1 and c["InReceives"] == 4 and s.frames.n == before + 4
    assert seen == pkts  # the pcap/ladder still sees every packet, in order
    # no connection: the three processed ones were answered with RSTs
    assert c["OutRsts"] == 3
