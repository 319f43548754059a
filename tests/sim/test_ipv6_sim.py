"""Two of our stacks over IPv6 on the simulated link: TCP and MPTCP, loss and
reordering, exact bytes; the IPv6 MSS; ping; a join that cannot change family; a
connection of both families (an IPv4 first subflow, an IPv6 join) where the socket
family allows it."""

from __future__ import annotations

import random

import pytest

from stack.host import Stack, StackConfig, ip
from stack.mptcp.connection import MptcpConfig
from stack.mptcp.pm import EndpointFlags
from stack.tcp.engine import TcpConfig
from stack.wire import icmp6, ipv6, tcp
from tests.sim.apps import bulk
from tests.sim.net import LinkProfile, SimNet

A6, B6 = ip("fd00:1::2"), ip("fd00:1::1")
A6_2 = ip("fd00:2::2")
MB = 1_000_000


def v6_pair(seed: int, profile: LinkProfile, mptcp: bool, csum: bool = False,
            gso: int = 1, offload: bool = False) -> tuple[Stack, Stack, SimNet]:
    m = MptcpConfig(checksum=csum) if mptcp else None
    a = Stack([A6, A6_2, ip("10.0.1.2")], rng=random.Random(seed),
              config=StackConfig(tcp=TcpConfig(gso_segments=gso), mptcp=m,
                                 tx_csum_offload=offload, split_payload=offload))
    b = Stack([B6], rng=random.Random(seed + 1), config=StackConfig(mptcp=m))
    return a, b, SimNet([a, b], seed=seed, profile=profile)


@pytest.mark.parametrize("mptcp", [False, True])
def test_10mb_each_way_over_ipv6_with_loss_and_reordering(mptcp: bool) -> None:
    # reordering from the handshake's end: a first data segment ahead of the third ACK
    # would make the server fall back, as Linux's does (subflow_syn_recv_sock)
    a, b, net = v6_pair(3, LinkProfile(delay=0.005), mptcp, csum=mptcp)
    da, db = random.Random(1).randbytes(10 * MB), random.Random(2).randbytes(10 * MB)
    sa, sb = bulk(a, b, net, da, db, server=B6,
                  after_handshake=LinkProfile(delay=0.005, jitter=0.002, loss=0.01))
    assert bytes(sb.got) == da and bytes(sa.got) == db
    assert sa.error is None and sb.error is None
    if mptcp:
        assert not sa.conn.msk.fallback and not sb.conn.msk.fallback
    assert sa.conn.key[0] == A6  # the source on the destination's /64


def test_ipv6_segments_fit_a_1500_mtu_and_gso_super_packets_are_cut() -> None:
    seen: list[bytes] = []

    def watch(p: bytes) -> bytes:
        seen.append(p)
        return p

    a, b, net = v6_pair(4, LinkProfile(delay=0.002, mangle=watch), True, gso=44, offload=True)
    data = random.Random(3).randbytes(3 * MB)
    sa, sb = bulk(a, b, net, data, server=B6)
    assert bytes(sb.got) == data and sa.error is None
    assert max(len(p) for p in seen) <= 1500  # 40-byte IPv6 header: MSS 1440
    syns = [tcp.parse(memoryview(p)[ipv6.HEADER_LEN:])[0] for p in seen
            if tcp.parse(memoryview(p)[ipv6.HEADER_LEN:])[0].flags & tcp.SYN]
    assert [next(o.value for o in h.options if isinstance(o, tcp.Mss)) for h in syns] \
        == [1440, 1440]


def test_ping6_is_answered_and_a_join_across_families_is_refused() -> None:
    a, b, net = v6_pair(5, LinkProfile(delay=0.001), True)
    req = icmp6.Icmp6Message(icmp6.ECHO_REQUEST, 0, (7 << 16) | 1, b"ping")
    b.feed(icmp6.emit_packet(A6, B6, req), 0.0)
    (d,) = b.poll_transmit(0.0)
    iph, end = ipv6.parse(d.data)
    rep = icmp6.parse(memoryview(d.data)[iph.header_len:end], iph.src, iph.dst)
    assert (iph.src, iph.dst, rep.type, rep.rest, rep.data) == (B6, A6, icmp6.ECHO_REPLY,
                                                                 (7 << 16) | 1, b"ping")
    b.listen(5000)
    conn = a.connect(B6, 5000, 0.0)
    net.run(0.2)
    conn.sock.send(b"x" * 100)  # its data ACK makes us fully established
    a.touch(conn)
    net.run(0.5)
    assert conn.msk is not None and conn.msk.fully_established
    with pytest.raises(OSError, match="not the same address family"):
        a.add_subflow(conn, ip("10.0.1.2"), net.now)
    a.add_subflow(conn, A6_2, net.now)  # a v6 join from the other v6 address
    net.run(0.5)
    assert len([sf for sf in conn.msk.subflows if sf.fully_established]) == 2


def test_the_ladder_shows_an_ipv6_mptcp_handshake_with_its_values_verified() -> None:
    import io

    from tools.trace import LadderTracer

    a, b, net = v6_pair(6, LinkProfile(delay=0.002), True)
    out = io.StringIO()
    tracer = LadderTracer(out=out)
    tracer.stack = a
    a.tap = tracer
    data = random.Random(4).randbytes(100_000)
    _, sb = bulk(a, b, net, data, server=B6)
    assert bytes(sb.got) == data
    text = out.getvalue()
    assert "[fd00:1::2]:" in text and "> [fd00:1::1]:5000" in text, text[:2000]
    assert "MP_CAPABLE" in text and "verified" in text and "MISMATCH" not in text
    assert "malformed" not in text


@pytest.mark.parametrize("ipv6_socket", [True, False], ids=["AF_INET6", "AF_INET"])
def test_a_mixed_family_connection_where_the_socket_allows_it(ipv6_socket: bool) -> None:
    """a connects over IPv4; b, dual-stack, announces its IPv6 address. With an AF_INET6
    socket (a connect to ::ffff:10.0.1.1) a joins it from its own IPv6 address: 2 MB
    each way over an IPv4 and an IPv6 subflow, with loss. With an AF_INET one it
    echoes and does not join, and says why (Linux's `mptcp_pm_addr_families_match`)."""
    v4a, v4b, v6b = ip("10.0.1.2"), ip("10.0.1.1"), ip("fd00:2::1")
    a = Stack([v4a, A6_2], rng=random.Random(8), config=StackConfig(mptcp=MptcpConfig()))
    b = Stack([v4b, v6b], rng=random.Random(9), config=StackConfig(mptcp=MptcpConfig()))
    net = SimNet([a, b], seed=8, profile=LinkProfile(delay=0.005, loss=0.01))
    rng = random.Random(3)
    up, down = rng.randbytes(2 * MB), rng.randbytes(2 * MB)
    sa, sb = bulk(a, b, net, up, down, server=v4b, announce=[v6b], ipv6_socket=ipv6_socket)
    assert bytes(sb.got) == up and bytes(sa.got) == down
    assert sa.conn is not None and sa.conn.msk is not None
    msk = sa.conn.msk
    keys = [sf.key for sf in msk.subflows]
    if ipv6_socket:
        assert [(len(k[0]), len(k[2])) for k in keys] == [(4, 4), (16, 16)], keys
        assert keys[1][0] == A6_2 and keys[1][2] == v6b
        assert all(sf.tx_next > 1 for sf in msk.subflows) and msk.diag.findings == []
        return
    assert len(keys) == 1 and msk.counters["AddAddr"] == 1
    (f,) = msk.diag.findings
    assert f.code == "add-addr-other-family" and f.severity == "info", f
    assert "fd00:2::1" in f.text and "::ffff:" in f.hint


def test_fullmesh_endpoints_join_only_addresses_of_their_family() -> None:
    """mptcp_join.sh "simult IPv4 and IPv6 subflows, fullmesh 1x1": an AF_INET6
    connection over IPv6 whose only fullmesh endpoint is IPv6; the peer announces an
    IPv4 address: no fullmesh endpoint of that family, so (as the 6.18 kernel does)
    the address routed towards it joins it, once."""
    v4a, v4b, v6b = ip("10.0.1.2"), ip("10.0.1.1"), ip("fd00:2::1")
    a = Stack([A6_2, v4a], rng=random.Random(8), config=StackConfig(mptcp=MptcpConfig()))
    b = Stack([v6b, v4b], rng=random.Random(9), config=StackConfig(mptcp=MptcpConfig()))
    net = SimNet([a, b], seed=8, profile=LinkProfile(delay=0.002))
    a.endpoints.set_flag([A6_2], EndpointFlags.FULLMESH)
    data = random.Random(3).randbytes(MB)
    sa, sb = bulk(a, b, net, data, server=v6b, announce=[v4b])
    assert bytes(sb.got) == data and sa.conn is not None and sa.conn.msk is not None
    msk = sa.conn.msk
    assert [(sf.key[0], sf.key[2]) for sf in msk.subflows] == [(A6_2, v6b), (v4a, v4b)]
    assert msk.pm.accepted_ids == {1} and msk.diag.findings == []


def test_an_address_announced_on_a_connection_begun_on_another_has_a_nonzero_id() -> None:
    """mptcp_join.sh "simult IPv4 and IPv6 subflows": a connects to b's IPv6 address and
    b announces its IPv4 one, which is b's first address (id 0 in its table). On this
    connection id 0 is the IPv6 address the connection began on (RFC 8684 3.4.1,
    Linux `mptcp_pm_get_local_id`): the IPv4 one goes out with another id, and a joins
    it."""
    v4a, v4b, v6b = ip("10.0.1.2"), ip("10.0.1.1"), ip("fd00:2::1")
    a = Stack([v4a, A6_2], rng=random.Random(8), config=StackConfig(mptcp=MptcpConfig()))
    b = Stack([v4b, v6b], rng=random.Random(9), config=StackConfig(mptcp=MptcpConfig()))
    net = SimNet([a, b], seed=8, profile=LinkProfile(delay=0.002))
    data = random.Random(3).randbytes(MB)
    sa, sb = bulk(a, b, net, data, server=v6b, announce=[v4b])
    assert bytes(sb.got) == data and sa.conn is not None and sa.conn.msk is not None
    assert sb.conn is not None and sb.conn.msk is not None
    assert sa.conn.msk.pm.remote_addrs == {1: (v4b, None)}
    # (a numbers its own IPv4 address the same way)
    assert [(sf.local_id, sf.remote_id) for sf in sb.conn.msk.subflows] == [(0, 0), (1, 1)]
    assert [sf.key[2] for sf in sa.conn.msk.subflows] == [v6b, v4b]


def test_a_join_to_an_address_we_do_not_listen_on_is_refused_and_explained() -> None:
    """mptcp_join.sh "bind main address v6, no join v6" with our stack as ns1: b listens
    at its first address only and announces its second; a's join there meets no
    listener: a plain RST (as Linux answers it), and b's diagnosis says so."""
    b6_2 = ip("fd00:2::1")
    a = Stack([A6, A6_2], rng=random.Random(8), config=StackConfig(mptcp=MptcpConfig()))
    b = Stack([B6, b6_2], rng=random.Random(9), config=StackConfig(mptcp=MptcpConfig()))
    net = SimNet([a, b], seed=8, profile=LinkProfile(delay=0.002))
    b.listen(5000, addr=B6, announce=[b6_2])
    conn = a.connect(B6, 5000, 0.0)
    net.run(0.2)
    conn.sock.send(b"x" * 1000)
    a.touch(conn)
    net.run(1.0)
    assert conn.msk is not None and len(conn.msk.subflows) == 2
    assert conn.msk.subflows[1].key[2] == b6_2 and conn.msk.subflows[1].engine.is_closed
    (bconn,) = list(b.connections())
    assert bconn.msk is not None and len(bconn.msk.subflows) == 1
    assert b6_2 in bconn.msk.pm.joins_unheard
    bconn.msk.conclude(net.now)
    (f,) = bconn.msk.diag.findings
    assert f.code == "add-addr-ignored" and "listen --bind" in f.hint, f
    with pytest.raises(OSError, match="not one of this stack's addresses"):
        b.listen(5001, addr=ip("fd00:9::1"))
