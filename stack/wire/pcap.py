"""pcap (libpcap classic format) writer for raw IP packets, readable by Wireshark/tshark.

Link type 101 (LINKTYPE_RAW): each record is an IPv4 or IPv6 packet with no link
header, which is exactly what a TUN device with IFF_NO_PI carries. Records may be GSO
super-packets (up to 64 KB); the snap length allows them whole.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

LINKTYPE_RAW = 101
SNAPLEN = 262144
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
MAGIC_US = 0xA1B2C3D4


def global_header(linktype: int = LINKTYPE_RAW, snaplen: int = SNAPLEN) -> bytes:
    return _GLOBAL.pack(MAGIC_US, 2, 4, 0, 0, snaplen, linktype)


def record(timestamp: float, packet: bytes | bytearray | memoryview) -> bytes:
    sec = int(timestamp)
    usec = int((timestamp - sec) * 1_000_000)
    n = len(packet)
    return _RECORD.pack(sec, usec, n, n) + bytes(packet)


def read(data: bytes) -> list[tuple[float, bytes]]:
    """Parse a pcap file written by `PcapWriter` (microsecond, little-endian) — for tests."""
    magic, _maj, _min, _tz, _sig, _snap, linktype = _GLOBAL.unpack_from(data, 0)
    if magic != MAGIC_US or linktype != LINKTYPE_RAW:
        raise ValueError("not a little-endian microsecond raw-IP pcap")
    out, off = [], _GLOBAL.size
    while off + _RECORD.size <= len(data):
        sec, usec, incl, _orig = _RECORD.unpack_from(data, off)
        off += _RECORD.size
        out.append((sec + usec / 1e6, data[off:off + incl]))
        off += incl
    return out


class PcapWriter:
    """Appends packets to a pcap file: `write(timestamp, packet)`, one record each.

    tools/cli.py's `Stack.tap` (which gets `(direction, packet, now)`) calls `write`
    with the `now` the stack was given for the packet plus `wall_clock_offset`: a UNIX
    timestamp, from the same clock as the --trace ladder's times."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        f.write(global_header())

    def write(self, timestamp: float, packet: bytes | bytearray | memoryview) -> None:
        self._f.write(record(timestamp, packet))

    def close(self) -> None:
        self._f.close()
