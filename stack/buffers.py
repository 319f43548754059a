"""Small byte-buffer helpers shared by the TCP engine and the MPTCP connection."""

from __future__ import annotations

from bisect import bisect_right
from collections import deque


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

    def take_chunks(self) -> list[bytes | bytearray | memoryview]:
        """Remove and return everything, as the chunks it was appended in."""
        out = list(self._chunks)
        self._chunks.clear()
        self._len = 0
        return out

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


def frozen(data: bytes | bytearray | memoryview) -> memoryview:
    """A view of `data` that nobody can change under us, without a copy where that is
    already so: `bytes`, and views of `bytes`, are kept by reference; anything writable
    (a bytearray, a view of one) is copied once."""
    mv = data if isinstance(data, memoryview) else memoryview(data)
    if isinstance(mv.obj, bytes) and mv.contiguous and mv.itemsize == 1:
        return mv
    return memoryview(bytes(mv))


class SendQueue:
    """Bytes held for sending (unacknowledged, then not yet sent) as chunks kept by
    reference (`frozen`), addressed by absolute offsets `start` .. `end`. Reading
    (`span`) returns a view into one chunk where the range lies within one, else the
    pieces joined; releasing the acknowledged front drops whole chunks and keeps a view
    of a chunk's tail. The TCP engine's send buffer (offsets: sequence numbers) and
    MPTCP's data level (offsets: data sequence numbers) both use it.

    A single bytearray, deleted at the front and appended at the back, is compacted by
    CPython with a memmove of everything held on every append, and every segment cut
    from it is a copy: the send path's largest costs once SHA-256 is gone."""

    __slots__ = ("_chunks", "_head", "_starts", "end", "start")

    def __init__(self, start: int = 0) -> None:
        self._chunks: list[memoryview] = []
        self._starts: list[int] = []  # absolute offset of each chunk's first byte
        self._head = 0                # chunks before it are released
        self.start = start            # offset of the first byte held
        self.end = start              # offset after the last byte held

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, data: bytes | bytearray | memoryview) -> None:
        if len(data):
            mv = frozen(data)
            self._chunks.append(mv)
            self._starts.append(self.end)
            self.end += len(mv)

    def _index(self, off: int) -> int:
        return bisect_right(self._starts, off, self._head) - 1

    def pieces(self, off: int, n: int) -> list[memoryview]:
        """Views covering offsets [off, off + n) (which must be held)."""
        if off < self.start or off + n > self.end or n < 0:
            raise ValueError(f"[{off}, {off + n}) not in [{self.start}, {self.end})")
        out: list[memoryview] = []
        chunks, starts = self._chunks, self._starts
        i = self._index(off)
        end = off + n
        while off < end:
            c, s = chunks[i], starts[i]
            hi = min(end - s, len(c))
            out.append(c[off - s:hi])
            off = s + hi
            i += 1
        return out

    def span(self, off: int, n: int) -> bytes | memoryview:
        """Offsets [off, off + n): a view when one chunk holds them all (no copy),
        else the pieces joined into one `bytes`."""
        if n <= 0:
            return b""
        i = self._index(off)
        if i >= self._head and off >= self.start and off + n <= self.end:
            c, s = self._chunks[i], self._starts[i]
            if off + n - s <= len(c):
                return c[off - s:off + n - s]
        return b"".join(self.pieces(off, n))

    def release(self, off: int) -> None:
        """Forget the bytes below offset `off` (acknowledged)."""
        off = min(off, self.end)
        if off <= self.start:
            return
        chunks, starts = self._chunks, self._starts
        h = self._head
        while h < len(chunks) and starts[h] + len(chunks[h]) <= off:
            h += 1
        if h < len(chunks) and off > starts[h]:
            chunks[h] = chunks[h][off - starts[h]:]  # acked in part: a view of its tail
            starts[h] = off
        if h > 32 and h * 2 > len(chunks):  # compact now and then, not on every ACK
            del chunks[:h], starts[:h]
            h = 0
        self._head = h
        self.start = off

    def clear(self, start: int) -> None:
        """Forget everything; the next byte appended is at offset `start`."""
        self._chunks.clear()
        self._starts.clear()
        self._head = 0
        self.start = self.end = start
