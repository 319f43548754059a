"""The default scheduler (Linux's `mptcp_subflow_get_send`): the subflow that drains its
queue soonest at its pacing rate, an idle one first, and nothing when that one is full."""

from __future__ import annotations

from dataclasses import dataclass

from stack.mptcp.sched import LowestDelay


@dataclass
class Eng:
    cwnd: int
    srtt: float | None
    send_buffered: int = 0
    ssthresh: int = 10**6
    mss: int = 1448


@dataclass
class Sf:
    engine: Eng


def test_an_idle_subflow_takes_the_next_chunk_even_if_slower() -> None:
    fast = Sf(Eng(cwnd=200_000, srtt=0.002, send_buffered=50_000))
    slow = Sf(Eng(cwnd=14_480, srtt=0.100))
    assert LowestDelay().get_send([fast, slow], [fast, slow]) == (slow,)


def test_the_subflow_that_drains_soonest_wins() -> None:
    # 100 KB at 200 KB / 10 ms * 2 (slow start) vs 30 KB at 14 KB / 100 ms * 2
    fast = Sf(Eng(cwnd=200_000, srtt=0.010, send_buffered=100_000))
    slow = Sf(Eng(cwnd=14_000, srtt=0.100, send_buffered=30_000))
    assert LowestDelay().get_send([fast, slow], [fast, slow]) == (fast,)
    # out of slow start the rate is 1.2 cwnd / srtt, not 2: still the fast one
    fast.engine.ssthresh = slow.engine.ssthresh = 1
    assert LowestDelay().get_send([fast, slow], [fast, slow]) == (fast,)


def test_nothing_when_the_best_subflow_has_no_room() -> None:
    """BLEST's rule: the slower subflow does not take what the faster will send sooner."""
    fast = Sf(Eng(cwnd=200_000, srtt=0.010, send_buffered=400_000))
    slow = Sf(Eng(cwnd=14_000, srtt=0.100, send_buffered=20_000))
    assert LowestDelay().get_send([slow], [fast, slow]) == ()
    assert LowestDelay().get_send([fast, slow], [fast, slow]) == (fast,)
    assert LowestDelay().get_send([slow], []) == (slow,)  # (no `ready` given: candidates)
