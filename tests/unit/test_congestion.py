"""Reno (RFC 5681) and CUBIC (RFC 9438): growth shapes and reactions to loss."""

import itertools

import pytest

from stack.tcp.congestion import Cubic, Reno, make_congestion

MSS = 1000


def test_factory() -> None:
    assert isinstance(make_congestion("cubic", MSS), Cubic)
    assert isinstance(make_congestion("reno", MSS), Reno)
    with pytest.raises(ValueError):
        make_congestion("vegas", MSS)


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_initial_window_and_slow_start(cls: type) -> None:
    cc = cls(MSS)
    assert cc.cwnd == 10 * MSS
    assert cc.in_slow_start
    # one RTT of ACKs doubles the window (every acked byte counts, even stretch ACKs)
    cc.on_ack(5 * MSS, 0.1, 0.1)
    cc.on_ack(5 * MSS, 0.1, 0.1)
    assert cc.cwnd == 20 * MSS


def test_reno_congestion_avoidance_linear() -> None:
    cc = Reno(MSS)
    cc.enter_recovery(40 * MSS, 0.0)  # ssthresh = 20 MSS
    assert cc.ssthresh == 20 * MSS and cc.cwnd == 20 * MSS
    cc.exit_recovery(0.0)
    # one window of ACKs -> +1 MSS
    for _ in range(20):
        cc.on_ack(MSS, 0.1, 0.0)
    assert cc.cwnd == 21 * MSS
    for _ in range(21):
        cc.on_ack(MSS, 0.1, 0.0)
    assert cc.cwnd == 22 * MSS


def test_reno_slow_start_stops_at_ssthresh() -> None:
    cc = Reno(MSS)
    cc.on_rto(16 * MSS, 0.0)
    assert cc.cwnd == MSS and cc.ssthresh == 8 * MSS
    cc.on_ack(6 * MSS, 0.1, 0.0)
    assert cc.cwnd == 7 * MSS
    cc.on_ack(3 * MSS, 0.1, 0.0)  # 1 MSS to reach ssthresh, 2 MSS go to CA
    assert cc.cwnd == 8 * MSS
    assert not cc.in_slow_start


def test_reno_loss_floor_and_repeated_rto() -> None:
    cc = Reno(MSS)
    cc.enter_recovery(MSS, 0.0)
    assert cc.ssthresh == 2 * MSS
    cc.on_rto(30 * MSS, 0.0)
    cc.on_rto(MSS, 1.0, first=False)  # a backed-off RTO keeps ssthresh
    assert cc.ssthresh == 15 * MSS and cc.cwnd == MSS


def test_cubic_loss_reaction() -> None:
    cc = Cubic(MSS)
    cc.on_ack(90 * MSS, 0.1, 0.0)  # cwnd 100 MSS
    assert cc.cwnd == 100 * MSS
    cc.enter_recovery(100 * MSS, 1.0)
    assert cc.ssthresh == 70 * MSS and cc.cwnd == 70 * MSS
    assert cc.w_max == pytest.approx(100.0)
    cc.exit_recovery(1.0)
    # fast convergence: a second loss below w_max lowers w_max further
    cc.enter_recovery(70 * MSS, 2.0)
    assert cc.w_max == pytest.approx(70 * 1.7 / 2)
    assert cc.cwnd == 49 * MSS


def _grow(cc: Cubic, seconds: float, rtt: float = 0.1) -> list[float]:
    """Feed one window of ACKs per RTT; return cwnd (segments) per RTT."""
    out = []
    t = cc.epoch if cc.epoch is not None else 0.0
    t = 10.0
    for _ in range(int(seconds / rtt)):
        w = cc.cwnd
        for _ in range(max(w // MSS, 1)):
            cc.on_ack(MSS, rtt, t)
        t += rtt
        out.append(cc.cwnd / MSS)
    return out


def test_cubic_concave_then_convex() -> None:
    cc = Cubic(MSS)
    cc.on_ack(90 * MSS, 0.1, 0.0)
    cc.enter_recovery(100 * MSS, 10.0)
    cc.exit_recovery(10.0)
    k = ((100 - 70) / 0.4) ** (1 / 3)  # ~4.2 s
    trace = _grow(cc, 8.0)
    steps = [b - a for a, b in itertools.pairwise(trace)]
    # concave approach: growth slows as cwnd nears w_max = 100 ...
    plateau = int(k / 0.1)
    assert steps[2] > steps[plateau - 5] >= 0
    assert 95 < trace[plateau] < 105
    # ... then convex probing beyond w_max accelerates
    assert trace[-1] > 110
    assert steps[-1] > steps[plateau + 2]


def test_cubic_rto() -> None:
    cc = Cubic(MSS)
    cc.on_ack(90 * MSS, 0.1, 0.0)
    cc.on_rto(100 * MSS, 1.0)
    assert cc.cwnd == MSS and cc.ssthresh == 70 * MSS
    assert cc.in_slow_start


def test_reno_friendly_region_small_bdp() -> None:
    # with a tiny RTT the cubic curve is flat; the Reno estimate must still grow cwnd
    cc = Cubic(MSS)
    cc.on_ack(0, 0.001, 0.0)
    cc.enter_recovery(10 * MSS, 0.0)
    cc.exit_recovery(0.0)
    start = cc.cwnd
    t = 0.0
    for _ in range(200):
        for _ in range(cc.cwnd // MSS):
            cc.on_ack(MSS, 0.001, t)
        t += 0.001
    assert cc.cwnd > start + 20 * MSS


def test_set_mss_rescales_initial_window() -> None:
    cc = Cubic(1460)
    cc.set_mss(1448)
    assert cc.cwnd == 10 * 1448


def _grown(cc: Cubic, segments: int) -> Cubic:
    while cc.cwnd < segments * MSS:
        cc.on_ack(MSS, 0.1, 0.0)
    return cc


def test_hystart_ends_slow_start_when_a_queue_builds() -> None:
    """Delay detection: the smallest of a round's first 8 RTT samples 16 ms (the clamp
    of 100 ms / 8 = 12.5 ms is within 4..16) above the path's smallest ends slow start
    at the window it had; a round at the base RTT does not."""
    cc = _grown(Cubic(MSS), 20)
    t, una, nxt = 0.0, 0, 20 * MSS
    for _ in range(9):  # round 1 (starts with the first sample): the path's own RTT
        t += 0.005
        una += MSS
        assert not cc.on_rtt_sample(0.100, una, nxt, t)
    assert cc.in_slow_start
    nxt2 = nxt + 40 * MSS
    una = nxt + 1  # round 2: acks past round 1's end
    found = [cc.on_rtt_sample(0.1165, una + i * MSS, nxt2, 1.0 + i * 0.005) for i in range(9)]
    assert found == [False] * 8 + [True]
    assert not cc.in_slow_start and cc.ssthresh == cc.cwnd


def test_hystart_ends_slow_start_on_an_ack_train_of_half_the_rtt() -> None:
    """ACK-train detection: ACKs no more than 2 ms apart for over half the path's
    smallest RTT mean the window fills the path."""
    cc = _grown(Cubic(MSS), 20)
    t, una = 0.0, 0
    results = []
    for _ in range(40):  # 1 ms apart, RTT 61 ms: the train passes 30.5 ms at the 32nd
        t += 0.001
        una += MSS
        results.append(cc.on_rtt_sample(0.061, una, 100 * MSS, t))
    assert results.index(True) == 31 and results.count(True) == 1
    assert not cc.in_slow_start


def test_hystart_waits_for_16_segments_and_resets_after_a_timeout() -> None:
    cc = Cubic(MSS)  # 10 segments: too small a window to judge
    assert not any(cc.on_rtt_sample(0.2 + i, i * MSS, 10 * MSS, i * 0.001) for i in range(40))
    cc = _grown(Cubic(MSS), 20)
    assert any(cc.on_rtt_sample(0.060, i * MSS, 100 * MSS, i * 0.001) for i in range(40))
    cc.on_rto(20 * MSS, 5.0)
    assert cc.hystart_found is False and cc.round_end is None
