"""Packet schedulers: which subflow(s) carry the next chunk of data, and which one
carries data sent again (the kernel's `net/mptcp/sched.c`).

`get_send`: the connection (`MptcpConnection._push`) offers the subflows that may send
(`ready`: fully established, working; backups only when no regular subflow works) and
those of them that can take a chunk now (`candidates`: below their queue cap, about
two cwnds), and maps the chunk onto the subflows it returns, in order. The first one
must be a candidate and gets new data; any further ones get the same data again (same
data sequence numbers, their own subflow mappings), which is how `redundant`
duplicates.

`get_retrans`: when the data-level retransmission timer fires, the subflow to send the
first unacknowledged chunk on again, among the `ready` ones; None: none fits now.

A scheduler is any object with `name`, `get_send` and `get_retrans`. `SCHEDULERS`
names the built-in ones; add your own there. Linux has the same split:
`net.mptcp.scheduler` selects a `struct mptcp_sched_ops` whose `get_send` /
`get_retrans` mark the subflows to use (`mptcp_subflow_set_scheduled`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from stack.mptcp.subflow import Subflow


class Scheduler(Protocol):
    name: str

    def get_send(self, candidates: Sequence[Subflow],
                 ready: Sequence[Subflow]) -> Sequence[Subflow]: ...

    def get_retrans(self, ready: Sequence[Subflow]) -> Subflow | None: ...


def idle_lowest_rtt(ready: Sequence[Subflow]) -> Subflow | None:
    """The kernel's `mptcp_subflow_get_retrans`: a subflow with nothing queued (a busy
    one would only queue the chunk behind its own data, and its own retransmissions
    may still fill the gap), the lowest smoothed RTT among them; every built-in
    scheduler retransmits so."""
    idle = [sf for sf in ready if sf.engine.send_buffered == 0]
    return min(idle, key=lambda sf: sf.engine.srtt or 1.0) if idle else None


class LowestDelay:
    """Linux's default (`mptcp_subflow_get_send`): among the working subflows, the one
    that would drain what it has queued soonest, its queued bytes over its pacing rate
    (the kernel's "linger time"); nothing if that one has no room (BLEST's rule, as
    Linux keeps it: a slower subflow does not take data the faster one will send
    sooner once it drains, or the connection waits on the slow one at the end). The
    rate is Linux's `sk_pacing_rate`: cwnd / srtt, doubled in slow start and 1.2 times
    after (`tcp_update_pacing_rate`). A subflow with nothing queued lingers 0 and
    takes the next chunk (the first such in creation order), so a slower path is used
    as soon as it is idle and its window grows with the others'."""
    name = "default"

    get_retrans = staticmethod(idle_lowest_rtt)

    def get_send(self, candidates: Sequence[Subflow],
                 ready: Sequence[Subflow] = ()) -> Sequence[Subflow]:
        best: Subflow | None = None
        best_t = 0.0
        for sf in ready or candidates:
            eng = sf.engine
            cwnd = max(eng.cwnd, eng.mss)
            pace = cwnd * (2.0 if cwnd < eng.ssthresh else 1.2) / (eng.srtt or 0.001)
            t = eng.send_buffered / pace
            if best is None or t < best_t:
                best, best_t = sf, t
        return (best,) if best is not None and best in candidates else ()


class RoundRobin:
    """Each chunk to the next subflow in turn (the kernel's BPF `bpf_rr` example): an
    even split by bytes, whatever each path's speed; a slow path holds the others back
    once the shared receive window fills with its out-of-order data."""
    name = "roundrobin"

    get_retrans = staticmethod(idle_lowest_rtt)

    def __init__(self) -> None:
        self._last: Subflow | None = None

    def get_send(self, candidates: Sequence[Subflow],
             ready: Sequence[Subflow] = ()) -> Sequence[Subflow]:
        if not candidates:
            return ()
        order = candidates[0].msk.subflows  # creation order
        last = order.index(self._last) if self._last in order else -1
        nxt = next((sf for sf in candidates if order.index(sf) > last), candidates[0])
        self._last = nxt
        return (nxt,)


class Redundant:
    """Every chunk on every working subflow (the kernel's BPF `bpf_red` example): the
    fastest path delivers each byte first, so a lossy or slow path costs no latency,
    at the price of sending everything N times. The pace is the fastest subflow's; a
    slower one queues up to its send buffer and then misses chunks."""
    name = "redundant"
    get_retrans = staticmethod(idle_lowest_rtt)

    def get_send(self, candidates: Sequence[Subflow],
                 ready: Sequence[Subflow] = ()) -> Sequence[Subflow]:
        first = _LOWEST.get_send(candidates)
        return (*first, *(sf for sf in ready if sf not in first)) if first else ()


_LOWEST = LowestDelay()
SCHEDULERS: dict[str, type] = {c.name: c for c in (LowestDelay, RoundRobin, Redundant)}


def make_scheduler(name: str) -> Scheduler:
    try:
        return SCHEDULERS[name]()  # type: ignore[no-any-return]
    except KeyError:
        raise ValueError(f"unknown MPTCP scheduler {name!r} "
                         f"(choose from {', '.join(SCHEDULERS)})") from None
