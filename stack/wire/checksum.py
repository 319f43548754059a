"""The Internet checksum (RFC 1071) without a per-byte Python loop.

The ones'-complement sum of 16-bit words equals the big-endian integer of the data
reduced modulo 0xffff, because 2**16 == 1 (mod 0xffff). `int.from_bytes` and one
modulo run in C: ~2.7 us for 1460 bytes here, against ~13 us for a
`memoryview.cast('H')` sum. The one difference from a true ones'-complement sum is
that a non-zero sum that is a multiple of 0xffff must read 0xffff, not 0.
"""

from __future__ import annotations

Buffer = bytes | bytearray | memoryview


def ones_sum(data: Buffer, initial: int = 0) -> int:
    """Ones'-complement sum of `data` (padded with a zero byte if odd) plus `initial`,
    folded to 16 bits. Not inverted: partial sums combine by adding and folding again."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    n += initial
    if n == 0:
        return 0
    s = n % 0xFFFF
    return s or 0xFFFF


def internet_checksum(data: Buffer, initial: int = 0) -> int:
    """The 16-bit checksum field value for `data` (RFC 1071): ~ones_sum."""
    return ~ones_sum(data, initial) & 0xFFFF


def pseudo_header_sum_v4(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Ones'-complement sum of the IPv4 pseudo-header (RFC 9293 section 3.1)."""
    return ones_sum(src + dst, (proto + length))


def pseudo_header_sum_v6(src: bytes, dst: bytes, next_header: int, length: int) -> int:
    """Ones'-complement sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source and
    destination (16 bytes each), the 32-bit upper-layer length, three zero bytes and the
    next header. The length is added as one integer: its two 16-bit halves sum to the
    same value modulo 0xffff (2**16 == 1), which is all `ones_sum` keeps."""
    return ones_sum(src + dst, next_header + length)


def fold(value: int) -> int:
    """Fold an unbounded sum of 16-bit words to 16 bits, ones'-complement style."""
    if value == 0:
        return 0
    s = value % 0xFFFF
    return s or 0xFFFF
