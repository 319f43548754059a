"""The byte queues: `take_front` on a bytearray, and `RecvQueue`, which keeps the
chunks it is given and copies only when read."""

from __future__ import annotations

import random

from stack.buffers import RecvQueue, take_front


def test_take_front_all_and_part() -> None:
    buf = bytearray(b"abcdef")
    assert take_front(buf, 2) == b"ab" and buf == bytearray(b"cdef")
    assert take_front(buf) == b"cdef" and not buf
    assert take_front(buf) == b""


def test_recv_queue_keeps_chunks_and_reads_across_them() -> None:
    q = RecvQueue()
    assert q.take() == b"" and len(q) == 0
    whole = bytearray(b"0123456789")
    q.append(whole)
    q.append(memoryview(b"abcdef")[2:])  # a view: kept as it is
    q.append(b"")  # nothing
    assert len(q) == 14
    assert q.take(3) == b"012"
    assert q.take(9) == b"3456789cd"  # the rest of one chunk and part of the next
    assert whole == bytearray(b"0123456789")  # the chunk itself is never changed
    assert len(q) == 2 and q.take(100) == b"ef" and len(q) == 0


def test_recv_queue_equals_one_bytearray_under_random_use() -> None:
    rng = random.Random(5)
    q, ref = RecvQueue(), bytearray()
    for _ in range(2000):
        if rng.random() < 0.55:
            chunk = rng.randbytes(rng.randrange(0, 300))
            q.append(rng.choice([bytes, bytearray, memoryview])(chunk))
            ref += chunk
        else:
            n = rng.choice([-1, rng.randrange(0, 400)])
            assert q.take(n) == take_front(ref, n)
        assert len(q) == len(ref)
