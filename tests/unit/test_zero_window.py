"""Zero windows (issue 9): the sender keeps asking a peer whose window is closed, with
backoff, for plain TCP and for MPTCP, and says since when the window is closed.

- TCP (RFC 9293 3.8.6.1; Linux `tcp_probe_timer`): with data queued, nothing in flight
  and a zero window, the persist timer sends a probe (SEG.SEQ = SND.UNA - 1, no data)
  RTO after the window closed, then after 2, 4, 8 ... RTOs (TCPWinProbe each). A
  persist expiry on a small non-zero window sends what fits; that data is then in
  flight and its RTO, not the persist timer, runs (one timer in Linux).
- MPTCP (Linux `mptcp_sendmsg_frag`, "Zero window and all data acked? Probe."): when
  the data-level window leaves no room, everything is data-acked and a subflow has
  nothing queued, one byte goes on it as a mapping of its own at data offset
  snd_una - 1 (the last byte acked, the real byte: its DSS checksum holds); that
  subflow's persist timer probes, and the byte itself goes once its window opens.
- `TcpEngine.peer_zero_window_since` / `MptcpConnection.data_window_zero_since`: the
  `now` the window closed (TCP: the advertised window became 0; MPTCP: no room for
  the data we have to send), None while open.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
from pathlib import Path

from stack.host import Accepted, Stack, StackConfig, ip
from stack.mptcp import crypto
from stack.mptcp.connection import MptcpConfig
from stack.tcp.engine import Closed, TcpConfig
from stack.wire.mptcp import Dss
from stack.wire.tcp import ACK, PSH
from tests.sim.apps import Side
from tests.sim.net import LinkProfile, SimNet
from tests.unit.mptcp_trace import Trace
from tests.unit.test_engine import IRS, ISS, check, established, events, one, seg
from tools.sink import Sink

KEY_US = 0x9A3C51E207B4D86F
KEY_PEER = 0x2B7E151628AED2A6


# ==== TCP: the persist timer ==============================================================

def test_tcp_probes_rto_after_the_window_closed_then_backing_off() -> None:
    e = established(peer_window=1000)  # RTO 0.3 after the handshake's 0.1 s sample
    e.send(b"p" * 3000)
    check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 1, ACK, payload=1000)
    assert e.peer_zero_window_since is None
    e.on_segment(seg(IRS + 1, ISS + 1001, ACK, 0), b"", 1.1)  # RTO now 0.25
    assert e.peer_zero_window_since == 1.1
    assert e.poll_transmit(1.1) == []
    probes = []
    for _ in range(4):
        t = e.poll_timeout()
        assert t is not None
        probes.append(round(t, 9))
        e.handle_timeout(t)
        check(one(e.poll_transmit(t)), ISS + 1000, IRS + 1, ACK, payload=b"")
        # still zero: the since stays the first closing segment's
        e.on_segment(seg(IRS + 1, ISS + 1001, ACK, 0), b"", t + 0.01)
        assert e.poll_transmit(t + 0.01) == []
        assert e.peer_zero_window_since == 1.1
    assert probes == [1.35, 1.85, 2.85, 4.85]
    assert e.counters["TCPWinProbe"] == 4
    e.on_segment(seg(IRS + 1, ISS + 1001, ACK, 2000), b"", 5.0)
    assert e.peer_zero_window_since is None
    check(e.poll_transmit(5.0)[0], ISS + 1001, IRS + 1, ACK, payload=1460)


def test_tcp_a_peer_answering_no_probe_is_given_up_one_answering_is_probed_on() -> None:
    """Linux `tcp_probe_timer`: tcp_retries2 (15) probes unanswered and the connection
    is aborted (before: probed for ever, one every 120 s); a peer that answers each
    probe with a zero window is alive and is probed on."""
    for answers in (False, True):
        e = established(peer_window=1000)
        e.send(b"p" * 3000)
        e.poll_transmit(1.0)
        e.on_segment(seg(IRS + 1, ISS + 1001, ACK, 0), b"", 1.1)
        assert e.poll_transmit(1.1) == []
        n = 0
        while not e.is_closed and n < 30:
            t = e.poll_timeout()
            assert t is not None
            e.handle_timeout(t)
            e.poll_transmit(t)
            if answers:
                e.on_segment(seg(IRS + 1, ISS + 1001, ACK, 0), b"", t + 0.01)
            n += 1
        if answers:
            assert not e.is_closed and e.counters["TCPWinProbe"] == 30
        else:
            assert e.is_closed and Closed("timeout") in events(e)
            assert e.counters["TCPWinProbe"] == 15 and e.counters["TCPAbortOnTimeout"] == 1


def test_tcp_small_window_then_zero_window_probes_rto_after_the_close() -> None:
    """As the kernel did to us: a small window (sender SWS avoidance holds the data;
    the persist expiry sends what fits), then the ACK of that closes the window. The
    first probe is due one RTO after the close: the small-window expiry's timer and
    backoff must not carry over (before the fix: the first probe came 2 RTOs after
    the small-window expiry instead)."""
    e = established(peer_window=1000, nagle=False)
    e.send(b"q" * 5000)
    check(one(e.poll_transmit(1.0)), ISS + 1, IRS + 1, ACK, payload=1000)
    e.on_segment(seg(IRS + 1, ISS + 1001, ACK, 300), b"", 1.1)  # RTO 0.25
    assert e.poll_transmit(1.1) == []  # 300 < half the largest window: SWS avoidance
    t = e.poll_timeout()
    assert t is not None and round(t, 9) == 1.35
    e.handle_timeout(t)
    check(one(e.poll_transmit(t)), ISS + 1001, IRS + 1, ACK, payload=300)
    assert e.counters["TCPWinProbe"] == 0  # data, not a probe
    # in flight: the RTO runs, not the persist timer
    assert e.poll_timeout() == t + e.rto
    e.on_segment(seg(IRS + 1, ISS + 1301, ACK, 0), b"", 1.45)
    assert e.peer_zero_window_since == 1.45
    assert e.poll_transmit(1.45) == []
    rto = e.rto  # the 0.1 s sample: 0.1 + 4 * 0.028125
    probes = []
    for _ in range(3):
        t = e.poll_timeout()
        assert t is not None
        probes.append(t)
        e.handle_timeout(t)
        check(one(e.poll_transmit(t)), ISS + 1300, IRS + 1, ACK, payload=b"")
    want, at = [], 1.45
    for k in range(3):
        at = at + rto * (1 << k)
        want.append(at)
    assert probes == want
    assert e.counters["TCPWinProbe"] == 3


def test_tcp_zero_window_since_only_for_a_zero_window() -> None:
    e = established(peer_window=1000)
    e.on_segment(seg(IRS + 1, ISS + 1, ACK, 10), b"", 1.0)
    assert e.peer_zero_window_since is None
    e.on_segment(seg(IRS + 1, ISS + 1, ACK, 0), b"", 2.0)
    e.on_segment(seg(IRS + 1, ISS + 1, ACK, 0), b"", 3.0)
    assert e.peer_zero_window_since == 2.0
    assert e.poll_timeout() is None  # nothing to send: nothing to probe
    e.on_segment(seg(IRS + 1, ISS + 1, ACK, 1), b"", 4.0)
    assert e.peer_zero_window_since is None


def test_tcp_a_window_shut_on_data_in_flight_is_probed_by_the_rto_without_counting() -> None:
    """Linux `tcp_retransmit_timer` ("Receiver dastardly shrinks window"): the peer
    dropped our data in flight and answers with a zero window (a kernel whose receive
    memory ran out does). Each RTO resends the head as a probe, backing off, but is no
    retransmission timeout: `rto_retries` stays 0 (MPTCP's stale rule reads it) and
    data_retries does not end the connection while the peer answers; rto_max of
    silence does."""
    for answers in (True, False):
        e = established(peer_window=8000, data_retries=3, rto_max=20.0)
        e.send(b"w" * 4000)
        e.poll_transmit(1.0)
        e.on_segment(seg(IRS + 1, ISS + 1, ACK, 0), b"", 1.05)  # window shut, 4000 out
        t = 1.05
        for _ in range(8):
            nxt = e.poll_timeout()
            assert nxt is not None
            t = nxt
            e.handle_timeout(t)
            if e.is_closed:
                break
            out = e.poll_transmit(t)
            check(out[0], ISS + 1, IRS + 1, ACK, payload=1460)  # the head again
            if answers:
                e.on_segment(seg(IRS + 1, ISS + 1, ACK, 0), b"", t + 0.01)
            assert e.rto_retries == 0 and e.counters["TCPTimeouts"] == 0
        if answers:
            assert not e.is_closed and t > 20  # 8 probes, backed off, and on
            assert e.rcv_tstamp == t + 0.01
        else:
            assert e.is_closed and e.counters["TCPAbortOnTimeout"] == 1
            assert t - 1.05 > 20  # rto_max after the last thing heard


# ==== MPTCP: the data-level window probe (packet traces) ==================================

def _dss(t: Trace, off: int, ssn: int, data: bytes, csum: bool) -> Dss:
    """Our mapping of `data` at data offset `off`, subflow byte `ssn`."""
    return Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(off), dsn64=True,
               ssn=ssn, data_len=len(data),
               checksum=crypto.dss_checksum(t.our_dsn(off), ssn, len(data), data)
               if csum else None)


def _zero_window_after_100_bytes(csum: bool) -> tuple[Trace, bytes]:
    """Our stack sent 100 bytes; the peer acks them (TCP and data level) with a zero
    window at T0 + 0.05, and the application writes 50 more bytes."""
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, csum=csum)
    first = bytes(range(100))
    t.app_send(first)
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload=first, mptcp=[_dss(t, 0, 1, first, csum)])
    t.advance(0.05)
    t.send(t.sf, window=0, mptcp=[t.data_ack(100)])
    t.recv_nothing()
    assert t.msk.data_window_zero_since is None  # nothing to send yet
    return t, first


def test_mptcp_zero_window_maps_one_acked_byte_and_the_subflow_probes_with_backoff() -> None:
    for csum in (False, True):
        t, first = _zero_window_after_100_bytes(csum)
        closed_at = t.now
        t.app_send(b"n" * 50)
        # the byte is mapped on the subflow, whose window is zero too: nothing goes yet
        t.recv_nothing()
        assert t.msk.data_window_zero_since == closed_at
        assert t.msk.master.engine.peer_zero_window_since == closed_at
        rto = t.msk.master.engine.rto
        probes = []
        for _ in range(4):
            probes.append(t.fire())
            # the subflow's zero-window probe: SND.UNA - 1, no data, the data ACK
            t.recv(t.sf, flags=ACK, seq=100, payload_len=0, mptcp=[t.our_data_ack()])
            t.recv_nothing()
            t.send(t.sf, window=0, mptcp=[t.data_ack(100)])  # still closed
            t.recv_nothing()
        want, at = [], closed_at
        for k in range(4):
            at = at + rto * (1 << k)
            want.append(at)
        assert probes == want, (probes, want)
        # TCP probes the subflow (TCPWinProbe); one byte mapped (MPTcpExt WinProbe)
        assert (t.counter("TCPWinProbe"), t.counter("WinProbe")) == (4, 1)
        assert t.msk.data_window_zero_since == closed_at
        # the window opens: the probe byte first (the last byte acked, data offset 99,
        # its own mapping; the peer drops it as old data), then the new data
        t.send(t.sf, window=1, mptcp=[t.data_ack(100)])
        t.recv(t.sf, flags=ACK, seq=101, payload=first[99:],
               mptcp=[_dss(t, 99, 101, first[99:], csum)])
        t.recv(t.sf, flags=ACK | PSH, seq=102, payload=b"n" * 50,
               mptcp=[_dss(t, 100, 102, b"n" * 50, csum)])
        t.recv_nothing()
        assert t.msk.data_window_zero_since is None
        assert t.msk.master.engine.peer_zero_window_since is None
        t.send(t.sf, mptcp=[t.data_ack(150)])
        t.recv_nothing()
        assert t.deadline() is None


def test_mptcp_probe_byte_on_a_subflow_with_an_open_window_waits_an_rto_then_backs_off() -> None:
    """The data-level window is closed, but the probe goes on a join whose TCP window
    is still open (nothing told it otherwise): the byte leaves one RTO of that subflow
    later, as TCP's persist timer would send it (a window update, when the peer's
    application reads, usually comes first; each probe is a DuplicateData there). The peer
    TCP-acks it with a zero window, data level unchanged: the next probe byte is not
    mapped at once (no probe per round trip) but one RTO of that subflow later; that
    one waits in the join's now zero window, whose persist timer probes."""
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, rtt=0.2)
    first = bytes(range(100))
    t.app_send(first)
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload=first, mptcp=[_dss(t, 0, 1, first, False)])
    t.advance(0.2)
    t.send(t.sf, window=0, mptcp=[t.data_ack(100)])
    j = t.join(addr_id=1, rtt=0.05)
    t.recv(j, seq=1, ack=1, payload_len=0, mptcp=[t.our_data_ack()])  # the 4th ACK
    t.recv_nothing()
    t.app_send(b"n" * 50)
    t.recv_nothing()
    shut = t.now
    # the idle subflow with the lowest RTT: the join, its window open
    assert t.fire() == shut + t.msk.subflows[1].engine.rto
    first_probe = t.recv(j, flags=ACK | PSH, seq=1, payload=first[99:],
                         mptcp=[_dss(t, 99, 1, first[99:], False)]).time
    t.recv_nothing()
    t.advance(0.05)
    t.send(j, window=0, mptcp=[t.data_ack(100)])
    t.recv_nothing()  # no new probe byte at once
    rto_j = t.msk.subflows[1].engine.rto
    assert t.deadline() == first_probe + rto_j
    t.fire()
    t.recv_nothing()  # mapped, but the join's window is zero now: its persist timer
    mapped_at = t.now
    assert t.fire() == mapped_at + rto_j
    t.recv(j, flags=ACK, seq=1, payload_len=0, mptcp=[t.our_data_ack()])
    assert (t.counter("TCPWinProbe"), t.counter("WinProbe")) == (1, 2)
    t.recv_nothing()
    assert t.msk.subflows[0].engine.send_buffered == 0  # nothing on the master


# ==== simulations: a receiver that stops reading, its window update lost ==================

A, B = ip("10.0.1.2"), ip("10.0.1.1")


def _paused_transfer(mptcp: bool, csum: bool = False) -> tuple[Stack, Stack, Side, Side]:
    """a sends 400 kB to b, which reads nothing until t = 3 s (its 64 kB buffer fills,
    its window closes); every packet b sends between 2.9 and 3.3 s is lost, the
    window update its first read causes included. Only a's probes can find out that
    the window opened."""
    small = TcpConfig(rcv_buf=65536)
    ca = StackConfig(mptcp=MptcpConfig(checksum=csum) if mptcp else None)
    cb = StackConfig(tcp=small, mptcp=MptcpConfig(rcv_buf=65536) if mptcp else None)
    a = Stack([A], rng=random.Random(1), config=ca)
    b = Stack([B], rng=random.Random(2), config=cb)
    net = SimNet([a, b], seed=1, profile=LinkProfile(delay=0.01))
    net.profiles[(1, 0)] = LinkProfile(delay=0.01,
                                       drop_filter=lambda p: 2.9 <= net.now < 3.3)
    data = random.Random(5).randbytes(400_000)
    b.listen(5000)
    sa, sb = Side(data=data), Side()
    sa.conn = a.connect(B, 5000, net.now)

    def drive(stack: Stack, side: Side, read: bool) -> None:
        """As tests/sim/apps.py's `bulk`: send all, then close; read only if `read`."""
        while (ev := stack.poll_event()) is not None:
            if isinstance(ev, Accepted):
                side.conn = ev.conn
            elif isinstance(ev.event, Closed):
                side.closed, side.error = True, ev.event.tag
        conn = side.conn
        if conn is None:
            return
        if read:
            side.got += conn.sock.recv()
        if side.closed:
            return
        if side.sent < len(side.data):
            side.sent += conn.sock.send(memoryview(side.data)[side.sent:])
        elif not side.closing:
            conn.sock.close()
            side.closing = True
        stack.touch(conn)

    def done() -> bool:
        drive(a, sa, True)
        drive(b, sb, net.now >= 3.0)
        return sa.closed and sb.closed

    assert net.run_until(done, 60.0), "the transfer did not finish"
    assert bytes(sb.got) == data
    return a, b, sa, sb


def test_sim_tcp_zero_window_with_the_window_update_lost() -> None:
    a, _b, sa, sb = _paused_transfer(False)
    assert sa.error is None and sb.error is None
    assert a.all_counters()["TCPWinProbe"] >= 3


def test_sim_mptcp_zero_window_with_the_window_update_lost() -> None:
    for csum in (False, True):
        a, b, sa, sb = _paused_transfer(True, csum)
        assert sa.error is None and sb.error is None
        assert a.all_counters()["TCPWinProbe"] >= 3
        cb = b.all_counters()
        assert cb["DataCsumErr"] == 0 and cb["DSSNotMatching"] == 0
        assert cb["DuplicateData"] >= 1  # the probe byte, dropped as old data
        assert a.all_counters()["WinProbe"] >= 1


# ==== --output: the sink never blocks the event loop (tools/sink.py) ======================

def test_sink_into_a_full_pipe_waits_while_the_loop_runs_and_loses_nothing() -> None:
    r, w = os.pipe()
    data = random.Random(3).randbytes(3_000_000)  # more than the pipe's 1 MB
    got = bytearray()

    async def main() -> int:
        with os.fdopen(w, "wb") as f:
            sink = Sink(f)
            # the caller's descriptor keeps its flags: ours is a private reopened one
            assert not fcntl.fcntl(w, fcntl.F_GETFL) & os.O_NONBLOCK
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            tick = asyncio.ensure_future(ticker())
            writing = asyncio.ensure_future(sink.write(data))
            await asyncio.sleep(0.1)
            # nobody reads: the write waits, the loop does not
            assert not writing.done() and ticks >= 20
            loop = asyncio.get_running_loop()
            os.set_blocking(r, False)

            def drain() -> None:
                with contextlib.suppress(BlockingIOError):
                    got.extend(os.read(r, 1 << 20))

            loop.add_reader(r, drain)
            await asyncio.wait_for(writing, 10)
            await asyncio.sleep(0.05)
            loop.remove_reader(r)
            tick.cancel()
            sink.close()
            return ticks

    asyncio.run(main())
    os.set_blocking(r, True)
    while chunk := os.read(r, 1 << 20):
        got.extend(chunk)
    os.close(r)
    assert bytes(got) == data


def test_sink_into_a_regular_file_writes_as_before(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    data = random.Random(4).randbytes(300_000)

    async def main() -> None:
        with open(path, "wb") as f:
            sink = Sink(f)
            assert sink.blocking
            await sink.write(data[:100_000])
            await sink.write(memoryview(data)[100_000:])
            sink.close()

    asyncio.run(main())
    assert path.read_bytes() == data
