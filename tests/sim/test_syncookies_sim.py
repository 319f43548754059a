"""SYN cookies on our listener (stack.syncookies): plain TCP, MP_CAPABLE and MP_JOIN
connections rebuilt from the ACK that echoes the cookie, as Linux keeps them working;
forged and stale cookies refused."""

from __future__ import annotations

import random

import pytest

from stack.host import Stack, ip
from stack.mptcp.connection import MptcpConfig
from stack.syncookies import (
    JoinCookie,
    JoinCookieTable,
    SynCookies,
    cookie_tsval,
    ts_decode,
    ts_encode,
)
from stack.tcp.engine import State, TcpConfig
from stack.wire import tcp
from tests.sim.apps import bulk, multipath_pair
from tests.sim.net import LinkProfile, SimNet

A1, A2 = ip("10.0.1.2"), ip("10.0.2.2")
B1 = ip("10.0.1.1")
KEY = (B1, 5000, A1, 40000)


# ---- the cookie itself --------------------------------------------------------------
def test_a_cookie_keeps_the_table_mss_and_expires_after_two_minutes() -> None:
    c = SynCookies(bytes(range(32)))
    for mss, kept in ((1460, 1460), (1448, 1440), (1400, 1300), (536, 536), (9000, 1460)):
        isn = c.make(KEY, 12345, mss, now=100.0)
        assert c.check(KEY, 12345, isn, now=100.0) == kept
    isn = c.make(KEY, 12345, 1460, now=120.0)  # minute 2
    assert c.check(KEY, 12345, isn, now=239.9) == 1460   # minute 3
    assert c.check(KEY, 12345, isn, now=299.9) == 1460   # minute 4: the last good
    assert c.check(KEY, 12345, isn, now=300.0) is None   # minute 5: too old
    assert c.check(KEY, 12346, isn, now=100.0) is None         # another SYN
    assert c.check((B1, 5000, A1, 40001), 12345, isn, now=100.0) is None  # another flow
    assert c.check(KEY, 12345, isn ^ 1, now=100.0) is None
    assert SynCookies(bytes(32)).check(KEY, 12345, isn, now=100.0) is None  # another secret


def test_blind_guesses_almost_never_pass() -> None:
    c = SynCookies(bytes(range(32)))
    rnd = random.Random(5)
    hits = sum(c.check(KEY, rnd.getrandbits(32), rnd.getrandbits(32), 10.0) is not None
               for _ in range(50_000))
    assert hits <= 2  # 4 table entries in 2^24 hash values, 3 minutes accepted of 256


def test_the_timestamp_carries_window_scale_and_sack_and_never_goes_forward() -> None:
    for ws, sack in ((7, True), (0, False), (None, True), (14, False)):
        bits = ts_encode(ws, sack)
        for now_ts in (0x1000, 0x1003F, 0xFFFFFFC0, 123456789):
            ts = cookie_tsval(now_ts, bits)
            assert (now_ts - ts) & 0xFFFFFFFF < 64
            opts = ts_decode(ts)
            assert opts.wscale == ws and opts.sack == sack


def test_the_join_table_is_bounded_and_gives_an_entry_back_once() -> None:
    c = SynCookies(bytes(range(32)))
    table = JoinCookieTable(c, slots=16)
    for i in range(1000):
        table.save(JoinCookie((B1, 5000, A2, 40000 + i), i, 7, 1, 2, 3, False))
    assert len(table) <= 16
    e = JoinCookie(KEY, 99, 7, 1, 2, 3, True)
    table.save(e)
    assert table.take(KEY, 98) is None
    assert table.take(KEY, 99) == e and table.take(KEY, 99) is None


# ---- connections through cookies ----------------------------------------------------
def cookie_pair(syncookies: int = 2, tcp_a: TcpConfig | None = None,
                mptcp: bool = True, subflows_max: int = 8,
                ) -> tuple[Stack, Stack, SimNet]:
    a, b, net = multipath_pair(3, LinkProfile(delay=0.002, rate_bps=100e6),
                               cfg_b=MptcpConfig(subflows_max=subflows_max))
    b.config.syncookies = syncookies
    if tcp_a is not None:
        a.config.tcp = tcp_a
    if not mptcp:
        a.config.mptcp = None
    return a, b, net


def test_plain_tcp_through_a_cookie_keeps_window_scaling_and_sack() -> None:
    a, b, net = cookie_pair(mptcp=False)
    data = random.Random(1).randbytes(1_000_000)
    sa, sb = bulk(a, b, net, data, data[::-1])
    assert sb.got == data and sa.got == data[::-1] and sb.error is None
    cb = b.all_counters()
    assert cb["SyncookiesSent"] == 1 and cb["SyncookiesRecv"] == 1
    assert cb["PassiveOpens"] == 1 and cb["SyncookiesFailed"] == 0
    eng, peer = sb.conn.engine, sa.conn.engine
    assert eng.snd_wscale == peer.rcv_wscale > 0 and eng.rcv_wscale == peer.snd_wscale > 0
    assert eng.sack_enabled and peer.sack_enabled


def test_a_peer_without_timestamps_gets_a_connection_without_window_scaling() -> None:
    a, b, net = cookie_pair(tcp_a=TcpConfig(timestamps=False), mptcp=False)
    data = random.Random(2).randbytes(300_000)
    sa, sb = bulk(a, b, net, data)
    assert sb.got == data and sb.error is None
    assert sb.conn.engine.snd_wscale == 0 and sa.conn.engine.snd_wscale == 0
    assert not sb.conn.engine.sack_enabled
    assert b.all_counters()["SyncookiesRecv"] == 1


def test_mptcp_and_a_join_through_cookies() -> None:
    a, b, net = cookie_pair()
    data = random.Random(3).randbytes(2_000_000)
    sa, sb = bulk(a, b, net, data, data[::-1], join_from=[(A2, False)])
    assert sb.got == data and sa.got == data[::-1]
    assert sa.error is None and sb.error is None
    msk_a, msk_b = sa.conn.msk, sb.conn.msk
    assert msk_b.local_key == msk_a.remote_key and msk_b.remote_key == msk_a.local_key
    assert len(msk_b.subflows) == 2 and msk_b.subflows[1].fully_established
    cb = b.all_counters()
    assert cb["SyncookiesSent"] == 2 and cb["SyncookiesRecv"] == 2
    assert cb["MPCapableSYNRX"] == 1 and cb["MPCapableACKRX"] == 1
    assert cb["MPJoinSynRx"] == 1 and cb["MPJoinAckRx"] == 1  # each counted once
    assert cb["PassiveOpens"] == 2


def test_a_join_over_the_limit_is_refused_at_its_syn_under_cookies() -> None:
    a, b, net = cookie_pair(subflows_max=0)
    data = random.Random(4).randbytes(500_000)
    sa, sb = bulk(a, b, net, data, join_from=[(A2, False)])
    assert sb.got == data and sa.error is None and sb.error is None
    cb, ca = b.all_counters(), a.all_counters()
    assert cb["MPJoinSynRx"] == 1 and cb["MPJoinRejected"] == 1 and cb["MPJoinAckRx"] == 0
    assert ca["MPJoinSynAckRx"] == 0
    assert len(sb.conn.msk.subflows) == 1


def test_cookies_only_once_the_backlog_is_full() -> None:
    a, b, net = cookie_pair(syncookies=1, mptcp=False)
    b.listen(6000, backlog=1)
    conns = [a.connect(B1, 6000, 0.0, local_port=41000 + i) for i in range(4)]
    net.run(0.1)
    assert all(c.engine.state is State.ESTABLISHED for c in conns)
    cb = b.all_counters()
    assert cb["TCPReqQFullDoCookies"] == 3 and cb["SyncookiesRecv"] == 3
    assert cb["PassiveOpens"] == 4 and cb["TCPReqQFullDrop"] == 0


@pytest.mark.parametrize("syncookies", [1, 2])
def test_a_forged_ack_gets_an_rst_and_no_connection(syncookies: int) -> None:
    a, b, net = cookie_pair(syncookies=syncookies, mptcp=False)
    b.listen(6000, backlog=1)
    # a cookie sent (mode 1: the second SYN finds the backlog full), so that ACKs for
    # no connection are looked at
    conns = [a.connect(B1, 6000, 0.0, local_port=p) for p in (41000, 41001)[:3 - syncookies]]
    net.run(0.1)
    assert all(c.engine.state is State.ESTABLISHED for c in conns)
    assert b.counters["SyncookiesRecv"] == 1
    forged = tcp.TcpHeader(41234, 6000, 1000, 0x12345678, tcp.ACK, 1000)
    packet, _ = tcp.emit_ipv4_segment(A1, B1, 1, 64, forged, b"x")
    before = b.counters["OutRsts"]
    b.feed(packet, net.now)
    assert b.counters["SyncookiesFailed"] == 1 and b.counters["OutRsts"] == before + 1
    assert len({id(x) for x in b.conns.values()}) == len(conns)


def test_a_window_scale_over_14_survives_the_cookie_as_14() -> None:
    """RFC 7323 2.3: a shift over 14 is used as 14; the cookie keeps what the SYN/ACK's
    connection used, so the rebuilt one scales the peer's window the same way."""
    b = Stack([B1])
    b.config.syncookies = 2
    b.config.mptcp = None
    b.listen(5000, mptcp=False)
    syn = tcp.TcpHeader(40000, 5000, 1000, 0, tcp.SYN, 65535,
                        [tcp.Mss(1460), tcp.WindowScale(15), tcp.SackPermitted(),
                         tcp.Timestamps(777, 0)])
    b.feed(tcp.emit_ipv4_segment(A1, B1, 1, 64, syn, b"")[0], 1.0)
    (synack,) = b.poll_transmit(1.0)
    sa, _ = tcp.parse(memoryview(synack.packet)[20:])
    assert sa.flags == tcp.SYN | tcp.ACK and not b.conns
    ts = sa.option(tcp.Timestamps)
    ack = tcp.TcpHeader(40000, 5000, 1001, (sa.seq + 1) & 0xFFFFFFFF, tcp.ACK, 10,
                        [tcp.Timestamps(778, ts.tsval)])  # type: ignore[union-attr]
    b.feed(tcp.emit_ipv4_segment(A1, B1, 2, 64, ack, b"")[0], 1.01)
    (conn,) = {id(c): c for c in b.conns.values()}.values()
    assert conn.engine.state is State.ESTABLISHED and conn.engine.snd_wscale == 14
    assert conn.engine.snd_wnd == 10 << 14


def test_every_syn_answered_with_a_cookie_is_counted_as_delivered() -> None:
    """The host's accounting holds under cookies: InReceives = InDelivers + drops
    (a SYN answered by a cookie SYN/ACK is delivered; before, it was neither)."""
    from tests.sim.test_forgeries_sim import segment
    _, b, _ = cookie_pair(syncookies=2)
    b.listen(6000)
    for i in range(50):
        b.feed(segment(A1, B1, 20000 + i, 6000, 1000 * i, 0, tcp.SYN, [tcp.Mss(1460)]),
               0.1 + i * 1e-3)
    c = b.counters
    drops = sum(v for k, v in c.items() if k.startswith("Drop:"))
    assert c["SyncookiesSent"] == 50
    assert c["InReceives"] == c["InDelivers"] + drops == 50
