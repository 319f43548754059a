"""MP_JOIN between two of our stacks (RFC 8684 3.2): a second subflow from another
address, HMACs both ways, both subflows carrying data; refused joins reset."""

from __future__ import annotations

import random

from stack.diag import fmt_key
from stack.host import Stack, ip
from stack.mptcp.connection import MptcpConfig
from stack.wire import ipv4, tcp
from stack.wire import mptcp as wm
from tests.sim.apps import bulk, multipath_pair
from tests.sim.net import LinkProfile, PathCut, SimNet

A1, A2 = ip("10.0.1.2"), ip("10.0.2.2")
B1, B2 = ip("10.0.1.1"), ip("10.0.2.1")


def two_path_pair(seed: int = 1, profile: LinkProfile | None = None,
                  ) -> tuple[Stack, Stack, SimNet]:
    return multipath_pair(seed, profile)


def run_with_join(data: bytes, seed: int = 1, profile: LinkProfile | None = None,
                  backup: bool = False):  # type: ignore[no-untyped-def]
    a, b, net = two_path_pair(seed, profile)
    sa, sb = bulk(a, b, net, data, data[::-1], join_from=[(A2, backup)])
    return a, b, sa, sb


def test_a_join_from_a_second_address_carries_data_both_ways() -> None:
    data = random.Random(1).randbytes(4_000_000)
    a, b, sa, sb = run_with_join(data, profile=LinkProfile(delay=0.003, rate_bps=200e6))
    assert sb.got == data and sa.got == data[::-1]
    assert sa.error is None and sb.error is None
    msk_a, msk_b = sa.conn.msk, sb.conn.msk
    assert len(msk_a.subflows) == 2 and len(msk_b.subflows) == 2
    for msk in (msk_a, msk_b):
        join = msk.subflows[1]
        assert join.join and join.fully_established and join.join_failed is None
        # both subflows carried data in both directions
        assert all(sf.tx_next > 100_000 for sf in msk.subflows), \
            [sf.tx_next for sf in msk.subflows]
    assert "SF_ESTABLISHED" in sa.mptcp_events() and "SF_ESTABLISHED" in sb.mptcp_events()
    ca, cb = a.all_counters(), b.all_counters()
    assert ca["MPJoinSynAckRx"] == 1 and cb["MPJoinSynRx"] == 1 and cb["MPJoinAckRx"] == 1


def test_joins_with_loss_and_reordering_deliver_every_byte() -> None:
    prof = LinkProfile(delay=0.004, jitter=0.002, loss=0.02, reorder=0.03, rate_bps=100e6)
    data = random.Random(2).randbytes(3_000_000)
    _a, _b, sa, sb = run_with_join(data, seed=3, profile=prof)
    assert sb.got == data and sa.got == data[::-1]
    assert len(sa.conn.msk.subflows) == 2


def test_a_backup_subflow_carries_no_data_while_the_other_works() -> None:
    data = random.Random(4).randbytes(2_000_000)
    _a, _b, sa, sb = run_with_join(data, backup=True, profile=LinkProfile(delay=0.003))
    assert sb.got == data
    join = sa.conn.msk.subflows[1]
    assert join.backup and join.fully_established
    assert join.tx_next == 1  # no data mapped onto it


def test_unknown_token_gets_rst_with_mp_tcprst_reason_1() -> None:
    _a, b, _net = two_path_pair()
    b.listen(5000)
    h = tcp.TcpHeader(40000, 5000, 1000, 0, tcp.SYN, 65535,
                      [wm.to_tcp_option(wm.MpJoinSyn(False, 1, 0xDEADBEEF, 42))])
    seg = tcp.emit(h, b"", A2, B1)
    b.feed(ipv4.emit(ipv4.IPv4Header(A2, B1, ipv4.PROTO_TCP), len(seg)) + seg, 0.0)
    (rst,) = b.poll_transmit(0.0)
    ih, end = ipv4.parse(rst.data)
    rh, _ = tcp.parse(rst.data[ih.header_len:end])
    assert rh.flags & tcp.RST
    (opt,) = [wm.parse_tcp_option(o) for o in rh.options if isinstance(o, tcp.UnknownOption)]
    assert opt == wm.MpTcpRst(wm.MPTCP_RST_EMPTCP, 0)
    assert b.counters["MPJoinNoTokenFound"] == 1


def test_bad_hmac_in_the_third_ack_is_refused_with_a_reset() -> None:
    a, b, net = two_path_pair(seed=5, profile=LinkProfile(delay=0.002))
    b.listen(5000)
    ca = a.connect(B1, 5000, 0.0)
    ca.sock.send(b"x" * 10_000)
    a.touch(ca)
    net.run(0.5)
    assert ca.msk.fully_established
    eng = a.add_subflow(ca, A2, net.now)
    sf = ca.msk.subflow_of(eng)
    # the keys stay right: only the joiner's third-ACK HMAC is wrong
    orig = ca.msk.join_ack_hmac
    ca.msk.join_ack_hmac = lambda s: bytes(20)  # type: ignore[method-assign,assignment]
    net.run(1.0)
    ca.msk.join_ack_hmac = orig  # type: ignore[method-assign]
    cb = b.all_counters()
    assert cb["MPJoinAckHMacFailure"] == 1
    msk_b = next(iter(b.conns.values())).msk
    assert len(msk_b.subflows) == 2 and msk_b.subflows[1].join_failed == "bad third-ACK HMAC"
    assert sf.engine.is_closed or sf.engine.state.name == "CLOSED"
    assert ca.msk.subflows[0].engine.state.name == "ESTABLISHED"  # the connection lives


def test_a_path_dies_mid_transfer_and_every_byte_arrives_on_the_other() -> None:
    # both subflows up and carrying data, then path 1 (10.0.1.2's) goes dark both ways:
    # its unacked data is reinjected on the join, the transfer completes, and the
    # connection closes (the stale master is reset, not FIN-closed into the void)
    path1 = PathCut(A1)
    data = random.Random(6).randbytes(6_000_000)
    a, b, net = two_path_pair(seed=6, profile=LinkProfile(delay=0.003, rate_bps=100e6,
                                                          drop_filter=path1))

    def cut_once_the_join_carries_data(sa: object, sb: object) -> None:
        got = len(sb.got)  # type: ignore[attr-defined]
        if not path1.down and got > 1_500_000:
            msk = sa.conn.msk  # type: ignore[attr-defined]
            assert len(msk.subflows) == 2 and msk.subflows[1].tx_next > 1
            path1.down = True

    sa, sb = bulk(a, b, net, data, join_from=[(A2, False)], max_time=300,
                  on_step=cut_once_the_join_carries_data)
    assert sa.closed and sb.closed
    assert bytes(sb.got) == data
    assert sa.error is None and sb.error is None
    assert a.all_counters()["SubflowStale"] == 1 and a.all_counters()["Reinjected"] > 0
    # the diagnosis: the stale master, the join that took over, and our last packet on
    # the dead path; nothing else (the connection closed cleanly)
    f = next(f for f in sa.conn.msk.diag.findings if f.code == "path-failed")
    codes = [x.code for x in sa.conn.msk.diag.findings]
    assert codes == ["path-failed"], codes
    master, join = sa.conn.msk.subflows
    assert f"subflow {fmt_key(master.key)} went stale" in f.text
    assert f"its data goes on {fmt_key(join.key)}" in f.text
    assert f.packet is not None and f.packet.direction == "out"
    assert f.packet.subflow == master.key


def test_a_silent_subflow_holding_the_data_level_head_is_reinjected_before_it_goes_stale(
        ) -> None:
    # the receiver's window (2 MB) soon fills behind the hole a dead path leaves: once
    # half of it is out and path 1 has been silent for two of its RTTs, its unacked
    # data goes on the join at once, not two RTOs later when it goes stale (a Linux
    # receiver can stall for good in between: stack.mptcp.connection._head_of_line)
    path1 = PathCut(A1)
    data = random.Random(7).randbytes(6_000_000)
    a, b, net = multipath_pair(7, LinkProfile(delay=0.003, rate_bps=100e6, drop_filter=path1),
                               cfg_b=MptcpConfig(rcv_buf=2 << 20))
    seen: dict[str, float] = {}

    def cut_then_watch(sa: object, sb: object) -> None:
        if not path1.down and len(sb.got) > 1_500_000:  # type: ignore[attr-defined]
            path1.down = True
            seen["cut"] = net.now
        c = a.all_counters()
        for name in ("HolReinjections", "SubflowStale"):
            if c[name] and name not in seen:
                seen[name] = net.now

    sa, sb = bulk(a, b, net, data, join_from=[(A2, False)], max_time=300,
                  on_step=cut_then_watch)
    assert bytes(sb.got) == data and sa.error is None and sb.error is None
    c = a.all_counters()
    assert c["HolReinjections"] == 1 and c["SubflowStale"] == 1, seen
    # within the dead path's first RTO (>= 200 ms), long before it went stale
    assert seen["cut"] < seen["HolReinjections"] < seen["cut"] + 0.2 < seen["SubflowStale"], seen
    # the stale marking found the data reinjected already: not a second time
    assert c["Reinjected"] <= 1_000_000, c["Reinjected"]


def test_a_subflow_that_hears_acks_between_its_rtos_is_not_stale() -> None:
    # path 1 loses the client's data only (a one-way blackhole; the server's data and
    # ACKs still come back on it). Linux's stale rule counts retransmission periods in
    # which nothing at all was received (rcv_tstamp): the master keeps hearing, so it
    # is never stale; the data it holds reaches the server by the data-level RTO on
    # the join, and every byte arrives both ways
    cut = [False]

    def client_data_on_path1(pkt: bytes) -> bool:
        h, end = ipv4.parse(pkt, verify_checksum=False)
        if not cut[0] or h.src != A1:
            return False
        _, doff = tcp.parse(memoryview(pkt)[h.header_len:end])
        if end - h.header_len - doff > 0:
            dropped.append(len(pkt))
            return True
        return False

    dropped: list[int] = []
    data = random.Random(8).randbytes(3_000_000)
    back = random.Random(9).randbytes(12_000_000)  # still coming when the client is done
    a, b, net = two_path_pair(seed=8, profile=LinkProfile(
        delay=0.003, rate_bps=100e6, drop_filter=client_data_on_path1))

    def cut_once_the_join_carries_data(sa: object, sb: object) -> None:
        if not cut[0] and len(sb.got) > 100_000:  # type: ignore[attr-defined]
            cut[0] = True

    sa, sb = bulk(a, b, net, data, back, join_from=[(A2, False)], max_time=300,
                  on_step=cut_once_the_join_carries_data)
    assert cut[0] and bytes(sb.got) == data and bytes(sa.got) == back
    ca = a.all_counters()
    # the master's RTO fired again and again (the old rule, 2 RTOs, made it stale)
    assert dropped and ca["TCPTimeouts"] >= 4, ca
    assert ca["SubflowStale"] == 0 and ca["MPTCPRetrans"] > 0, ca
