"""Bounded resources (issue 14): a peer, or someone speaking for it, cannot make us
buffer or allocate without bound. Out-of-order queues have limits at both levels,
announcements beyond what we can echo are dropped, joins beyond the limit refused; and
the memory an idle MPTCP connection costs is measured."""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

from stack.host import Stack, ip
from stack.mptcp import crypto
from stack.mptcp.pm import ECHO_QUEUE_MAX
from stack.wire import mptcp as wm
from stack.wire import tcp
from tests.sim.apps import bulk, multipath_pair
from tests.sim.net import LinkProfile
from tests.sim.test_forgeries_sim import segment

A1, A2, B1 = ip("10.0.1.2"), ip("10.0.2.2"), ip("10.0.1.1")


def _live(seed: int) -> tuple[Stack, Stack, object, object]:
    """A client (ours) and a server (ours) with an MPTCP connection up and idle."""
    a, b, net = multipath_pair(seed=seed, profile=LinkProfile(delay=0.002))
    b.listen(5000)
    conn = a.connect(B1, 5000, 0.0)
    conn.sock.send(b"hello")
    a.touch(conn)
    net.run(0.3)
    assert conn.msk is not None and conn.msk.fully_established
    return a, b, net, conn


def _open_idle(a: Stack, net: Any, n: int) -> list[Any]:
    """`n` more MPTCP connections from `a` to the listener, each sending 2 bytes and
    then idle, once the simulator has run them a second."""
    conns = []
    for _ in range(n):
        c = a.connect(B1, 5000, net.now)
        c.sock.send(b"hi")
        a.touch(c)
        conns.append(c)
    net.run(1.0)
    return conns


def test_an_add_addr_flood_is_dropped_beyond_the_echoes_waiting() -> None:
    """The server (keys known: this is the peer itself, or its keys leaked) announces
    200 addresses in one burst: the client queues at most ECHO_QUEUE_MAX echoes, drops
    and counts the rest, and the connection goes on."""
    a, b, net, conn = _live(21)
    msk = conn.msk  # type: ignore[attr-defined]
    srv = next(iter(b.conns.values()))
    for i in range(200):
        addr = bytes((10, 1, i // 250, i % 250 + 1))
        hmac = crypto.add_addr_hmac(msk.remote_key, msk.local_key, i % 250, addr, None)
        pkt = segment(B1, A1, 5000, conn.key[1],  # type: ignore[attr-defined]
                      srv.engine.snd_nxt.value, srv.engine.rcv_nxt.value, tcp.ACK,
                      [wm.to_tcp_option(wm.AddAddr(i % 250, addr, None, hmac))])
        a.feed(pkt, net.now)
    assert len(msk.pm.echo_queue) <= ECHO_QUEUE_MAX
    c = a.all_counters()
    assert c["AddAddr"] == ECHO_QUEUE_MAX and c["AddAddrDrop"] == 200 - ECHO_QUEUE_MAX
    conn.sock.send(b"x" * 100_000)  # type: ignore[attr-defined]
    a.touch(conn)
    net.run(2.0)
    assert srv.sock.recv()[-100_000:] == b"x" * 100_000


def test_out_of_order_queues_hold_at_most_their_limits() -> None:
    """5000 out-of-order segments of 10 bytes, 20 apart, inside the window, on the
    server's subflow: the TCP out-of-order queue keeps at most its block limit (512)
    and never more bytes than its buffer; the rest are dropped and counted."""
    _, b, net, conn = _live(22)
    srv = next(iter(b.conns.values()))
    eng = srv.engine
    rnxt, una = eng.rcv_nxt.value, eng.snd_una.value
    for i in range(5000):
        b.feed(segment(A1, B1, conn.key[1], 5000, rnxt + 100 + 20 * i, una,  # type: ignore[attr-defined]
                       tcp.ACK, payload=b"z" * 10), net.now)
    ooo = eng._ooo
    assert len(ooo._starts) <= ooo.max_blocks == 512
    assert ooo.buffered <= ooo.limit
    assert b.all_counters()["TCPOFODrop"] >= 5000 - 512


def test_joins_beyond_the_subflow_limit_are_refused() -> None:
    """8 joins (the client's limit) to a server whose limit is 2: two become subflows,
    six are reset at their third ACK (MP_TCPRST 3, MPJoinRejected), the data flows."""
    from stack.mptcp.connection import MptcpConfig
    a, b, net = multipath_pair(seed=23, profile=LinkProfile(delay=0.002),
                               cfg_b=MptcpConfig(subflows_max=2))
    data = random.Random(23).randbytes(300_000)
    _, sb = bulk(a, b, net, data, data[::-1], join_from=[(A2, False)] * 8)
    assert bytes(sb.got) == data
    cb = b.all_counters()
    assert cb["MPJoinSynRx"] == 8 and cb["MPJoinAckRx"] == 2 and cb["MPJoinRejected"] == 6


def test_memory_per_idle_mptcp_connection_is_measured_and_small() -> None:
    """200 idle MPTCP connections on one listener: what each costs the server, in
    Python heap (tracemalloc). Measured 2026-11-30: see the printed figure."""
    a, _, net, _ = _live(24)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    conns = _open_idle(a, net, 200)
    assert all(c.msk is not None and c.msk.fully_established for c in conns)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    per_pair = grown / 200  # both ends of each connection live in this process
    print(f"\nmemory per idle MPTCP connection, both ends: {per_pair / 1024:.1f} KiB")
    assert per_pair < 256 * 1024, per_pair


def test_idle_connections_cost_no_work_per_packet() -> None:
    """The host's timers are a heap: a transfer among 300 idle connections never asks
    them for their deadlines (before, every poll walked every connection: measured in
    the simulator, 5 MB among 2000 idle connections took 149 s against 0.5 s alone;
    now 0.5 s either way)."""
    a, b, net, _ = _live(25)
    idle = _open_idle(a, net, 300)
    while a.poll_event() is not None or b.poll_event() is not None:
        pass  # (their Accepted events are not the transfer's)
    asked = [0]
    ports = {c.key[1] for c in idle}  # the idle ones, and their server ends
    for s in (a, b):
        for c in s.connections():
            if c.key[1] in ports or (c.key[2] == A1 and c.key[3] in ports):
                real = c.sock.poll_timeout

                def counted(real: object = real) -> float | None:
                    asked[0] += 1
                    return real()  # type: ignore[operator,no-any-return]
                c.sock.poll_timeout = counted  # type: ignore[method-assign]
    data = random.Random(25).randbytes(2_000_000)
    _, sb = bulk(a, b, net, data, port=5001)
    assert bytes(sb.got) == data
    assert asked[0] == 0, asked[0]
