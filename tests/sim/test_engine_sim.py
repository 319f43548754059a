"""Two TcpEngines over an impaired in-memory link (tests/sim/link.py), virtual clock.

Every segment crosses `stack.wire.tcp.emit`/`parse`. The impairments are seeded, so
each run is exactly repeatable; the assertions are on delivered bytes, clean closes
and the counters that prove the intended machinery ran (SACK recovery, NewReno,
timeouts, GSO).
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from stack.tcp.engine import Closed, State, TcpConfig, TcpEngine
from tests.sim.link import Link
from tests.sim.net import LinkProfile

A = bytes([10, 0, 1, 2])
B = bytes([10, 0, 1, 1])
FAST = LinkProfile(delay=0.01, rate_bps=100e6)    # 100 Mbit/s, 10 ms one way
GIGABIT = LinkProfile(delay=0.01, rate_bps=1e9)


class App:
    """Sends `data` as fast as the engine takes it, then closes; reads everything."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.sent = 0
        self.got = bytearray()
        self.closed_sent = False
        self.events: list[object] = []

    def pump(self, e: TcpEngine | None, now: float) -> None:
        if e is None:
            return
        while (ev := e.poll_event()) is not None:
            self.events.append(ev)
        st = e.state
        if st in (State.ESTABLISHED, State.CLOSE_WAIT, State.SYN_RECEIVED, State.SYN_SENT):
            if self.sent < len(self.data):
                self.sent += e.send(self.data[self.sent:self.sent + (1 << 20)])
            if self.sent == len(self.data) and not self.closed_sent:
                e.close()
                self.closed_sent = True
        if e.recv_buffered:
            self.got += e.recv()


def run_pair(cfg_a: TcpConfig, cfg_b: TcpConfig, data_a: bytes, data_b: bytes, *,
             seed: int, ab: LinkProfile, ba: LinkProfile,
             slow_reader: bool = False) -> tuple[Link, App, App, float]:
    client = TcpEngine(A, 40000, B, 5000, iss=0xFFFF0000, now=0.0, config=cfg_a,
                       ts_offset=123456)
    link = Link(client, None, seed=seed, ab=ab, ba=ba)

    def on_syn(hdr: Any, payload: Any, now: float) -> TcpEngine:
        return TcpEngine.accept_syn(hdr, B, 5000, A, 40000, iss=0x7FFFFF00, now=now,
                                    config=cfg_b, ts_offset=99)

    link.on_syn = on_syn
    client.connect(0.0)
    app_a, app_b = App(data_a), App(data_b)
    rng = random.Random(seed)

    def pump() -> bool:
        app_a.pump(link.eng[0], link.now)
        if slow_reader and rng.random() < 0.7:
            e = link.eng[1]
            if e is not None:
                while (ev := e.poll_event()) is not None:
                    app_b.events.append(ev)
            return False
        app_b.pump(link.eng[1], link.now)
        return False

    t0 = time.perf_counter()
    link.run(cond=pump)
    pump()
    return link, app_a, app_b, time.perf_counter() - t0


def assert_clean(link: Link, app_a: App, app_b: App, data_a: bytes, data_b: bytes) -> None:
    assert bytes(app_b.got) == data_a
    assert bytes(app_a.got) == data_b
    a, b = link.eng
    assert a is not None and b is not None
    assert a.is_closed and b.is_closed, (a.state, b.state)
    assert Closed(None) in app_a.events and Closed(None) in app_b.events


def lossy(loss: float = 0.05, **kw: Any) -> LinkProfile:
    base: dict[str, Any] = {"loss": loss, "reorder": 0.05, "reorder_delay": 0.015,
                            "duplicate": 0.01, "delay": 0.01, "rate_bps": 100e6}
    base.update(kw)
    return LinkProfile(**base)


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_clean_link_both_directions() -> None:
    da, db = blob(1_000_000, 1), blob(700_000, 2)
    link, aa, ab, _secs = run_pair(TcpConfig(), TcpConfig(), da, db, seed=1,
                                  ab=FAST, ba=FAST)
    assert_clean(link, aa, ab, da, db)
    a, b = link.eng
    assert a is not None and b is not None
    assert a.counters["RetransSegs"] == 0 and b.counters["RetransSegs"] == 0
    assert a.counters["TCPTimeouts"] == 0


@pytest.mark.parametrize("sack,cc", [(True, "cubic"), (False, "reno")], ids=["sack-cubic",
                                                                             "newreno"])
def test_10mb_5pct_loss_reordering_both_directions(sack: bool, cc: str) -> None:
    da, db = blob(10_000_000, 3), blob(10_000_000, 4)
    ca = TcpConfig(sack=sack, congestion=cc)
    cb = TcpConfig(sack=sack, congestion=cc)
    link, aa, ab, secs = run_pair(ca, cb, da, db, seed=11, ab=lossy(), ba=lossy())
    assert_clean(link, aa, ab, da, db)
    a, b = link.eng
    assert a is not None and b is not None
    if sack:
        assert a.counters["TCPSackRecovery"] > 50 and b.counters["TCPSackRecovery"] > 50
        assert a.counters["TCPRenoRecovery"] == 0
    else:
        assert a.counters["TCPRenoRecovery"] > 50 and b.counters["TCPRenoRecovery"] > 50
        assert a.counters["TCPSackRecovery"] == 0
    assert a.counters["TCPFastRetrans"] > 100
    print(f"\n10 MB each way, sack={sack}: {secs:.2f} s CPU, {link.now:.1f} s virtual, "
          f"retrans a={a.counters['RetransSegs']} b={b.counters['RetransSegs']}, "
          f"timeouts a={a.counters['TCPTimeouts']} b={b.counters['TCPTimeouts']}")


def test_gso_sender_with_loss() -> None:
    da, db = blob(10_000_000, 5), blob(100_000, 6)
    ca = TcpConfig(gso_segments=16)
    link, aa, ab, secs = run_pair(ca, TcpConfig(), da, db, seed=5, ab=lossy(0.02),
                                  ba=lossy(0.02))
    assert_clean(link, aa, ab, da, db)
    a = link.eng[0]
    assert a is not None
    # super-packets were emitted and cut by the link: more wire segments than OutSegs
    assert link.sent[0] > a.counters["OutSegs"] * 1.5
    print(f"\nGSO 10 MB: {secs:.2f} s CPU, {link.now:.1f} s virtual")


def test_gso_both_sides_clean_fast() -> None:
    da, db = blob(10_000_000, 7), blob(10_000_000, 8)
    c = TcpConfig(gso_segments=44)
    link, aa, ab, _secs = run_pair(c, c, da, db, seed=7, ab=GIGABIT, ba=GIGABIT)
    assert_clean(link, aa, ab, da, db)


def test_no_options_small_window() -> None:
    """No timestamps, no window scaling, no SACK: 64 KB windows, MSS 1460."""
    c = TcpConfig(timestamps=False, window_scaling=False, sack=False, rcv_buf=65535)
    da, db = blob(2_000_000, 9), blob(2_000_000, 10)
    link, aa, ab, _secs = run_pair(c, c, da, db, seed=9, ab=lossy(0.02), ba=lossy(0.02))
    assert_clean(link, aa, ab, da, db)
    a = link.eng[0]
    assert a is not None and not a.window_scaling_enabled and a.mss == 1460


def test_slow_reader_zero_window() -> None:
    """A receiver that often does not read: the window closes, the sender probes."""
    c_b = TcpConfig(rcv_buf=32768)
    da = blob(1_000_000, 11)
    link, aa, ab, _secs = run_pair(TcpConfig(), c_b, da, b"", seed=12,
                                  ab=LinkProfile(delay=0.01), ba=LinkProfile(delay=0.01),
                                  slow_reader=True)
    assert_clean(link, aa, ab, da, b"")


def test_simultaneous_open_and_close() -> None:
    a = TcpEngine(A, 40000, B, 5000, iss=100, now=0.0, config=TcpConfig())
    b = TcpEngine(B, 5000, A, 40000, iss=900, now=0.0, config=TcpConfig())
    link = Link(a, b, seed=3)
    a.connect(0.0)
    b.connect(0.0)
    link.run(cond=lambda: a.state is State.ESTABLISHED and b.state is State.ESTABLISHED)
    assert a.counters["TCPSimultaneousOpen"] == 1 and b.counters["TCPSimultaneousOpen"] == 1
    a.send(b"ping")
    b.send(b"pong")
    a.close()
    b.close()
    link.run()
    assert a.recv() == b"pong" and b.recv() == b"ping"
    assert a.is_closed and b.is_closed
    # both FINs crossed: both went through CLOSING
    assert a.counters["Drop:closed"] == 0


def test_reset_peer_mid_transfer() -> None:
    da = blob(1_000_000, 13)
    client = TcpEngine(A, 40000, B, 5000, iss=1, now=0.0, config=TcpConfig())
    link = Link(client, None, seed=2, ab=FAST, ba=FAST)
    link.on_syn = lambda h, p, now: TcpEngine.accept_syn(h, B, 5000, A, 40000, iss=2, now=now)
    client.connect(0.0)
    client.send(da)
    link.run(until=0.2)
    server = link.eng[1]
    assert server is not None and server.recv_buffered > 0
    server.abort()
    link.run()
    assert client.is_closed
    evs = []
    while (ev := client.poll_event()) is not None:
        evs.append(ev)
    assert evs[-1] == Closed("reset")


def test_deterministic_replay() -> None:
    da = blob(300_000, 21)
    r1 = run_pair(TcpConfig(), TcpConfig(), da, da, seed=99, ab=lossy(), ba=lossy())
    r2 = run_pair(TcpConfig(), TcpConfig(), da, da, seed=99, ab=lossy(), ba=lossy())
    assert r1[0].now == r2[0].now
    assert r1[0].sent == r2[0].sent
    e1, e2 = r1[0].eng[0], r2[0].eng[0]
    assert e1 is not None and e2 is not None and e1.counters == e2.counters
