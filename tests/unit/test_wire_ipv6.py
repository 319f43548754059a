"""IPv6 wire codecs (stack/wire/ipv6.py, icmp6.py, the v6 parts of tcp.py, checksum.py,
vnet.py, gso.py) against packets captured from the Linux kernel
(tests/unit/golden6/vectors.py, made by tests/unit/golden6/capture.py): parse with
checksums verified, exact round trips, the kernel's own answers reproduced byte for
byte (echo reply, packet too big, parameter problems at the kernel's pointers), the
extension-header walk, every truncated prefix rejected; and the MPTCP codec on the
kernel's IPv6 options (MP_CAPABLE, DSS, ADD_ADDR6 with and without port, MP_JOIN)."""

from __future__ import annotations

import dataclasses
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.mptcp import crypto
from stack.wire import MalformedPacket, gso, icmp6, ipv6, mptcp, tcp, vnet
from stack.wire.checksum import ones_sum, pseudo_header_sum_v6
from tests.unit.golden6 import vectors as g6
from tests.unit.golden6.vectors import GOLDEN6
from tests.unit.test_wire import ref_sum


def a6(s: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, s)


CLIENT = a6("fd00:1::2")  # the user namespace's kernel (client; router for FAR)
SERVER = a6("fd00:1::1")  # the peer namespace's kernel
CLIENT2, SERVER2 = a6("fd00:2::2"), a6("fd00:2::1")
FAR = a6("fd00:99::5")
ADDRS = {CLIENT, SERVER, CLIENT2, SERVER2, FAR}

TCP_NAMES = sorted(n for n in GOLDEN6 if n.startswith(("TCP6_", "MPTCP6_", "ADDADDR6", "MPJOIN6")))
ICMP_NAMES = sorted(n for n in GOLDEN6 if n.startswith("ICMP6_"))
PLAIN_TCP = [n for n in TCP_NAMES if GOLDEN6[n][6] == ipv6.NH_TCP]  # no extension headers


def split(pkt: bytes) -> tuple[ipv6.IPv6Header, bytes]:
    h, end = ipv6.parse(pkt)
    return h, pkt[h.header_len:end]


def tcp_of(name: str) -> tuple[ipv6.IPv6Header, tcp.TcpHeader, bytes, bytes]:
    """(ip header, tcp header, payload, raw segment) of a golden TCP packet."""
    iph, seg = split(GOLDEN6[name])
    assert iph.proto == ipv6.NH_TCP
    th, doff = tcp.parse(seg)
    return iph, th, seg[doff:], seg


def icmp_of(name: str) -> tuple[ipv6.IPv6Header, icmp6.Icmp6Message, bytes]:
    iph, body = split(GOLDEN6[name])
    assert iph.proto == ipv6.NH_ICMPV6
    return iph, icmp6.parse(body, iph.src, iph.dst), body


def mptcp_options(th: tcp.TcpHeader) -> list[mptcp.MptcpOption]:
    syn, ack = bool(th.flags & tcp.SYN), bool(th.flags & tcp.ACK)
    return [mptcp.parse_tcp_option(o, syn, ack) for o in th.options
            if isinstance(o, tcp.UnknownOption) and o.kind == tcp.OPT_MPTCP]


def tcp_packet(hdr: ipv6.IPv6Header, seg: bytes) -> bytes:
    return ipv6.emit(hdr, len(seg)) + seg


TCP_SEG = bytes.fromhex("9c4000500000000100000000500220000000" "0000")  # SYN, no options


def with_chain(*exts: ipv6.Extension, proto: int = ipv6.NH_TCP, body: bytes = TCP_SEG,
               dst: bytes = SERVER) -> bytes:
    return ipv6.emit(ipv6.IPv6Header(CLIENT, dst, proto, extensions=exts), len(body)) + body


# --- IPv6: the kernel's packets ----------------------------------------------------------
@pytest.mark.parametrize("name", sorted(GOLDEN6))
def test_ipv6_golden_parse_and_round_trip(name: str) -> None:
    pkt = GOLDEN6[name]
    h, end = ipv6.parse(pkt)
    assert end == len(pkt) == ipv6.HEADER_LEN + h.payload_length
    assert {h.src, h.dst} <= ADDRS
    assert h.hop_limit == 64 and h.traffic_class == 0
    assert h.flow_label == struct.unpack_from("!I", pkt, 0)[0] & 0xFFFFF
    hdr = pkt[:h.header_len]
    assert ipv6.emit(h, end - h.header_len) == hdr
    assert ipv6.emit(dataclasses.replace(h, payload_length=0), end - h.header_len) == hdr
    if not h.extensions:
        assert h.header_len == ipv6.HEADER_LEN and h.next_header == h.proto == pkt[6]
        assert h.proto_offset == 6
    assert h.is_fragment == name.startswith("FRAG6_")


@pytest.mark.parametrize("name", sorted(GOLDEN6))
def test_ipv6_every_truncated_prefix_rejected(name: str) -> None:
    pkt = GOLDEN6[name]
    h, _ = ipv6.parse(pkt)
    for n in range(len(pkt)):
        with pytest.raises(MalformedPacket, match="ipv6-truncated"):
            ipv6.parse(pkt[:n])
        # As an ICMPv6 error quotes it: the header chain must be there, the rest may not.
        if n < h.header_len:
            with pytest.raises(MalformedPacket):
                ipv6.parse(pkt[:n], quoted=True)
        else:
            q, end = ipv6.parse(pkt[:n], quoted=True)
            assert end == n and q == h


def test_ipv6_link_padding_ignored() -> None:
    pkt = g6.TCP6_SYN
    _h, end = ipv6.parse(pkt + bytes(6))
    assert end == len(pkt)


# --- the extension-header walk -------------------------------------------------------
def test_kernel_hop_by_hop_and_destination_options_walked() -> None:
    # setsockopt IPV6_HOPOPTS + IPV6_DSTOPTS on a kernel TCP socket: HBH, DST, TCP
    for name in ("TCP6_EXT_SYN", "TCP6_EXT_DATA"):
        iph, th, _, seg = tcp_of(name)
        assert [e.kind for e in iph.extensions] == [ipv6.NH_HOPOPTS, ipv6.NH_DSTOPTS]
        assert [e.raw for e in iph.extensions] == [bytes.fromhex("3c001e0401020304"),
                                                   bytes.fromhex("06001e04a1b2c3d4")]
        assert iph.next_header == ipv6.NH_HOPOPTS and iph.proto == ipv6.NH_TCP
        assert iph.header_len == 56 and iph.proto_offset == 48
        assert not iph.is_fragment and iph.fragment is None
        assert tcp.verify_checksum_v6(iph.src, iph.dst, seg)
        assert th.dst_port == 7101
    assert tcp_of("TCP6_EXT_DATA")[2] == b"golden vector: with extension headers\n"


def test_kernel_routing_header_with_segments_left_zero_skipped() -> None:
    iph, th, _, seg = tcp_of("TCP6_RTHDR_SYN")
    (rh,) = iph.extensions
    assert rh.kind == ipv6.NH_ROUTING and rh.routing_type == 4 and rh.segments_left == 0
    assert rh.raw[8:] == SERVER  # the one segment: the final destination
    assert iph.header_len == 64 and th.flags == tcp.SYN
    assert tcp.verify_checksum_v6(iph.src, iph.dst, seg)


def test_kernel_fragments_reported_not_reassembled() -> None:
    first, end1 = ipv6.parse(g6.FRAG6_FIRST)
    last, end2 = ipv6.parse(g6.FRAG6_LAST)
    for h in (first, last):
        assert h.is_fragment and h.proto == ipv6.NH_UDP and h.header_len == 48
        assert [e.kind for e in h.extensions] == [ipv6.NH_FRAGMENT]
    f1, f2 = first.fragment, last.fragment
    assert f1 is not None and f2 is not None
    assert (f1.offset, f1.more, f2.offset, f2.more) == (0, True, 1448, False)
    assert f1.ident == f2.ident and f1.next_header == ipv6.NH_UDP
    # the two pieces make the 2008-byte UDP datagram (header + 2000 bytes)
    data = g6.FRAG6_FIRST[48:end1] + g6.FRAG6_LAST[48:end2]
    assert len(data) == 2008 and struct.unpack_from("!HHH", data) == (40001, 7999, 2008)


def test_fragment_header_builder_and_atomic_fragment() -> None:
    pkt = with_chain(ipv6.fragment_header(8, False, 0x1234), proto=ipv6.NH_TCP)
    h, _ = ipv6.parse(pkt)
    assert h.is_fragment and h.proto == ipv6.NH_TCP and h.header_len == 48
    assert h.fragment == ipv6.Fragment(ipv6.NH_TCP, 8, False, 0x1234)
    # A first fragment: the walk stops at it, even if extension headers follow.
    pkt = with_chain(ipv6.fragment_header(0, True, 7), ipv6.options_header(ipv6.NH_DSTOPTS))
    h, _ = ipv6.parse(pkt)
    assert h.is_fragment and h.proto == ipv6.NH_DSTOPTS and h.header_len == 48
    # An atomic fragment (RFC 6946) is a whole packet: the walk goes on.
    pkt = with_chain(ipv6.fragment_header(0, False, 7), ipv6.options_header(ipv6.NH_DSTOPTS))
    h, end = ipv6.parse(pkt)
    assert not h.is_fragment and h.fragment is not None and h.fragment.atomic
    assert h.proto == ipv6.NH_TCP and pkt[h.header_len:end] == TCP_SEG


def test_unknown_next_header_reported() -> None:
    # the kernel's invoking packet of its "unrecognized next header" parameter problem
    _, msg, _ = icmp_of("ICMP6_PARAMPROB_NEXTHDR")
    assert (msg.code, msg.pointer) == (icmp6.PARAM_NEXT_HEADER, 6)
    h, end = ipv6.parse(msg.data)
    assert h.proto == 253 and h.proto_offset == msg.pointer and not h.extensions
    assert msg.data[h.header_len:end] == b"golden: next header 253!"
    # behind extension headers: the pointer is the last header's Next Header byte
    pkt = with_chain(ipv6.options_header(ipv6.NH_HOPOPTS), ipv6.options_header(ipv6.NH_DSTOPTS),
                     proto=253)
    h, _ = ipv6.parse(pkt)
    assert h.proto == 253 and h.proto_offset == 48 and pkt[h.proto_offset] == 253


def test_no_next_header() -> None:
    h, end = ipv6.parse(with_chain(proto=ipv6.NH_NONE, body=b""))
    assert h.proto == ipv6.NH_NONE and end == h.header_len == 40 and h.payload_length == 0
    h, end = ipv6.parse(with_chain(ipv6.options_header(ipv6.NH_DSTOPTS), proto=ipv6.NH_NONE,
                                   body=b"ignored"))
    assert h.proto == ipv6.NH_NONE and h.header_len == 48 and end == 55


def test_synthetic_chain_round_trip() -> None:
    exts = (ipv6.options_header(ipv6.NH_HOPOPTS, bytes((ipv6.OPT_ROUTER_ALERT, 2, 0, 0))),
            ipv6.options_header(ipv6.NH_DSTOPTS, bytes((0x1E, 9)) + bytes(9)),
            ipv6.routing_header(4, 0, bytes(4) + SERVER),
            ipv6.options_header(ipv6.NH_DSTOPTS))
    pkt = with_chain(*exts)
    h, end = ipv6.parse(pkt)
    assert [e.kind for e in h.extensions] == [0, 60, 43, 60]
    assert [len(e.raw) for e in h.extensions] == [8, 16, 24, 8]
    assert h.proto == ipv6.NH_TCP and pkt[h.header_len:end] == TCP_SEG
    assert ipv6.emit(h, len(TCP_SEG)) + TCP_SEG == pkt
    for n in range(len(pkt)):
        with pytest.raises(MalformedPacket):
            ipv6.parse(pkt[:n])


def test_options_header_padding() -> None:
    for n in range(20):
        e = ipv6.options_header(ipv6.NH_DSTOPTS, bytes((0x1E, n)) + bytes(n))
        assert len(e.raw) % 8 == 0
        h, _ = ipv6.parse(with_chain(e))
        assert h.extensions[0].raw[1:] == e.raw[1:]


# --- what RFC 8200 says to answer: ParameterProblem, at the kernel's pointers ------------
@pytest.mark.parametrize(("name", "reason"), [
    ("ICMP6_PARAMPROB_OPTION", "ipv6-unknown-option"),
    ("ICMP6_PARAMPROB_ROUTING", "ipv6-routing-header"),
    ("ICMP6_PARAMPROB_HBH_LATER", "ipv6-hop-by-hop-not-first"),
])
def test_parameter_problem_where_the_kernel_answers(name: str, reason: str) -> None:
    iph, msg, body = icmp_of(name)
    invoking = msg.data  # small: quoted whole
    with pytest.raises(ipv6.ParameterProblem, match=reason) as e:
        ipv6.parse(invoking)
    assert (e.value.code, e.value.pointer) == (msg.code, msg.pointer)
    assert isinstance(e.value, MalformedPacket) and e.value.reason == reason
    # our answer is the kernel's, byte for byte
    ours = icmp6.parameter_problem(invoking, e.value.code, e.value.pointer)
    assert icmp6.emit(ours, iph.src, iph.dst) == body
    assert icmp6.may_send_error(invoking, icmp6.PARAM_PROBLEM, e.value.code)
    # quoted (inside an error), the same packet is only read, not judged
    q, _ = ipv6.parse(invoking, quoted=True)
    assert q.src == CLIENT


def test_routing_header_with_segments_left() -> None:
    for rtype in (0, 2, 4, 253):
        pkt = with_chain(ipv6.routing_header(rtype, 1, bytes(4) + SERVER))
        with pytest.raises(ipv6.ParameterProblem) as e:
            ipv6.parse(pkt)
        assert (e.value.code, e.value.pointer) == (ipv6.PROBLEM_HEADER_FIELD, 42)
        h, _ = ipv6.parse(with_chain(ipv6.routing_header(rtype, 0, bytes(4) + SERVER)))
        assert h.proto == ipv6.NH_TCP


@pytest.mark.parametrize("kind", [ipv6.NH_HOPOPTS, ipv6.NH_DSTOPTS])
def test_unknown_option_actions(kind: int) -> None:
    def pkt(opt_type: int, dst: bytes = SERVER) -> bytes:
        return with_chain(ipv6.options_header(kind, bytes((opt_type, 2, 0, 0))), dst=dst)

    mcast = a6("ff02::1")
    for t in (0x1E, 0x3E):  # 00: skip
        ipv6.parse(pkt(t))
        ipv6.parse(pkt(t, mcast))
    for t in (0x5E, 0x7E):  # 01: discard, say nothing
        with pytest.raises(MalformedPacket, match="ipv6-unknown-option") as e:
            ipv6.parse(pkt(t))
        assert not isinstance(e.value, ipv6.ParameterProblem)
    for t in (0x9E, 0xBE):  # 10: discard, answer even to multicast
        for dst in (SERVER, mcast):
            with pytest.raises(ipv6.ParameterProblem) as pe:
                ipv6.parse(pkt(t, dst))
            assert (pe.value.code, pe.value.pointer) == (ipv6.PROBLEM_OPTION, 42)
    for t in (0xDE, 0xFE):  # 11: discard, answer unless multicast
        with pytest.raises(ipv6.ParameterProblem):
            ipv6.parse(pkt(t))
        with pytest.raises(MalformedPacket) as e:
            ipv6.parse(pkt(t, mcast))
        assert not isinstance(e.value, ipv6.ParameterProblem)
    # PadN and Pad1 are options too; a router alert is known in hop-by-hop
    ipv6.parse(with_chain(ipv6.options_header(kind, bytes((0, 0, 1, 0)))))
    if kind == ipv6.NH_HOPOPTS:
        ipv6.parse(pkt(ipv6.OPT_ROUTER_ALERT))


def test_malformed_headers() -> None:
    pkt = bytearray(g6.TCP6_SYN)
    with pytest.raises(MalformedPacket, match="ipv6-version"):
        ipv6.parse(bytes([0x45]) + pkt[1:])
    # an option running past its header
    raw = bytearray(ipv6.options_header(ipv6.NH_DSTOPTS, bytes((0x1E, 4)) + bytes(4)).raw)
    raw[3] = 5
    bad = with_chain(ipv6.Extension(ipv6.NH_DSTOPTS, bytes(raw)))
    with pytest.raises(MalformedPacket, match="ipv6-option-length"):
        ipv6.parse(bad)
    raw = bytearray(8)
    raw[7] = 0x1E  # an option type in the last byte: no room for its length
    with pytest.raises(MalformedPacket, match="ipv6-option-length"):
        ipv6.parse(with_chain(ipv6.Extension(ipv6.NH_DSTOPTS, bytes(raw))))
    # an extension header longer than the payload
    raw = bytearray(ipv6.options_header(ipv6.NH_DSTOPTS).raw)
    raw[1] = 3  # says 32 bytes
    with pytest.raises(MalformedPacket, match="ipv6-ext-truncated"):
        ipv6.parse(with_chain(ipv6.Extension(ipv6.NH_DSTOPTS, bytes(raw)), body=b""))
    # the chain runs past the payload length (link padding after it does not count)
    short = bytearray(with_chain(ipv6.options_header(ipv6.NH_DSTOPTS), body=b""))
    struct.pack_into("!H", short, 4, 4)
    with pytest.raises(MalformedPacket, match="ipv6-ext-truncated"):
        ipv6.parse(bytes(short))


def test_jumbograms_rejected() -> None:
    hbh = with_chain(ipv6.options_header(ipv6.NH_HOPOPTS))
    zero = bytearray(hbh)
    struct.pack_into("!H", zero, 4, 0)  # payload length 0 + hop-by-hop: a jumbogram
    with pytest.raises(MalformedPacket, match="ipv6-jumbogram"):
        ipv6.parse(bytes(zero))
    jumbo = with_chain(ipv6.options_header(ipv6.NH_HOPOPTS,
                                           bytes((ipv6.OPT_JUMBO, 4)) + struct.pack("!I", 70000)))
    with pytest.raises(ipv6.ParameterProblem, match="ipv6-jumbogram") as e:
        ipv6.parse(jumbo)
    assert (e.value.code, e.value.pointer) == (ipv6.PROBLEM_HEADER_FIELD, 42)
    # payload length 0 without hop-by-hop is an empty payload
    h, end = ipv6.parse(with_chain(proto=ipv6.NH_TCP, body=b""))
    assert end == 40 and h.payload_length == 0


def test_emit_rejects_what_cannot_be_sent() -> None:
    with pytest.raises(ValueError):
        ipv6.emit(ipv6.IPv6Header(CLIENT[:4], SERVER, 6), 0)
    with pytest.raises(ValueError):
        ipv6.emit(ipv6.IPv6Header(CLIENT, SERVER, 6), 0x10000)
    with pytest.raises(ValueError):
        ipv6.emit(ipv6.IPv6Header(CLIENT, SERVER, 6, extensions=(
            ipv6.Extension(ipv6.NH_DSTOPTS, bytes(6)),)), 0)
    with pytest.raises(ValueError):
        ipv6.fragment_header(3, False, 0)
    with pytest.raises(ValueError):
        ipv6.options_header(ipv6.NH_ROUTING)
    with pytest.raises(ValueError):
        ipv6.routing_header(4, 0, bytes(3))


@given(st.binary(max_size=120))
def test_ipv6_parse_arbitrary_bytes(data: bytes) -> None:
    if data:
        data = bytes([0x60 | (data[0] & 0x0F)]) + data[1:]
    for quoted in (False, True):
        try:
            h, end = ipv6.parse(data, quoted)
        except MalformedPacket:
            continue
        assert h.header_len <= end <= len(data)
        assert ipv6.emit(h, end - h.header_len) == data[:h.header_len]


@given(st.lists(st.sampled_from([0, 43, 44, 60, 6, 58, 59, 253]), max_size=6),
       st.binary(max_size=40))
def test_ipv6_parse_arbitrary_chains(kinds: list[int], tail: bytes) -> None:
    # chains of arbitrary headers with arbitrary contents: only MalformedPacket
    body = bytearray()
    for k in kinds:
        body += bytes((k, 0)) + tail[:6].ljust(6, b"\x01")
    body += tail
    pkt = ipv6.emit(ipv6.IPv6Header(CLIENT, SERVER, kinds[0] if kinds else 6), len(body)) + body
    for n in range(len(pkt) + 1):
        for quoted in (False, True):
            try:
                h, end = ipv6.parse(pkt[:n], quoted)
            except MalformedPacket:
                continue
            assert ipv6.emit(h, end - h.header_len) == pkt[:h.header_len]


# --- TCP over IPv6 ---------------------------------------------------------------------
@pytest.mark.parametrize("name", TCP_NAMES)
def test_tcp6_golden_checksum_and_round_trip(name: str) -> None:
    iph, th, payload, seg = tcp_of(name)
    assert tcp.verify_checksum_v6(iph.src, iph.dst, seg)
    assert tcp.checksum_v6(iph.src, iph.dst, seg) == 0
    assert tcp.emit(th, payload, keep_checksum=True) == seg
    zeroed = tcp.emit(th, payload)  # no addresses: checksum field 0
    assert tcp.checksum_v6(iph.src, iph.dst, zeroed) == th.checksum
    assert th.header_len == len(seg) - len(payload)
    bad = bytearray(seg)
    bad[-1] ^= 0x40
    assert not tcp.verify_checksum_v6(iph.src, iph.dst, bytes(bad))
    # the same segment with the addresses swapped sums the same (commutative) ...
    assert tcp.verify_checksum_v6(iph.dst, iph.src, seg)
    # ... but not with another address
    assert not tcp.verify_checksum_v6(FAR, iph.dst, seg)


@pytest.mark.parametrize("name", PLAIN_TCP)
def test_emit_ipv6_segment_reproduces_the_kernel(name: str) -> None:
    iph, th, payload, seg = tcp_of(name)
    pkt = GOLDEN6[name]
    got, thl = tcp.emit_ipv6_segment(iph.src, iph.dst, iph.flow_label, iph.hop_limit, th,
                                     payload)
    assert got == pkt  # byte for byte what the kernel sent
    assert thl == th.header_len
    assert got == ipv6.emit(ipv6.IPv6Header(iph.src, iph.dst, ipv6.NH_TCP,
                                            hop_limit=iph.hop_limit, flow_label=iph.flow_label),
                            len(seg)) + seg
    partial, _ = tcp.emit_ipv6_segment(iph.src, iph.dst, iph.flow_label, iph.hop_limit, th,
                                       payload, True)
    field = ipv6.HEADER_LEN + 16
    assert partial[:field] == pkt[:field] and partial[field + 2:] == pkt[field + 2:]
    assert struct.unpack_from("!H", partial, field)[0] == pseudo_header_sum_v6(
        iph.src, iph.dst, ipv6.NH_TCP, len(seg))
    assert gso.complete_checksum_v6(partial) == pkt


def test_emit_ipv6_segment_rejects_bad_input() -> None:
    th = tcp.TcpHeader(1, 2, 3, 4, tcp.ACK, 100)
    with pytest.raises(ValueError):
        tcp.emit_ipv6_segment(bytes(4), SERVER, 0, 64, th, b"")
    with pytest.raises(ValueError):
        tcp.emit_ipv6_segment(CLIENT, SERVER, 0, 64, th, bytes(0x10000))


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
       st.integers(min_value=0, max_value=255), st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_pseudo_header_sum_v6(src: bytes, dst: bytes, nh: int, length: int) -> None:
    pseudo = src + dst + struct.pack("!I", length) + bytes(3) + bytes((nh,))
    assert pseudo_header_sum_v6(src, dst, nh, length) == ref_sum(pseudo)


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
       st.binary(min_size=20, max_size=300))
def test_tcp_checksum_v6_against_reference(src: bytes, dst: bytes, seg: bytes) -> None:
    pseudo = src + dst + struct.pack("!I", len(seg)) + bytes((0, 0, 0, 6))
    assert tcp.checksum_v6(src, dst, seg) == ~ref_sum(pseudo + seg) & 0xFFFF


# --- virtio-net GSO for TCPv6 ----------------------------------------------------------
def test_vnet_tcp6_offload_header() -> None:
    h = vnet.parse(vnet.tcp6_offload(40, 32, 1440))
    assert h == vnet.VnetHeader(vnet.F_NEEDS_CSUM, vnet.GSO_TCPV6, 72, 1440, 40, 16)
    h = vnet.parse(vnet.tcp6_offload(40, 20, 0))
    assert (h.gso_type, h.gso_size, h.csum_start) == (vnet.GSO_NONE, 0, 40)


def test_segment_tcp6_is_what_we_would_send_per_segment() -> None:
    iph, th, _, _ = tcp_of("TCP6_DATA")
    th.flags = tcp.ACK | tcp.PSH | tcp.FIN
    data = bytes(range(256)) * 14  # 3584 bytes
    sup, _ = tcp.emit_ipv6_segment(iph.src, iph.dst, 7, 64, th, data, csum_partial=True)
    segs = gso.segment_tcp6(sup, 1440)
    assert len(segs) == 3
    for i, s in enumerate(segs):
        chunk = data[i * 1440:(i + 1) * 1440]
        one = dataclasses.replace(th, seq=(th.seq + i * 1440) & 0xFFFFFFFF,
                                  flags=th.flags if i == 2 else tcp.ACK)
        want, _ = tcp.emit_ipv6_segment(iph.src, iph.dst, 7, 64, one, chunk)
        assert s == want
        h, seg = split(s)
        assert tcp.verify_checksum_v6(h.src, h.dst, seg)
    # small enough: one packet, checksum completed
    assert gso.segment_tcp6(sup, 4000) == [tcp.emit_ipv6_segment(iph.src, iph.dst, 7, 64, th,
                                                                data)[0]]
    with pytest.raises(ValueError):
        gso.segment_tcp6(g6.ICMP6_ECHO_REQUEST, 1000)


def test_segment_tcp6_keeps_extension_headers() -> None:
    iph, th, payload, _ = tcp_of("TCP6_EXT_DATA")
    pkt = GOLDEN6["TCP6_EXT_DATA"]
    assert gso.segment_tcp6(pkt, 1440) == [pkt]
    parts = gso.segment_tcp6(pkt, 16)
    assert len(parts) == 3
    for i, p in enumerate(parts):
        h, s = split(p)
        assert h.extensions == iph.extensions
        assert tcp.verify_checksum_v6(h.src, h.dst, s)
        t, doff = tcp.parse(s)
        assert t.seq == th.seq + 16 * i and s[doff:] == payload[16 * i:16 * (i + 1)]


# --- ICMPv6 ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ICMP_NAMES)
def test_icmp6_golden_checksum_and_round_trip(name: str) -> None:
    iph, msg, body = icmp_of(name)  # verifies the checksum over the pseudo-header
    assert icmp6.emit(msg, iph.src, iph.dst) == body
    assert icmp6.emit(msg, iph.src, iph.dst, keep_checksum=True) == body
    assert msg.checksum == struct.unpack_from("!H", body, 2)[0]
    assert icmp6.checksum(iph.src, iph.dst, body) == 0
    for n in range(icmp6.HEADER_LEN):
        with pytest.raises(MalformedPacket, match="icmp6-truncated"):
            icmp6.parse(body[:n], iph.src, iph.dst)
    bad = bytearray(body)
    bad[-1] ^= 0x01
    with pytest.raises(MalformedPacket, match="icmp6-bad-checksum"):
        icmp6.parse(bytes(bad), iph.src, iph.dst)
    with pytest.raises(MalformedPacket, match="icmp6-bad-checksum"):
        icmp6.parse(body, iph.src, CLIENT2)  # the pseudo-header counts
    icmp6.parse(bytes(bad), iph.src, iph.dst, verify_checksum=False)
    if msg.is_error:
        inner, end = ipv6.parse(msg.data, quoted=True)
        assert {inner.src, inner.dst} <= ADDRS and end == len(msg.data)
        assert len(msg.data) <= icmp6.MAX_QUOTE and len(GOLDEN6[name]) <= ipv6.MIN_MTU


def test_icmp6_echo_reply_is_the_kernels() -> None:
    req_h, req, _ = icmp_of("ICMP6_ECHO_REQUEST")
    _, rep, rep_b = icmp_of("ICMP6_ECHO_REPLY")
    assert (req.type, req.code, rep.type, rep.code) == (icmp6.ECHO_REQUEST, 0, icmp6.ECHO_REPLY, 0)
    assert (rep.ident, rep.sequence) == (req.ident, req.sequence) and req.sequence == 1
    assert req.data.endswith(b"\xa5" * 40)  # ping -p a5
    assert not req.is_error
    reply = icmp6.echo_reply(req)
    assert icmp6.emit(reply, req_h.dst, req_h.src) == rep_b
    whole = icmp6.emit_packet(req_h.dst, req_h.src, reply)
    assert whole[8:] == g6.ICMP6_ECHO_REPLY[8:]  # all but the kernel's flow label
    assert icmp6.may_send_error(g6.ICMP6_ECHO_REQUEST, icmp6.DEST_UNREACH, icmp6.UNREACH_PORT)


def test_icmp6_packet_too_big_is_the_kernels() -> None:
    # the user namespace's kernel, routing a 1448-byte echo onto a 1280-byte link
    iph, msg, body = icmp_of("ICMP6_PACKET_TOO_BIG")
    assert (msg.type, msg.code, msg.mtu) == (icmp6.PACKET_TOO_BIG, 0, 1280)
    assert len(g6.ICMP6_BIG_ECHO) == 1448
    assert msg.data == g6.ICMP6_BIG_ECHO[:icmp6.MAX_QUOTE]  # cut to fit 1280 bytes
    assert len(g6.ICMP6_PACKET_TOO_BIG) == ipv6.MIN_MTU
    ours = icmp6.packet_too_big(g6.ICMP6_BIG_ECHO, 1280)
    assert icmp6.emit(ours, iph.src, iph.dst) == body
    inner, end = ipv6.parse(msg.data, quoted=True)
    assert inner.proto == ipv6.NH_ICMPV6 and inner.payload_length == 1408 and end == 1232
    assert (inner.src, inner.dst) == (SERVER, FAR)
    # allowed for an echo request, never about an ICMPv6 error
    assert icmp6.may_send_error(g6.ICMP6_BIG_ECHO, icmp6.PACKET_TOO_BIG, 0)
    assert not icmp6.may_send_error(g6.ICMP6_PACKET_TOO_BIG, icmp6.PACKET_TOO_BIG, 0)


def test_icmp6_time_exceeded_is_the_kernels() -> None:
    iph, msg, body = icmp_of("ICMP6_TIME_EXCEEDED")
    assert (msg.type, msg.code) == (icmp6.TIME_EXCEEDED, icmp6.TIME_EXCEEDED_HOP_LIMIT)
    inner, _ = ipv6.parse(msg.data)  # short enough to be whole
    assert inner.hop_limit == 1 and (inner.src, inner.dst) == (SERVER, FAR)
    assert icmp6.emit(icmp6.time_exceeded(msg.data), iph.src, iph.dst) == body


def test_icmp6_port_unreachable_is_the_kernels() -> None:
    iph, msg, body = icmp_of("ICMP6_PORT_UNREACH")
    assert (msg.type, msg.code) == (icmp6.DEST_UNREACH, icmp6.UNREACH_PORT)
    assert icmp6.UNREACH_REASON[msg.code] == "port unreachable"
    inner, end = ipv6.parse(msg.data)
    assert (inner.src, inner.dst, inner.proto) == (CLIENT, SERVER, ipv6.NH_UDP)
    assert struct.unpack_from("!HH", msg.data, 40) == (40000, 7999)
    assert msg.data[48:end] == b"golden6!golden6!"
    assert icmp6.emit(icmp6.dest_unreachable(msg.data), iph.src, iph.dst) == body


def test_icmp6_error_quotes_1232_bytes_of_the_reassembled_datagram() -> None:
    iph, msg, body = icmp_of("ICMP6_PORT_UNREACH_BIG")
    first, end1 = ipv6.parse(g6.FRAG6_FIRST)
    _, end2 = ipv6.parse(g6.FRAG6_LAST)
    data = g6.FRAG6_FIRST[48:end1] + g6.FRAG6_LAST[48:end2]
    whole = ipv6.emit(ipv6.IPv6Header(first.src, first.dst, ipv6.NH_UDP,
                                      flow_label=first.flow_label), len(data)) + data
    assert msg.data == whole[:icmp6.MAX_QUOTE] and icmp6.MAX_QUOTE == 1232
    assert icmp6.emit(icmp6.dest_unreachable(whole), iph.src, iph.dst) == body
    assert len(g6.ICMP6_PORT_UNREACH_BIG) == ipv6.MIN_MTU


def test_icmp6_may_send_error_rules() -> None:
    req = bytearray(g6.ICMP6_ECHO_REQUEST)
    assert icmp6.may_send_error(bytes(req), icmp6.TIME_EXCEEDED, 0)
    mcast = bytes(req[:24]) + a6("ff02::1") + bytes(req[40:])
    assert not icmp6.may_send_error(mcast, icmp6.DEST_UNREACH, icmp6.UNREACH_PORT)
    assert icmp6.may_send_error(mcast, icmp6.PACKET_TOO_BIG, 0)
    assert icmp6.may_send_error(mcast, icmp6.PARAM_PROBLEM, icmp6.PARAM_OPTION)
    assert not icmp6.may_send_error(mcast, icmp6.PARAM_PROBLEM, icmp6.PARAM_HEADER_FIELD)
    for src in (bytes(16), a6("ff02::2")):
        assert not icmp6.may_send_error(bytes(req[:8]) + src + bytes(req[24:]),
                                        icmp6.DEST_UNREACH, 0)
    for name in ICMP_NAMES:  # errors never about errors; about echo requests/replies yes
        _, msg, _ = icmp_of(name)
        assert icmp6.may_send_error(GOLDEN6[name], icmp6.DEST_UNREACH, 0) == (not msg.is_error)
    redirect = icmp6.emit_packet(CLIENT, SERVER, icmp6.Icmp6Message(icmp6.REDIRECT, 0, 0,
                                                                    bytes(32)))
    assert not icmp6.may_send_error(redirect, icmp6.DEST_UNREACH, 0)
    # ICMPv6 whose type is cut off: ineligible; a later fragment: eligible; TCP: eligible
    assert not icmp6.may_send_error(req[:40], icmp6.DEST_UNREACH, 0)
    frag = with_chain(ipv6.fragment_header(8, False, 1), proto=ipv6.NH_ICMPV6, body=bytes(8))
    assert icmp6.may_send_error(frag, icmp6.DEST_UNREACH, 0)
    assert icmp6.may_send_error(g6.TCP6_SYN, icmp6.DEST_UNREACH, icmp6.UNREACH_PORT)
    assert not icmp6.may_send_error(req[:39], icmp6.DEST_UNREACH, 0)


def test_icmp6_error_builders() -> None:
    big = bytes(3000)
    for m, t, rest in ((icmp6.dest_unreachable(big, icmp6.UNREACH_ADMIN), icmp6.DEST_UNREACH, 0),
                       (icmp6.packet_too_big(big, 1400), icmp6.PACKET_TOO_BIG, 1400),
                       (icmp6.time_exceeded(big, 1), icmp6.TIME_EXCEEDED, 0),
                       (icmp6.parameter_problem(big, 1, 6), icmp6.PARAM_PROBLEM, 6)):
        assert (m.type, m.rest, len(m.data), m.is_error) == (t, rest, 1232, True)
        assert len(icmp6.emit_packet(SERVER, CLIENT, m)) == ipv6.MIN_MTU


def test_icmp6_round_trip_keeps_alternate_zero_checksum() -> None:
    # a rest-of-header chosen so that the message and pseudo-header sum to 0xffff: the
    # checksum is 0x0000 - or, equally valid to a verifier (RFC 1624 section 3), 0xffff
    s = ones_sum(icmp6.emit(icmp6.Icmp6Message(icmp6.ECHO_REQUEST, 0, 0, b""), CLIENT, SERVER,
                            keep_checksum=True), pseudo_header_sum_v6(CLIENT, SERVER, 58, 8))
    msg = icmp6.Icmp6Message(icmp6.ECHO_REQUEST, 0, (~s & 0xFFFF) << 16, b"", 0xFFFF)
    alt = icmp6.emit(msg, CLIENT, SERVER, keep_checksum=True)
    parsed = icmp6.parse(alt, CLIENT, SERVER)  # verifies
    assert parsed.checksum == 0xFFFF
    assert icmp6.emit(parsed, CLIENT, SERVER, keep_checksum=True) == alt
    assert icmp6.emit(parsed, CLIENT, SERVER) == alt[:2] + b"\0\0" + alt[4:]
    icmp6.parse(alt[:2] + b"\0\0" + alt[4:], CLIENT, SERVER)


@given(st.binary(max_size=80))
def test_icmp6_parse_arbitrary_bytes(data: bytes) -> None:
    try:
        icmp6.parse(data, CLIENT, SERVER, verify_checksum=False)
    except MalformedPacket:
        assert len(data) < icmp6.HEADER_LEN


# --- MPTCP over IPv6: the MPTCP codec on the kernel's options --------------------------
def keys(name: str) -> tuple[int, int]:
    """(client key, server key) from a third ACK with MP_CAPABLE."""
    _, th, _, _ = tcp_of(name)
    (mpc,) = mptcp_options(th)
    assert isinstance(mpc, mptcp.MpCapable)
    assert mpc.sender_key is not None and mpc.receiver_key is not None
    return mpc.sender_key, mpc.receiver_key


def test_mptcp6_capable_handshake() -> None:
    (syn,) = mptcp_options(tcp_of("MPTCP6_SYN")[1])
    (synack,) = mptcp_options(tcp_of("MPTCP6_SYNACK")[1])
    assert isinstance(syn, mptcp.MpCapable) and syn.version == 1 and syn.sender_key is None
    assert isinstance(synack, mptcp.MpCapable) and synack.sender_key is not None
    client_key, server_key = keys("MPTCP6_ACK")
    assert synack.sender_key == server_key
    assert f"{crypto.key_token(client_key):08x}" == g6.MPTCP6_CLIENT_TOKEN
    assert f"{crypto.key_token(server_key):08x}" == g6.MPTCP6_SERVER_TOKEN
    (dss,) = mptcp_options(tcp_of("MPTCP6_DATA_DSS")[1])
    assert isinstance(dss, mptcp.Dss)
    assert dss.dsn == crypto.key_idsn(server_key) + 1
    assert dss.data_ack == crypto.key_idsn(client_key) + 1 + 100
    assert dss.ssn == 1 and dss.data_len == 100
    for name in TCP_NAMES:  # every MPTCP option re-emits to the kernel's bytes
        _, th, _, _ = tcp_of(name)
        raw = [o for o in th.options if isinstance(o, tcp.UnknownOption) and o.kind == 30]
        for o, parsed in zip(raw, mptcp_options(th), strict=True):
            assert mptcp.to_tcp_option(parsed) == o


@pytest.mark.parametrize(("tag", "port"), [("", None), ("_PORT", 7204)])
def test_mptcp6_add_addr6_from_the_kernel(tag: str, port: int | None) -> None:
    client_key, server_key = keys(f"ADDADDR6{tag}_MPC_ACK")
    assert f"{crypto.key_token(client_key):08x}" == getattr(g6, f"ADDADDR6{tag}_CLIENT_TOKEN")
    assert f"{crypto.key_token(server_key):08x}" == getattr(g6, f"ADDADDR6{tag}_SERVER_TOKEN")
    iph, th, _, _ = tcp_of(f"ADDADDR6{tag}")
    assert iph.src == SERVER and th.flags == tcp.ACK
    (aa,) = mptcp_options(th)
    assert isinstance(aa, mptcp.AddAddr)
    assert (aa.addr, aa.ipver, aa.port, aa.echo, aa.version) == (SERVER2, 6, port, False, 1)
    assert str(aa.address) == "fd00:2::1" and aa.addr_id == 1
    assert mptcp.option_len(aa) == (30 if port else 28)
    # the HMAC: the sender's (server's) key first
    assert aa.hmac == crypto.add_addr_hmac(server_key, client_key, aa.addr_id, aa.addr, port)
    assert mptcp.describe(aa) == (f"ADD_ADDR addr_id=1 fd00:2::1"
                                  f"{f' port={port}' if port else ''} hmac=0x{aa.hmac:016x}")
    (echo,) = mptcp_options(tcp_of(f"ADDADDR6{tag}_ECHO")[1])
    assert echo == mptcp.AddAddr(1, SERVER2, port, None, True, 1)
    assert mptcp.option_len(echo) == (22 if port else 20)
    # then the client joins the announced address (and port) with the server's token
    jh, jt, _, _ = tcp_of(f"MPJOIN6{tag}_SYN")
    (join,) = mptcp_options(jt)
    assert isinstance(join, mptcp.MpJoinSyn)
    assert (jh.src, jh.dst, jt.dst_port) == (CLIENT2, SERVER2, port or 7104)
    assert join.token == crypto.key_token(server_key)
