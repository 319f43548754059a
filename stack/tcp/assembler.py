"""Out-of-order receive queue and SACK block generation (RFC 9293 3.10.7.4, RFC 2018).

One job: hold bytes that arrived beyond `rcv_nxt` until the gap before them fills.
Positions are *stream offsets*: unbounded Python ints that the engine derives from
sequence numbers once, at the boundary (an unwrapped `rcv_nxt` plus the modular
distance), so nothing here compares wrapping numbers.

Blocks are kept sorted, disjoint and non-adjacent (touching or overlapping data is
merged on insert; where copies overlap, the bytes already held win, like Linux's
`tcp_data_queue_ofo()`). A block is a list of views into the data given (`frozen`: a
copy only of a mutable buffer): merging joins lists, nothing is copied, and `pop_chunks`
hands the views on (MPTCP's data level, with two subflows, holds about half of what
arrives here before its gap fills). Memory is bounded twice: by total bytes held (the
engine's receive buffer) and by the number of blocks (a peer cannot fragment us
into millions of one-byte holes). SACK blocks follow RFC 2018 section 4: the first
block holds the most recently received segment, then the most recently reported
other blocks, no block twice.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from stack.buffers import frozen

Buffer = bytes | bytearray | memoryview


class Assembler:
    __slots__ = ("_bytes", "_data", "_ends", "_recent", "_starts", "limit", "max_blocks")

    def __init__(self, limit: int, max_blocks: int = 512) -> None:
        self.limit = limit
        self.max_blocks = max_blocks
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._data: list[list[memoryview]] = []
        self._bytes = 0
        # (start, end) of recently received segments, most recent first (for SACK order)
        self._recent: list[tuple[int, int]] = []

    def __len__(self) -> int:
        """Number of blocks held."""
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    @property
    def buffered(self) -> int:
        """Bytes held."""
        return self._bytes

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """(start, end) of every block, in offset order."""
        return list(zip(self._starts, self._ends, strict=True))

    @property
    def highest(self) -> int | None:
        """The end of the last block."""
        return self._ends[-1] if self._ends else None

    def add(self, start: int, data: Buffer) -> bool:
        """Store `data` at offset `start`. Returns False (and stores nothing) if it would
        exceed the byte or block limit; a segment entirely inside held data is a
        duplicate and returns True."""
        n = len(data)
        if n == 0:
            return True
        end = start + n
        starts, ends, datas = self._starts, self._ends, self._data
        i = bisect_left(ends, start)      # first block with end >= start (touching counts)
        j = bisect_right(starts, end)     # blocks [i, j) overlap or touch [start, end)
        if i == j:
            if self._bytes + n > self.limit or len(starts) >= self.max_blocks:
                return False
            starts.insert(i, start)
            ends.insert(i, end)
            datas.insert(i, [frozen(data)])
            self._bytes += n
            self._note(start, end)
            return True
        new_start = min(start, starts[i])
        new_end = max(end, ends[j - 1])
        old = 0
        for k in range(i, j):
            old += ends[k] - starts[k]
        grow = (new_end - new_start) - old
        if grow == 0:  # fully duplicate
            self._note(start, end)
            return True
        if self._bytes + grow > self.limit:
            return False
        # Rebuild [new_start, new_end): existing blocks win, new data fills the gaps.
        view = frozen(data)
        if starts[i] <= start:
            chunks = datas[i]
            pos = ends[i]
            k = i + 1
        else:
            chunks = []
            pos = start
            k = i
        while k < j:
            s = starts[k]
            if pos < s:
                chunks.append(view[pos - start:s - start])
            chunks.extend(datas[k])
            pos = ends[k]
            k += 1
        if pos < end:
            chunks.append(view[pos - start:])
        starts[i:j] = [new_start]
        ends[i:j] = [new_end]
        datas[i:j] = [chunks]
        self._bytes += grow
        self._note(start, end)
        return True

    def _note(self, start: int, end: int) -> None:
        recent = self._recent
        if recent and recent[0][0] == start and recent[0][1] == end:
            return
        recent.insert(0, (start, end))
        if len(recent) > 8:
            del recent[8:]

    def pop_chunks(self, nxt: int) -> list[memoryview] | None:
        """If held data starts at or before `nxt`, remove the first block and return its
        bytes from `nxt` on, as views (blocks wholly before `nxt` are discarded). Else
        None."""
        starts = self._starts
        while starts and starts[0] <= nxt:
            s = starts.pop(0)
            e = self._ends.pop(0)
            d = self._data.pop(0)
            self._bytes -= e - s
            if e > nxt:
                skip = nxt - s
                while skip:  # the views before `nxt`: dropped, the one across it cut
                    if len(d[0]) <= skip:
                        skip -= len(d.pop(0))
                    else:
                        d[0] = d[0][skip:]
                        skip = 0
                return d
        return None

    def pop(self, nxt: int) -> bytes | None:
        """`pop_chunks`, joined into one `bytes`."""
        d = self.pop_chunks(nxt)
        return None if d is None else b"".join(d)

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()
        self._data.clear()
        self._recent.clear()
        self._bytes = 0

    def sack_blocks(self, max_blocks: int) -> list[tuple[int, int]]:
        """Up to `max_blocks` (start, end) blocks, RFC 2018 order: the block holding the
        most recently received segment first, then other recently touched blocks, then
        the remaining blocks from the highest down."""
        starts, ends = self._starts, self._ends
        out: list[tuple[int, int]] = []
        if not starts or max_blocks <= 0:
            return out
        seen: set[int] = set()
        for rs, _re in self._recent:
            k = bisect_right(starts, rs) - 1
            if k >= 0 and ends[k] > rs and k not in seen:
                seen.add(k)
                out.append((starts[k], ends[k]))
                if len(out) == max_blocks:
                    return out
        for k in range(len(starts) - 1, -1, -1):
            if k not in seen:
                out.append((starts[k], ends[k]))
                if len(out) == max_blocks:
                    break
        return out
