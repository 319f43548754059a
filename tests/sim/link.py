"""An in-memory link between two `TcpEngine`s on a virtual clock.

Every segment is serialised with `stack.wire.tcp.emit` and parsed back with
`stack.wire.tcp.parse`, so the codec is exercised on every hop. Impairments are
seeded and described by `tests.sim.net.LinkProfile`, the host-level simulator's own
(one vocabulary for both: `delay`, `jitter`, `loss`, `duplicate`, `reorder`,
`reorder_delay`, `rate_bps`, `up`, `drop_filter`, `mangle`), applied here to each TCP
segment as emitted (no IP header). Super-packets (`gso_size > 0`) are cut into
`gso_size` pieces like a device doing TSO (FIN/PSH only on the last piece).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

from stack.tcp.engine import OutSegment, TcpEngine
from stack.wire.tcp import FIN, PSH, TcpHeader, emit, parse
from tests.sim.net import LinkProfile

DELAY = 0.01  # the one-way delay of a direction given no profile


def cut_gso(seg: OutSegment) -> list[tuple[TcpHeader, bytes | memoryview]]:
    """Cut a super-packet into wire segments of `gso_size` payload bytes."""
    if not seg.gso_size:
        return [(seg.hdr, seg.payload)]
    h = seg.hdr
    p = seg.payload
    size = seg.gso_size
    out: list[tuple[TcpHeader, bytes | memoryview]] = []
    n = len(p)
    off = 0
    while off < n:
        last = off + size >= n
        flags = h.flags if last else h.flags & ~(FIN | PSH)
        out.append((TcpHeader(h.src_port, h.dst_port, (h.seq + off) & 0xFFFFFFFF, h.ack, flags,
                              h.window, list(h.options)), p[off:off + size]))
        off += size
    return out


class Link:
    """Engines `a` (index 0) and `b` (index 1); `prof[0]` impairs a->b, `prof[1]` b->a
    (default: `LinkProfile(delay=DELAY)`)."""

    def __init__(self, a: TcpEngine | None, b: TcpEngine | None, *, seed: int = 1,
                 ab: LinkProfile | None = None, ba: LinkProfile | None = None,
                 now: float = 0.0) -> None:
        self.eng: list[TcpEngine | None] = [a, b]
        self.prof = [ab or LinkProfile(delay=DELAY), ba or LinkProfile(delay=DELAY)]
        self.rng = random.Random(seed)
        self.now = now
        self._q: list[tuple[float, int, int, bytes]] = []  # (time, n, dst, bytes)
        self._n = 0
        self._busy_until = [now, now]
        self.sent = [0, 0]       # wire segments emitted per direction
        self.dropped = [0, 0]
        self.trace: list[tuple[float, int, TcpHeader, int]] | None = None
        # passive open of b: (hdr, payload, now) of the first segment -> b's engine
        self.on_syn: Callable[[TcpHeader, memoryview, float], TcpEngine] | None = None

    def _put(self, src: int, seg: OutSegment) -> None:
        prof = self.prof[src]
        rng = self.rng
        for hdr, payload in cut_gso(seg):
            self.sent[src] += 1
            raw = emit(hdr, payload)
            if self.trace is not None:
                self.trace.append((self.now, src, hdr, len(payload)))
            if prof.mangle is not None:
                raw = prof.mangle(raw)
            # a random number is drawn only for an impairment that is on, so a profile
            # without it replays the same run
            if not prof.up or (prof.drop_filter is not None and prof.drop_filter(raw)):
                self.dropped[src] += 1
                continue
            if prof.loss and rng.random() < prof.loss:
                self.dropped[src] += 1
                continue
            t = self.now
            if prof.rate_bps:
                start = max(t, self._busy_until[src])
                t = self._busy_until[src] = start + len(raw) * 8 / prof.rate_bps
            t += prof.delay
            if prof.jitter:
                t += rng.random() * prof.jitter
            if prof.reorder and rng.random() < prof.reorder:
                t += prof.reorder_delay
            copies = 2 if prof.duplicate and rng.random() < prof.duplicate else 1
            for _ in range(copies):
                self._n += 1
                heapq.heappush(self._q, (t, self._n, 1 - src, raw))

    def flush(self) -> None:
        """Collect everything both engines have to send now."""
        for i, e in enumerate(self.eng):
            if e is not None:
                for seg in e.poll_transmit(self.now):
                    self._put(i, seg)

    def next_time(self) -> float | None:
        ts = [self._q[0][0]] if self._q else []
        for e in self.eng:
            if e is not None:
                t = e.poll_timeout()
                if t is not None:
                    ts.append(t)
        return min(ts) if ts else None

    def step(self) -> bool:
        """Advance to the next event and process it (call `flush()` first). False if
        nothing is left."""
        t = self.next_time()
        if t is None:
            return False
        self.now = max(self.now, t)
        now = self.now
        q = self._q
        while q and q[0][0] <= now:
            _t, _n, dst, raw = heapq.heappop(q)
            hdr, off = parse(raw)
            payload = memoryview(raw)[off:]
            e = self.eng[dst]
            if e is None:
                if self.on_syn is not None:
                    self.eng[dst] = self.on_syn(hdr, payload, now)
                continue
            e.on_segment(hdr, payload, now)
        for e in self.eng:
            if e is not None:
                t2 = e.poll_timeout()
                if t2 is not None and t2 <= now:
                    e.handle_timeout(now)
        return True

    def run(self, until: float | None = None, cond: object = None, max_steps: int = 10**7) -> None:
        """Run until `cond()` is true, time passes `until`, or nothing is left."""
        for _ in range(max_steps):
            if cond is not None and cond():  # type: ignore[operator]
                return
            self.flush()
            t = self.next_time()
            if t is None or (until is not None and t > until):
                if until is not None:
                    self.now = max(self.now, until)
                return
            self.step()
        raise RuntimeError("simulation did not finish")
