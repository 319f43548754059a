"""Host-level simulation: two `Stack`s over the simulated link (tests/sim/net.py), on a
virtual clock. Transfers are checked byte for byte; timers and counters exactly."""

from __future__ import annotations

import hashlib
import random

import pytest

from stack.host import Stack, StackConfig, ip
from stack.tcp.engine import Closed, Connected, State, TcpConfig
from stack.wire import icmp, ipv4
from tests.sim.net import LinkProfile, SimNet

A, B = ip("10.0.1.2"), ip("10.0.1.1")


def pair(seed: int = 1, profile: LinkProfile | None = None,
         cfg_a: StackConfig | None = None, cfg_b: StackConfig | None = None
         ) -> tuple[Stack, Stack, SimNet]:
    a = Stack([A], rng=random.Random(seed), config=cfg_a)
    b = Stack([B], rng=random.Random(seed + 1), config=cfg_b)
    return a, b, SimNet([a, b], seed=seed, profile=profile)


def events(stack: Stack) -> list[object]:
    out = []
    while (ev := stack.poll_event()) is not None:
        out.append(ev)
    return out


def transfer(a: Stack, b: Stack, net: SimNet, size: int, *, both_ways: bool = False,
             seed: int = 7, max_time: float = 600.0) -> None:
    """a connects to b:5000; a sends `size` bytes (b too if both_ways), then both close.
    Asserts every byte arrives exactly and both ends close cleanly."""
    rnd = random.Random(seed)
    data_a = rnd.randbytes(size)
    data_b = rnd.randbytes(size) if both_ways else b""
    b.listen(5000)
    ca = a.connect(B, 5000, net.now)
    got = {"a": bytearray(), "b": bytearray()}
    state = {"cb": None, "sent_a": 0, "sent_b": 0}

    def pump() -> bool:
        for ev in events(b):
            if type(ev).__name__ == "Accepted":
                state["cb"] = ev.conn
        events(a)
        cb = state["cb"]
        if ca.engine.state in (State.ESTABLISHED, State.CLOSE_WAIT):
            if state["sent_a"] < len(data_a):
                state["sent_a"] += ca.engine.send(memoryview(data_a)[state["sent_a"]:])
                a.touch(ca)
            elif ca.engine.state in (State.ESTABLISHED, State.CLOSE_WAIT):
                ca.engine.close()
                a.touch(ca)
        got["a"] += ca.engine.recv()
        if cb is not None:
            got["b"] += cb.engine.recv()
            b.touch(cb)
            if cb.engine.state in (State.ESTABLISHED, State.CLOSE_WAIT):
                if state["sent_b"] < len(data_b):
                    state["sent_b"] += cb.engine.send(memoryview(data_b)[state["sent_b"]:])
                elif cb.engine.state == State.CLOSE_WAIT:
                    cb.engine.close()
        a.touch(ca)
        done_a = ca.engine.state in (State.TIME_WAIT, State.CLOSED)
        done_b = (cb is not None and cb.engine.state == State.CLOSED) or \
            (cb is not None and cb.engine.is_closed)
        return done_a and done_b and len(got["b"]) == len(data_a) and len(got["a"]) == len(data_b)

    assert net.run_until(pump, max_time), (
        f"stalled at t={net.now:.3f}: a={ca.engine.state} sent {state['sent_a']}/{len(data_a)},"
        f" b got {len(got['b'])}; b={state['cb'] and state['cb'].engine.state}")
    assert hashlib.sha256(got["b"]).digest() == hashlib.sha256(data_a).digest()
    assert bytes(got["a"]) == data_b


def test_clean_transfer_no_loss() -> None:
    a, b, net = pair()
    transfer(a, b, net, 1_000_000)


def test_10mb_with_5pct_loss_and_reordering_arrives_exact() -> None:
    prof = LinkProfile(delay=0.005, jitter=0.002, loss=0.05, reorder=0.05, duplicate=0.01)
    a, b, net = pair(seed=3, profile=prof)
    transfer(a, b, net, 10_000_000)
    c = a.all_counters()
    assert c["RetransSegs"] > 0  # loss really happened and was repaired


def test_both_directions_with_loss() -> None:
    prof = LinkProfile(delay=0.003, jitter=0.001, loss=0.03, reorder=0.03)
    a, b, net = pair(seed=5, profile=prof)
    transfer(a, b, net, 2_000_000, both_ways=True)


def test_gso_super_packets_cut_by_the_link_arrive_exact() -> None:
    cfg = StackConfig(tcp=TcpConfig(gso_segments=44), tx_csum_offload=True)
    prof = LinkProfile(delay=0.002, loss=0.01)
    a, b, net = pair(seed=9, profile=prof, cfg_a=cfg)
    transfer(a, b, net, 5_000_000)


def test_connect_to_closed_port_is_refused_by_rst() -> None:
    a, b, net = pair()
    ca = a.connect(B, 6000, 0.0)
    net.run(1.0)
    evs = [e.event for e in events(a) if hasattr(e, "event")]
    assert Closed("refused") in evs
    assert b.counters["OutRsts"] == 1
    assert b.counters["Drop:no-socket"] == 1
    assert ca.key not in a.conns


def test_rst_is_never_answered_with_rst() -> None:
    _a, b, _net = pair()
    from stack.wire import tcp
    rst = tcp.TcpHeader(1234, 80, 1, 0, tcp.RST, 0)
    seg = tcp.emit(rst, b"", A, B)
    pkt = ipv4.emit(ipv4.IPv4Header(A, B, ipv4.PROTO_TCP), len(seg)) + seg
    b.feed(pkt, 0.0)
    assert b.poll_transmit(0.0) == []
    assert b.counters["Drop:rst-no-socket"] == 1


def test_ping_is_answered() -> None:
    _a, b, _net = pair()
    req = icmp.emit(icmp.IcmpMessage(icmp.ECHO_REQUEST, 0, (7 << 16) | 1, b"hello"))
    b.feed(ipv4.emit(ipv4.IPv4Header(A, B, ipv4.PROTO_ICMP), len(req)) + req, 0.0)
    (reply,) = b.poll_transmit(0.0)
    h, end = ipv4.parse(reply.data)
    m = icmp.parse(reply.data[h.header_len:end])
    assert (h.src, h.dst, m.type, m.ident, m.sequence, m.data) == (B, A, icmp.ECHO_REPLY, 7, 1,
                                                                   b"hello")


def test_port_unreachable_fails_the_connect_with_a_clear_error() -> None:
    a, _b, _net = pair()
    ca = a.connect(B, 6000, 0.0)
    (syn,) = a.poll_transmit(0.0)
    quote = syn.data[:28]
    msg = icmp.emit(icmp.IcmpMessage(icmp.DEST_UNREACH, icmp.UNREACH_PORT, 0, quote))
    a.feed(ipv4.emit(ipv4.IPv4Header(B, A, ipv4.PROTO_ICMP), len(msg)) + msg, 0.01)
    a.poll_transmit(0.01)
    evs = [e.event for e in events(a) if hasattr(e, "event")]
    assert any(isinstance(e, Closed) and e.tag == "unreachable:port unreachable" for e in evs)
    assert ca.key not in a.conns


def test_icmp_error_with_a_sequence_not_in_flight_is_ignored() -> None:
    a, _b, _net = pair()
    a.connect(B, 6000, 0.0)
    (syn,) = a.poll_transmit(0.0)
    quote = bytearray(syn.data[:28])
    quote[24] ^= 0x80  # a blind attacker's guess at the sequence number
    msg = icmp.emit(icmp.IcmpMessage(icmp.DEST_UNREACH, icmp.UNREACH_PORT, 0, bytes(quote)))
    a.feed(ipv4.emit(ipv4.IPv4Header(B, A, ipv4.PROTO_ICMP), len(msg)) + msg, 0.01)
    assert a.counters["Drop:icmp-error-bad-seq"] == 1


def test_syn_backlog_is_bounded_without_cookies() -> None:
    a, b, net = pair(profile=LinkProfile(up=True))
    b.config.syncookies = 0
    b.listen(5000, backlog=2)
    for port in (40001, 40002, 40003):
        a.connect(B, 5000, 0.0, local_port=port)
    # deliver the three SYNs but drop every SYN/ACK, so B's connections stay half-open
    net.profiles[(1, 0)] = LinkProfile(up=False)
    net.run(0.5)
    assert b.counters["ListenDrops"] == 1 and b.counters["TCPReqQFullDrop"] == 1
    assert sum(1 for c in b.conns.values() if c.engine.state == State.SYN_RECEIVED) == 2


def test_ipv4_fragments_are_counted_and_dropped() -> None:
    _a, b, _net = pair()
    h = ipv4.IPv4Header(A, B, ipv4.PROTO_TCP, flags_frag=ipv4.FLAG_MF)
    b.feed(ipv4.emit(h, 8) + bytes(8), 0.0)
    assert b.counters["Drop:ipv4-fragment"] == 1 and b.counters["ReasmFails"] == 1


def test_connected_event_both_sides() -> None:
    a, b, net = pair()
    b.listen(5000)
    ca = a.connect(B, 5000, 0.0)
    net.run(0.1)
    assert ca.engine.state == State.ESTABLISHED
    assert any(isinstance(getattr(e, "event", None), Connected) for e in events(a))
    assert any(type(e).__name__ == "Accepted" for e in events(b))


@pytest.mark.parametrize("seed", [11, 12])
def test_duplication_and_heavy_reordering(seed: int) -> None:
    prof = LinkProfile(delay=0.01, jitter=0.008, duplicate=0.05, reorder=0.2)
    a, b, net = pair(seed=seed, profile=prof)
    transfer(a, b, net, 1_000_000)


def test_a_forgotten_connection_keeps_its_own_counters() -> None:
    """Once the host forgets a connection (closed, TIME-WAIT over) its engines' and msk's
    counters go to the host's totals and are cleared; the connection still answers for
    its own (the summary's segment counts and resent bytes are read after the end)."""
    from tests.sim.apps import bulk, mptcp_pair
    a, b, net = mptcp_pair(seed=3, profile=LinkProfile(delay=0.001, loss=0.02))
    data = random.Random(3).randbytes(300_000)
    sa, sb = bulk(a, b, net, data)
    assert bytes(sb.got) == data
    net.run_until(lambda: not a.conns and not b.conns, 300)
    for side, stack in ((sa, a), (sb, b)):
        conn = side.conn
        assert conn is not None and conn.final_counters is not None  # forgotten
        assert conn.msk is not None and not conn.msk.counters  # emptied
        mine, host = conn.counters(), stack.all_counters()
        assert mine["InSegs"] > 0 and mine["OutSegs"] > 0
        # the host's totals: its own (IP, demux) plus this, its only connection's
        assert all(host[k] == v for k, v in mine.items()), (mine, host)
    sent = sa.conn.counters()  # type: ignore[union-attr]
    assert sent["RetransSegs"] > 0  # 2% loss: a counter that moved, kept
