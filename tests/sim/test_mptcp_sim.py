"""MPTCP between two of our stacks over the simulated link: data integrity under loss
and reordering, checksums, and the middlebox cases of RFC 8684 3.7 (options stripped
after the handshake -> fallback; payload rewritten -> MP_FAIL -> infinite mapping)."""

from __future__ import annotations

import random

import pytest

from stack.mptcp import recv
from tests.sim.apps import bulk, mptcp_pair
from tests.sim.middlebox import corrupt_payload, strip_mptcp
from tests.sim.net import LinkProfile

MB = 1_000_000


def payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize("csum", [False, True], ids=["plain", "checksum"])
def test_10mb_each_way_with_loss_and_reordering(csum: bool) -> None:
    # loss from the first data ACK on: an MP_CAPABLE lost with the third ACK and the
    # first data segment makes the server fall back (test below), as Linux does
    prof = LinkProfile(delay=0.004, jitter=0.002, loss=0.05, reorder=0.05, duplicate=0.01)
    a, b, net = mptcp_pair(seed=4, profile=LinkProfile(delay=0.004), csum_a=csum)
    da, db = payload(10 * MB, 1), payload(10 * MB, 2)
    sa, sb = bulk(a, b, net, da, db, after_handshake=prof)
    assert sb.got == da and sa.got == db
    assert sa.error is None and sb.error is None
    assert not sa.conn.msk.fallback and not sb.conn.msk.fallback
    assert sa.conn.msk.csum_enabled is csum and sb.conn.msk.csum_enabled is csum
    assert a.all_counters()["RetransSegs"] > 0 and b.all_counters()["RetransSegs"] > 0
    assert sa.mptcp_events()[:2] == ["CREATED", "ESTABLISHED"]
    assert sa.mptcp_events()[-1] == "CLOSED" and sb.mptcp_events()[-1] == "CLOSED"


def test_gso_super_packets_with_checksums_and_loss() -> None:
    # one mapping per super-packet; a lost piece is retransmitted with that mapping
    prof = LinkProfile(delay=0.002, loss=0.02)
    a, b, net = mptcp_pair(seed=6, profile=prof, csum_a=True, gso_a=44, offload_a=True)
    da = payload(5 * MB)
    _sa, sb = bulk(a, b, net, da)
    assert sb.got == da and sb.error is None
    assert b.all_counters()["DSSNotMatching"] == 0 and b.all_counters()["DataCsumErr"] == 0


@pytest.mark.parametrize("csum", [False, True], ids=["plain", "checksum"])
def test_data_the_peer_dropped_after_tcp_acking_it_is_sent_again(csum: bool) -> None:
    # the kernel drops bytes its subflow already TCP-acked when the msk is short of
    # memory (`__mptcp_move_skb`): no subflow sends them again, the data ACK stops, and
    # only the data-level retransmission timer (Linux `__mptcp_retrans`) recovers
    a, b, net = mptcp_pair(seed=3, profile=LinkProfile(delay=0.004), csum_a=csum)
    da = payload(3 * MB)
    dropped: list[tuple[int, int]] = []

    deliver = recv.deliver

    def lossy(msk: object, off: int, data: bytes) -> None:
        if not dropped and off >= MB and msk is b_msk[0]:
            dropped.append((off, len(data)))  # TCP-acked, never delivered
            return
        deliver(msk, off, data)  # type: ignore[arg-type]

    b_msk: list[object] = [None]

    def on_step(sa: object, sb: object) -> None:
        if sb.conn is not None:  # type: ignore[attr-defined]
            b_msk[0] = sb.conn.msk  # type: ignore[attr-defined]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recv, "deliver", lossy)
        sa, sb = bulk(a, b, net, da, on_step=on_step, max_time=120)
    assert dropped and sb.got == da and sa.error is None and sb.error is None
    assert a.all_counters()["MPTCPRetrans"] >= 1
    assert a.all_counters()["RetransSegs"] == 0  # TCP had nothing to repair


def test_tokens_keys_and_idsn_agree_on_both_sides() -> None:
    a, b, net = mptcp_pair(seed=8)
    sa, sb = bulk(a, b, net, payload(100_000))
    ma, mb = sa.conn.msk, sb.conn.msk
    assert (ma.remote_key, mb.remote_key) == (mb.local_key, ma.local_key)
    assert (ma.remote_token, mb.remote_token) == (mb.local_token, ma.local_token)
    assert (ma.remote_idsn, mb.remote_idsn) == (mb.local_idsn, ma.local_idsn)


def test_third_ack_and_first_data_lost_server_falls_back_like_linux() -> None:
    # Both segments carrying the client's MP_CAPABLE are lost; the next (a DSS) cannot
    # tell the server the client's key: fall back (Linux subflow_syn_recv_sock).
    sent = [0]

    def drop_mpc_carriers(pkt: bytes) -> bool:
        if pkt[12:16] != bytes([10, 0, 1, 2]):  # from the client only
            return False
        sent[0] += 1
        return sent[0] in (2, 3)  # 1 = SYN, 2 = third ACK, 3 = first data

    a, b, net = mptcp_pair(seed=3, profile=LinkProfile(delay=0.003,
                                                       drop_filter=drop_mpc_carriers))
    da = payload(MB)
    sa, sb = bulk(a, b, net, da, payload(1000, 2))
    assert sb.got == da and sa.got == payload(1000, 2)
    assert sb.conn.msk.fallback and b.all_counters()["MPCapableFallbackACK"] == 1
    assert sa.conn.msk.fallback  # the server's first ACK carried no DSS


def test_a_fallback_with_more_queued_than_tcps_buffer_loses_nothing() -> None:
    # regression: at the fallback, the bytes not yet mapped went to TCP in one send()
    # that took 4 MiB (its buffer) and dropped the rest: 4,194,304 of 10 MB arrived and
    # both sides reported a clean close
    sent = [0]

    def drop_mpc_carriers(pkt: bytes) -> bool:
        if pkt[12:16] != bytes([10, 0, 1, 2]):
            return False
        sent[0] += 1
        return sent[0] in (2, 3)

    a, b, net = mptcp_pair(seed=3, profile=LinkProfile(delay=0.003,
                                                       drop_filter=drop_mpc_carriers))
    da = payload(10 * MB)
    sa, sb = bulk(a, b, net, da)
    assert sb.conn.msk.fallback and sa.conn.msk.fallback
    assert len(sb.got) == len(da) and sb.got == da
    assert sa.error is None and sb.error is None


def test_plain_tcp_peer_means_fallback_with_every_byte() -> None:
    a, b, net = mptcp_pair(seed=2, mptcp_b=False)
    da = payload(MB)
    sa, sb = bulk(a, b, net, da, payload(MB, 3))
    assert sb.got == da and sa.got == payload(MB, 3)
    assert sa.conn.msk.fallback and "no MP_CAPABLE" in sa.conn.msk.fallback_reason
    assert sb.conn.msk is None  # the listener saw a plain SYN
    assert sa.mptcp_events()[0] == "FALLBACK"
    assert a.all_counters()["MPCapableFallbackSYNACK"] == 1


@pytest.mark.parametrize("only_data", [False, True], ids=["all-after-syn", "data-only"])
def test_middlebox_stripping_options_after_the_handshake_falls_back(only_data: bool) -> None:
    prof = LinkProfile(delay=0.003, mangle=strip_mptcp(only_with_payload=only_data))
    a, b, net = mptcp_pair(seed=5, profile=prof)
    da, db = payload(2 * MB, 1), payload(2 * MB, 2)
    sa, sb = bulk(a, b, net, da, db)
    assert sb.got == da and sa.got == db
    assert sa.error is None and sb.error is None
    assert sa.conn.msk.fallback and sb.conn.msk.fallback
    assert "FALLBACK" in sa.mptcp_events() and "FALLBACK" in sb.mptcp_events()
    counters = a.all_counters() + b.all_counters()
    assert counters["MPCapableFallbackACK"] + counters["MPCapableDataFallback"] >= 1


def test_rewritten_payload_fails_the_dss_checksum_mp_fail_then_infinite_mapping() -> None:
    prof = LinkProfile(delay=0.003)
    a, b, net = mptcp_pair(seed=7, profile=prof, csum_a=True)
    # packet 200: well past the first (64 KB) mapping, whose checksum checked out
    net.profiles[(0, 1)] = LinkProfile(delay=0.003, mangle=corrupt_payload(nth=200))
    da = payload(2 * MB)
    sa, sb = bulk(a, b, net, da)
    # the receiver found the bad checksum and said MP_FAIL; the sender answered with
    # MP_FAIL and one infinite mapping and fell back; the receiver fell back on that
    # mapping; the byte stream goes on (the rewritten byte is what TCP delivers, as
    # Linux does)
    cb, ca = b.all_counters(), a.all_counters()
    assert (cb["DataCsumErr"], cb["MPFailTx"], cb["MPFailRx"], cb["InfiniteMapRx"]) \
        == (1, 1, 1, 1)
    assert (ca["MPFailRx"], ca["MPFailTx"], ca["InfiniteMapTx"]) == (1, 1, 1)
    assert sb.conn.msk.fallback and sa.conn.msk.fallback
    assert len(sb.got) == len(da)
    assert sum(x != y for x, y in zip(sb.got, da, strict=True)) == 1
    assert sa.error is None and sb.error is None
    assert "MP_FAIL" in sb.mptcp_events() and "MP_FAIL" in sa.mptcp_events()


def test_a_bad_first_mapping_is_a_silent_one_sided_fallback_and_nothing_is_duplicated() -> None:
    prof = LinkProfile(delay=0.003)
    a, b, net = mptcp_pair(seed=7, profile=prof, csum_a=True)
    net.profiles[(0, 1)] = LinkProfile(delay=0.003, mangle=corrupt_payload(nth=5))
    da = payload(2 * MB)
    sa, sb = bulk(a, b, net, da)
    cb, ca = b.all_counters(), a.all_counters()
    assert (cb["DataCsumErr"], cb["MPFailTx"], ca["MPFailRx"]) == (1, 0, 0)
    assert sb.conn.msk.fallback and not sa.conn.msk.fallback
    # our data ACKs went on: the sender never resent at the data level
    assert ca["MPTCPRetrans"] == 0
    assert len(sb.got) == len(da)
    assert sum(x != y for x, y in zip(sb.got, da, strict=True)) == 1
    assert sa.error is None and sb.error is None


def test_abort_sends_mp_fastclose_and_the_peer_closes_with_reset() -> None:
    a, b, net = mptcp_pair(seed=9)
    b.listen(5000)
    ca = a.connect(b.addrs[0], 5000, 0.0)
    net.run(0.1)
    ca.sock.send(b"x" * 1000)
    a.touch(ca)
    net.run(0.1)
    ca.sock.abort()
    a.touch(ca)
    net.run(0.1)
    cnt = b.all_counters()
    assert cnt["MPFastcloseRx"] == 1 and cnt["MPRstRx"] == 1
    assert a.all_counters()["MPFastcloseTx"] == 1
