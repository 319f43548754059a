"""A simulated network for host-level tests: `Stack`s joined by an in-memory link on a
virtual clock, with seeded loss, reordering, duplication, delay and GSO cutting (the
link does what the kernel does to a GSO write). Deterministic: same seed, same run."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from stack.host import Datagram, Stack
from stack.wire import gso


@dataclass
class LinkProfile:
    """The impairments of one direction of a link, seeded: the one vocabulary of both
    simulators (this one, and tests/sim/link.py's engine-to-engine `Link`). A packet is
    what crosses the link: an IPv4 packet here, a TCP segment in `Link`."""
    delay: float = 0.005         # one-way propagation delay, seconds
    jitter: float = 0.0          # extra uniform random delay, up to this (causes reordering)
    loss: float = 0.0            # probability a packet is dropped
    duplicate: float = 0.0       # probability a packet is delivered twice
    reorder: float = 0.0         # probability a packet is held back by `reorder_delay`
    reorder_delay: float = 0.004  # seconds, on top of `delay` (and `jitter`)
    rate_bps: float = 0.0        # serialisation rate, bits/s (0 = infinite)
    up: bool = True              # False: every packet is dropped (a cut link)
    drop_filter: Callable[[bytes], bool] | None = None  # True: drop this packet
    mangle: Callable[[bytes], bytes] | None = None  # a middlebox rewriting packets


@dataclass(order=True)
class _InFlight:
    at: float
    order: int
    dst: int = field(compare=False)
    data: bytes = field(compare=False)


class SimNet:
    """Two or more stacks; every packet goes to the stack that owns its destination."""

    def __init__(self, stacks: list[Stack], seed: int = 0,
                 profile: LinkProfile | None = None) -> None:
        self.stacks = stacks
        self.rng = random.Random(seed)
        self.now = 0.0
        self.profile = profile or LinkProfile()
        self.profiles: dict[tuple[int, int], LinkProfile] = {}  # (src, dst) stack index
        self._q: list[_InFlight] = []
        self._n = 0
        self._busy_until: dict[tuple[bytes, bytes], float] = {}
        self.delivered = 0
        self.dropped = 0
        self.owner = {a: i for i, s in enumerate(stacks) for a in s.addrs}

    def profile_for(self, src: int, dst: int) -> LinkProfile:
        return self.profiles.get((src, dst), self.profile)

    def _send(self, src: int, d: Datagram) -> None:
        v6 = d.data[0] >> 4 == 6
        whole = d.packet
        if d.gso_size or d.csum_partial:
            pkts = (gso.segment_tcp6 if v6 else gso.segment_tcp4)(whole, d.gso_size)
        else:
            pkts = [whole]
        for p in pkts:
            dst = self.owner.get(p[24:40] if v6 else p[16:20])
            if dst is None:
                self.dropped += 1
                continue
            prof = self.profile_for(src, dst)
            if prof.mangle is not None:
                p = prof.mangle(p)
            if not prof.up or self.rng.random() < prof.loss or \
                    (prof.drop_filter is not None and prof.drop_filter(p)):
                self.dropped += 1
                continue
            at = self.now
            if prof.rate_bps:
                # one serialisation queue per path (address pair), as the topology has
                # one link per path
                link = (p[12:16], p[16:20])
                start = max(at, self._busy_until.get(link, 0.0))
                at = start + len(p) * 8 / prof.rate_bps
                self._busy_until[link] = at
            at += prof.delay + self.rng.random() * prof.jitter
            if self.rng.random() < prof.reorder:
                at += prof.reorder_delay
            copies = 2 if self.rng.random() < prof.duplicate else 1
            for _ in range(copies):
                self._n += 1
                heapq.heappush(self._q, _InFlight(at, self._n, dst, p))

    def flush(self) -> None:
        """Collect everything every stack wants to send now."""
        for i, s in enumerate(self.stacks):
            for d in s.poll_transmit(self.now):
                self._send(i, d)

    def step(self, max_time: float) -> bool:
        """Advance to the next packet arrival or timer; False when nothing is left
        before max_time."""
        self.flush()
        t_next = self._q[0].at if self._q else None
        for s in self.stacks:
            t = s.poll_timeout()
            if t is not None and (t_next is None or t < t_next):
                t_next = t
        if t_next is None or t_next > max_time:
            return False
        self.now = max(self.now, t_next)
        while self._q and self._q[0].at <= self.now:
            p = heapq.heappop(self._q)
            self.stacks[p.dst].feed(p.data, self.now)
            self.delivered += 1
        for s in self.stacks:
            s.handle_timeout(self.now)
        self.flush()
        return True

    def run_until(self, cond: Callable[[], bool], max_time: float = 600.0) -> bool:
        while not cond():
            if not self.step(max_time):
                return cond()
        return True

    def run(self, duration: float) -> None:
        end = self.now + duration
        while self.step(end):
            pass
        self.now = max(self.now, end)


class PathCut:
    """A `drop_filter` that takes down the path of address `addr` (every packet to or
    from it is lost) once `down` is set."""

    def __init__(self, addr: bytes) -> None:
        self.addr = addr
        self.down = False

    def __call__(self, pkt: bytes) -> bool:
        return self.down and self.addr in (pkt[12:16], pkt[16:20])
