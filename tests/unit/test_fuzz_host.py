"""Bad input never hurts us: random and mutated frames fed into a `Stack` with a
listener and an established connection. No exception escapes `feed`, and every frame is
either delivered or dropped under a counted reason (InReceives == InDelivers + drops)."""

from __future__ import annotations

import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.host import Stack, ip
from stack.tcp.engine import State
from stack.wire import icmp, ipv4, tcp
from stack.wire.checksum import internet_checksum
from stack.wire.gso import complete_checksum
from tests.sim.net import SimNet

A, B = ip("10.0.1.2"), ip("10.0.1.1")


def established() -> tuple[Stack, Stack, SimNet, object]:
    a = Stack([A], rng=random.Random(1))
    b = Stack([B], rng=random.Random(2))
    net = SimNet([a, b], seed=1)
    b.listen(5000)
    conn = a.connect(B, 5000, 0.0, local_port=40000)
    net.run(0.1)
    assert conn.engine.state == State.ESTABLISHED
    return a, b, net, conn


def templates(conn: object) -> list[bytes]:
    """Valid frames towards B: a SYN to the listener, data on the live connection, a
    segment to a closed port, an ICMP echo and an ICMP port-unreachable quote."""
    eng = conn.engine  # type: ignore[attr-defined]
    opts = [tcp.Mss(1460), tcp.SackPermitted(), tcp.Timestamps(1, 0), tcp.Nop(),
            tcp.WindowScale(7)]
    segs = [
        (tcp.TcpHeader(41000, 5000, 1000, 0, tcp.SYN, 65535, opts), b""),
        (tcp.TcpHeader(40000, 5000, eng.snd_nxt.value, eng.rcv_nxt.value, tcp.ACK | tcp.PSH,
                       500, [tcp.Nop(), tcp.Nop(), tcp.Timestamps(5, 5)]), b"x" * 100),
        (tcp.TcpHeader(40000, 5000, eng.snd_nxt.value, eng.rcv_nxt.value, tcp.ACK, 500,
                       [tcp.Nop(), tcp.Nop(), tcp.Sack(((1, 2), (3, 4)))]), b""),
        (tcp.TcpHeader(41001, 6000, 7, 0, tcp.SYN, 1000), b""),
    ]
    out = []
    for h, p in segs:
        s = tcp.emit(h, p, A, B)
        out.append(ipv4.emit(ipv4.IPv4Header(A, B, ipv4.PROTO_TCP), len(s)) + s)
    e = icmp.emit(icmp.IcmpMessage(icmp.ECHO_REQUEST, 0, 1, b"ping"))
    out.append(ipv4.emit(ipv4.IPv4Header(A, B, ipv4.PROTO_ICMP), len(e)) + e)
    q = icmp.emit(icmp.IcmpMessage(icmp.DEST_UNREACH, 3, 0, out[1][:28]))
    out.append(ipv4.emit(ipv4.IPv4Header(A, B, ipv4.PROTO_ICMP), len(q)) + q)
    return out


def check_accounting(s: Stack) -> None:
    c = s.counters
    drops = sum(v for k, v in c.items() if k.startswith("Drop:"))
    assert c["InReceives"] == c["InDelivers"] + drops, dict(c)


def fix_checksums(pkt: bytes) -> bytes:
    """Recompute IP and TCP checksums so a mutation reaches the deeper parsers."""
    if len(pkt) < 20 or pkt[0] >> 4 != 4:
        return pkt
    ihl = (pkt[0] & 0xF) * 4
    total = struct.unpack_from("!H", pkt, 2)[0]
    if ihl < 20 or total != len(pkt) or len(pkt) < ihl + 20 or pkt[9] != 6:
        return pkt
    buf = bytearray(pkt)
    struct.pack_into("!H", buf, 10, 0)
    struct.pack_into("!H", buf, 10, internet_checksum(bytes(buf[:ihl])))
    return complete_checksum(bytes(buf))


mutation = st.tuples(st.integers(0, 5), st.integers(0, 200), st.integers(0, 255),
                     st.integers(0, 100))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=120), mutation), min_size=1, max_size=12),
       st.booleans())
def test_random_and_mutated_frames_never_raise(frames: list[object], fix: bool) -> None:
    _a, b, net, conn = established()
    base = templates(conn)
    for i, f in enumerate(frames):
        if isinstance(f, bytes):
            pkt = f
        else:
            which, pos, val, cut = f  # type: ignore[misc]
            raw = bytearray(base[which % len(base)])
            op = (pos + val) % 5
            if op == 0:  # truncate
                raw = raw[: cut % (len(raw) + 1)]
            elif op == 1:  # flip a byte
                raw[pos % len(raw)] ^= val or 1
            elif op == 2 and len(raw) > 33:  # bad TCP data offset
                raw[32] = (val & 0xF0) | (raw[32] & 0x0F)
            elif op == 3:  # option length past the header / weird lengths
                if len(raw) > 42:
                    raw[41] = val
            elif len(raw) > 33:  # illegal or odd flag combinations
                raw[33] = val
            pkt = bytes(raw)
            if fix:
                pkt = fix_checksums(pkt)
        b.feed(pkt, net.now + i * 1e-3)
        b.poll_transmit(net.now + i * 1e-3)
        check_accounting(b)
    net.run(1.0)  # the engines digest whatever they were fed, timers run, nothing raises
    check_accounting(b)


def test_every_truncated_prefix_of_a_valid_frame_is_dropped_and_counted() -> None:
    _a, b, net, conn = established()
    for pkt in templates(conn):
        for n in range(len(pkt)):
            b.feed(pkt[:n], net.now)
        check_accounting(b)
    assert b.counters["Drop:ipv4-truncated"] > 0


# --- MPTCP: hostile options on a live MPTCP connection ---------------------------------
def mptcp_established() -> tuple[Stack, Stack, SimNet, object]:
    from stack.host import StackConfig
    from stack.mptcp.connection import MptcpConfig
    a = Stack([A], rng=random.Random(1), config=StackConfig(mptcp=MptcpConfig()))
    b = Stack([B], rng=random.Random(2), config=StackConfig(mptcp=MptcpConfig()))
    net = SimNet([a, b], seed=1)
    b.listen(5000)
    conn = a.connect(B, 5000, 0.0, local_port=40000)
    conn.sock.send(b"hello")
    a.touch(conn)
    net.run(0.2)
    assert conn.msk is not None and conn.msk.fully_established
    return a, b, net, conn


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(min_size=0, max_size=36), st.integers(0, 3),
                          st.binary(max_size=64)), min_size=1, max_size=8))
def test_random_mptcp_options_on_live_segments_never_raise(
        frames: list[tuple[bytes, int, bytes]]) -> None:
    _a, b, net, conn = mptcp_established()
    eng = conn.engine  # type: ignore[attr-defined]
    flags = (tcp.ACK, tcp.ACK | tcp.PSH, tcp.RST | tcp.ACK, tcp.ACK | tcp.FIN)
    for i, (body, fl, payload) in enumerate(frames):
        opts = [tcp.Nop(), tcp.Nop(), tcp.Timestamps(5, 5)]
        if len(body) <= 26:
            opts.append(tcp.UnknownOption(30, body))
        h = tcp.TcpHeader(40000, 5000, eng.snd_nxt.value, eng.rcv_nxt.value, flags[fl],
                          500, opts)
        seg = tcp.emit(h, payload, A, B)
        b.feed(ipv4.emit(ipv4.IPv4Header(A, B, ipv4.PROTO_TCP), len(seg)) + seg,
               net.now + i * 1e-3)
        b.poll_transmit(net.now + i * 1e-3)
        check_accounting(b)
    net.run(2.0)
    check_accounting(b)


def test_every_valid_mptcp_option_kind_on_a_live_connection_is_absorbed() -> None:
    from stack.wire import mptcp as wm
    _a, b, net, conn = mptcp_established()
    eng = conn.engine  # type: ignore[attr-defined]
    for o in (wm.MpCapable(1, 1, 1, 2), wm.MpJoinSyn(False, 1, 2, 3), wm.AddAddr(3, A, None, 7,
              False, 1), wm.RemoveAddr((1, 2)), wm.MpPrio(True, None), wm.MpFail(99),
              wm.MpFastclose(12345), wm.Dss(data_ack=1, data_ack64=True),
              wm.Dss(dsn=5, dsn64=True, ssn=77, data_len=10)):
        h = tcp.TcpHeader(40000, 5000, eng.snd_nxt.value, eng.rcv_nxt.value, tcp.ACK, 500,
                          [wm.to_tcp_option(o)])
        seg = tcp.emit(h, b"", A, B)
        b.feed(ipv4.emit(ipv4.IPv4Header(A, B, ipv4.PROTO_TCP), len(seg)) + seg, net.now)
        b.poll_transmit(net.now)
        check_accounting(b)
    net.run(1.0)
