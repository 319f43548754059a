"""The byte queues: `RecvQueue`, which keeps the chunks it is given and copies only
when read, and `SendQueue`, which keeps them by reference and hands out views."""

from __future__ import annotations

import random

from stack.buffers import RecvQueue, SendQueue, frozen


def take_front(buf: bytearray, n: int) -> bytes:
    """The model: a bytearray cut at the front."""
    n = len(buf) if n < 0 else min(n, len(buf))
    out = bytes(buf[:n])
    del buf[:n]
    return out


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


def test_frozen_keeps_bytes_by_reference_and_copies_what_may_change() -> None:
    b = b"abcdef"
    assert frozen(b).obj is b and frozen(memoryview(b)[2:]).obj is b
    ba = bytearray(b"xyz")
    f = frozen(ba)
    ba[0] = 0x41
    assert bytes(f) == b"xyz" and isinstance(f.obj, bytes)
    assert bytes(frozen(memoryview(ba)[1:])) == b"yz"


def test_send_queue_spans_are_views_within_a_chunk_and_joined_across() -> None:
    q = SendQueue(1000)
    a, b = b"0123456789", b"abcdefghij"
    q.append(a)
    q.append(memoryview(b))
    assert (q.start, q.end, len(q)) == (1000, 1020, 20)
    v = q.span(1002, 5)
    assert isinstance(v, memoryview) and v.obj is a and bytes(v) == b"23456"
    assert q.span(1008, 4) == b"89ab"  # across two chunks: joined
    q.release(1004)
    assert q.start == 1004 and bytes(q.span(1004, 2)) == b"45"
    q.release(1012)
    assert (q.start, len(q)) == (1012, 8) and bytes(q.span(1012, 8)) == b"cdefghij"
    q.clear(5000)
    assert (q.start, q.end, len(q)) == (5000, 5000, 0)


def test_send_queue_equals_one_bytearray_under_random_use() -> None:
    rng = random.Random(7)
    q, ref, base = SendQueue(77), bytearray(), 77  # ref holds offsets [base, ...)
    for _ in range(3000):
        r = rng.random()
        if r < 0.4:
            chunk = rng.randbytes(rng.randrange(0, 500))
            q.append(rng.choice([bytes, bytearray, memoryview])(chunk))
            ref += chunk
        elif r < 0.8 and ref:
            off = rng.randrange(base, base + len(ref))
            n = rng.randrange(0, base + len(ref) - off + 1)
            assert bytes(q.span(off, n)) == bytes(ref[off - base:off - base + n])
        else:
            k = rng.randrange(0, len(ref) + 1)
            q.release(base + k)
            del ref[:k]
            base += k
        assert (q.start, len(q)) == (base, len(ref))
