"""IPv4 header codec (RFC 791).

```
 0                   1                   2                   3
 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|Version|  IHL  |Type of Service|          Total Length         |
|         Identification        |Flags|      Fragment Offset    |
|  Time to Live |    Protocol   |         Header Checksum       |
|                       Source Address                          |
|                    Destination Address                        |
|                    Options (IHL > 5)                          |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
```
Addresses are 4-byte `bytes` in the core; `socket.inet_ntoa` converts at the edges.
The payload is not copied: `parse` returns the header and the payload's bounds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.wire.checksum import internet_checksum
from stack.wire.errors import MalformedPacket

HEADER_LEN = 20
PROTO_ICMP = 1
PROTO_TCP = 6
FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF

_HDR = struct.Struct("!BBHHHBBH4s4s")


@dataclass(slots=True)
class IPv4Header:
    src: bytes
    dst: bytes
    proto: int
    total_length: int = 0  # 0 on emit: filled from the payload length
    ttl: int = 64
    tos: int = 0
    ident: int = 0
    flags_frag: int = FLAG_DF  # the 3 flag bits and 13-bit fragment offset, as on the wire
    checksum: int = 0  # as received; recomputed on emit unless `keep_checksum`
    options: bytes = b""

    @property
    def header_len(self) -> int:
        return HEADER_LEN + len(self.options)

    @property
    def is_fragment(self) -> bool:
        """A fragment (more to come, or an offset): we do not reassemble, we count and drop."""
        return bool(self.flags_frag & (FLAG_MF | OFFSET_MASK))


def parse(data: bytes | bytearray | memoryview, verify_checksum: bool = True,
          quoted: bool = False) -> tuple[IPv4Header, int]:
    """Parse an IPv4 header. Returns (header, payload_end); the payload is
    `data[header.header_len:payload_end]` (link padding after total_length is ignored).
    `quoted`: the header is the one an ICMP error quotes, followed by only the first
    bytes of its payload, so total_length may exceed what is there (payload_end is
    then the end of `data`)."""
    if len(data) < HEADER_LEN:
        raise MalformedPacket("ipv4-truncated", f"{len(data)} bytes")
    vihl, tos, total, ident, ff, ttl, proto, csum, src, dst = _HDR.unpack_from(data, 0)
    if vihl >> 4 != 4:
        raise MalformedPacket("ipv4-version", str(vihl >> 4))
    hlen = (vihl & 0x0F) * 4
    if hlen < HEADER_LEN:
        raise MalformedPacket("ipv4-bad-ihl", str(hlen))
    if quoted and total >= hlen and hlen <= len(data):
        total = min(total, len(data))
    if total < hlen or total > len(data):
        raise MalformedPacket("ipv4-bad-length", f"total {total}, ihl {hlen}, have {len(data)}")
    if verify_checksum and internet_checksum(data[:hlen]) != 0:
        raise MalformedPacket("ipv4-bad-checksum")
    options = bytes(data[HEADER_LEN:hlen])
    return IPv4Header(src, dst, proto, total, ttl, tos, ident, ff, csum, options), total


def emit(hdr: IPv4Header, payload_len: int, keep_checksum: bool = False) -> bytes:
    """Serialise the header for a payload of `payload_len` bytes."""
    hlen = hdr.header_len
    if hlen % 4 or hlen > 60:
        raise ValueError("IPv4 options must pad the header to a multiple of 4, at most 60")
    total = hdr.total_length or hlen + payload_len
    raw = bytearray(
        _HDR.pack(0x40 | hlen // 4, hdr.tos, total, hdr.ident, hdr.flags_frag, hdr.ttl,
                  hdr.proto, 0, hdr.src, hdr.dst)
    )
    raw += hdr.options
    csum = hdr.checksum if keep_checksum else internet_checksum(raw)
    struct.pack_into("!H", raw, 10, csum)
    return bytes(raw)


def version_of(data: bytes | bytearray | memoryview) -> int:
    """The IP version nibble (4 or 6), for dispatch before any parse; 0 if empty."""
    return data[0] >> 4 if data else 0
