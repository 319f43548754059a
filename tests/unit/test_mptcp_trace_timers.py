"""Packet traces (tests/unit/mptcp_trace.py): the exact MPTCP deadlines, on the virtual
clock. Each test says the rule it pins (as stack/mptcp/connection.py keeps it today):

- ADD_ADDR (Linux 6.18 `mptcp_pm_add_timer`): re-sent when not echoed after the largest
  subflow RTO (at most `MptcpConfig.add_addr_timeout`, 120 s), doubling per try; 3
  retransmissions (4 tries), then dropped and AddAddrTxDrop counted. Each try goes alone
  on a pure ACK (Linux 6.18: no DSS beside an ADD_ADDR).
- Data level (Linux `mptcp_retransmit_timer`): while data is out and the peer's data
  ACK does not move, a timer of max(largest subflow RTO, 0.2 s) * 2**expiries (the
  exponent at most 7), at most 60 s, re-sends the first chunk not data-acked as a new
  mapping on an idle subflow (MPTCPRetrans, MPTCPRetransBytes). Data-ACK progress
  resets it.
- DATA_FIN: not data-acked, it is repeated on a pure ACK after the subflow's RTO,
  doubling per repetition (the exponent at most 6).

Times are built with the stack's own float operations (previous deadline + interval),
so they compare exactly.
"""

from __future__ import annotations

from stack.mptcp import crypto
from stack.mptcp.connection import MptcpConfig
from stack.tcp.engine import TcpConfig
from stack.wire.mptcp import AddAddr, Dss
from stack.wire.tcp import ACK, PSH
from tests.unit.mptcp_trace import OUR_ADDR2, Trace

KEY_US = 0x9A3C51E207B4D86F
KEY_PEER = 0x2B7E151628AED2A6
T0 = 1.0  # Trace's clock starts here


def our_add_addr() -> AddAddr:
    return AddAddr(1, OUR_ADDR2, hmac=crypto.add_addr_hmac(KEY_US, KEY_PEER, 1, OUR_ADDR2))


def data_map(t: Trace, off: int, ssn: int, length: int) -> Dss:
    """Our DSS on a data segment: the mapping of our bytes [off, off + length) at
    subflow byte `ssn`, beside the data ACK (no peer data here)."""
    return Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(off), dsn64=True,
               ssn=ssn, data_len=length)


def rtx_times(start: float, rto: float, n: int) -> list[float]:
    """The data-level timer's expiries: start + min(max(rto, 0.2) * 2**k, 60), k <= 7."""
    out, t = [], start
    for k in range(n):
        t = t + min(max(rto, 0.2) * (1 << min(k, 7)), 60.0)
        out.append(t)
    return out


# ==== Tests for the ADD_ADDR retransmission ===============================================

def backoff_times(start: float, base: float, n: int) -> list[float]:
    """start, then each previous + base * 2**k: the ADD_ADDR timer's tries."""
    out = [start]
    for k in range(n - 1):
        out.append(out[-1] + base * (1 << k))
    return out


def test_add_addr_is_resent_after_the_subflow_rto_doubling_three_times_then_dropped() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    rto = t.msk.subflows[0].engine.rto
    assert rto < 120.0  # the RTO, not the 120 s cap, sets the pace
    t.announce(OUR_ADDR2)
    sent = [t.recv(t.sf, payload_len=0, mptcp=[our_add_addr()]).time]
    for _ in range(3):
        due = t.deadline()
        assert due is not None
        assert t.fire() == due
        sent.append(t.recv(t.sf, payload_len=0, mptcp=[our_add_addr()]).time)
        t.recv_nothing()
    assert sent == backoff_times(T0, rto, 4)
    assert t.counter("AddAddrTx") == 4  # the first and ADD_ADDR_RETRANS_MAX (3) more
    # the fourth try's timer expires: given up, counted, nothing sent
    assert t.fire() == sent[-1] + rto * 8
    t.recv_nothing()
    assert t.counter("AddAddrTxDrop") == 1
    assert t.deadline() is None


def test_add_addr_timeout_caps_the_wait() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER,
                     mptcp=MptcpConfig(add_addr_timeout=0.05))
    assert t.msk.subflows[0].engine.rto > 0.05
    t.announce(OUR_ADDR2)
    t.recv(t.sf, payload_len=0, mptcp=[our_add_addr()])
    times = []
    for _ in range(3):
        times.append(t.fire())
        t.recv(t.sf, payload_len=0, mptcp=[our_add_addr()])
    assert times == backoff_times(T0, 0.05, 4)[1:]
    assert t.fire() == times[-1] + 0.05 * 8
    t.recv_nothing()
    assert t.counter("AddAddrTxDrop") == 1


def test_the_echo_stops_the_add_addr_retransmission() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    rto = t.msk.subflows[0].engine.rto
    t.announce(OUR_ADDR2)
    t.recv(t.sf, payload_len=0, mptcp=[our_add_addr()])
    assert t.fire() == T0 + rto
    t.recv(t.sf, payload_len=0, mptcp=[our_add_addr()])
    assert t.deadline() == T0 + rto + 2 * rto
    t.advance(rto)  # half of the next wait: the echo comes first
    t.send(t.sf, mptcp=[t.data_ack(), AddAddr(1, OUR_ADDR2, echo=True)])
    t.recv_nothing()
    assert t.deadline() is None
    t.advance(100.0)
    t.recv_nothing()
    assert (t.counter("EchoAdd"), t.counter("AddAddrTx"), t.counter("AddAddrTxDrop")) == \
        (1, 2, 0)


# ==== Tests for the data-level retransmission timer ======================================

def run_data_rtx(t: Trace, expiries: int, size: int = 100) -> list[float]:
    """Our stack sends `size` bytes at T0; the peer TCP-acks every segment at once but
    never moves its data ACK. Returns the times the first chunk went out again; checks
    each goes out as a new mapping (next subflow bytes) of the same data."""
    t.app_send(b"x" * size)
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload_len=size, mptcp=[data_map(t, 0, 1, size)],
           time=T0)
    t.send(t.sf, mptcp=[t.data_ack(0)])  # TCP-acked, not data-acked
    times = []
    for i in range(expiries):
        when = t.fire()
        times.append(when)
        ssn = 1 + size * (i + 1)
        t.recv(t.sf, flags=ACK | PSH, seq=ssn, payload=b"x" * size,
               mptcp=[data_map(t, 0, ssn, size)], time=when)
        t.recv_nothing()
        t.send(t.sf, mptcp=[t.data_ack(0)])
    assert (t.counter("MPTCPRetrans"), t.counter("MPTCPRetransBytes")) == \
        (expiries, expiries * size)
    return times


def test_data_rtx_first_expiry_after_the_subflow_rto_then_doubling() -> None:
    # the handshake's RTT sample is 0: the subflow's RTO is its 200 ms floor
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    times = run_data_rtx(t, 10)
    assert times == rtx_times(T0, 0.2, 10)
    # 0.2 .. 25.6 s, then 25.6 s again: 2**7 bounds the doubling before 60 s does
    assert round(times[-1] - times[-2], 9) == 25.6
    assert t.deadline() == times[-1] + 25.6


def test_data_rtx_timeout_is_at_least_200_ms() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, tcp_config=TcpConfig(rto_min=0.05))
    assert run_data_rtx(t, 3) == rtx_times(T0, 0.2, 3)


def test_data_rtx_timeout_is_capped_at_60_s() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, tcp_config=TcpConfig(rto_min=1.0))
    times = run_data_rtx(t, 9)
    assert times == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 124.0, 184.0, 244.0]
    assert t.deadline() == 304.0


def test_data_rtx_uses_the_largest_rto_of_the_subflows() -> None:
    # the master's handshake took 0.125 s (RTO 0.125 + 4 * 0.0625 = 0.375 s), a join's
    # 0.5 s (RTO 0.5 + 4 * 0.25 = 1.5 s): the data goes on the master, yet the
    # data-level timer waits for the slowest subflow's RTO
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, rtt=0.125)
    j = t.join(addr_id=1, rtt=0.5)
    t.recv(j, seq=1, ack=1, payload_len=0, mptcp=[t.our_data_ack()])  # the 4th ACK
    start = t.now
    t.app_send(b"x" * 100)
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload_len=100, mptcp=[data_map(t, 0, 1, 100)])
    t.send(t.sf, mptcp=[t.data_ack(0)])
    assert t.deadline() == start + 1.5
    assert t.fire() == start + 1.5
    # sent again on the idle subflow with the smaller smoothed RTT: the master
    t.recv(t.sf, flags=ACK | PSH, seq=101, payload_len=100, mptcp=[data_map(t, 0, 101, 100)])
    t.recv_nothing()
    assert j.rcv_nxt == 1  # nothing ever went on the join
    t.send(t.sf, mptcp=[t.data_ack(0)])
    assert t.deadline() == start + 1.5 + 3.0  # doubled: 2 * 1.5


def test_data_rtx_resends_from_the_first_byte_not_data_acked() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.app_send(b"x" * 300)
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload_len=300, mptcp=[data_map(t, 0, 1, 300)])
    t.send(t.sf, mptcp=[t.data_ack(0)])
    assert t.fire() == T0 + 0.2
    t.recv(t.sf, flags=ACK | PSH, seq=301, payload_len=300, mptcp=[data_map(t, 0, 301, 300)])
    t.advance(0.1)
    # the data ACK moves to 120: progress, so the backoff is forgotten and the timer
    # re-armed from now; the next expiry sends bytes 120..300 only
    t.send(t.sf, mptcp=[t.data_ack(120)])
    now = t.now
    assert t.deadline() == now + 0.2
    assert t.fire() == now + 0.2
    t.recv(t.sf, flags=ACK | PSH, seq=601, payload=b"x" * 180,
           mptcp=[data_map(t, 120, 601, 180)])
    t.recv_nothing()
    assert (t.counter("MPTCPRetrans"), t.counter("MPTCPRetransBytes")) == (2, 480)
    # everything data-acked: no timer left
    t.send(t.sf, mptcp=[t.data_ack(300)])
    assert t.deadline() is None


# ==== Tests for the DATA_FIN retransmission ===============================================

def test_data_fin_is_repeated_on_a_pure_ack_after_the_rto_backing_off() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.app_close()
    fin = Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(0), dsn64=True, ssn=0,
              data_len=1, data_fin=True)
    t.recv(t.sf, seq=1, payload_len=0, mptcp=[fin], time=T0)
    times = []
    for _ in range(9):
        times.append(t.fire())
        t.recv(t.sf, seq=1, payload_len=0, mptcp=[fin], time=times[-1])
        t.recv_nothing()
    want, at = [], T0
    for k in range(9):
        at = at + 0.2 * (1 << min(k, 6))
        want.append(at)
    assert times == want  # 0.2, 0.4, ... 12.8 s, then 12.8 s again
    # the peer's data ACK for the DATA_FIN (its DSN + 1) ends the repetition
    t.send(t.sf, mptcp=[t.data_ack(1)])
    t.recv_nothing()
    assert t.deadline() is None


def test_data_fin_after_data_repeats_until_data_acked_plus_one() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.app_send(b"y" * 10)
    t.app_close()
    fin = Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(10), dsn64=True, ssn=0,
              data_len=1, data_fin=True)
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload_len=10, mptcp=[data_map(t, 0, 1, 10)])
    t.recv(t.sf, seq=11, payload_len=0, mptcp=[fin])
    t.send(t.sf, mptcp=[t.data_ack(10)])  # the data, not the DATA_FIN
    assert t.fire() == T0 + 0.2
    t.recv(t.sf, seq=11, payload_len=0, mptcp=[fin])
    t.recv_nothing()
    t.send(t.sf, mptcp=[t.data_ack(11)])
    t.recv_nothing()
    assert t.deadline() is None
