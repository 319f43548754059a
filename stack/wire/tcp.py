"""TCP header and options codec (RFC 9293 section 3.1, RFC 7323, RFC 2018).

```
 0                   1                   2                   3
 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|          Source Port          |       Destination Port        |
|                        Sequence Number                        |
|                    Acknowledgment Number                      |
|  Data |       |C|E|U|A|P|R|S|F|                               |
| Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
|           Checksum            |         Urgent Pointer        |
|                    Options                    |    Padding    |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
```
Options keep their order (NOPs and EOL padding included) so that
`emit(parse(b)) == b` exactly; unknown kinds (MPTCP, kind 30, among them until the
MPTCP codec reads them) are kept as `UnknownOption`. Sequence and ack numbers are raw
32-bit integers here; the engine wraps them in `stack.tcp.seq.Seq`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntFlag

from stack.wire import ipv4, ipv6
from stack.wire.checksum import (
    internet_checksum,
    ones_sum,
    pseudo_header_sum_v4,
    pseudo_header_sum_v6,
)
from stack.wire.errors import MalformedPacket

HEADER_LEN = 20
MAX_HEADER_LEN = 60
MAX_OPTIONS_LEN = MAX_HEADER_LEN - HEADER_LEN

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERM = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8
OPT_MPTCP = 30

_HDR = struct.Struct("!HHIIHHHH")
_PSEUDO = struct.Struct("!4s4sBBH")


class TcpFlags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


FIN, SYN, RST, PSH, ACK, URG = (int(f) for f in (TcpFlags.FIN, TcpFlags.SYN, TcpFlags.RST,
                                                 TcpFlags.PSH, TcpFlags.ACK, TcpFlags.URG))


# --- options -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Nop:
    pass


@dataclass(frozen=True, slots=True)
class Eol:
    """End of option list; `padding` is whatever followed it up to the data offset."""
    padding: bytes = b""


@dataclass(frozen=True, slots=True)
class Mss:
    value: int


@dataclass(frozen=True, slots=True)
class WindowScale:
    shift: int


@dataclass(frozen=True, slots=True)
class SackPermitted:
    pass


@dataclass(frozen=True, slots=True)
class Sack:
    blocks: tuple[tuple[int, int], ...]  # (left, right) raw 32-bit edges


@dataclass(frozen=True, slots=True)
class Timestamps:
    tsval: int
    tsecr: int


@dataclass(frozen=True, slots=True)
class UnknownOption:
    kind: int
    data: bytes  # the bytes after kind and length


TcpOption = Nop | Eol | Mss | WindowScale | SackPermitted | Sack | Timestamps | UnknownOption

# Exact lengths (kind+len+data) of the fixed-size options; a mismatch is malformed.
_FIXED_LEN = {OPT_MSS: 4, OPT_WSCALE: 3, OPT_SACK_PERM: 2, OPT_TIMESTAMP: 10}
_PARSED = frozenset((OPT_MSS, OPT_WSCALE, OPT_SACK_PERM, OPT_TIMESTAMP, OPT_SACK))


NOP = Nop()  # one shared instance (options are frozen values)
_TS_PREFIX = bytes((OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10))
_II = struct.Struct("!II")


def parse_options(raw: bytes | bytearray | memoryview) -> list[TcpOption]:
    """Parse the option area. Raises MalformedPacket on a length that runs past the
    header, a length < 2, or a wrong length for a fixed-size option."""
    opts: list[TcpOption] = []
    i, n = 0, len(raw)
    if n >= 12 and raw[:4] == _TS_PREFIX:
        # the layout of nearly every established-state segment (Linux pads the
        # timestamps option with two NOPs in front): no generic walk for it
        opts += (NOP, NOP, Timestamps(*_II.unpack_from(raw, 4)))
        i = 12
    while i < n:
        kind = raw[i]
        if kind == OPT_EOL:
            opts.append(Eol(bytes(raw[i + 1:])))
            break
        if kind == OPT_NOP:
            opts.append(NOP)
            i += 1
            continue
        if i + 1 >= n:
            raise MalformedPacket("tcp-option-truncated", f"kind {kind} without length")
        length = raw[i + 1]
        if length < 2 or i + length > n:
            raise MalformedPacket("tcp-option-length", f"kind {kind} length {length}")
        body = raw[i + 2:i + length]
        if kind not in _PARSED:
            opts.append(UnknownOption(kind, bytes(body)))  # MPTCP's, per segment: first
            i += length
            continue
        fixed = _FIXED_LEN.get(kind)
        if fixed is not None and length != fixed:
            raise MalformedPacket("tcp-option-length", f"kind {kind} length {length}")
        if kind == OPT_MSS:
            opts.append(Mss((body[0] << 8) | body[1]))
        elif kind == OPT_WSCALE:
            opts.append(WindowScale(body[0]))
        elif kind == OPT_SACK_PERM:
            opts.append(SackPermitted())
        elif kind == OPT_TIMESTAMP:
            tsval, tsecr = struct.unpack_from("!II", body)
            opts.append(Timestamps(tsval, tsecr))
        elif kind == OPT_SACK:
            if (length - 2) % 8 or length == 2:
                raise MalformedPacket("tcp-option-length", f"SACK length {length}")
            edges = struct.unpack_from(f"!{(length - 2) // 4}I", body)
            opts.append(Sack(tuple(zip(edges[0::2], edges[1::2], strict=True))))
        i += length
    return opts


def options_len(opts: list[TcpOption] | tuple[TcpOption, ...]) -> int:
    """The bytes `emit_options(opts)` takes, padding included, without serialising."""
    n = 0
    for o in opts:
        t = type(o)
        if t is Nop:
            n += 1
        elif t is UnknownOption:
            n += 2 + len(o.data)  # type: ignore[union-attr]
        elif t is Timestamps:
            n += 10
        elif t is Sack:
            n += 2 + 8 * len(o.blocks)  # type: ignore[union-attr]
        elif t is Eol:
            n += 1 + len(o.padding)  # type: ignore[union-attr]
        else:
            n += _FIXED_LEN.get({Mss: OPT_MSS, WindowScale: OPT_WSCALE,
                                 SackPermitted: OPT_SACK_PERM}[t], 0)
    return (n + 3) & ~3


def emit_options(opts: list[TcpOption] | tuple[TcpOption, ...]) -> bytes:
    """Serialise options in order, then pad with zero bytes (EOL) to a multiple of 4."""
    out = bytearray()
    for o in opts:
        if isinstance(o, Nop):
            out.append(OPT_NOP)
        elif isinstance(o, Eol):
            out.append(OPT_EOL)
            out += o.padding
        elif isinstance(o, Mss):
            out += struct.pack("!BBH", OPT_MSS, 4, o.value)
        elif isinstance(o, WindowScale):
            out += bytes((OPT_WSCALE, 3, o.shift))
        elif isinstance(o, SackPermitted):
            out += bytes((OPT_SACK_PERM, 2))
        elif isinstance(o, Timestamps):
            out += struct.pack("!BBII", OPT_TIMESTAMP, 10, o.tsval, o.tsecr)
        elif isinstance(o, Sack):
            out += bytes((OPT_SACK, 2 + 8 * len(o.blocks)))
            for left, right in o.blocks:
                out += struct.pack("!II", left, right)
        elif isinstance(o, UnknownOption):
            out += bytes((o.kind, 2 + len(o.data))) + o.data
        else:  # pragma: no cover - the Union is closed
            raise TypeError(f"not a TCP option: {o!r}")
    if len(out) % 4:
        out += bytes(4 - len(out) % 4)
    if len(out) > MAX_OPTIONS_LEN:
        raise ValueError(f"TCP options take {len(out)} bytes, more than {MAX_OPTIONS_LEN}")
    return bytes(out)


# --- header ------------------------------------------------------------------------
@dataclass(slots=True)
class TcpHeader:
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    options: list[TcpOption] = field(default_factory=list)
    urgent: int = 0
    checksum: int = 0  # as received; computed on emit
    reserved: int = 0  # the 4 reserved bits, kept for exact round trips

    @property
    def header_len(self) -> int:
        return HEADER_LEN + len(emit_options(self.options))

    def option(self, cls: type) -> TcpOption | None:
        """The first option of type `cls`, or None."""
        for o in self.options:
            if type(o) is cls:
                return o
        return None

    def describe(self) -> str:
        """tcpdump-like flags, e.g. 'S.' for SYN/ACK."""
        f = self.flags
        s = "".join(ch for bit, ch in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"))
                    if f & bit)
        return (s + "." if f & ACK else s) or "none"


ILLEGAL_FLAG_COMBOS = ((SYN | FIN, "syn-fin"), (SYN | RST, "syn-rst"))


def parse(seg: bytes | bytearray | memoryview) -> tuple[TcpHeader, int]:
    """Parse a TCP segment's header. Returns (header, data_offset): the payload is
    `seg[data_offset:]`. Does not verify the checksum (see `verify_checksum_v4`)."""
    if len(seg) < HEADER_LEN:
        raise MalformedPacket("tcp-truncated", f"{len(seg)} bytes")
    sport, dport, seq, ack, off_flags, window, csum, urg = _HDR.unpack_from(seg, 0)
    doff = (off_flags >> 12) * 4
    if doff < HEADER_LEN:
        raise MalformedPacket("tcp-bad-data-offset", str(doff))
    if doff > len(seg):
        raise MalformedPacket("tcp-truncated", f"data offset {doff} > {len(seg)} bytes")
    flags = off_flags & 0xFF
    for combo, name in ILLEGAL_FLAG_COMBOS:
        if flags & combo == combo:
            raise MalformedPacket("tcp-illegal-flags", name)
    opts = parse_options(seg[HEADER_LEN:doff]) if doff > HEADER_LEN else []
    return TcpHeader(sport, dport, seq, ack, flags, window, opts, urg, csum,
                     (off_flags >> 8) & 0x0F), doff


def emit(hdr: TcpHeader, payload: bytes | bytearray | memoryview = b"",
         src: bytes | None = None, dst: bytes | None = None, keep_checksum: bool = False) -> bytes:
    """Serialise header + payload. With `src`/`dst` (IPv4 or IPv6) the checksum is
    computed; with `keep_checksum` the header's own checksum field is written as is."""
    opts = emit_options(hdr.options)
    doff = HEADER_LEN + len(opts)
    raw = bytearray(_HDR.pack(hdr.src_port, hdr.dst_port, hdr.seq, hdr.ack,
                              (doff // 4) << 12 | hdr.reserved << 8 | hdr.flags, hdr.window,
                              hdr.checksum if keep_checksum else 0, hdr.urgent))
    raw += opts
    raw += payload
    if not keep_checksum and src is not None and dst is not None:
        csum = checksum_v4(src, dst, raw) if len(src) == 4 else checksum_v6(src, dst, raw)
        struct.pack_into("!H", raw, 16, csum)
    return bytes(raw)


def checksum_v4(src: bytes, dst: bytes, segment: bytes | bytearray | memoryview) -> int:
    """TCP checksum over the IPv4 pseudo-header and `segment` (checksum field zeroed
    by the caller when computing, left as is when verifying)."""
    if len(src) != 4 or len(dst) != 4:
        raise ValueError("IPv4 addresses are 4 bytes (checksum_v6 for IPv6)")
    return internet_checksum(segment, ones_sum(_PSEUDO.pack(src, dst, 0, 6, len(segment))))


def verify_checksum_v4(src: bytes, dst: bytes, segment: bytes | bytearray | memoryview) -> bool:
    return checksum_v4(src, dst, segment) == 0


# --- one IPv4 datagram carrying one TCP segment, serialised in one buffer (the host's
# send path: no intermediate header bytes). Offsets within the datagram:
_IP_TCP = struct.Struct("!BBHHHBBH4s4sHHIIHHHH")  # the IPv4 header then the TCP header
IPV4_HEADER_LEN = ipv4.HEADER_LEN
_IP_CSUM_OFF = 10                          # in the IPv4 header
_TCP_CSUM_OFF = IPV4_HEADER_LEN + 16       # in the TCP header
_TCP_OPTS_OFF = IPV4_HEADER_LEN + HEADER_LEN


def emit_ipv4_headers(src: bytes, dst: bytes, ident: int, ttl: int, hdr: TcpHeader,
                      payload: bytes | bytearray | memoryview,
                      csum_partial: bool = False) -> tuple[bytearray, int]:
    """The IPv4 and TCP headers of the datagram `emit_ipv4_segment` builds, alone: the
    payload goes on the wire after them (`os.writev`) without being copied; its
    checksum is summed where it lies (nothing at all with `csum_partial`). Returns the
    headers and the TCP header length."""
    opts = emit_options(hdr.options) if hdr.options else b""
    thl = HEADER_LEN + len(opts)
    plen = len(payload)
    total = IPV4_HEADER_LEN + thl + plen
    buf = bytearray(IPV4_HEADER_LEN + thl)
    _IP_TCP.pack_into(buf, 0, 0x45, 0, total, ident, ipv4.FLAG_DF, ttl, ipv4.PROTO_TCP, 0, src, dst,
                      hdr.src_port, hdr.dst_port, hdr.seq, hdr.ack,
                      (thl // 4) << 12 | hdr.reserved << 8 | hdr.flags, hdr.window, 0,
                      hdr.urgent)
    buf[_TCP_OPTS_OFF:] = opts
    struct.pack_into("!H", buf, _IP_CSUM_OFF,
                     ~ones_sum(memoryview(buf)[:IPV4_HEADER_LEN]) & 0xFFFF)
    pseudo = pseudo_header_sum_v4(src, dst, ipv4.PROTO_TCP, thl + plen)
    # the TCP header's length is even: its sum and the payload's simply add
    csum = pseudo if csum_partial else \
        ~ones_sum(memoryview(buf)[IPV4_HEADER_LEN:], ones_sum(payload, pseudo)) & 0xFFFF
    struct.pack_into("!H", buf, _TCP_CSUM_OFF, csum)
    return buf, thl


def emit_ipv4_segment(src: bytes, dst: bytes, ident: int, ttl: int, hdr: TcpHeader,
                      payload: bytes | bytearray | memoryview,
                      csum_partial: bool = False) -> tuple[bytes, int]:
    """An IPv4 datagram (20-byte header, DF, `ident`, `ttl`) carrying `hdr` + `payload`,
    both checksums filled in; with `csum_partial`, the TCP checksum field holds only the
    folded pseudo-header sum, for the device to complete (virtio-net NEEDS_CSUM).
    Returns the bytes and the TCP header length. Byte for byte what `ipv4.emit` +
    `emit` give (tests/unit/test_wire.py holds it to that)."""
    buf, thl = emit_ipv4_headers(src, dst, ident, ttl, hdr, payload, csum_partial)
    buf += payload
    return bytes(buf), thl


def checksum_v6(src: bytes, dst: bytes, segment: bytes | bytearray | memoryview) -> int:
    """TCP checksum over the IPv6 pseudo-header (RFC 8200 section 8.1: 16-byte addresses,
    32-bit upper-layer length, next header 6) and `segment` (checksum field zeroed by
    the caller when computing, left as is when verifying). `dst` is the final
    destination (the one in the IPv6 header unless a routing header says otherwise)."""
    return internet_checksum(segment, pseudo_header_sum_v6(src, dst, 6, len(segment)))


def verify_checksum_v6(src: bytes, dst: bytes, segment: bytes | bytearray | memoryview) -> bool:
    return checksum_v6(src, dst, segment) == 0


# --- one IPv6 packet (no extension headers) carrying one TCP segment, in one buffer:
_IP6_TCP = struct.Struct("!IHBB16s16sHHIIHHHH")  # the IPv6 header then the TCP header
IPV6_HEADER_LEN = ipv6.HEADER_LEN
_TCP6_CSUM_OFF = IPV6_HEADER_LEN + 16
_TCP6_OPTS_OFF = IPV6_HEADER_LEN + HEADER_LEN


def emit_ipv6_segment(src: bytes, dst: bytes, flow_label: int, hop_limit: int, hdr: TcpHeader,
                      payload: bytes | bytearray | memoryview,
                      csum_partial: bool = False) -> tuple[bytes, int]:
    """An IPv6 packet (40-byte header, traffic class 0, `flow_label`, `hop_limit`, no
    extension headers) carrying `hdr` + `payload`, the TCP checksum filled in; with
    `csum_partial`, the checksum field holds only the folded pseudo-header sum, for the
    device to complete (virtio-net NEEDS_CSUM, csum_start 40). Returns the bytes and
    the TCP header length. Byte for byte what `ipv6.emit` + `emit` with the checksum of
    `checksum_v6` give (tests/unit/test_wire_ipv6.py holds it to that)."""
    buf, thl = emit_ipv6_headers(src, dst, flow_label, hop_limit, hdr, payload, csum_partial)
    buf += payload
    return bytes(buf), thl


def emit_ipv6_headers(src: bytes, dst: bytes, flow_label: int, hop_limit: int, hdr: TcpHeader,
                      payload: bytes | bytearray | memoryview,
                      csum_partial: bool = False) -> tuple[bytearray, int]:
    """The IPv6 and TCP headers of the packet `emit_ipv6_segment` builds, alone (the
    payload is not copied: `emit_ipv4_headers`)."""
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("IPv6 addresses are 16 bytes")
    opts = emit_options(hdr.options) if hdr.options else b""
    thl = HEADER_LEN + len(opts)
    plen = len(payload)
    seg_len = thl + plen
    if seg_len > ipv6.MAX_PAYLOAD:
        raise ValueError(f"TCP segment of {seg_len} bytes > {ipv6.MAX_PAYLOAD} (no jumbograms)")
    buf = bytearray(IPV6_HEADER_LEN + thl)
    _IP6_TCP.pack_into(buf, 0, 0x60000000 | (flow_label & 0xFFFFF), seg_len, ipv6.NH_TCP,
                       hop_limit, src, dst,
                       hdr.src_port, hdr.dst_port, hdr.seq, hdr.ack,
                       (thl // 4) << 12 | hdr.reserved << 8 | hdr.flags, hdr.window, 0,
                       hdr.urgent)
    buf[_TCP6_OPTS_OFF:] = opts
    pseudo = pseudo_header_sum_v6(src, dst, ipv6.NH_TCP, seg_len)
    csum = pseudo if csum_partial else \
        ~ones_sum(memoryview(buf)[IPV6_HEADER_LEN:], ones_sum(payload, pseudo)) & 0xFFFF
    struct.pack_into("!H", buf, _TCP6_CSUM_OFF, csum)
    return buf, thl
