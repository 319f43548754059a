"""The data-level send buffer: bytes from the data ACK on, kept until data-acked (a
dead subflow's bytes must be sent again on another), as a queue of chunks.

A single bytearray deleted at the front (data ACKs) and appended at the back (the
application) is compacted by CPython with a memmove of everything held, up to the whole
4 MB buffer on every append: the profile's top entry. Chunks are never copied after the
one copy `append` makes; reading returns memoryviews."""

from __future__ import annotations

from collections import deque


class SendQueue:
    def __init__(self) -> None:
        self._chunks: deque[memoryview] = deque()
        self.start = 0   # data offset of the first byte held
        self.end = 0     # data offset after the last byte held

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, data: bytes | bytearray | memoryview) -> None:
        b = bytes(data)
        if b:
            self._chunks.append(memoryview(b))
            self.end += len(b)

    def pieces(self, off: int, n: int) -> list[memoryview]:
        """Views covering data offsets [off, off + n) (which must be held)."""
        if off < self.start or off + n > self.end:
            raise ValueError(f"[{off}, {off + n}) not in [{self.start}, {self.end})")
        out: list[memoryview] = []
        pos = self.start
        for c in self._chunks:
            cend = pos + len(c)
            if cend > off:
                lo = max(off - pos, 0)
                hi = min(off + n - pos, len(c))
                out.append(c[lo:hi])
                if pos + hi >= off + n:
                    break
            pos = cend
        return out

    def release(self, off: int) -> None:
        """Forget bytes below data offset `off` (data-acked)."""
        chunks = self._chunks
        while chunks and self.start + len(chunks[0]) <= off:
            self.start += len(chunks.popleft())
        if chunks and off > self.start:
            # a chunk acked in part: keep a view of its tail (no copy)
            chunks[0] = chunks[0][off - self.start:]
            self.start = off
