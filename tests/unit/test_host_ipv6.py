"""The host over IPv6: address text forms, dual-stack demux, RST and ICMPv6 replies,
drops counted (fragments, unknown next headers), ICMPv6 errors to their connection."""

from __future__ import annotations

import random

import pytest

from stack.addr import fmt, ip, ntoa, parse_addr_port
from stack.host import Stack
from stack.ratelimit import IcmpRateLimit, Verdict
from stack.tcp.engine import Closed, TcpConfig
from stack.wire import icmp, icmp6, ipv4, ipv6, tcp
from stack.wire.tcp import ACK, RST, SYN, TcpHeader

US, PEER = ip("fd00:1::2"), ip("fd00:1::1")


def test_address_forms() -> None:
    assert ip("10.0.1.2") == bytes([10, 0, 1, 2])
    assert ip("fd00:1::2") == bytes.fromhex("fd000001000000000000000000000002")
    assert ip("::ffff:10.0.1.2") == bytes([10, 0, 1, 2])  # v4-mapped: the IPv4 address
    assert ntoa(US) == "fd00:1::2" and fmt(US, 5000) == "[fd00:1::2]:5000"
    assert parse_addr_port("[fd00:2::2]:10100") == (ip("fd00:2::2"), 10100)
    assert parse_addr_port("fd00:2::2") == (ip("fd00:2::2"), None)
    assert parse_addr_port("10.0.2.2:10100") == (ip("10.0.2.2"), 10100)
    for bad in ("10.1", "fd00::1::2", "[fd00::1]:0", "[fd00::1]x", "10.0.0.1:99999"):
        with pytest.raises(OSError):
            parse_addr_port(bad)


def packet(seg: TcpHeader, payload: bytes = b"", src: bytes = PEER, dst: bytes = US,
           exts: tuple[ipv6.Extension, ...] = ()) -> bytes:
    body = tcp.emit(seg, payload, src, dst)
    return ipv6.emit(ipv6.IPv6Header(src, dst, ipv6.NH_TCP, extensions=exts), len(body)) + body


def out_segments(s: Stack) -> list[tuple[ipv6.IPv6Header, TcpHeader]]:
    got = []
    for d in s.poll_transmit(0.0):
        h, end = ipv6.parse(d.data)
        seg = memoryview(d.data)[h.header_len:end]
        assert tcp.verify_checksum_v6(h.src, h.dst, seg)
        got.append((h, tcp.parse(seg)[0]))
    return got


def test_a_syn_to_a_closed_port_gets_an_ipv6_rst() -> None:
    s = Stack([US, ip("10.0.1.2")], rng=random.Random(1))
    s.feed(packet(TcpHeader(40000, 5000, 100, 0, SYN, 65535)), 0.0)
    ((h, rst),) = out_segments(s)
    assert (h.src, h.dst) == (US, PEER)
    assert rst.flags == RST | ACK and rst.ack == 101


def test_a_listener_answers_over_ipv6_with_the_ipv6_mss() -> None:
    s = Stack([US], rng=random.Random(1))
    s.listen(5000, mptcp=False)
    s.feed(packet(TcpHeader(40000, 5000, 100, 0, SYN, 65535, [tcp.Mss(1440)])), 0.0)
    ((h, synack),) = out_segments(s)
    assert synack.flags == SYN | ACK and (h.src, h.dst) == (US, PEER)
    assert next(o.value for o in synack.options if isinstance(o, tcp.Mss)) \
        == TcpConfig().mss - 20


def test_extension_headers_are_walked_fragments_and_unknown_headers_dropped() -> None:
    s = Stack([US], rng=random.Random(1))
    s.listen(5000, mptcp=False)
    hop = ipv6.options_header(ipv6.NH_HOPOPTS)
    s.feed(packet(TcpHeader(40000, 5000, 100, 0, SYN, 65535), exts=(hop,)), 0.0)
    assert [t.flags for _, t in out_segments(s)] == [SYN | ACK]
    frag = ipv6.fragment_header(8, True, 7)
    s.feed(packet(TcpHeader(40001, 5000, 100, 0, SYN, 65535), exts=(frag,)), 0.0)
    assert out_segments(s) == []
    c = s.counters
    assert (c["Drop:ipv6-fragment"], c["Ip6ReasmFails"]) == (1, 1)


def icmp6_out(s: Stack, now: float = 0.0) -> list[icmp6.Icmp6Message]:
    got = []
    for d in s.poll_transmit(now):
        h, end = ipv6.parse(d.data)
        assert (h.src, h.dst, h.proto) == (US, PEER, icmp6.NEXT_HEADER)
        got.append(icmp6.parse(memoryview(d.data)[h.header_len:end], h.src, h.dst))
    return got


def test_an_unknown_next_header_or_a_bad_option_is_answered_with_a_parameter_problem() -> None:
    """RFC 8200 4 and Linux ip6_input / icmp6_send: code 1 pointing at the Next Header
    field that names what we do not serve (the fixed header's, or the last extension
    header's); code 2 at an unknown option whose action says 'answer'; the packet quoted
    from its IPv6 header. Rate-limited per peer: a burst of 6, then one a second."""
    s = Stack([US], rng=random.Random(1))
    body = b"\x00" * 8
    bare = ipv6.emit(ipv6.IPv6Header(PEER, US, 200), len(body)) + body
    s.feed(bare, 0.0)
    (pp,) = icmp6_out(s)
    assert (pp.type, pp.code, pp.rest) == (icmp6.PARAM_PROBLEM, icmp6.PARAM_NEXT_HEADER, 6)
    assert pp.data == bare
    hop = ipv6.options_header(ipv6.NH_HOPOPTS)
    behind = ipv6.emit(ipv6.IPv6Header(PEER, US, 200, extensions=(hop,)), len(body)) + body
    s.feed(behind, 0.0)
    (pp,) = icmp6_out(s)
    assert (pp.code, pp.rest) == (icmp6.PARAM_NEXT_HEADER, ipv6.HEADER_LEN)
    # option type 0x88: action 10, "discard and answer even to multicast"
    bad = ipv6.Extension(ipv6.NH_DSTOPTS, bytes([0, 0, 0x88, 2, 0, 0, 1, 0]))
    s.feed(packet(TcpHeader(40000, 5000, 100, 0, SYN, 65535), exts=(bad,)), 0.0)
    (pp,) = icmp6_out(s)
    assert (pp.code, pp.rest) == (icmp6.PARAM_OPTION, ipv6.HEADER_LEN + 2)
    c = s.counters
    assert (c["Drop:unknown-protocol"], c["Ip6InUnknownProtos"]) == (2, 2)
    assert (c["Drop:ipv6-unknown-option"], c["Ip6InHdrErrors"]) == (1, 1)
    assert c["Icmp6OutParmProblems"] == 3
    for _ in range(10):  # 3 of the burst of 6 are left
        s.feed(bare, 0.5)
    assert len(icmp6_out(s, 0.5)) == 3 and c["Icmp6OutRateLimitHost"] == 7
    s.feed(bare, 1.6)  # a token a second comes back
    assert len(icmp6_out(s, 1.6)) == 1
    # never about a packet from an unspecified source
    s.feed(ipv6.emit(ipv6.IPv6Header(bytes(16), US, 200), len(body)) + body, 10.0)
    assert icmp6_out(s, 10.0) == []


def test_an_unknown_ipv4_protocol_is_answered_with_protocol_unreachable() -> None:
    v4 = ip("10.0.1.2")
    s = Stack([v4], rng=random.Random(1))
    body = b"\x11" * 600
    pkt = ipv4.emit(ipv4.IPv4Header(ip("10.0.1.1"), v4, 253), len(body)) + body
    s.feed(pkt, 0.0)
    (d,) = s.poll_transmit(0.0)
    h, end = ipv4.parse(d.data)
    msg = icmp.parse(memoryview(d.data)[h.header_len:end])
    assert (h.src, h.dst, h.proto) == (v4, ip("10.0.1.1"), ipv4.PROTO_ICMP)
    assert (msg.type, msg.code) == (icmp.DEST_UNREACH, icmp.UNREACH_PROTO)
    assert msg.data == pkt[:548] and end == 576  # the whole error fits in 576 bytes
    assert (s.counters["InUnknownProtos"], s.counters["IcmpOutDestUnreachs"]) == (1, 1)


def test_the_icmp_rate_limit_per_destination_and_overall() -> None:
    lim = IcmpRateLimit(per_sec=10, burst=3, interval=1.0, burst_factor=2, max_peers=2)
    a, b, c = b"a", b"b", b"c"
    assert [lim.allow(a, 0.0) for _ in range(3)] == [Verdict.SEND, Verdict.SEND,
                                                     Verdict.HOST]
    assert lim.allow(b, 0.0) is Verdict.SEND
    assert lim.allow(c, 0.0) is Verdict.GLOBAL  # 3 in the same instant: the global burst
    assert lim.allow(c, 0.1) is Verdict.SEND     # 10 a second: one back after 0.1 s
    assert lim.allow(b, 0.5) is Verdict.SEND     # b: 1 left, +0.5 s
    assert lim.allow(b, 0.6) is Verdict.HOST     # b: 0.6 of a token
    # the table holds 2 destinations: `a`, unused longest, was forgotten when `c` came,
    # and comes back as new, with a whole burst
    assert lim.allow(a, 0.6) is Verdict.SEND and lim.allow(a, 0.7) is Verdict.SEND


def test_ping6_and_an_unreachable_connect_fails_with_the_icmpv6_reason() -> None:
    s = Stack([US], rng=random.Random(1))
    s.feed(icmp6.emit_packet(PEER, US, icmp6.Icmp6Message(icmp6.ECHO_REQUEST, 0, 5, b"x")),
           0.0)
    (d,) = s.poll_transmit(0.0)
    h, end = ipv6.parse(d.data)
    assert icmp6.parse(memoryview(d.data)[h.header_len:end], h.src, h.dst).type \
        == icmp6.ECHO_REPLY
    conn = s.connect(PEER, 5000, 0.0, mptcp=False)
    (syn,) = s.poll_transmit(0.0)
    err = icmp6.dest_unreachable(syn.data, icmp6.UNREACH_PORT)
    s.feed(icmp6.emit_packet(PEER, US, err), 0.1)
    s.poll_transmit(0.1)
    evs = []
    while (ev := s.poll_event()) is not None:
        evs.append(ev.event)  # type: ignore[union-attr]
    closed = [e for e in evs if isinstance(e, Closed)]
    assert closed and closed[0].error == "unreachable" and "port unreachable" in str(
        closed[0].detail), evs
    assert conn.local == ("fd00:1::2", conn.key[1])


def test_fragmentation_needed_shrinks_the_mss_and_resends_at_the_new_size() -> None:
    # RFC 1191 / Linux tcp_v4_mtu_reduced: the router on a 1400-byte link returns our
    # 1500-byte packet with "fragmentation needed, next-hop MTU 1400": what was in
    # flight goes again in packets that fit, and so does everything after
    from stack.wire import icmp, ipv4
    from tests.unit.mptcp_trace import PEER_ADDR, Trace

    t = Trace.server(our_key=0x9A3C51E207B4D86F, peer_key=0x2B7E151628AED2A6)
    t.app_send(bytes(range(256)) * 12)  # 3072 bytes
    t._poll()
    first = t.outbox[0][1]
    assert len(first) == 1500
    err = icmp.IcmpMessage(icmp.DEST_UNREACH, icmp.UNREACH_FRAG_NEEDED, 1400, first[:576])
    body = icmp.emit(err)
    router = ip("10.0.1.254")
    t.outbox.clear()
    t.stack.feed(ipv4.emit(ipv4.IPv4Header(router, first[12:16], ipv4.PROTO_ICMP),
                           len(body)) + body, t.now)
    t._poll()
    sizes = [len(p) for _, p in t.outbox]
    assert sizes and max(sizes) <= 1400, sizes
    assert t.counter("TCPPMTUReduced") == 1
    # the resent data starts where the lost packet did
    h, end = ipv4.parse(t.outbox[0][1])
    seg = tcp.parse(memoryview(t.outbox[0][1])[h.header_len:end])[0]
    h0, end0 = ipv4.parse(first)
    assert seg.seq == tcp.parse(memoryview(first)[h0.header_len:end0])[0].seq
    assert h.dst == PEER_ADDR


def test_packet_too_big_for_ipv6_shrinks_the_mss() -> None:
    s = Stack([US], rng=random.Random(1))
    s.listen(5000, mptcp=False)
    s.feed(packet(TcpHeader(40000, 5000, 100, 0, SYN, 65535, [tcp.Mss(1440)])), 0.0)
    ((_, synack),) = out_segments(s)
    s.feed(packet(TcpHeader(40000, 5000, 101, synack.seq + 1, ACK, 65535)), 0.01)
    s.poll_transmit(0.01)
    conn = next(iter(s.conns.values()))
    conn.engine.send(b"y" * 5000)
    s.touch(conn)
    big = [d.data for d in s.poll_transmit(0.02)]
    assert max(len(p) for p in big) == 1500
    err = icmp6.packet_too_big(big[0], 1280)
    s.feed(icmp6.emit_packet(ip("fd00:1::fe"), US, err), 0.03)
    again = [d.data for d in s.poll_transmit(0.03)]
    assert again and max(len(p) for p in again) <= 1280, [len(p) for p in again]
    assert s.all_counters()["TCPPMTUReduced"] == 1
