"""Out-of-order assembler: merging, bounds, SACK block order (RFC 2018)."""

import itertools
import random

from hypothesis import given
from hypothesis import strategies as st

from stack.tcp.assembler import Assembler


def test_gap_fill_yields_contiguous() -> None:
    a = Assembler(1 << 20)
    assert a.add(110, b"B" * 10)
    assert a.pop(100) is None
    assert a.add(100, b"A" * 10)  # adjacent: merged into one block
    assert len(a) == 1 and a.blocks == [(100, 120)]
    assert a.pop(100) == b"A" * 10 + b"B" * 10
    assert a.buffered == 0 and not a


def test_overlaps_existing_bytes_win() -> None:
    a = Assembler(1 << 20)
    a.add(10, b"xxxx")           # [10,14)
    a.add(20, b"yyyy")           # [20,24)
    a.add(8, b"ABCDEFGHIJKLMNOPQR")  # [8,26) covers both and the gaps
    assert a.blocks == [(8, 26)]
    assert a.pop(8) == b"ABxxxxGHIJKLyyyyQR"


def test_duplicate_and_partial_delivered() -> None:
    a = Assembler(1 << 20)
    a.add(10, b"0123456789")
    assert a.add(12, b"23")  # duplicate inside
    assert a.buffered == 10
    assert a.pop(15) == b"56789"  # bytes before nxt already delivered


def test_byte_limit_and_block_limit() -> None:
    a = Assembler(20, max_blocks=2)
    assert a.add(0, b"a" * 14)
    assert not a.add(100, b"b" * 10)   # would exceed 20 bytes
    assert a.add(100, b"b" * 5)
    assert not a.add(200, b"c")        # third block refused
    assert a.add(14, b"x")             # extends a block: fine
    assert a.buffered == 20
    assert not a.add(15, b"y")         # byte limit reached


def test_sack_blocks_most_recent_first() -> None:
    a = Assembler(1 << 20)
    a.add(100, b"x" * 10)   # block A
    a.add(300, b"x" * 10)   # block C
    a.add(200, b"x" * 10)   # block B (most recent)
    assert a.sack_blocks(3) == [(200, 210), (300, 310), (100, 110)]
    a.add(110, b"x" * 5)    # extends A: now first
    assert a.sack_blocks(3) == [(100, 115), (200, 210), (300, 310)]
    assert a.sack_blocks(1) == [(100, 115)]
    a.add(400, b"x")
    a.add(500, b"x")
    blocks = a.sack_blocks(4)
    assert blocks[0] == (500, 501) and blocks[1] == (400, 401) and len(blocks) == 4


def test_sack_blocks_after_pop() -> None:
    a = Assembler(1 << 20)
    a.add(100, b"x" * 10)
    a.add(200, b"x" * 10)
    a.pop(100)
    assert a.sack_blocks(3) == [(200, 210)]


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 40)), max_size=40),
       st.integers(0, 10**6))
def test_random_segments_reassemble(segs: list[tuple[int, int]], seed: int) -> None:
    data = random.Random(seed).randbytes(260)
    a = Assembler(1 << 20)
    cover = [False] * 260
    for s, n in segs:
        a.add(s, data[s:s + n])
        for i in range(s, min(s + n, 260)):
            cover[i] = True
    blocks = a.blocks
    # blocks are sorted, disjoint, non-adjacent and exactly the covered bytes
    for (_s1, e1), (s2, _e2) in itertools.pairwise(blocks):
        assert e1 < s2
    covered = [i for s, e in blocks for i in range(s, e)]
    assert covered == [i for i, c in enumerate(cover) if c]
    for s, e in blocks:
        d = a.pop(s)
        assert d == data[s:e]
