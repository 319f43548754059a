"""Software GSO: cut an IPv4/TCP super-packet into `gso_size` segments and complete
checksums, as the kernel does for a virtio-net GSO write from a TUN reader. Used by the
simulated link (so our GSO output is tested without a kernel) and by tools that want
the wire view of a capture."""

from __future__ import annotations

import struct

from stack.wire import ipv4, ipv6, tcp
from stack.wire.checksum import internet_checksum, pseudo_header_sum_v4, pseudo_header_sum_v6

_PSH_FIN = tcp.PSH | tcp.FIN


def complete_checksum(packet: bytes | bytearray) -> bytes:
    """Fill in the TCP checksum of a packet whose field holds the pseudo-header sum."""
    buf = bytearray(packet)
    ihl = (buf[0] & 0x0F) * 4
    struct.pack_into("!H", buf, ihl + 16, 0)
    src, dst = bytes(buf[12:16]), bytes(buf[16:20])
    seg = memoryview(buf)[ihl:]
    pseudo = pseudo_header_sum_v4(src, dst, ipv4.PROTO_TCP, len(seg))
    struct.pack_into("!H", buf, ihl + 16, internet_checksum(seg, pseudo))
    return bytes(buf)


def segment_tcp4(packet: bytes, gso_size: int) -> list[bytes]:
    """Split `packet` (IPv4 + TCP, checksums complete or partial) into segments of at
    most `gso_size` payload bytes with consecutive sequence numbers; PSH and FIN stay on
    the last segment only. Every returned packet has correct IP and TCP checksums."""
    ihl = (packet[0] & 0x0F) * 4
    thl = (packet[ihl + 12] >> 4) * 4
    hl = ihl + thl
    payload = memoryview(packet)[hl:]
    if gso_size <= 0 or len(payload) <= gso_size:
        return [complete_checksum(_fix_ip(bytearray(packet), len(packet), 0))]
    ident = struct.unpack_from("!H", packet, 4)[0]
    return [complete_checksum(bytes(_fix_ip(buf, len(buf), i, ident)))
            for i, buf in enumerate(_cut(packet, ihl, hl, payload, gso_size))]


def _cut(packet: bytes, tcp_off: int, hl: int, payload: memoryview,
         gso_size: int) -> list[bytearray]:
    """The segments of a super-packet, IP fields and checksums not yet fixed: the
    headers (`hl` bytes, TCP at `tcp_off`) before each `gso_size` piece of `payload`,
    sequence numbers advanced, PSH and FIN on the last one only."""
    head = bytes(packet[:hl])
    seq0 = struct.unpack_from("!I", packet, tcp_off + 4)[0]
    flags = packet[tcp_off + 13]
    out = []
    n = (len(payload) + gso_size - 1) // gso_size
    for i in range(n):
        buf = bytearray(head)
        buf += payload[i * gso_size:(i + 1) * gso_size]
        struct.pack_into("!I", buf, tcp_off + 4, (seq0 + i * gso_size) & 0xFFFFFFFF)
        if i < n - 1:
            buf[tcp_off + 13] = flags & ~_PSH_FIN
        out.append(buf)
    return out


def _fix_ip(buf: bytearray, total: int, i: int, ident: int | None = None) -> bytearray:
    struct.pack_into("!H", buf, 2, total)
    if ident is not None:
        struct.pack_into("!H", buf, 4, (ident + i) & 0xFFFF)
    struct.pack_into("!H", buf, 10, 0)
    ihl = (buf[0] & 0x0F) * 4
    struct.pack_into("!H", buf, 10, internet_checksum(bytes(buf[:ihl])))
    return buf


# --- IPv6 (virtio-net GSO_TCPV6) ----------------------------------------------------
def complete_checksum_v6(packet: bytes | bytearray) -> bytes:
    """Fill in the TCP checksum of an IPv6/TCP packet (extension headers walked) whose
    field holds the pseudo-header sum, or anything."""
    buf = bytearray(packet)
    hdr, end = ipv6.parse(buf)
    off = hdr.header_len
    if hdr.proto != ipv6.NH_TCP or hdr.is_fragment or end - off < tcp.HEADER_LEN:
        raise ValueError("not an unfragmented IPv6/TCP packet")
    struct.pack_into("!H", buf, off + 16, 0)
    seg = memoryview(buf)[off:end]
    pseudo = pseudo_header_sum_v6(hdr.src, hdr.dst, ipv6.NH_TCP, len(seg))
    struct.pack_into("!H", buf, off + 16, internet_checksum(seg, pseudo))
    return bytes(buf)


def segment_tcp6(packet: bytes, gso_size: int) -> list[bytes]:
    """`segment_tcp4` for IPv6/TCP (VIRTIO_NET_HDR_GSO_TCPV6): each segment keeps the
    IPv6 header and its extension headers with the Payload Length fixed (no
    identification field to advance), consecutive sequence numbers, PSH and FIN on the
    last segment only, and a complete TCP checksum."""
    hdr, end = ipv6.parse(packet)
    off = hdr.header_len
    if hdr.proto != ipv6.NH_TCP or hdr.is_fragment or end - off < tcp.HEADER_LEN:
        raise ValueError("not an unfragmented IPv6/TCP packet")
    thl = (packet[off + 12] >> 4) * 4
    hl = off + thl
    payload = memoryview(packet)[hl:end]
    if gso_size <= 0 or len(payload) <= gso_size:
        return [complete_checksum_v6(packet[:end])]
    out = []
    for buf in _cut(packet, off, hl, payload, gso_size):
        struct.pack_into("!H", buf, 4, len(buf) - ipv6.HEADER_LEN)
        out.append(complete_checksum_v6(buf))
    return out
