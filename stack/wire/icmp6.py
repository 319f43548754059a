"""ICMPv6 codec (RFC 4443): echo request/reply, and the errors a host sends and reads --
destination unreachable, packet too big (RFC 8201's MTU), time exceeded, parameter
problem -- each quoting as much of the invoking packet as fits in a 1280-byte packet.

```
 0                   1                   2                   3
 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|     Type      |     Code      |          Checksum             |
|   rest: Identifier | Sequence / MTU / Pointer / unused (0)    |
|   data: echo data / as much of the invoking packet as fits    |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
```
Unlike ICMPv4 the checksum covers the IPv6 pseudo-header (next header 58), so parsing
and emitting take the packet's source and destination.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.wire import ipv6
from stack.wire.checksum import internet_checksum, pseudo_header_sum_v6
from stack.wire.errors import MalformedPacket

HEADER_LEN = 8
NEXT_HEADER = ipv6.NH_ICMPV6  # 58

# Types (RFC 4443 section 2.1: errors below 128, informational from 128).
DEST_UNREACH = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAM_PROBLEM = 4
ECHO_REQUEST = 128
ECHO_REPLY = 129
ROUTER_SOLICIT = 133  # RFC 4861 (neighbour discovery: not used on a TUN)
ROUTER_ADVERT = 134
NEIGHBOR_SOLICIT = 135
NEIGHBOR_ADVERT = 136
REDIRECT = 137

# Destination unreachable codes (RFC 4443 section 3.1, RFC 6550, RFC 8883).
UNREACH_NOROUTE = 0
UNREACH_ADMIN = 1
UNREACH_BEYOND_SCOPE = 2
UNREACH_ADDR = 3
UNREACH_PORT = 4
UNREACH_POLICY = 5
UNREACH_REJECT_ROUTE = 6
UNREACH_SRH = 7

UNREACH_REASON = {
    UNREACH_NOROUTE: "no route to destination",
    UNREACH_ADMIN: "communication administratively prohibited",
    UNREACH_BEYOND_SCOPE: "beyond scope of source address",
    UNREACH_ADDR: "address unreachable",
    UNREACH_PORT: "port unreachable",
    UNREACH_POLICY: "source address failed ingress/egress policy",
    UNREACH_REJECT_ROUTE: "reject route to destination",
    UNREACH_SRH: "error in source routing header",
    8: "headers too long",
}

# Time exceeded codes (section 3.3).
TIME_EXCEEDED_HOP_LIMIT = 0
TIME_EXCEEDED_REASSEMBLY = 1

# Parameter problem codes (section 3.4; 3 from RFC 7112), as `ipv6.ParameterProblem` has them.
PARAM_HEADER_FIELD = ipv6.PROBLEM_HEADER_FIELD
PARAM_NEXT_HEADER = ipv6.PROBLEM_NEXT_HEADER
PARAM_OPTION = ipv6.PROBLEM_OPTION
PARAM_INCOMPLETE_CHAIN = 3

# RFC 4443 section 2.4 (c): an error quotes as much of the invoking packet as fits
# without the error packet exceeding the minimum IPv6 MTU (Linux's icmp6_send: 1232).
MAX_QUOTE = ipv6.MIN_MTU - ipv6.HEADER_LEN - HEADER_LEN

_HDR = struct.Struct("!BBHI")


@dataclass(slots=True)
class Icmp6Message:
    type: int
    code: int
    rest: int  # 32 bits: ident<<16|seq (echo), MTU (too big), pointer (param problem), else 0
    data: bytes
    checksum: int = 0  # as received; computed on emit unless `keep_checksum`

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        return self.rest & 0xFFFF

    @property
    def mtu(self) -> int:
        """Packet too big: the MTU of the next-hop link."""
        return self.rest

    @property
    def pointer(self) -> int:
        """Parameter problem: offset of the offending byte in the invoking packet."""
        return self.rest

    @property
    def is_error(self) -> bool:
        return self.type < 128


def checksum(src: bytes, dst: bytes, body: bytes | bytearray | memoryview) -> int:
    """The checksum field for the ICMPv6 message `body` from `src` to `dst` (field
    zeroed when computing; 0 when verifying a message as received)."""
    return internet_checksum(body, pseudo_header_sum_v6(src, dst, NEXT_HEADER, len(body)))


def parse(data: bytes | bytearray | memoryview, src: bytes, dst: bytes,
          verify_checksum: bool = True) -> Icmp6Message:
    """Parse the message a packet from `src` to `dst` carries (its upper-layer payload)."""
    if len(data) < HEADER_LEN:
        raise MalformedPacket("icmp6-truncated", f"{len(data)} bytes")
    if verify_checksum and checksum(src, dst, data) != 0:
        raise MalformedPacket("icmp6-bad-checksum")
    t, c, csum, rest = _HDR.unpack_from(data, 0)
    return Icmp6Message(t, c, rest, bytes(data[HEADER_LEN:]), csum)


def emit(msg: Icmp6Message, src: bytes, dst: bytes, keep_checksum: bool = False) -> bytes:
    """Serialise for a packet from `src` to `dst`; the checksum is computed unless
    `keep_checksum` writes msg.checksum as is."""
    raw = bytearray(_HDR.pack(msg.type, msg.code, 0, msg.rest))
    raw += msg.data
    struct.pack_into("!H", raw, 2, msg.checksum if keep_checksum else checksum(src, dst, raw))
    return bytes(raw)


def emit_packet(src: bytes, dst: bytes, msg: Icmp6Message, hop_limit: int = 64) -> bytes:
    """A whole IPv6 packet (no extension headers) from `src` to `dst` carrying `msg`."""
    body = emit(msg, src, dst)
    return ipv6.emit(ipv6.IPv6Header(src, dst, NEXT_HEADER, hop_limit=hop_limit),
                     len(body)) + body


# --- replies ------------------------------------------------------------------------
def echo_reply(request: Icmp6Message) -> Icmp6Message:
    """The reply to an echo request: same identifier, sequence and data (section 4.2)."""
    return Icmp6Message(ECHO_REPLY, 0, request.rest, request.data)


def error(type_: int, code: int, rest: int,
          invoking: bytes | bytearray | memoryview) -> Icmp6Message:
    """An error message quoting the invoking packet (from its IPv6 header on), cut to
    MAX_QUOTE bytes so that the error packet fits in 1280 bytes."""
    return Icmp6Message(type_, code, rest & 0xFFFFFFFF, bytes(invoking[:MAX_QUOTE]))


def dest_unreachable(invoking: bytes | bytearray | memoryview,
                     code: int = UNREACH_PORT) -> Icmp6Message:
    return error(DEST_UNREACH, code, 0, invoking)


def packet_too_big(invoking: bytes | bytearray | memoryview, mtu: int) -> Icmp6Message:
    return error(PACKET_TOO_BIG, 0, mtu, invoking)


def time_exceeded(invoking: bytes | bytearray | memoryview,
                  code: int = TIME_EXCEEDED_HOP_LIMIT) -> Icmp6Message:
    return error(TIME_EXCEEDED, code, 0, invoking)


def parameter_problem(invoking: bytes | bytearray | memoryview, code: int,
                      pointer: int) -> Icmp6Message:
    return error(PARAM_PROBLEM, code, pointer, invoking)


def may_send_error(invoking: bytes | bytearray | memoryview, type_: int, code: int) -> bool:
    """Whether RFC 4443 section 2.4 (e) allows an error of `type_`/`code` about the
    packet `invoking`: not about an ICMPv6 error or redirect (nor a packet whose
    ICMPv6 type cannot be read), not about a packet to a multicast address (except
    packet too big, and parameter problem code 2), not about a packet whose source
    is unspecified or multicast. (Link-layer multicast does not exist on a TUN; rate
    limiting, section 2.4 (f), is the host's.)"""
    if len(invoking) < ipv6.HEADER_LEN:
        return False
    src, dst = bytes(invoking[8:24]), bytes(invoking[24:40])
    if src == bytes(16) or src[0] == 0xFF:
        return False
    if dst[0] == 0xFF and not (type_ == PACKET_TOO_BIG
                               or (type_ == PARAM_PROBLEM and code == PARAM_OPTION)):
        return False
    try:
        hdr, end = ipv6.parse(invoking, quoted=True)
    except MalformedPacket:
        return True  # nothing says it is an ICMPv6 error
    if hdr.proto != NEXT_HEADER:
        return True
    frag = hdr.fragment
    if frag is not None and frag.offset:
        return True  # a later fragment: its ICMPv6 type is elsewhere (as Linux decides)
    off = hdr.header_len
    if off >= end:
        return False  # an ICMPv6 message whose type we cannot read (Linux: ineligible)
    t = invoking[off]
    return t >= 128 and t != REDIRECT
