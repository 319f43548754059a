"""Small byte-buffer helpers shared by the TCP engine and the MPTCP connection."""

from __future__ import annotations


def take_front(buf: bytearray, max_bytes: int = -1) -> bytes:
    """Remove and return up to `max_bytes` (all if negative) from the front of `buf`
    (CPython deletes from a bytearray's front without moving the rest)."""
    if not buf:
        return b""
    if max_bytes < 0 or max_bytes >= len(buf):
        out = bytes(buf)
        buf.clear()
        return out
    with memoryview(buf) as mv:
        out = bytes(mv[:max_bytes])
    del buf[:max_bytes]
    return out
