"""Deterministic pseudo-random payloads shared by kpeer.py and the interop tests.

No project imports: kpeer.py runs this file's code inside a network namespace with a
bare `python3`. The stream for a seed is the concatenation of 64 KiB blocks, block k
being `random.Random((seed << 40) | k).randbytes(BLOCK)`, so any prefix of it, read in
any chunking, is the same bytes, and a receiver's sha256 can be checked against
`expected_sha256(n, seed)` computed in the test (about 2 ms per MB to generate).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

BLOCK = 65536
DEFAULT_SEED = 1


def block(k: int, seed: int = DEFAULT_SEED) -> bytes:
    """Block k (0-based) of the stream for `seed`: BLOCK bytes."""
    return random.Random((seed << 40) | k).randbytes(BLOCK)


def chunks(n: int, seed: int = DEFAULT_SEED, chunk: int = BLOCK) -> Iterator[bytes]:
    """The first n bytes of the stream, as pieces of at most `chunk` bytes."""
    if n < 0:
        raise ValueError("n must be >= 0")
    pos = 0
    k = 0
    buf = b""
    while pos < n:
        if not buf:
            buf = block(k, seed)
            k += 1
        take = min(chunk, n - pos, len(buf))
        yield buf[:take]
        buf = buf[take:]
        pos += take


def payload(n: int, seed: int = DEFAULT_SEED) -> bytes:
    """The first n bytes of the stream, in one bytes object."""
    return b"".join(chunks(n, seed))


def expected_sha256(n: int, seed: int = DEFAULT_SEED) -> str:
    """Hex sha256 of the first n bytes of the stream."""
    h = hashlib.sha256()
    for piece in chunks(n, seed):
        h.update(piece)
    return h.hexdigest()
