"""RFC 6298 RTO computation, exact values."""

import pytest

from stack.tcp.rtt import RttEstimator


def test_initial_rto_and_backoff() -> None:
    r = RttEstimator()
    assert r.srtt is None
    assert r.rto == 1.0
    seq = []
    for _ in range(8):
        r.on_timeout()
        seq.append(r.rto)
    assert seq == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0, 120.0]
    r.reset_backoff()
    assert r.rto == 1.0


def test_first_sample() -> None:
    r = RttEstimator()
    r.sample(0.1)
    assert r.srtt == pytest.approx(0.1)
    assert r.rttvar == pytest.approx(0.05)
    # 0.1 + 4 * 0.05 = 0.3
    assert r.rto == pytest.approx(0.3)


def test_second_sample_rfc6298_2_3() -> None:
    r = RttEstimator()
    r.sample(0.1)
    r.sample(0.2)
    # RTTVAR = 3/4*0.05 + 1/4*|0.1-0.2| = 0.0625 ; SRTT = 7/8*0.1 + 1/8*0.2 = 0.1125
    assert r.rttvar == pytest.approx(0.0625)
    assert r.srtt == pytest.approx(0.1125)
    assert r.rto == pytest.approx(0.1125 + 0.25)


def test_rto_min_like_linux() -> None:
    r = RttEstimator()
    for _ in range(50):
        r.sample(0.001)
    assert r.rto == 0.2
    r.on_timeout()
    assert r.rto == 0.4
    r.on_timeout()
    assert r.rto == 0.8


def test_granularity_floor() -> None:
    r = RttEstimator(rto_min=0.0001)
    for _ in range(200):
        r.sample(0.5)
    # RTTVAR decays to ~0, G = 1 ms keeps RTO above SRTT
    assert r.rto == pytest.approx(0.501, abs=1e-6)


def test_rto_max_cap_and_backed_off() -> None:
    r = RttEstimator()
    r.sample(40.0)
    assert r.rto == 120.0
    assert r.backed_off(0) == 120.0
    r2 = RttEstimator()
    assert r2.backed_off(3) == 8.0


def test_negative_sample_ignored_and_min_rtt() -> None:
    r = RttEstimator()
    r.sample(-1.0)
    assert r.srtt is None
    r.sample(0.3)
    r.sample(0.2)
    assert r.min_rtt == 0.2
    assert r.latest == 0.2


def test_bad_config() -> None:
    with pytest.raises(ValueError):
        RttEstimator(rto_min=0)
