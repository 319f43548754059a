"""Middleboxes for the simulated link: packet rewriters that keep IP and TCP checksums
valid (as a real middlebox does), so only MPTCP can notice what they did."""

from __future__ import annotations

import struct
from collections.abc import Callable

from stack.impair import mptcp_options as mptcp_options_at
from stack.wire import tcp
from stack.wire.gso import complete_checksum

Mangle = Callable[[bytes], bytes]


def _tcp_fields(pkt: bytes) -> tuple[int, int, int]:
    """(ip header length, tcp header length, tcp flags)."""
    ihl = (pkt[0] & 0x0F) * 4
    return ihl, (pkt[ihl + 12] >> 4) * 4, pkt[ihl + 13]


def strip_mptcp(on_syn: bool = False, only_with_payload: bool = False) -> Mangle:
    """Overwrite every MPTCP option (kind 30) with NOPs, except on SYNs unless
    `on_syn`: the middlebox that lets the handshake through and strips later."""
    def mangle(pkt: bytes) -> bytes:
        if pkt[9] != 6:
            return pkt
        ihl, thl, flags = _tcp_fields(pkt)
        if flags & tcp.SYN and not on_syn:
            return pkt
        if only_with_payload and len(pkt) == ihl + thl:
            return pkt
        opts = mptcp_options_at(pkt, ihl)
        if not opts:
            return pkt
        buf = bytearray(pkt)
        for pos, length, _subtype in opts:
            buf[pos:pos + length] = bytes([tcp.OPT_NOP]) * length
        return complete_checksum(bytes(buf))
    return mangle


def corrupt_payload(nth: int, offset: int = 10) -> Mangle:
    """Flip one payload byte of the nth data-carrying packet (1-based), fixing the TCP
    checksum: only a DSS checksum can tell."""
    seen = [0]

    def mangle(pkt: bytes) -> bytes:
        if pkt[9] != 6:
            return pkt
        ihl, thl, _ = _tcp_fields(pkt)
        if len(pkt) <= ihl + thl + offset:
            return pkt
        seen[0] += 1
        if seen[0] != nth:
            return pkt
        buf = bytearray(pkt)
        buf[ihl + thl + offset] ^= 0xFF
        return complete_checksum(bytes(buf))
    return mangle


def mptcp_options(pkt: bytes) -> list[bytes]:
    """The raw MPTCP options (kind, length, body) in an IPv4/TCP packet."""
    ihl, _thl, _ = _tcp_fields(pkt)
    hdr, _ = tcp.parse(pkt[ihl:])
    return [struct.pack("!BB", 30, len(o.data) + 2) + o.data for o in hdr.options
            if isinstance(o, tcp.UnknownOption) and o.kind == tcp.OPT_MPTCP]
