"""Wire codecs against golden packets captured from the Linux kernel (tests/unit/golden.py):
parse with checksums verified, exact round trips, the kernel's option values, every
truncated prefix rejected, malformed headers rejected; the checksum against a naive
RFC 1071 reference."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire import MalformedPacket, icmp, ipv4, tcp
from stack.wire.checksum import fold, internet_checksum, ones_sum, pseudo_header_sum_v4
from tests.unit import golden
from tests.unit.golden import GOLDEN

TCP_NAMES = sorted(n for n in GOLDEN if n.startswith(("TCP_", "MPTCP_")))
ICMP_NAMES = sorted(n for n in GOLDEN if n.startswith("ICMP_"))
CLIENT = bytes([10, 0, 1, 254])  # the kernel client (user namespace)
SERVER = bytes([10, 0, 1, 1])  # the kernel peer
MSS = 1460


def split(pkt: bytes) -> tuple[ipv4.IPv4Header, bytes]:
    h, end = ipv4.parse(pkt)
    return h, pkt[h.header_len:end]


def tcp_of(name: str) -> tuple[ipv4.IPv4Header, tcp.TcpHeader, bytes, bytes]:
    """(ip header, tcp header, payload, raw segment) of a golden TCP packet."""
    iph, seg = split(GOLDEN[name])
    th, doff = tcp.parse(seg)
    return iph, th, seg[doff:], seg


def mptcp_opts(th: tcp.TcpHeader) -> list[bytes]:
    """Bodies (after kind and length) of the MPTCP options (kind 30), kept raw for now."""
    return [o.data for o in th.options
            if isinstance(o, tcp.UnknownOption) and o.kind == tcp.OPT_MPTCP]


# --- the naive reference checksum --------------------------------------------------
def ref_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 section 4.1, word by word with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    s = initial
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


# --- IPv4 ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_ipv4_golden_parse_and_round_trip(name: str) -> None:
    pkt = GOLDEN[name]
    h, end = ipv4.parse(pkt)  # verifies the header checksum
    assert end == len(pkt) == h.total_length
    assert h.header_len == 20 and h.options == b""
    assert {h.src, h.dst} == {CLIENT, SERVER}
    assert h.proto == (ipv4.PROTO_ICMP if name.startswith("ICMP_") else ipv4.PROTO_TCP)
    assert not h.is_fragment
    hdr = pkt[:h.header_len]
    assert ipv4.emit(h, end - h.header_len, keep_checksum=True) == hdr
    assert ipv4.emit(h, end - h.header_len) == hdr  # checksum recomputed: the kernel's
    h.total_length = 0  # filled from the payload length on emit
    assert ipv4.emit(h, end - h.header_len) == hdr
    assert internet_checksum(hdr) == 0


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_ipv4_every_truncated_prefix_rejected(name: str) -> None:
    pkt = GOLDEN[name]
    for n in range(len(pkt)):
        with pytest.raises(MalformedPacket):
            ipv4.parse(pkt[:n])


def test_ipv4_malformed_headers() -> None:
    pkt = bytearray(golden.TCP_SYN)
    with pytest.raises(MalformedPacket, match="ipv4-version"):
        ipv4.parse(bytes([0x65]) + pkt[1:])
    for ihl in range(5):
        with pytest.raises(MalformedPacket, match="ipv4-bad-ihl"):
            ipv4.parse(bytes([0x40 | ihl]) + pkt[1:])
    bad = bytearray(pkt)
    struct.pack_into("!H", bad, 2, 19)  # total length shorter than the header
    with pytest.raises(MalformedPacket, match="ipv4-bad-length"):
        ipv4.parse(bytes(bad), verify_checksum=False)
    bad = bytearray(pkt)
    bad[8] ^= 0x01  # TTL changed, checksum not updated
    with pytest.raises(MalformedPacket, match="ipv4-bad-checksum"):
        ipv4.parse(bytes(bad))
    ipv4.parse(bytes(bad), verify_checksum=False)
    # Link-layer padding after total_length is ignored.
    _h, end = ipv4.parse(bytes(pkt) + b"\0" * 6)
    assert end == len(pkt)


# --- TCP -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", TCP_NAMES)
def test_tcp_golden_checksum_and_round_trip(name: str) -> None:
    iph, th, payload, seg = tcp_of(name)
    assert tcp.verify_checksum_v4(iph.src, iph.dst, seg)
    assert tcp.checksum_v4(iph.src, iph.dst, seg) == 0
    assert tcp.emit(th, payload, keep_checksum=True) == seg
    recomputed = tcp.emit(th, payload, iph.src, iph.dst)
    assert recomputed == seg
    assert struct.unpack_from("!H", recomputed, 16)[0] == th.checksum
    assert th.header_len == len(seg) - len(payload)
    # Corrupt one payload or header byte: the checksum catches it.
    bad = bytearray(seg)
    bad[-1] ^= 0x40
    assert not tcp.verify_checksum_v4(iph.src, iph.dst, bytes(bad))


@pytest.mark.parametrize("name", TCP_NAMES)
def test_emit_ipv4_segment_is_ipv4_emit_plus_tcp_emit(name: str) -> None:
    # the host's one-buffer serialiser against the two codecs, for every golden
    # kernel segment (options, payloads, flags as the kernel sent them)
    iph, th, payload, _seg = tcp_of(name)
    th.options = list(th.options)
    want_tcp = tcp.emit(th, payload, iph.src, iph.dst)
    ih = ipv4.IPv4Header(iph.src, iph.dst, ipv4.PROTO_TCP, ttl=61, ident=0x1234)
    want = ipv4.emit(ih, len(want_tcp)) + want_tcp
    got, thl = tcp.emit_ipv4_segment(iph.src, iph.dst, 0x1234, 61, th, payload)
    assert got == want
    assert thl == th.header_len
    # NEEDS_CSUM: only the TCP checksum field differs, holding the pseudo-header sum
    partial, _ = tcp.emit_ipv4_segment(iph.src, iph.dst, 0x1234, 61, th, payload, True)
    field = ipv4.HEADER_LEN + 16
    assert partial[:field] == want[:field] and partial[field + 2:] == want[field + 2:]
    assert struct.unpack_from("!H", partial, field)[0] == pseudo_header_sum_v4(
        iph.src, iph.dst, ipv4.PROTO_TCP, len(want_tcp))


@pytest.mark.parametrize("name", TCP_NAMES)
def test_tcp_every_truncated_header_prefix_rejected(name: str) -> None:
    _, _th, payload, seg = tcp_of(name)
    doff = len(seg) - len(payload)
    for n in range(doff):
        with pytest.raises(MalformedPacket):
            tcp.parse(seg[:n])
    tcp.parse(seg[:doff])  # the header alone is fine


@pytest.mark.parametrize("name", TCP_NAMES)
def test_tcp_bad_data_offsets(name: str) -> None:
    _, _, _, seg = tcp_of(name)
    for off in range(5):
        bad = bytearray(seg)
        bad[12] = (off << 4) | (bad[12] & 0x0F)
        with pytest.raises(MalformedPacket, match="tcp-bad-data-offset"):
            tcp.parse(bytes(bad))
    hdr = seg[:len(seg) - len(tcp_of(name)[2])]
    # A data offset one word past the end of what we have.
    with pytest.raises(MalformedPacket, match="tcp-truncated"):
        tcp.parse(hdr[:-4])
    bad = bytearray(hdr[:20])
    for off in range(6, 16):
        bad[12] = (off << 4) | (bad[12] & 0x0F)
        with pytest.raises(MalformedPacket, match="tcp-truncated"):
            tcp.parse(bytes(bad))


def _option_offsets(seg: bytes) -> list[tuple[int, int]]:
    """(offset, kind) of each option with a length byte."""
    doff = (seg[12] >> 4) * 4
    i, out = 20, []
    while i < doff:
        kind = seg[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        out.append((i, kind))
        i += seg[i + 1]
    return out


@pytest.mark.parametrize("name", [n for n in TCP_NAMES if n != "TCP_RST"])
def test_tcp_option_lengths_past_header_rejected(name: str) -> None:
    _, _, payload, seg = tcp_of(name)
    hdr = seg[:len(seg) - len(payload)]
    doff = len(hdr)
    offsets = _option_offsets(hdr)
    assert offsets
    for off, _kind in offsets:
        for length in (0, 1):
            bad = bytearray(hdr)
            bad[off + 1] = length
            with pytest.raises(MalformedPacket, match="tcp-option-length"):
                tcp.parse(bytes(bad))
        bad = bytearray(hdr)
        bad[off + 1] = doff - off + 1  # runs one byte past the header
        with pytest.raises(MalformedPacket, match="tcp-option-length"):
            tcp.parse(bytes(bad))
        # Even with payload after the header: the option area ends at the data offset.
        with pytest.raises(MalformedPacket):
            tcp.parse(bytes(bad) + b"\x01" * 40)


def test_tcp_fixed_size_option_with_wrong_length() -> None:
    _, _, _, seg = tcp_of("TCP_SYN")
    bad = bytearray(seg)
    assert bad[20:22] == b"\x02\x04"  # MSS first
    bad[21] = 3
    with pytest.raises(MalformedPacket, match="tcp-option-length"):
        tcp.parse(bytes(bad))
    # kind without a length byte at the very end of the option area
    hdr = bytearray(seg[:40])
    hdr[39] = tcp.OPT_MSS
    hdr[36:39] = b"\x01\x01\x01"
    with pytest.raises(MalformedPacket, match="tcp-option-truncated"):
        tcp.parse(bytes(hdr))


@pytest.mark.parametrize("combo", [tcp.SYN | tcp.FIN, tcp.SYN | tcp.RST,
                                   tcp.SYN | tcp.FIN | tcp.RST | tcp.ACK])
@pytest.mark.parametrize("name", ["TCP_SYN", "TCP_SYNACK", "TCP_DATA"])
def test_tcp_illegal_flag_combinations(name: str, combo: int) -> None:
    _, _, _, seg = tcp_of(name)
    bad = bytearray(seg)
    bad[13] |= combo
    with pytest.raises(MalformedPacket, match="tcp-illegal-flags"):
        tcp.parse(bytes(bad))


def test_tcp_syn_options_as_the_kernel_set_them() -> None:
    iph, syn, payload, _ = tcp_of("TCP_SYN")
    assert (iph.src, iph.dst, syn.dst_port) == (CLIENT, SERVER, 7000)
    assert syn.flags == tcp.SYN and syn.ack == 0 and payload == b""
    assert syn.describe() == "S"
    ts = syn.option(tcp.Timestamps)
    ws = syn.option(tcp.WindowScale)
    assert isinstance(ts, tcp.Timestamps) and isinstance(ws, tcp.WindowScale)
    # Linux's order: MSS, SACK-permitted + timestamps (packed), NOP, window scale.
    assert syn.options == [tcp.Mss(MSS), tcp.SackPermitted(), tcp.Timestamps(ts.tsval, 0),
                           tcp.Nop(), tcp.WindowScale(ws.shift)]
    assert 0 < ws.shift <= 14


def test_tcp_handshake_fields_chain() -> None:
    _, syn, _, _ = tcp_of("TCP_SYN")
    _, synack, _, _ = tcp_of("TCP_SYNACK")
    _, ack, _, _ = tcp_of("TCP_ACK")
    _, data, payload, _ = tcp_of("TCP_DATA")
    _, fin, fin_payload, _ = tcp_of("TCP_FIN")
    syn_ts = syn.option(tcp.Timestamps)
    assert isinstance(syn_ts, tcp.Timestamps)

    assert synack.flags == tcp.SYN | tcp.ACK and synack.describe() == "S."
    assert synack.ack == (syn.seq + 1) & 0xFFFFFFFF
    sa_ts = synack.option(tcp.Timestamps)
    assert isinstance(sa_ts, tcp.Timestamps) and sa_ts.tsecr == syn_ts.tsval
    assert synack.option(tcp.Mss) == tcp.Mss(MSS)
    assert synack.option(tcp.SackPermitted) == tcp.SackPermitted()
    assert synack.option(tcp.WindowScale) is not None

    assert ack.flags == tcp.ACK and ack.seq == syn.seq + 1 and ack.ack == synack.seq + 1
    assert ack.options == [tcp.Nop(), tcp.Nop(), tcp.Timestamps(ack.options[2].tsval,  # type: ignore[union-attr]
                                                                sa_ts.tsval)]
    assert data.flags == tcp.PSH | tcp.ACK and data.seq == ack.seq
    assert payload == b"golden vector: kernel TCP data segment\n"
    assert fin.flags == tcp.FIN | tcp.ACK and fin_payload == b""
    assert fin.seq == (data.seq + len(payload)) & 0xFFFFFFFF


def test_tcp_rst_from_closed_port() -> None:
    iph, rst, payload, _ = tcp_of("TCP_RST")
    assert (iph.src, rst.src_port) == (SERVER, 7001)
    assert rst.flags == tcp.RST | tcp.ACK and rst.describe() == "R."
    assert rst.seq == 0 and rst.window == 0 and rst.options == [] and payload == b""


def test_tcp_sack_block() -> None:
    _, th, payload, _ = tcp_of("TCP_SACK")
    sack = th.option(tcp.Sack)
    assert isinstance(sack, tcp.Sack) and len(sack.blocks) == 1
    left, right = sack.blocks[0]
    # The hole is exactly the one dropped full-size segment (MSS 1460 - 12 bytes of TS).
    assert (left - th.ack) & 0xFFFFFFFF == MSS - 12
    assert (right - left) & 0xFFFFFFFF > 0 and (right - left) % (MSS - 12) == 0
    assert th.options[:3] == [tcp.Nop(), tcp.Nop(), th.option(tcp.Timestamps)]
    assert th.options[3:5] == [tcp.Nop(), tcp.Nop()]
    assert payload == b""


def test_tcp_emit_options_pads_and_bounds() -> None:
    assert tcp.emit_options([tcp.Mss(1460), tcp.WindowScale(7)]) == \
        b"\x02\x04\x05\xb4\x03\x03\x07\x00"
    with pytest.raises(ValueError):
        tcp.emit_options([tcp.Sack(((1, 2),) * 4), tcp.Timestamps(1, 2)])


# --- MPTCP options, raw (the MPTCP codec reads them later) ---------------------------
def test_mptcp_capable_handshake_bytes() -> None:
    _, syn, _, _ = tcp_of("MPTCP_SYN")
    _, synack, _, _ = tcp_of("MPTCP_SYNACK")
    _, ack, _, _ = tcp_of("MPTCP_ACK")
    _, data, payload, _ = tcp_of("MPTCP_DATA_MPC")
    # subtype 0 (MP_CAPABLE), version 1; flags 0x01 (HMAC-SHA256, no checksum)
    assert mptcp_opts(syn) == [b"\x01\x01"]  # 4 bytes on the SYN: no key
    (sa,) = mptcp_opts(synack)
    assert len(sa) + 2 == 12 and sa[:2] == b"\x01\x01"
    server_key = sa[2:]
    (a,) = mptcp_opts(ack)
    assert len(a) + 2 == 20 and a[:2] == b"\x01\x01"
    client_key = a[2:10]
    assert a[10:] == server_key
    (d,) = mptcp_opts(data)
    assert len(d) + 2 == 22 and d[:2] == b"\x01\x01"
    assert d[2:10] == client_key and d[10:18] == server_key
    assert struct.unpack("!H", d[18:20])[0] == len(payload) == 100
    # The kernel's own tokens (MPTCP_INFO) pin key -> token = SHA-256(key)[:4].
    assert hashlib.sha256(client_key).hexdigest()[:8] == golden.MPTCP_CLIENT_TOKEN
    assert hashlib.sha256(server_key).hexdigest()[:8] == golden.MPTCP_SERVER_TOKEN


def test_mptcp_dss_bytes() -> None:
    _, ack, _, _ = tcp_of("MPTCP_ACK")
    _, dss_seg, payload, _ = tcp_of("MPTCP_DATA_DSS")
    client_key, server_key = mptcp_opts(ack)[0][2:10], mptcp_opts(ack)[0][10:18]
    idsn = {k: int.from_bytes(hashlib.sha256(k).digest()[-8:], "big")
            for k in (client_key, server_key)}
    (dss,) = mptcp_opts(dss_seg)
    assert dss[0] >> 4 == 2  # DSS
    flags = dss[1]
    assert flags == 0x0F  # A, a (8-byte data ACK), M, m (8-byte DSN); no DATA_FIN
    assert len(dss) + 2 == 4 + 8 + 14  # no checksum negotiated
    data_ack, dsn, ssn, dll = struct.unpack("!QQIH", dss[2:])
    assert dsn == idsn[server_key] + 1  # the server's first data byte
    assert data_ack == idsn[client_key] + 1 + 100  # acks the client's 100 bytes
    assert ssn == 1 and dll == len(payload) == 100  # relative subflow seq, length


# --- ICMP ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ICMP_NAMES)
def test_icmp_golden_round_trip(name: str) -> None:
    _, body = split(GOLDEN[name])
    msg = icmp.parse(body)  # verifies the checksum
    assert icmp.emit(msg) == body
    assert msg.checksum == struct.unpack_from("!H", body, 2)[0]
    for n in range(icmp.HEADER_LEN):
        with pytest.raises(MalformedPacket):
            icmp.parse(body[:n])
    bad = bytearray(body)
    bad[-1] ^= 0x01
    with pytest.raises(MalformedPacket, match="icmp-bad-checksum"):
        icmp.parse(bytes(bad))


def test_icmp_echo_request_and_reply() -> None:
    _, req_b = split(golden.ICMP_ECHO_REQUEST)
    _, rep_b = split(golden.ICMP_ECHO_REPLY)
    req, rep = icmp.parse(req_b), icmp.parse(rep_b)
    assert (req.type, req.code, rep.type, rep.code) == (icmp.ECHO_REQUEST, 0, icmp.ECHO_REPLY, 0)
    assert (rep.ident, rep.sequence) == (req.ident, req.sequence) and req.sequence == 1
    assert req.data.endswith(b"\xa5" * 40)  # ping -p a5
    assert icmp.emit(icmp.echo_reply(req)) == rep_b  # what the kernel answered


def test_icmp_port_unreachable_quotes_the_datagram() -> None:
    _, body = split(golden.ICMP_PORT_UNREACH)
    msg = icmp.parse(body)
    assert (msg.type, msg.code) == (icmp.DEST_UNREACH, icmp.UNREACH_PORT)
    inner, end = ipv4.parse(msg.data)
    assert (inner.src, inner.dst, inner.proto) == (CLIENT, SERVER, 17)
    sport, dport = struct.unpack_from("!HH", msg.data, inner.header_len)
    assert (sport, dport) == (40000, 7999)
    assert msg.data[inner.header_len + 8:end] == b"golden udp probe"


def test_icmp_round_trip_keeps_alternate_zero_checksum() -> None:
    # type 8, code 0 and rest 0xf7ff0000 sum to 0xffff, so the checksum is 0x0000 -
    # or, equally valid to a verifier (RFC 1624 section 3), 0xffff.
    body = bytes.fromhex("0800ffff" "f7ff0000")
    msg = icmp.parse(body)
    assert icmp.emit(msg, keep_checksum=True) == body
    assert icmp.emit(msg) == bytes.fromhex("08000000" "f7ff0000")


# --- checksum ------------------------------------------------------------------------
@given(st.binary(max_size=2000), st.integers(min_value=0, max_value=0x3FFFF))
def test_ones_sum_matches_reference(data: bytes, initial: int) -> None:
    assert ones_sum(data, initial) == ref_sum(data, initial)
    assert internet_checksum(data, initial) == ~ref_sum(data, initial) & 0xFFFF


@given(st.binary(max_size=2000))
def test_checksum_of_memoryview_and_bytearray(data: bytes) -> None:
    want = ~ref_sum(data) & 0xFFFF
    assert internet_checksum(memoryview(data)) == want
    assert internet_checksum(bytearray(data)) == want


@given(st.binary(min_size=2, max_size=1000).filter(lambda b: len(b) % 2 == 0),
       st.binary(max_size=1000))
def test_checksum_inserted_verifies_to_zero(head: bytes, tail: bytes) -> None:
    data = head[:-2] + b"\0\0" + tail
    c = internet_checksum(data)
    filled = head[:-2] + struct.pack("!H", c) + tail
    assert internet_checksum(filled) == 0
    assert ref_sum(filled) == 0xFFFF


@given(st.binary(max_size=600).filter(lambda b: len(b) % 2 == 0), st.binary(max_size=600))
def test_ones_sum_combines(a: bytes, b: bytes) -> None:
    assert fold(ones_sum(a) + ones_sum(b)) == ref_sum(a + b)
    assert ones_sum(b, ones_sum(a)) == ref_sum(a + b)


def test_checksum_edge_cases() -> None:
    assert ones_sum(b"") == 0 and internet_checksum(b"") == 0xFFFF
    assert ones_sum(b"\0" * 10) == 0
    assert ones_sum(b"\xff\xff") == 0xFFFF and internet_checksum(b"\xff\xff") == 0
    assert ones_sum(b"\xff\xff\xff\xff") == 0xFFFF
    assert ones_sum(b"\x00\x01\xff\xff") == 0x0001
    assert ones_sum(b"\x01") == 0x0100  # odd length: zero-padded on the right
    assert fold(0) == 0 and fold(0x1FFFE) == 0xFFFF and fold(0x10000) == 1


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4),
       st.binary(min_size=20, max_size=200))
def test_tcp_pseudo_header_sum(src: bytes, dst: bytes, seg: bytes) -> None:
    pseudo = src + dst + bytes([0, 6]) + struct.pack("!H", len(seg))
    assert pseudo_header_sum_v4(src, dst, 6, len(seg)) == ref_sum(pseudo)
    assert tcp.checksum_v4(src, dst, seg) == ~ref_sum(pseudo + seg) & 0xFFFF


# --- parsers on arbitrary bytes: only MalformedPacket, and exact round trips ----------
@given(st.binary(max_size=80))
def test_tcp_parse_arbitrary_bytes(seg: bytes) -> None:
    try:
        th, doff = tcp.parse(seg)
    except MalformedPacket:
        return
    assert tcp.emit(th, seg[doff:], keep_checksum=True) == seg


@given(st.binary(min_size=20, max_size=60))
def test_tcp_parse_arbitrary_options(raw: bytes) -> None:
    opt_len = (len(raw) - 20) // 4 * 4
    seg = bytearray(raw[:20 + opt_len])
    seg[12] = ((20 + opt_len) // 4) << 4
    seg[13] &= ~(tcp.SYN) & 0xFF
    try:
        th, doff = tcp.parse(bytes(seg))
    except MalformedPacket:
        return
    assert doff == len(seg)
    assert tcp.emit(th, b"", keep_checksum=True) == bytes(seg)


@given(st.binary(min_size=0, max_size=80))
def test_ipv4_parse_arbitrary_bytes(data: bytes) -> None:
    if data:
        data = bytes([0x40 | (data[0] & 0x0F)]) + data[1:]
    try:
        h, end = ipv4.parse(data, verify_checksum=False)
    except MalformedPacket:
        return
    assert ipv4.emit(h, end - h.header_len, keep_checksum=True) == data[:h.header_len]


@given(st.binary(max_size=80))
def test_icmp_parse_arbitrary_bytes(data: bytes) -> None:
    try:
        icmp.parse(data, verify_checksum=False)
    except MalformedPacket:
        assert len(data) < icmp.HEADER_LEN


_u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
_option = st.one_of(
    st.just(tcp.Nop()),
    st.builds(tcp.Mss, st.integers(min_value=0, max_value=0xFFFF)),
    st.builds(tcp.WindowScale, st.integers(min_value=0, max_value=255)),
    st.just(tcp.SackPermitted()),
    st.builds(tcp.Timestamps, _u32, _u32),
    st.builds(tcp.Sack, st.lists(st.tuples(_u32, _u32), min_size=1, max_size=4).map(tuple)),
    st.builds(tcp.UnknownOption, st.integers(min_value=6, max_value=255).filter(
        lambda k: k not in (tcp.OPT_SACK, tcp.OPT_TIMESTAMP)), st.binary(max_size=12)),
)


def _natural_len(o: tcp.TcpOption) -> int:
    """Bytes an option takes on the wire, before the final padding."""
    if isinstance(o, tcp.Sack):
        return 2 + 8 * len(o.blocks)
    if isinstance(o, tcp.UnknownOption):
        return 2 + len(o.data)
    return {tcp.Nop: 1, tcp.Mss: 4, tcp.WindowScale: 3, tcp.SackPermitted: 2,
            tcp.Timestamps: 10}[type(o)]


@given(st.lists(_option, max_size=6))
def test_tcp_options_emit_then_parse(opts: list[tcp.TcpOption]) -> None:
    try:
        raw = tcp.emit_options(opts)
    except ValueError:
        return  # more than 40 bytes
    assert len(raw) % 4 == 0
    parsed = tcp.parse_options(raw)
    pad = len(raw) - sum(_natural_len(o) for o in opts)
    # The zero padding reads back as an end-of-list option carrying the rest.
    assert parsed == ([*opts, tcp.Eol(bytes(pad - 1))] if pad else opts)
    assert tcp.emit_options(parsed) == raw
