"""TcpEngine tests that read like packet traces: hand-built segments in, exact
OutSegments, deadlines, events and counters out.

Conventions: we are 10.0.1.2:40000 (ISS 1000), the peer is 10.0.1.1:5000 (IRS 5000).
Most tests turn timestamps off and use a 65535-byte receive buffer (window scale 0)
so that windows and MSS read plainly; the option tests turn them on.
"""

from __future__ import annotations

from typing import Any

import pytest

from stack.tcp.engine import (
    Closed,
    Connected,
    DataReadable,
    OutSegment,
    PeerFinished,
    State,
    StateChanged,
    TcpConfig,
    TcpEngine,
    TcpError,
    WritableSpace,
)
from stack.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Mss,
    Nop,
    Sack,
    SackPermitted,
    TcpHeader,
    TcpOption,
    Timestamps,
    UnknownOption,
    WindowScale,
    emit,
    parse,
)

LOCAL = bytes([10, 0, 1, 2])
REMOTE = bytes([10, 0, 1, 1])
LP, RP = 40000, 5000
ISS, IRS = 1000, 5000
M = 0xFFFFFFFF


def cfg(**kw: Any) -> TcpConfig:
    base: dict[str, Any] = {"timestamps": False, "rcv_buf": 65535, "congestion": "reno"}
    base.update(kw)
    return TcpConfig(**base)


def seg(seq: int, ack: int | None = None, flags: int = ACK, window: int = 65535,
        options: list[TcpOption] | None = None) -> TcpHeader:
    """A segment from the peer to us."""
    return TcpHeader(RP, LP, seq & M, (ack or 0) & M, flags, window, options or [])


def one(out: list[OutSegment]) -> OutSegment:
    assert len(out) == 1, out
    return out[0]


def check(o: OutSegment, seq: int, ack: int | None, flags: int, window: int | None = None,
          payload: bytes | int | None = None, options: list[TcpOption] | None = None) -> None:
    h = o.hdr
    assert (h.src_port, h.dst_port) == (LP, RP)
    assert h.describe() == TcpHeader(0, 0, 0, 0, flags, 0).describe(), h.describe()
    assert h.flags == flags
    assert h.seq == seq & M, (h.seq, seq)
    if ack is not None:
        assert h.ack == ack & M, (h.ack, ack)
    if window is not None:
        assert h.window == window, (h.window, window)
    if isinstance(payload, int):
        assert len(o.payload) == payload
    elif payload is not None:
        assert bytes(o.payload) == payload
    if options is not None:
        assert h.options == options, h.options
    emit(h, o.payload)  # always serialisable


def events(e: TcpEngine) -> list[object]:
    out = []
    while (ev := e.poll_event()) is not None:
        out.append(ev)
    return out


def active(now: float = 0.0, **kw: Any) -> TcpEngine:
    e = TcpEngine(LOCAL, LP, REMOTE, RP, iss=ISS, now=now, config=cfg(**kw))
    e.connect(now)
    return e


def established(peer_opts: list[TcpOption] | None = None, peer_window: int = 65535,
                rtt: float = 0.1, **kw: Any) -> TcpEngine:
    """Active open through the handshake; SYN at t=0, SYN/ACK at t=rtt."""
    e = active(**kw)
    one(e.poll_transmit(0.0))
    if peer_opts is None:
        peer_opts = [Mss(1460), Nop(), Nop(), SackPermitted()]
    e.on_segment(seg(IRS, ISS + 1, SYN | ACK, peer_window, peer_opts), b"", rtt)
    one(e.poll_transmit(rtt))
    events(e)
    return e


# ----------------------------------------------------------------- handshakes
class TestHandshake:
    def test_active_open_syn_options_like_linux(self) -> None:
        e = TcpEngine(LOCAL, LP, REMOTE, RP, iss=ISS, now=2.0, config=TcpConfig(),
                      ts_offset=1000)
        e.connect(2.0)
        assert e.state is State.SYN_SENT
        syn = one(e.poll_transmit(2.0))
        check(syn, ISS, 0, SYN, window=65535, payload=b"",
              options=[Mss(1460), SackPermitted(), Timestamps(3000, 0), Nop(), WindowScale(7)])
        # same bytes as Linux's SYN option block
        raw = emit(syn.hdr)
        assert raw[20:] == bytes.fromhex("020405b4" "0402" "080a00000bb800000000" "01" "030307")
        assert e.poll_timeout() == 3.0
        assert events(e) == [StateChanged(State.CLOSED, State.SYN_SENT)]
        assert e.counters["ActiveOpens"] == 1

    def test_active_open_synack_then_ack(self) -> None:
        e = TcpEngine(LOCAL, LP, REMOTE, RP, iss=ISS, now=0.0, config=TcpConfig())
        e.connect(0.0)
        e.poll_transmit(0.0)
        events(e)
        e.on_segment(seg(IRS, ISS + 1, SYN | ACK, 65160,
                         [Mss(1400), SackPermitted(), Timestamps(777, 0), Nop(),
                          WindowScale(7)]), b"", 0.05)
        assert e.state is State.ESTABLISHED
        assert events(e) == [StateChanged(State.SYN_SENT, State.ESTABLISHED), Connected()]
        ack = one(e.poll_transmit(0.05))
        check(ack, ISS + 1, IRS + 1, ACK, payload=b"",
              options=[Nop(), Nop(), Timestamps(50, 777)])
        # our window scaled by our shift 7: 4 MiB >> 7
        assert ack.hdr.window == (4 << 20) >> 7
        assert e.mss == 1400 - 12
        assert e.snd_wnd == 65160  # SYN/ACK window is never scaled
        assert e.timestamps_enabled and e.sack_enabled and e.window_scaling_enabled
        assert e.srtt == pytest.approx(0.05)
        assert e.poll_timeout() is None

    def test_passive_open(self) -> None:
        syn = seg(IRS, None, SYN, 64240, [Mss(1460), SackPermitted(), Timestamps(100, 0),
                                          Nop(), WindowScale(7)])
        e = TcpEngine.accept_syn(syn, LOCAL, LP, REMOTE, RP, iss=ISS, now=1.0,
                                 config=TcpConfig(rcv_buf=1 << 20))
        assert e.state is State.SYN_RECEIVED
        sa = one(e.poll_transmit(1.0))
        check(sa, ISS, IRS + 1, SYN | ACK, window=65535,
              options=[Mss(1460), SackPermitted(), Timestamps(1000, 100), Nop(),
                       WindowScale(5)])
        assert e.poll_timeout() == 2.0
        e.on_segment(seg(IRS + 1, ISS + 1, ACK, 502, [Nop(), Nop(), Timestamps(130, 1000)]),
                     b"", 1.03)
        assert e.state is State.ESTABLISHED
        assert events(e) == [StateChanged(State.LISTEN, State.SYN_RECEIVED),
                             StateChanged(State.SYN_RECEIVED, State.ESTABLISHED), Connected()]
        assert e.snd_wnd == 502 << 7
        assert e.poll_timeout() is None
        assert e.poll_transmit(1.03) == []
        assert e.srtt == pytest.approx(0.03)

    def test_passive_open_without_options(self) -> None:
        e = TcpEngine.accept_syn(seg(IRS, None, SYN, 8192), LOCAL, LP, REMOTE, RP, iss=ISS,
                                 now=0.0, config=TcpConfig())
        sa = one(e.poll_transmit(0.0))
        check(sa, ISS, IRS + 1, SYN | ACK, window=65535, options=[Mss(1460)])
        assert e.mss == 536 and not e.sack_enabled and not e.window_scaling_enabled

    def test_retransmitted_syn_in_syn_received_resends_synack(self) -> None:
        e = TcpEngine.accept_syn(seg(IRS, None, SYN), LOCAL, LP, REMOTE, RP, iss=ISS, now=0.0,
                                 config=cfg())
        one(e.poll_transmit(0.0))
        e.on_segment(seg(IRS, None, SYN), b"", 0.5)
        check(one(e.poll_transmit(0.5)), ISS, IRS + 1, SYN | ACK)

    def test_bad_ack_in_syn_received_gets_rst(self) -> None:
        e = TcpEngine.accept_syn(seg(IRS, None, SYN), LOCAL, LP, REMOTE, RP, iss=ISS, now=0.0,
                                 config=cfg())
        e.poll_transmit(0.0)
        e.on_segment(seg(IRS + 1, 99999, ACK), b"", 0.1)
        check(one(e.poll_transmit(0.1)), 99999, 0, RST)
        assert e.state is State.SYN_RECEIVED

    def test_simultaneous_open(self) -> None:
        e = active()
        one(e.poll_transmit(0.0))
        e.on_segment(seg(IRS, None, SYN, 65535, [Mss(1460)]), b"", 0.1)
        assert e.state is State.SYN_RECEIVED
        check(one(e.poll_transmit(0.1)), ISS, IRS + 1, SYN | ACK, window=65535)
        e.on_segment(seg(IRS, ISS + 1, SYN | ACK, 65535, [Mss(1460)]), b"", 0.2)
        assert e.state is State.ESTABLISHED
        assert events(e) == [StateChanged(State.CLOSED, State.SYN_SENT),
                             StateChanged(State.SYN_SENT, State.SYN_RECEIVED),
                             StateChanged(State.SYN_RECEIVED, State.ESTABLISHED), Connected()]
        assert e.poll_transmit(0.2) == []
        assert e.snd_una.value == ISS + 1 and e.rcv_nxt.value == IRS + 1

    def test_syn_retransmission_deadlines_and_timeout(self) -> None:
        e = active()
        one(e.poll_transmit(0.0))
        deadlines = []
        while True:
            t = e.poll_timeout()
            if t is None:
                break
            deadlines.append(t)
            e.handle_timeout(t)
            out = e.poll_transmit(t)
            if e.state is State.CLOSED:
                assert out == []
                break
            check(one(out), ISS, 0, SYN)
        # Linux 6.18: the first 4 retries 1 s apart (tcp_syn_linear_timeouts), then
        # the RTO doubles
        assert deadlines == [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 11.0]
        assert Closed("timeout") in events(e)
        assert e.is_closed
        assert e.counters["TCPSynRetrans"] == 6

    def test_refused(self) -> None:
        e = active()
        e.poll_transmit(0.0)
        e.on_segment(seg(0, ISS + 1, RST | ACK, 0), b"", 0.1)
        assert e.state is State.CLOSED
        assert events(e)[-1] == Closed("refused")
        assert e.poll_transmit(0.1) == [] and e.is_closed

    def test_rst_in_syn_sent_must_ack_our_syn(self) -> None:
        e = active()
        e.poll_transmit(0.0)
        e.on_segment(seg(0, ISS + 7, RST | ACK, 0), b"", 0.1)   # bad ack: dropped
        e.on_segment(seg(0, None, RST, 0), b"", 0.1)           # no ack: dropped
        assert e.state is State.SYN_SENT
        assert e.poll_transmit(0.1) == []  # never an RST for an RST
        assert e.counters["Drop:bad-ack-syn-sent"] == 1

    def test_bad_ack_in_syn_sent_gets_rst(self) -> None:
        e = active()
        e.poll_transmit(0.0)
        e.on_segment(seg(IRS, 4242, SYN | ACK), b"", 0.1)
        check(one(e.poll_transmit(0.1)), 4242, 0, RST)
        assert e.state is State.SYN_SENT

    def test_icmp_unreachable_while_connecting(self) -> None:
        e = active()
        e.poll_transmit(0.0)
        e.on_icmp_error("host-unreachable")
        assert events(e)[-1] == Closed("unreachable", "host-unreachable")
        assert e.is_closed and e.poll_timeout() is None

    def test_icmp_is_soft_when_established(self) -> None:
        e = established()
        e.on_icmp_error("port-unreachable")
        assert e.state is State.ESTABLISHED


# ----------------------------------------------------------------- data & ACKs
class TestDataTransfer:
    def test_send_segments_and_ack(self) -> None:
        e = established(nagle=False)
        assert e.send(b"x" * 3000) == 3000
        out = e.poll_transmit(1.0)
        assert [len(o.payload) for o in out] == [1460, 1460, 80]
        check(out[0], ISS + 1, IRS + 1, ACK, window=65535)
        check(out[2], ISS + 1 + 2920, IRS + 1, ACK | PSH)
        assert e.poll_timeout() == pytest.approx(1.3)  # RTO = 0.1 + 4 * 0.05
        e.on_segment(seg(IRS + 1, ISS + 3001), b"", 1.1)
        assert e.send_buffered == 0
        assert e.poll_timeout() is None
        assert events(e) == [WritableSpace()]

    def test_receive_in_order_delayed_ack(self) -> None:
        e = established()
        e.on_segment(seg(IRS + 1, ISS + 1, ACK | PSH), b"hello", 1.0)
        assert events(e) == [DataReadable()]
        assert e.poll_transmit(1.0) == []          # delayed
        t = e.poll_timeout()
        assert t == pytest.approx(1.04)
        e.handle_timeout(t)
        check(one(e.poll_transmit(t)), ISS + 1, IRS + 6, ACK, window=65535 - 5)
        assert e.recv() == b"hello"
        assert e.poll_timeout() is None

    def test_ack_every_two_full_segments(self) -> None:
        e = established()
        e.on_segment(seg(IRS + 1, ISS + 1), b"a" * 1460, 1.0)
        assert e.poll_transmit(1.0) == []
        e.on_segment(seg(IRS + 1461, ISS + 1), b"b" * 1460, 1.001)
        check(one(e.poll_transmit(1.001)), ISS + 1, IRS + 2921, ACK)
        assert e.poll_timeout() is None
        assert events(e) == [DataReadable()]  # coalesced

    def test_super_packet_received_as_one_unit(self) -> None:
        e = established()
        data = bytes(range(256)) * 250  # 64000 bytes
        e.on_segment(seg(IRS + 1, ISS + 1), data, 1.0)
        ack = one(e.poll_transmit(1.0))
        check(ack, ISS + 1, IRS + 1 + 64000, ACK, window=1535)
        assert e.recv(1000) == data[:1000]
        assert e.poll_transmit(1.0) == []    # 1000 bytes: below the 2*MSS update threshold
        assert e.recv() == data[1000:]
        check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 64001, ACK, window=65535)

    def test_out_of_order_immediate_ack_with_sack_then_fill(self) -> None:
        e = established()
        e.on_segment(seg(IRS + 1461, ISS + 1), b"b" * 1460, 1.0)
        assert events(e) == []
        ack = one(e.poll_transmit(1.0))
        check(ack, ISS + 1, IRS + 1, ACK,
              options=[Nop(), Nop(), Sack(((IRS + 1461, IRS + 2921),))])
        e.on_segment(seg(IRS + 4381, ISS + 1), b"d" * 100, 1.01)
        ack = one(e.poll_transmit(1.01))
        assert ack.hdr.options[-1] == Sack(((IRS + 4381, IRS + 4481), (IRS + 1461, IRS + 2921)))
        e.on_segment(seg(IRS + 1, ISS + 1), b"a" * 1460, 1.02)
        check(one(e.poll_transmit(1.02)), ISS + 1, IRS + 2921, ACK,
              options=[Nop(), Nop(), Sack(((IRS + 4381, IRS + 4481),))])
        assert e.recv() == b"a" * 1460 + b"b" * 1460
        assert e.counters["TCPOFOQueue"] == 2

    def test_sack_blocks_limited_to_three_with_timestamps(self) -> None:
        e = established(peer_opts=[Mss(1460), SackPermitted(), Timestamps(10, 0)],
                        timestamps=True)
        for i in range(5):
            e.on_segment(seg(IRS + 1 + 200 * (2 * i + 1), ISS + 1, ACK,
                             options=[Nop(), Nop(), Timestamps(20 + i, 100)]), b"z" * 100, 1.0)
        ack = e.poll_transmit(1.0)[-1]
        sack = ack.hdr.options[-1]
        assert isinstance(sack, Sack) and len(sack.blocks) == 3
        assert sack.blocks[0] == (IRS + 1801, IRS + 1901)
        assert len(emit(ack.hdr)) == 60

    def test_trim_data_beyond_window(self) -> None:
        e = established(rcv_buf=4000)
        e.on_segment(seg(IRS + 1, ISS + 1), b"x" * 5000, 1.0)
        assert e.recv_buffered == 4000
        assert e.counters["TCPRcvTrimmed"] == 1
        check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 4001, ACK, window=0)

    def test_duplicate_data_is_acked(self) -> None:
        e = established()
        e.on_segment(seg(IRS + 1, ISS + 1), b"abc", 1.0)
        e.on_segment(seg(IRS + 1, ISS + 1), b"abc", 1.01)
        check(one(e.poll_transmit(1.01)), ISS + 1, IRS + 4, ACK)
        assert e.recv() == b"abc"

    def test_nagle_on(self) -> None:
        e = established()
        e.send(b"a" * 100)
        check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 1, ACK | PSH, payload=100)
        e.send(b"b" * 100)
        assert e.poll_transmit(1.0) == []   # small segment waits for the ACK
        e.send(b"c" * 1500)
        check(one(e.poll_transmit(1.0)), ISS + 101, IRS + 1, ACK, payload=1460)
        e.on_segment(seg(IRS + 1, ISS + 1561), b"", 1.1)
        check(one(e.poll_transmit(1.1)), ISS + 1561, IRS + 1, ACK | PSH, payload=140)

    def test_nagle_off(self) -> None:
        e = established(nagle=False)
        e.send(b"a" * 100)
        e.send(b"b" * 100)
        out = e.poll_transmit(1.0)
        check(one(out), ISS + 1, IRS + 1, ACK | PSH, payload=b"a" * 100 + b"b" * 100)
        e.send(b"c" * 10)
        check(one(e.poll_transmit(1.0)), ISS + 201, IRS + 1, ACK | PSH, payload=b"c" * 10)

    def test_send_buffer_limit_and_writable(self) -> None:
        e = established(snd_buf=3000, nagle=False)
        assert e.send(b"x" * 5000) == 3000
        assert e.send(b"y") == 0
        e.poll_transmit(1.0)
        e.on_segment(seg(IRS + 1, ISS + 1461), b"", 1.1)
        assert events(e) == [WritableSpace()]
        assert e.send(b"y" * 2000) == 1460

    def test_gso_super_packets(self) -> None:
        e = established(nagle=False, gso_segments=4)
        e.send(b"q" * 10000)
        out = e.poll_transmit(1.0)
        assert [(len(o.payload), o.gso_size) for o in out] == [(5840, 1460), (4160, 1460)]
        check(out[0], ISS + 1, IRS + 1, ACK)
        check(out[1], ISS + 5841, IRS + 1, ACK | PSH)

    def test_gso_respects_cwnd(self) -> None:
        e = established(nagle=False, gso_segments=44)
        e.send(b"q" * 100000)
        out = e.poll_transmit(1.0)
        assert [(len(o.payload), o.gso_size) for o in out] == [(14600, 1460)]  # IW10

    def test_window_scaling_applied_to_peer_window(self) -> None:
        e = established(peer_opts=[Mss(1460), Nop(), WindowScale(2)], rcv_buf=1 << 20)
        assert e.rcv_wscale == 5 and e.snd_wscale == 2
        e.on_segment(seg(IRS + 1, ISS + 1, ACK, 1000), b"", 1.0)
        assert e.snd_wnd == 4000
        e.on_segment(seg(IRS + 1, ISS + 1, ACK), b"x" * 100, 1.1)
        t = e.poll_timeout()
        assert t == pytest.approx(1.14)
        e.handle_timeout(t)
        ack = one(e.poll_transmit(t))
        # free space (1 MiB - 100) rounded up to the scale unit (Linux rounds up too)
        assert ack.hdr.window == ((1 << 20) - 100 + 31) >> 5

    def test_wraparound_of_sequence_space(self) -> None:
        e = TcpEngine(LOCAL, LP, REMOTE, RP, iss=M - 100, now=0.0, config=cfg(nagle=False))
        e.connect(0.0)
        e.poll_transmit(0.0)
        e.on_segment(seg(M - 50, M - 99, SYN | ACK, 65535, [Mss(1460)]), b"", 0.1)
        e.poll_transmit(0.1)
        e.send(b"w" * 1000)
        out = one(e.poll_transmit(0.2))
        assert out.hdr.seq == M - 99
        e.on_segment(seg(M - 49, (M - 99 + 1000) & M), b"r" * 1000, 0.3)
        assert e.snd_una.value == (M - 99 + 1000) & M
        assert e.rcv_nxt.value == (M - 49 + 1000) & M
        assert e.recv() == b"r" * 1000


# ----------------------------------------------------------------- closing
class TestClose:
    def test_active_close_time_wait(self) -> None:
        e = established()
        e.send(b"bye")
        e.close()
        assert e.state is State.FIN_WAIT_1
        check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 1, ACK | PSH | FIN, payload=b"bye")
        with pytest.raises(TcpError):
            e.send(b"more")
        with pytest.raises(ConnectionError):
            e.send(b"more")
        e.on_segment(seg(IRS + 1, ISS + 5), b"", 1.1)
        assert e.state is State.FIN_WAIT_2
        e.on_segment(seg(IRS + 1, ISS + 5, ACK | FIN), b"", 2.0)
        assert e.state is State.TIME_WAIT
        check(one(e.poll_transmit(2.0)), ISS + 5, IRS + 2, ACK)
        assert e.poll_timeout() == 62.0
        assert not e.is_closed
        # a retransmitted FIN is acked again and restarts the 2MSL wait
        e.on_segment(seg(IRS + 1, ISS + 5, ACK | FIN), b"", 30.0)
        check(one(e.poll_transmit(30.0)), ISS + 5, IRS + 2, ACK)
        assert e.poll_timeout() == 90.0
        e.handle_timeout(90.0)
        assert e.state is State.CLOSED and e.is_closed
        evs = events(e)
        assert PeerFinished() in evs
        assert evs.count(Closed(None)) == 1
        assert [ev.new for ev in evs if isinstance(ev, StateChanged)] == [
            State.FIN_WAIT_1, State.FIN_WAIT_2, State.TIME_WAIT, State.CLOSED]

    def test_passive_close(self) -> None:
        e = established()
        e.on_segment(seg(IRS + 1, ISS + 1, ACK | FIN), b"end", 1.0)
        assert e.state is State.CLOSE_WAIT
        assert events(e) == [DataReadable(), PeerFinished(),
                             StateChanged(State.ESTABLISHED, State.CLOSE_WAIT)]
        check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 5, ACK)
        assert e.recv() == b"end"
        e.send(b"reply")
        e.close()
        assert e.state is State.LAST_ACK
        check(one(e.poll_transmit(1.5)), ISS + 1, IRS + 5, ACK | PSH | FIN, payload=b"reply")
        e.on_segment(seg(IRS + 5, ISS + 7), b"", 1.6)
        assert e.state is State.CLOSED and e.is_closed
        assert events(e)[-1] == Closed(None)

    def test_simultaneous_close(self) -> None:
        e = established()
        e.close()
        check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 1, ACK | FIN)
        e.on_segment(seg(IRS + 1, ISS + 1, ACK | FIN), b"", 1.05)
        assert e.state is State.CLOSING
        check(one(e.poll_transmit(1.05)), ISS + 2, IRS + 2, ACK)
        e.on_segment(seg(IRS + 2, ISS + 2), b"", 1.1)
        assert e.state is State.TIME_WAIT
        assert e.poll_timeout() == pytest.approx(61.1)

    def test_fin_out_of_order_waits_for_data(self) -> None:
        e = established()
        e.on_segment(seg(IRS + 4, ISS + 1, ACK | FIN), b"def", 1.0)
        assert e.state is State.ESTABLISHED
        e.on_segment(seg(IRS + 1, ISS + 1), b"abc", 1.01)
        assert e.state is State.CLOSE_WAIT
        assert e.recv() == b"abcdef"
        check(e.poll_transmit(1.01)[-1], ISS + 1, IRS + 8, ACK)

    def test_fin_retransmitted_on_rto(self) -> None:
        e = established()
        e.close()
        one(e.poll_transmit(1.0))
        assert e.poll_timeout() == pytest.approx(1.3)
        e.handle_timeout(1.3)
        check(one(e.poll_transmit(1.3)), ISS + 1, IRS + 1, ACK | FIN)
        assert e.poll_timeout() == pytest.approx(1.9)

    def test_close_in_syn_sent(self) -> None:
        e = active()
        e.poll_transmit(0.0)
        e.close()
        assert e.is_closed and events(e)[-1] == Closed(None)

    def test_abort_sends_rst(self) -> None:
        e = established()
        e.send(b"pending")
        e.abort()
        check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 1, RST | ACK)
        assert events(e)[-1] == Closed("aborted")
        assert e.is_closed
        with pytest.raises(TcpError):
            e.send(b"x")

    def test_close_idempotent(self) -> None:
        e = established()
        e.close()
        e.close()
        assert len(e.poll_transmit(1.0)) == 1


# ----------------------------------------------------------------- RFC 5961
class TestRfc5961:
    def test_rst_exact_match_resets(self) -> None:
        e = established()
        e.on_segment(seg(IRS + 1, 0, RST, 0), b"", 1.0)
        assert e.state is State.CLOSED
        assert events(e)[-1] == Closed("reset")
        assert e.poll_transmit(1.0) == []
        assert e.counters["EstabResets"] == 1

    def test_rst_in_window_challenge_ack(self) -> None:
        e = established()
        e.on_segment(seg(IRS + 1000, 0, RST, 0), b"", 1.0)
        assert e.state is State.ESTABLISHED
        check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 1, ACK, payload=b"")
        assert e.counters["TCPChallengeACK"] == 1

    def test_rst_out_of_window_dropped(self) -> None:
        e = established()
        e.on_segment(seg(IRS + 1 + 70000, 0, RST, 0), b"", 1.0)
        e.on_segment(seg(IRS - 10, 0, RST, 0), b"", 1.0)
        assert e.state is State.ESTABLISHED
        assert e.poll_transmit(1.0) == []
        assert e.counters["Drop:rst-out-of-window"] == 2

    def test_syn_in_established_challenge_ack(self) -> None:
        e = established()
        e.on_segment(seg(IRS + 100, None, SYN), b"", 1.0)
        check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 1, ACK)
        assert e.state is State.ESTABLISHED
        assert e.counters["TCPSYNChallenge"] == 1

    def test_ack_beyond_snd_nxt_challenge(self) -> None:
        e = established()
        e.on_segment(seg(IRS + 1, ISS + 500), b"data", 1.0)
        check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 1, ACK)
        assert e.recv() == b""  # the segment was dropped
        assert e.counters["Drop:ack-unsent"] == 1

    def test_ack_too_old_dropped(self) -> None:
        e = established(peer_window=1000)
        e.on_segment(seg(IRS + 1, ISS + 1 - 5000), b"data", 1.0)
        assert e.recv() == b""
        assert e.counters["Drop:ack-too-old"] == 1
        assert e.poll_transmit(1.0) == []

    def test_challenge_ack_rate_limit(self) -> None:
        e = established()
        for _ in range(1005):
            e.on_segment(seg(IRS + 1000, 0, RST, 0), b"", 1.5)
        assert e.counters["TCPChallengeACK"] == 1000
        assert e.counters["TCPChallengeACKLimit"] == 5
        e.on_segment(seg(IRS + 1000, 0, RST, 0), b"", 2.0)
        assert e.counters["TCPChallengeACK"] == 1001

    def test_out_of_window_data_gets_ack(self) -> None:
        e = established()
        e.on_segment(seg(IRS + 1 + 100000, ISS + 1), b"x", 1.0)
        check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 1, ACK)
        assert e.counters["Drop:out-of-window"] == 1

    def test_paws(self) -> None:
        e = established(peer_opts=[Mss(1460), Timestamps(1000, 0)], timestamps=True)
        e.on_segment(seg(IRS + 1, ISS + 1, ACK, options=[Nop(), Nop(), Timestamps(2000, 100)]),
                     b"new", 1.0)
        e.on_segment(seg(IRS + 4, ISS + 1, ACK, options=[Nop(), Nop(), Timestamps(1500, 100)]),
                     b"old", 1.01)
        assert e.recv() == b"new"
        assert e.counters["Drop:paws"] == 1
        ack = one(e.poll_transmit(1.01))
        assert ack.hdr.options[-1] == Timestamps(1010, 2000)


# ----------------------------------------------------------------- timers
class TestTimers:
    def test_data_rto_backoff_with_measured_rtt(self) -> None:
        e = established(nagle=False)   # srtt 0.1, rttvar 0.05 -> RTO 0.3
        e.send(b"d" * 100)
        one(e.poll_transmit(1.0))
        deadlines = []
        for _ in range(4):
            t = e.poll_timeout()
            assert t is not None
            deadlines.append(round(t, 9))
            e.handle_timeout(t)
            check(one(e.poll_transmit(t)), ISS + 1, IRS + 1, ACK | PSH, payload=100)
        assert deadlines == [1.3, 1.9, 3.1, 5.5]
        assert e.counters["TCPTimeouts"] == 4 and e.counters["RetransSegs"] == 4
        assert e.cwnd == e.mss
        # an ACK for new data resets the backoff; Karn: no sample from the retransmission
        e.on_segment(seg(IRS + 1, ISS + 101), b"", 5.6)
        assert e.rto == pytest.approx(0.3)
        assert e.poll_timeout() is None

    def test_data_retries_exhausted(self) -> None:
        e = established(nagle=False, data_retries=3)
        e.send(b"d")
        e.poll_transmit(1.0)
        while e.state is not State.CLOSED:
            t = e.poll_timeout()
            assert t is not None
            e.handle_timeout(t)
            e.poll_transmit(t)
        assert events(e)[-1] == Closed("timeout")
        assert e.counters["TCPTimeouts"] == 3

    def test_zero_window_persist_probes_then_reopen(self) -> None:
        e = established(peer_window=1000)
        e.send(b"p" * 3000)
        check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 1, ACK, payload=1000)
        e.on_segment(seg(IRS + 1, ISS + 1001, ACK, 0), b"", 1.1)
        assert e.snd_wnd == 0
        assert e.poll_transmit(1.1) == []
        probes = []
        for _ in range(3):
            t = e.poll_timeout()
            assert t is not None
            probes.append(round(t, 9))
            e.handle_timeout(t)
            # Linux-style probe: SEG.SEQ = SND.UNA - 1, no data
            check(one(e.poll_transmit(t)), ISS + 1000, IRS + 1, ACK, payload=b"")
            e.on_segment(seg(IRS + 1, ISS + 1001, ACK, 0), b"", t + 0.1)  # still zero
            assert e.poll_transmit(t + 0.1) == []
        # the ACK at 1.1 gave a second 0.1 s sample: RTO = 0.1 + 4 * 0.0375 = 0.25
        assert probes == [1.35, 1.85, 2.85]
        assert e.counters["TCPWinProbe"] == 3
        e.on_segment(seg(IRS + 1, ISS + 1001, ACK, 5000), b"", 3.5)
        out = e.poll_transmit(3.5)
        assert [len(o.payload) for o in out] == [1460]  # the 540-byte tail waits (Nagle)
        check(out[0], ISS + 1001, IRS + 1, ACK)

    def test_zero_window_receiver_answers_probe(self) -> None:
        e = established(rcv_buf=2000)
        e.on_segment(seg(IRS + 1, ISS + 1), b"x" * 2000, 1.0)
        assert e.poll_transmit(1.0) == []  # < 2 full segments: delayed
        e.handle_timeout(1.05)
        check(one(e.poll_transmit(1.05)), ISS + 1, IRS + 2001, ACK, window=0)
        e.on_segment(seg(IRS + 2000, ISS + 1), b"", 2.0)  # probe, seq = rcv_nxt - 1
        check(one(e.poll_transmit(2.0)), ISS + 1, IRS + 2001, ACK, window=0)
        e.on_segment(seg(IRS + 2001, ISS + 1), b"y", 2.5)  # 1 byte probe into zero window
        check(one(e.poll_transmit(2.5)), ISS + 1, IRS + 2001, ACK, window=0)
        assert e.recv() == b"x" * 2000
        # reading opens the window: an update goes out at once
        check(one(e.poll_transmit(3.0)), ISS + 1, IRS + 2001, ACK, window=2000)

    def test_keepalive(self) -> None:
        e = established(keepalive_idle=10.0, keepalive_interval=2.0, keepalive_probes=3)
        assert e.poll_timeout() == pytest.approx(10.1)
        e.handle_timeout(10.1)
        check(one(e.poll_transmit(10.1)), ISS, IRS + 1, ACK, payload=b"")
        assert e.poll_timeout() == pytest.approx(12.1)
        e.on_segment(seg(IRS + 1, ISS + 1), b"", 12.0)  # answered: idle again
        assert e.poll_timeout() == pytest.approx(22.0)
        times = []
        for _ in range(3):
            t = e.poll_timeout()
            assert t is not None
            times.append(round(t, 9))
            e.handle_timeout(t)
            check(one(e.poll_transmit(t)), ISS, IRS + 1, ACK)
        t = e.poll_timeout()
        assert t is not None
        times.append(round(t, 9))
        e.handle_timeout(t)
        check(one(e.poll_transmit(t)), ISS + 1, IRS + 1, RST | ACK)
        assert times == [22.0, 24.0, 26.0, 28.0]
        assert events(e)[-1] == Closed("timeout")

    def test_time_wait_then_segments_dropped(self) -> None:
        e = established()
        e.close()
        e.poll_transmit(1.0)
        e.on_segment(seg(IRS + 1, ISS + 2, ACK | FIN), b"", 1.1)
        e.poll_transmit(1.1)
        e.handle_timeout(61.1)
        assert e.is_closed
        e.on_segment(seg(IRS + 2, ISS + 2), b"", 62.0)
        assert e.counters["Drop:closed"] == 1


# ----------------------------------------------------------------- loss recovery
class TestRecovery:
    def test_newreno_fast_retransmit_and_partial_ack(self) -> None:
        e = established(nagle=False, sack=False)
        e.send(b"n" * 7300)  # 5 segments
        assert len(e.poll_transmit(1.0)) == 5
        for i in range(3):
            e.on_segment(seg(IRS + 1, ISS + 1), b"", 1.1 + i * 0.001)
        out = e.poll_transmit(1.103)
        check(out[0], ISS + 1, IRS + 1, ACK, payload=1460)
        assert e.counters["TCPRenoRecovery"] == 1 and e.counters["TCPFastRetrans"] == 1
        assert e.ssthresh == 3650 and e.cwnd == 3650
        # partial ACK (segment 3 was lost too): retransmit it at once
        e.on_segment(seg(IRS + 1, ISS + 2921), b"", 1.2)
        out = e.poll_transmit(1.2)
        check(out[0], ISS + 2921, IRS + 1, ACK, payload=1460)
        e.on_segment(seg(IRS + 1, ISS + 7301), b"", 1.3)
        assert e.send_buffered == 0 and e.poll_timeout() is None

    def test_sack_recovery_resends_only_holes(self) -> None:
        e = established(nagle=False)
        e.send(b"s" * 8760)  # 6 segments
        assert len(e.poll_transmit(1.0)) == 6
        base = ISS + 1
        # segments 1 and 3 lost; 2, 4, 5, 6 SACKed
        blocks = ((base + 1460, base + 2920), (base + 4380, base + 8760))
        e.on_segment(seg(IRS + 1, base, ACK, options=[Nop(), Nop(), Sack(blocks)]), b"", 1.1)
        out = e.poll_transmit(1.1)
        assert [(o.hdr.seq - base, len(o.payload)) for o in out] == [(0, 1460), (2920, 1460)]
        assert e.counters["TCPSackRecovery"] == 1
        e.on_segment(seg(IRS + 1, base + 8760), b"", 1.2)
        assert e.poll_timeout() is None

    def test_rto_does_not_resend_sacked_data(self) -> None:
        e = established(nagle=False)
        e.send(b"s" * 4380)
        e.poll_transmit(1.0)
        base = ISS + 1
        e.on_segment(seg(IRS + 1, base, ACK, options=[Nop(), Nop(),
                                                       Sack(((base + 1460, base + 2920),))]),
                     b"", 1.1)
        assert e.poll_transmit(1.1) == []   # not enough SACKed for loss yet
        t = e.poll_timeout()
        assert t is not None
        e.handle_timeout(t)
        out = e.poll_transmit(t)
        check(one(out), base, IRS + 1, ACK, payload=1460)  # cwnd = 1 MSS
        e.on_segment(seg(IRS + 1, base + 2920, ACK), b"", t + 0.1)
        out = e.poll_transmit(t + 0.1)
        assert [(o.hdr.seq - base, len(o.payload)) for o in out] == [(2920, 1460)]


# ----------------------------------------------------------------- ULP hooks
class FakeUlp:
    def __init__(self, accept: bool = True, reserve: int = 0, limit: int = 1 << 30,
                 space: int | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.accept = accept
        self.reserve = reserve
        self.limit = limit
        self.space = space

    def option_reserve(self) -> int:
        return self.reserve

    def segment_limit(self, seq: int) -> int:
        return self.limit - (seq - 1) % self.limit

    def rcv_space(self) -> int | None:
        return self.space

    def syn_options(self, remaining: int) -> list[TcpOption]:
        self.calls.append(("syn", remaining))
        return [UnknownOption(30, b"\x01\x81")]

    def synack_options(self, remaining: int) -> list[TcpOption]:
        self.calls.append(("synack", remaining))
        return []

    def established_options(self, seq: int, payload_len: int, fin: bool,
                            remaining: int) -> list[TcpOption]:
        self.calls.append(("est", payload_len, fin, remaining))
        self.seqs = [*getattr(self, "seqs", []), seq]
        return [UnknownOption(30, b"\x20\x01")]

    def on_options(self, hdr: TcpHeader, payload_len: int) -> bool:
        self.calls.append(("rx", payload_len))
        return self.accept


class TestUlp:
    def test_hooks_called_with_remaining_space(self) -> None:
        u = FakeUlp()
        e = TcpEngine(LOCAL, LP, REMOTE, RP, iss=ISS, now=0.0, config=TcpConfig(), ulp=u)
        e.connect(0.0)
        syn = one(e.poll_transmit(0.0))
        assert syn.hdr.options[-1] == UnknownOption(30, b"\x01\x81")
        assert u.calls == [("syn", 20)]
        e.on_segment(seg(IRS, ISS + 1, SYN | ACK, 65535,
                         [Mss(1460), SackPermitted(), Timestamps(5, 0), Nop(), WindowScale(7)]),
                     b"", 0.1)
        ack = one(e.poll_transmit(0.1))
        assert ack.hdr.options[-1] == UnknownOption(30, b"\x20\x01")
        assert u.calls[1:] == [("rx", 0), ("est", 0, False, 28)]
        _hdr, off = parse(emit(ack.hdr))
        assert off == 20 + 12 + 4

    def test_on_options_false_drops(self) -> None:
        u = FakeUlp()
        e = TcpEngine(LOCAL, LP, REMOTE, RP, iss=ISS, now=0.0, config=cfg(), ulp=u)
        e.connect(0.0)
        e.poll_transmit(0.0)
        e.on_segment(seg(IRS, ISS + 1, SYN | ACK, 65535, [Mss(1460)]), b"", 0.1)
        e.poll_transmit(0.1)
        u.accept = False
        e.on_segment(seg(IRS + 1, ISS + 1), b"data", 0.2)
        assert e.recv() == b"" and e.counters["Drop:ulp"] == 1


    def test_reserve_limit_and_space_shape_segments_and_window(self) -> None:
        # MPTCP's needs: room for a DSS on full segments, no segment across a mapping
        # boundary (every 1000 bytes here), and the window from the shared space.
        u = FakeUlp(reserve=28, limit=1000, space=200_000)
        e = TcpEngine(LOCAL, LP, REMOTE, RP, iss=ISS, now=0.0,
                      config=TcpConfig(nagle=False), ulp=u)
        e.connect(0.0)
        e.poll_transmit(0.0)
        e.on_segment(seg(IRS, ISS + 1, SYN | ACK, 65535,
                         [Mss(1460), SackPermitted(), Timestamps(5, 0), Nop(), WindowScale(7)]),
                     b"", 0.1)
        assert e.mss == 1460 - 12 - 28
        e.poll_transmit(0.1)
        u.seqs = []
        e.send(bytes(2500))
        segs = e.poll_transmit(0.1)
        assert [len(s.payload) for s in segs] == [1000, 1000, 500]
        assert u.seqs == [1, 1001, 2001]  # relative subflow sequence numbers
        assert segs[0].hdr.window == (200_000 + 127) >> 7


def test_caller_misuse_raises() -> None:
    e = active()
    with pytest.raises(TcpError):
        e.connect(0.0)
    with pytest.raises(ValueError):
        TcpEngine.accept_syn(seg(IRS, 1, ACK), LOCAL, LP, REMOTE, RP, iss=1, now=0.0)
    fresh = TcpEngine(LOCAL, LP, REMOTE, RP, iss=ISS, now=0.0)
    with pytest.raises(TcpError):
        fresh.send(b"x")


def test_garbage_never_raises() -> None:
    import random
    rng = random.Random(7)
    e = established()
    for _ in range(3000):
        flags = rng.choice([ACK, ACK | PSH, ACK | FIN, RST, SYN, SYN | ACK, FIN, 0, RST | ACK])
        opts: list[TcpOption] = rng.choice([[], [Nop(), Nop(), Timestamps(rng.getrandbits(32), 0)],
                                            [Nop(), Nop(), Sack(((rng.getrandbits(32),
                                                                  rng.getrandbits(32)),))]])
        e.on_segment(seg(rng.getrandbits(32) if rng.random() < 0.5
                         else IRS + 1 + rng.randrange(-9, 9),
                         rng.getrandbits(32) if rng.random() < 0.5 else ISS + 1,
                         flags, rng.randrange(65536), opts),
                     rng.randbytes(rng.randrange(0, 50)), 1.0 + rng.random())
        e.poll_transmit(2.0)
        t = e.poll_timeout()
        if t is not None:
            e.handle_timeout(t)
