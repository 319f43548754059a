"""IPv6 header codec (RFC 8200) and the extension-header walk a host does on receive.

```
 0                   1                   2                   3
 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|Version| Traffic Class |           Flow Label                  |
|         Payload Length        |  Next Header  |   Hop Limit   |
|                  Source Address (16 octets)                   |
|               Destination Address (16 octets)                 |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
```
Extension headers (RFC 8200 section 4) each start with a Next Header byte; all but the
Fragment header (fixed 8 bytes) give their length in 8-octet units, not counting the
first 8. `parse` walks them as a host does (section 4.1 order, section 4.2 option
actions) and stops at the upper-layer header:

- Hop-by-Hop Options (0, only right after the fixed header) and Destination Options
  (60): skipped, after checking each option's type against the action its top two bits
  ask for when it is unknown: skip (00), discard (01), discard and send a Parameter
  Problem code 2 (10; 11 only when the destination is not multicast).
- Routing (43): with Segments Left 0 it is skipped. With Segments Left > 0 the packet is
  for a router further along the path; we know no routing type (type 0 is deprecated
  by RFC 5095) so section 4.4 says: discard and send a Parameter Problem code 0 pointing
  at the Routing Type field. Raised as `ParameterProblem`.
- Fragment (44): the walk stops; `IPv6Header.is_fragment` is set, `proto` is the
  fragment header's Next Header (as for an IPv4 fragment). We do not reassemble: the
  host counts and drops. An atomic fragment (offset 0, M = 0; RFC 6946 section 4) is
  a whole packet: the walk goes on behind it.
- No Next Header (59): `proto` is 59; the host has nothing to deliver.
- Anything else (TCP 6, ICMPv6 58, UDP, ESP, AH, ...): the walk stops and `proto` names
  it; a protocol the host does not serve it counts and drops (RFC 8200 section 4 asks
  for a Parameter Problem code 1 pointing at `proto_offset`).

Addresses are 16-byte `bytes` in the core (`socket.inet_ntop(AF_INET6, a)` at the
edges). The payload is not copied: `parse` returns the header and where its payload
ends; the upper-layer payload is `data[header.header_len:end]`, as with `ipv4.parse`.
There is no header checksum: the upper layers' checksums cover the pseudo-header
(`checksum.pseudo_header_sum_v6`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.wire.errors import MalformedPacket

HEADER_LEN = 40
MIN_MTU = 1280  # RFC 8200 section 5: every link carries 1280-byte packets
MAX_PAYLOAD = 0xFFFF  # without a Jumbo Payload option (RFC 2675), which we do not accept

# Next Header values (IANA "Assigned Internet Protocol Numbers").
NH_HOPOPTS = 0
NH_TCP = 6
NH_UDP = 17
NH_ROUTING = 43
NH_FRAGMENT = 44
NH_ESP = 50
NH_AH = 51
NH_ICMPV6 = 58
NH_NONE = 59
NH_DSTOPTS = 60
_WALKED = (NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT, NH_DSTOPTS)

# Options in Hop-by-Hop / Destination Options headers (RFC 8200 section 4.2).
OPT_PAD1 = 0
OPT_PADN = 1
OPT_ROUTER_ALERT = 5  # RFC 2711, hop-by-hop
OPT_JUMBO = 0xC2  # RFC 2675, hop-by-hop

# ICMPv6 Parameter Problem codes (RFC 4443 section 3.4), the ones parse raises.
PROBLEM_HEADER_FIELD = 0  # erroneous header field encountered
PROBLEM_NEXT_HEADER = 1  # unrecognized Next Header type encountered
PROBLEM_OPTION = 2  # unrecognized IPv6 option encountered

FRAG_MORE = 0x0001
FRAG_OFFSET_MASK = 0xFFF8

_HDR = struct.Struct("!IHBB16s16s")
_FRAG = struct.Struct("!BBHI")


class ParameterProblem(MalformedPacket):
    """A packet RFC 8200 says to discard *and* answer with an ICMPv6 Parameter Problem:
    `code` (PROBLEM_*) and `pointer`, the offset in the packet of the offending byte.
    A `MalformedPacket`, so the host counts and drops it like any other; it may then
    build the answer with `icmp6.parameter_problem(packet, e.code, e.pointer)`."""

    def __init__(self, reason: str, code: int, pointer: int, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.code = code
        self.pointer = pointer


@dataclass(frozen=True, slots=True)
class Extension:
    """One extension header exactly as on the wire: `raw` starts with its Next Header
    byte, which `emit` rewrites so that the chain stays consistent."""

    kind: int  # NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT or NH_DSTOPTS
    raw: bytes

    @property
    def next_header(self) -> int:
        return self.raw[0]

    @property
    def routing_type(self) -> int:
        """Routing header: its Routing Type (byte 2)."""
        return self.raw[2]

    @property
    def segments_left(self) -> int:
        """Routing header: its Segments Left (byte 3)."""
        return self.raw[3]


@dataclass(frozen=True, slots=True)
class Fragment:
    """The Fragment header's fields (RFC 8200 section 4.5)."""

    next_header: int
    offset: int  # in bytes (the 13-bit field times 8)
    more: bool  # the M flag
    ident: int

    @property
    def atomic(self) -> bool:
        """Offset 0 and no more fragments: a whole packet (RFC 6946)."""
        return self.offset == 0 and not self.more


@dataclass(frozen=True, slots=True)
class IPv6Header:
    src: bytes
    dst: bytes
    proto: int  # where the walk stopped: the upper layer (the last Next Header field)
    payload_length: int = 0  # 0 on emit: filled from the extensions and the payload
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0
    extensions: tuple[Extension, ...] = ()

    @property
    def header_len(self) -> int:
        """Fixed header plus the extension headers walked: the upper layer's offset."""
        return HEADER_LEN + sum(len(e.raw) for e in self.extensions)

    @property
    def next_header(self) -> int:
        """The fixed header's Next Header field."""
        return self.extensions[0].kind if self.extensions else self.proto

    @property
    def proto_offset(self) -> int:
        """Offset of the Next Header byte that names `proto` (the pointer of a Parameter
        Problem code 1 for a protocol we do not serve)."""
        if not self.extensions:
            return 6
        return HEADER_LEN + sum(len(e.raw) for e in self.extensions[:-1])

    @property
    def fragment(self) -> Fragment | None:
        """The Fragment header's fields, if the packet has one."""
        for e in self.extensions:
            if e.kind == NH_FRAGMENT:
                nh, _, off_m, ident = _FRAG.unpack(e.raw)
                return Fragment(nh, off_m & FRAG_OFFSET_MASK, bool(off_m & FRAG_MORE), ident)
        return None

    @property
    def is_fragment(self) -> bool:
        """A fragment (more to come, or an offset): we do not reassemble, we count and drop."""
        f = self.fragment
        return f is not None and not f.atomic


def parse(data: bytes | bytearray | memoryview, quoted: bool = False) -> tuple[IPv6Header, int]:
    """Parse the fixed header and walk the extension headers (module docstring).
    Returns (header, payload_end): the upper-layer payload is
    `data[header.header_len:payload_end]` (link padding after the payload is ignored).
    Raises `MalformedPacket` (`ParameterProblem` where RFC 8200 asks for an answer).
    `quoted`: the packet an ICMPv6 error quotes, cut short, so Payload Length may exceed
    what is there (payload_end is then the end of `data`); the receive checks (options'
    actions, Segments Left, hop-by-hop position, jumbograms) are not applied to it."""
    n = len(data)
    if n < HEADER_LEN:
        raise MalformedPacket("ipv6-truncated", f"{n} bytes, the fixed header is {HEADER_LEN}")
    vtf, plen, nh, hlim, src, dst = _HDR.unpack_from(data, 0)
    if vtf >> 28 != 6:
        raise MalformedPacket("ipv6-version", str(vtf >> 28))
    end = HEADER_LEN + plen
    if end > n:
        if not quoted:
            raise MalformedPacket("ipv6-truncated", f"payload length {plen}, have {n - HEADER_LEN}")
        end = n
    if plen == 0 and nh == NH_HOPOPTS:
        raise MalformedPacket("ipv6-jumbogram", "payload length 0 with a hop-by-hop header")
    exts: list[Extension] = []
    off = HEADER_LEN
    nh_off = 6
    while nh in _WALKED:
        if nh == NH_HOPOPTS and off != HEADER_LEN and not quoted:
            raise ParameterProblem("ipv6-hop-by-hop-not-first", PROBLEM_NEXT_HEADER, nh_off)
        if off + 8 > end:
            raise MalformedPacket("ipv6-ext-truncated",
                                  f"next header {nh} at {off}, {end - off} bytes left")
        hlen = 8 if nh == NH_FRAGMENT else (data[off + 1] + 1) * 8
        if off + hlen > end:
            raise MalformedPacket("ipv6-ext-truncated",
                                  f"next header {nh} of {hlen} bytes at {off}, "
                                  f"{end - off} bytes left")
        raw = bytes(data[off:off + hlen])
        if not quoted:
            if nh == NH_ROUTING:
                if raw[3]:
                    raise ParameterProblem("ipv6-routing-header", PROBLEM_HEADER_FIELD, off + 2,
                                           f"type {raw[2]}, segments left {raw[3]}")
            elif nh != NH_FRAGMENT:
                _check_options(raw, off, nh, dst)
        exts.append(Extension(nh, raw))
        nh_off = off
        off += hlen
        nh = raw[0]
        if exts[-1].kind == NH_FRAGMENT and _FRAG.unpack(raw)[2] & (FRAG_OFFSET_MASK | FRAG_MORE):
            break  # a real fragment: what follows is (part of) the fragmentable part
    return IPv6Header(src, dst, nh, plen, hlim, (vtf >> 20) & 0xFF, vtf & 0xFFFFF,
                      tuple(exts)), end


def _check_options(raw: bytes, base: int, kind: int, dst: bytes) -> None:
    """The TLV options of a Hop-by-Hop or Destination Options header at offset `base`:
    lengths within the header, and the action an unknown option's type asks for."""
    i, n = 2, len(raw)
    while i < n:
        t = raw[i]
        if t == OPT_PAD1:
            i += 1
            continue
        if i + 2 > n or i + 2 + raw[i + 1] > n:
            raise MalformedPacket("ipv6-option-length", f"option {t:#x} at {base + i}")
        if t == OPT_PADN or (t == OPT_ROUTER_ALERT and kind == NH_HOPOPTS):
            pass
        elif t == OPT_JUMBO and kind == NH_HOPOPTS:
            # RFC 2675 section 3: a Jumbo Payload option with a non-zero Payload Length
            raise ParameterProblem("ipv6-jumbogram", PROBLEM_HEADER_FIELD, base + i)
        else:
            action = t >> 6
            if action == 1 or (action == 3 and dst[0] == 0xFF):
                raise MalformedPacket("ipv6-unknown-option", f"type {t:#x} at {base + i}")
            if action:
                raise ParameterProblem("ipv6-unknown-option", PROBLEM_OPTION, base + i,
                                       f"type {t:#x}")
        i += 2 + raw[i + 1]


def emit(hdr: IPv6Header, payload_len: int) -> bytes:
    """Serialise the fixed header and the extension headers (their Next Header bytes
    chained, the last one naming `proto`) for an upper-layer payload of `payload_len`
    bytes. `payload_length` 0 means: computed."""
    if len(hdr.src) != 16 or len(hdr.dst) != 16:
        raise ValueError("IPv6 addresses are 16 bytes")
    for e in hdr.extensions:
        if len(e.raw) < 8 or len(e.raw) % 8:
            raise ValueError(f"extension header {e.kind} of {len(e.raw)} bytes")
    ext_len = sum(len(e.raw) for e in hdr.extensions)
    plen = hdr.payload_length or ext_len + payload_len
    if plen > MAX_PAYLOAD:
        raise ValueError(f"payload length {plen} > {MAX_PAYLOAD} (no jumbograms)")
    out = bytearray(_HDR.pack(6 << 28 | (hdr.traffic_class & 0xFF) << 20
                              | (hdr.flow_label & 0xFFFFF), plen, hdr.next_header,
                              hdr.hop_limit, hdr.src, hdr.dst))
    exts = hdr.extensions
    for i, e in enumerate(exts):
        out.append(exts[i + 1].kind if i + 1 < len(exts) else hdr.proto)
        out += e.raw[1:]
    return bytes(out)


# --- building extension headers (tests, and the odd probe) ---------------------------
def options_header(kind: int, options: bytes = b"") -> Extension:
    """A Hop-by-Hop (NH_HOPOPTS) or Destination Options (NH_DSTOPTS) header holding the
    encoded TLV `options`, padded to a multiple of 8 bytes with Pad1 / PadN."""
    if kind not in (NH_HOPOPTS, NH_DSTOPTS):
        raise ValueError(f"not an options header: {kind}")
    body = 2 + len(options)
    pad = -body % 8
    padding = b"" if pad == 0 else bytes((OPT_PAD1,)) if pad == 1 else \
        bytes((OPT_PADN, pad - 2)) + bytes(pad - 2)
    total = body + pad
    return Extension(kind, bytes((NH_NONE, total // 8 - 1)) + options + padding)


def routing_header(routing_type: int, segments_left: int, data: bytes = bytes(4)) -> Extension:
    """A Routing header (RFC 8200 section 4.4): `data` is what follows Segments Left
    (at least the 4 bytes of the type-specific field, 8-byte aligned in total)."""
    if (4 + len(data)) % 8:
        raise ValueError("a routing header is a multiple of 8 bytes")
    return Extension(NH_ROUTING, bytes((NH_NONE, (4 + len(data)) // 8 - 1, routing_type,
                                        segments_left)) + data)


def fragment_header(offset: int, more: bool, ident: int) -> Extension:
    """A Fragment header: `offset` in bytes (a multiple of 8)."""
    if offset % 8 or not 0 <= offset <= FRAG_OFFSET_MASK:
        raise ValueError(f"fragment offset {offset}")
    return Extension(NH_FRAGMENT, _FRAG.pack(NH_NONE, 0, offset | (FRAG_MORE if more else 0),
                                             ident))
