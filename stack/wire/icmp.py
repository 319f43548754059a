"""ICMPv4 codec (RFC 792): echo request/reply, and destination unreachable carrying
the offending datagram's IP header and first 8 payload bytes."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.wire.checksum import internet_checksum
from stack.wire.errors import MalformedPacket

HEADER_LEN = 8
ECHO_REPLY = 0
DEST_UNREACH = 3
ECHO_REQUEST = 8
TIME_EXCEEDED = 11

# Destination-unreachable codes (RFC 792, RFC 1122)
UNREACH_NET, UNREACH_HOST, UNREACH_PROTO, UNREACH_PORT = 0, 1, 2, 3
UNREACH_FRAG_NEEDED = 4
UNREACH_ADMIN = 13

UNREACH_REASON = {
    UNREACH_NET: "network unreachable",
    UNREACH_HOST: "host unreachable",
    UNREACH_PROTO: "protocol unreachable",
    UNREACH_PORT: "port unreachable",
    UNREACH_FRAG_NEEDED: "fragmentation needed",
    9: "network administratively prohibited",
    10: "host administratively prohibited",
    UNREACH_ADMIN: "communication administratively prohibited",
}

# an error quotes the invoking datagram so that the whole error fits in 576 bytes
# (RFC 1812 4.3.2.3; Linux icmp_send)
MAX_QUOTE = 576 - 20 - HEADER_LEN

_HDR = struct.Struct("!BBHI")


@dataclass(slots=True)
class IcmpMessage:
    type: int
    code: int
    rest: int  # the 32-bit "rest of header": ident<<16|seq for echo, next-hop MTU for frag-needed
    data: bytes
    checksum: int = 0

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        return self.rest & 0xFFFF


def parse(data: bytes | bytearray | memoryview, verify_checksum: bool = True) -> IcmpMessage:
    if len(data) < HEADER_LEN:
        raise MalformedPacket("icmp-truncated", f"{len(data)} bytes")
    if verify_checksum and internet_checksum(data) != 0:
        raise MalformedPacket("icmp-bad-checksum")
    t, c, csum, rest = _HDR.unpack_from(data, 0)
    return IcmpMessage(t, c, rest, bytes(data[HEADER_LEN:]), csum)


def emit(msg: IcmpMessage, keep_checksum: bool = False) -> bytes:
    """Serialise; the checksum is computed unless `keep_checksum` writes msg.checksum
    as is (exact round trips, e.g. of 0xffff where the computed value is 0)."""
    raw = bytearray(_HDR.pack(msg.type, msg.code, 0, msg.rest))
    raw += msg.data
    struct.pack_into("!H", raw, 2, msg.checksum if keep_checksum else internet_checksum(raw))
    return bytes(raw)


def echo_reply(request: IcmpMessage) -> IcmpMessage:
    """The reply to an echo request: same identifier, sequence and data."""
    return IcmpMessage(ECHO_REPLY, 0, request.rest, request.data)
