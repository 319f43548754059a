"""The virtio-net header that a TUN device opened with IFF_VNET_HDR puts before each
packet (include/uapi/linux/virtio_net.h, struct virtio_net_hdr, 10 bytes).

```
flags u8 | gso_type u8 | hdr_len u16 | gso_size u16 | csum_start u16 | csum_offset u16
```
Native byte order (little-endian on the machines we run on; TUN's default without
TUNSETVNETBE). With offloads on, the kernel hands us TCP super-packets (gso_type
TCPV4, gso_size = MSS) whose checksum is left partial (flags NEEDS_CSUM), and accepts
the same from us, cutting them into gso_size segments and finishing checksums itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.wire.errors import MalformedPacket

HEADER_LEN = 10
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_ECN = 0x80

_HDR = struct.Struct("<BBHHHH")
NO_OFFLOAD = bytes(HEADER_LEN)


@dataclass(frozen=True, slots=True)
class VnetHeader:
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @property
    def csum_trusted(self) -> bool:
        """The kernel vouches for (or will complete) the checksum: do not verify it."""
        return bool(self.flags & (F_NEEDS_CSUM | F_DATA_VALID))


def parse(data: bytes | bytearray | memoryview) -> VnetHeader:
    if len(data) < HEADER_LEN:
        raise MalformedPacket("vnet-truncated", f"{len(data)} bytes")
    return VnetHeader(*_HDR.unpack_from(data, 0))


def emit(h: VnetHeader) -> bytes:
    return _HDR.pack(h.flags, h.gso_type, h.hdr_len, h.gso_size, h.csum_start, h.csum_offset)


def tcp4_offload(ip_header_len: int, tcp_header_len: int, gso_size: int) -> bytes:
    """Header for an IPv4/TCP packet whose TCP checksum field holds the pseudo-header
    sum only (the kernel completes it) and, if gso_size, which the kernel segments."""
    return _HDR.pack(F_NEEDS_CSUM, GSO_TCPV4 if gso_size else GSO_NONE,
                     ip_header_len + tcp_header_len, gso_size, ip_header_len, 16)


def tcp6_offload(ip_header_len: int, tcp_header_len: int, gso_size: int) -> bytes:
    """`tcp4_offload` for an IPv6/TCP packet (gso_type TCPV6): `ip_header_len` is where
    the TCP header starts (40 without extension headers)."""
    return _HDR.pack(F_NEEDS_CSUM, GSO_TCPV6 if gso_size else GSO_NONE,
                     ip_header_len + tcp_header_len, gso_size, ip_header_len, 16)
