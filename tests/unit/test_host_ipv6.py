"""The host over IPv6: address text forms, dual-stack demux, RST and ICMPv6 replies,
drops counted (fragments, unknown next headers), ICMPv6 errors to their connection."""

from __future__ import annotations

import random

import pytest

from stack.addr import fmt, ip, ntoa, parse_addr_port
from stack.host import Stack
from stack.tcp.engine import Closed, TcpConfig
from stack.wire import icmp6, ipv6, tcp
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
    body = b"\x00" * 8
    s.feed(ipv6.emit(ipv6.IPv6Header(PEER, US, 200), len(body)) + body, 0.0)
    assert out_segments(s) == []
    c = s.counters
    assert (c["Drop:ipv6-fragment"], c["Ip6ReasmFails"]) == (1, 1)
    assert (c["Drop:unknown-protocol"], c["Ip6InUnknownProtos"]) == (1, 1)


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
