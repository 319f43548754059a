"""Small byte-buffer helpers shared by the TCP engine and the MPTCP connection."""

from __future__ import annotations

from collections import deque


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


class RecvQueue:
    """In-order received bytes as a queue of chunks. `append` keeps the object it is
    given, without a copy (whoever gives it must not change it afterwards); `take`
    joins what is asked for into one `bytes`, the one copy. For MPTCP's data level,
    which receives whole subflow buffers: a bytearray grown by `+=` would copy every
    byte once more."""

    __slots__ = ("_chunks", "_len")

    def __init__(self) -> None:
        self._chunks: deque[bytes | bytearray | memoryview] = deque()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def append(self, data: bytes | bytearray | memoryview) -> None:
        if len(data):
            self._chunks.append(data)
            self._len += len(data)

    def take(self, max_bytes: int = -1) -> bytes:
        """Remove and return up to `max_bytes` (all if negative) from the front."""
        chunks = self._chunks
        if not chunks:
            return b""
        if max_bytes < 0 or max_bytes >= self._len:
            out = b"".join(chunks)
            chunks.clear()
            self._len = 0
            return out
        parts: list[bytes | bytearray | memoryview] = []
        need = max_bytes
        while need:
            c = chunks[0]
            if len(c) <= need:
                parts.append(chunks.popleft())
                need -= len(c)
            else:
                mv = memoryview(c)  # a view of the rest: never resize a chunk
                parts.append(mv[:need])
                chunks[0] = mv[need:]
                need = 0
        self._len -= max_bytes
        return b"".join(parts)
