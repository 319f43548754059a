"""The option writer's decisions, one by one, read off the wire of two simulated
stacks (what the kernel's mptcp_syn_options / mptcp_synack_options /
mptcp_established_options would put on each segment)."""

from __future__ import annotations

import random

import pytest

from stack.mptcp import options as mo
from stack.wire import ipv4, tcp
from stack.wire import mptcp as wm
from tests.sim.apps import bulk, mptcp_pair
from tests.sim.net import LinkProfile

M64 = (1 << 64) - 1


class Wire:
    """Every packet a stack sends: (tcp header, payload length, MPTCP options)."""

    def __init__(self) -> None:
        self.segs: list[tuple[tcp.TcpHeader, int, list[wm.MptcpOption], int]] = []

    def __call__(self, direction: str, pkt: bytes, now: float) -> None:
        if direction != "out":
            return
        ih, end = ipv4.parse(pkt, verify_checksum=False)
        if ih.proto != ipv4.PROTO_TCP:
            return
        h, off = tcp.parse(pkt[ih.header_len:end])
        opts = [wm.parse_tcp_option(o) for o in h.options
                if isinstance(o, tcp.UnknownOption) and o.kind == tcp.OPT_MPTCP]
        self.segs.append((h, end - ih.header_len - off, opts, len(pkt)))

    def first(self, pred) -> tuple[tcp.TcpHeader, int, list[wm.MptcpOption], int]:  # type: ignore[no-untyped-def]
        return next(s for s in self.segs if pred(s))


def run(data_a: bytes, data_b: bytes = b"", csum: bool = False, version: int = 1,
        **kw: object) -> tuple[Wire, Wire, object, object]:
    a, b, net = mptcp_pair(seed=11, csum_a=csum, **kw)  # type: ignore[arg-type]
    if version == 0:
        a.config.mptcp.version = 0  # type: ignore[union-attr]
        b.config.mptcp.version = 0  # type: ignore[union-attr]
    wa, wb = Wire(), Wire()
    a.tap, b.tap = wa, wb
    sa, sb = bulk(a, b, net, data_a, data_b)
    return wa, wb, sa, sb


def test_syn_carries_a_4_byte_mp_capable_v1_without_a_key() -> None:
    wa, _, _, _ = run(b"x" * 1000)
    syn, _, (mpc,), _ = wa.segs[0]
    assert syn.flags == tcp.SYN
    assert mpc == wm.MpCapable(1, wm.MPC_FLAG_H) and wm.option_len(mpc) == 4


def test_checksum_request_sets_the_a_flag_on_the_syn() -> None:
    wa, wb, _, _ = run(b"x" * 1000, csum=True)
    assert wa.segs[0][2][0].flags == wm.MPC_FLAG_A | wm.MPC_FLAG_H
    # the server, not asked itself, echoes nothing but its own flags; both use checksums
    assert wb.segs[0][2][0].flags == wm.MPC_FLAG_A | wm.MPC_FLAG_H


def test_synack_carries_the_server_key_in_12_bytes() -> None:
    _, wb, _, sb = run(b"x" * 1000)
    synack, _, (mpc,), _ = wb.segs[0]
    assert synack.flags == tcp.SYN | tcp.ACK and wm.option_len(mpc) == 12
    assert mpc.sender_key == sb.conn.msk.local_key


def test_third_ack_carries_both_keys_in_20_bytes_client_key_first() -> None:
    # a client with nothing queued sends a pure third ACK (with data queued, its first
    # data segment is the third ACK and carries MP_CAPABLE with data instead)
    wa, _, sa, sb = run(b"", b"x" * 1000)
    ack, plen, (mpc,), _ = wa.segs[1]
    assert ack.flags == tcp.ACK and plen == 0 and wm.option_len(mpc) == 20
    assert (mpc.sender_key, mpc.receiver_key) == (sa.conn.msk.local_key, sb.conn.msk.local_key)


def test_mp_capable_with_data_on_the_first_data_segment_only() -> None:
    wa, _, _sa, _ = run(bytes(300_000))
    data = [s for s in wa.segs if s[1] > 0]
    first, plen, (mpc,), _ = data[0]
    assert isinstance(mpc, wm.MpCapable) and wm.option_len(mpc) == 22
    assert mpc.data_len >= plen  # the whole first mapping, which may span segments
    for _h, _n, opts, _ in data[1:]:
        if _h.seq != first.seq:  # (a retransmission of it would repeat it)
            assert not any(isinstance(o, wm.MpCapable) for o in opts)
    assert any(isinstance(o, wm.Dss) for o in data[-1][2])


def test_mp_capable_with_data_and_checksum_is_24_bytes() -> None:
    wa, _, _, _ = run(bytes(5000), csum=True)
    (mpc,) = next(s for s in wa.segs if s[1] > 0)[2]
    assert wm.option_len(mpc) == 24 and mpc.checksum is not None


def test_dss_carries_64_bit_dsn_and_data_ack_and_fits_the_mtu() -> None:
    wa, _, sa, _sb = run(bytes(400_000), bytes(100_000))
    msk = sa.conn.msk
    for _h, plen, opts, size in wa.segs:
        assert size <= 1500  # the send MSS leaves room for a full DSS
        for o in opts:
            if isinstance(o, wm.Dss) and o.dsn is not None and not o.data_fin:
                assert o.dsn64 and o.data_ack64
                off = (o.dsn - msk.local_idsn - 1) & M64
                assert off == o.ssn - 1  # one subflow: subflow byte n is data byte n-1
                assert o.data_len <= 65535 and plen <= o.data_len


def test_data_fin_on_a_pure_ack_maps_one_byte_with_ssn_0() -> None:
    wa, _, sa, _ = run(bytes(10_000))
    _h, plen, opts, _ = wa.first(lambda s: any(isinstance(o, wm.Dss) and o.data_fin
                                              for o in s[2]))
    (dss,) = [o for o in opts if isinstance(o, wm.Dss)]
    msk = sa.conn.msk
    assert plen == 0 and dss.ssn == 0 and dss.data_len == 1
    assert dss.dsn == (msk.local_idsn + 1 + 10_000) & M64


def test_data_ack_is_the_peers_idsn_plus_one_plus_bytes_received() -> None:
    _, wb, sa, _ = run(bytes(10_000))
    acks = [o.data_ack for _, _, opts, _ in wb.segs for o in opts
            if isinstance(o, wm.Dss) and o.data_ack is not None]
    idsn = sa.conn.msk.local_idsn
    assert acks and all(0 <= (a - idsn - 1) & M64 <= 10_001 for a in acks)
    assert (idsn + 1 + 10_000 + 1) & M64 == acks[-1]  # every byte, then our DATA_FIN


def test_a_retransmission_reuses_the_mapping_its_bytes_were_first_sent_with() -> None:
    # GSO super-packets: one mapping each; the link loses pieces, whose
    # retransmissions (single segments) must announce the same mapping.
    wa, _, _, sb = run(bytes(2_000_000), gso_a=44, offload_a=True)
    first_map: dict[int, tuple[int, int, int]] = {}
    for _h, _plen, opts, _ in wa.segs:
        for o in opts:
            if isinstance(o, wm.Dss) and o.dsn is not None and o.data_len > 1:
                first_map.setdefault(o.ssn, (o.dsn, o.ssn, o.data_len))
                assert first_map[o.ssn] == (o.dsn, o.ssn, o.data_len)
    assert sb.got == bytes(2_000_000)


def test_retransmitted_pieces_carry_the_super_packet_mapping_under_loss() -> None:
    a, b, net = mptcp_pair(seed=12, profile=LinkProfile(delay=0.002, loss=0.03),
                           gso_a=44, offload_a=True)
    w = Wire()
    a.tap = w
    data = random.Random(2).randbytes(3_000_000)
    _sa, sb = bulk(a, b, net, data)
    assert sb.got == data and not sb.conn.msk.fallback
    assert a.all_counters()["RetransSegs"] > 0
    assert b.all_counters()["DSSNotMatching"] == 0


def test_v0_syn_carries_a_12_byte_mp_capable_with_the_key() -> None:
    wa, _, sa, _ = run(b"x" * 1000, version=0)
    (mpc,) = wa.segs[0][2]
    assert mpc.version == 0 and wm.option_len(mpc) == 12
    assert mpc.sender_key == sa.conn.msk.local_key


# --- path-manager suboptions: on pure ACKs, in the room the DSS leaves ----------------
def _established_pair():  # type: ignore[no-untyped-def]
    a, b, net = mptcp_pair(seed=12)
    b.listen(5000)
    conn = a.connect(b.addrs[0], 5000, 0.0)
    net.run(0.1)
    conn.sock.send(b"x")  # the server's data ACK makes the client fully established
    a.touch(conn)
    net.run(0.2)
    assert conn.msk.fully_established
    wa = Wire()
    a.tap = wa
    return a, net, conn, wa


def test_mp_prio_rides_a_pure_ack_beside_the_data_ack() -> None:
    a, net, conn, wa = _established_pair()
    assert a.set_backup(conn, conn.key[0], True) == 1
    net.run(0.05)
    h, plen, opts, _ = wa.first(lambda s: any(isinstance(o, wm.MpPrio) for o in s[2]))
    assert plen == 0 and h.flags == tcp.ACK
    dss, prio = opts
    assert isinstance(dss, wm.Dss) and dss.dsn is None and dss.data_ack is not None
    assert prio == wm.MpPrio(True) and wm.option_len(prio) == 3
    assert a.set_backup(conn, conn.key[0], True) == 0  # no change, no MP_PRIO


def test_remove_addr_carries_the_address_id() -> None:
    a, net, conn, wa = _established_pair()
    a.remove_addr(conn, conn.key[0])
    net.run(0.05)
    _, plen, opts, _ = wa.first(lambda s: any(isinstance(o, wm.RemoveAddr) for o in s[2]))
    assert plen == 0 and opts[-1] == wm.RemoveAddr((0,))  # the initial address is id 0


def test_a_due_data_fin_yields_the_pure_ack_to_mp_prio_and_follows_it() -> None:
    # a DSS with DATA_FIN (28 bytes) + timestamps fill the option space: the MP_PRIO
    # goes first with the data ACK alone, the DATA_FIN on the next pure ACK
    a, net, conn, wa = _established_pair()
    conn.msk.close()
    a.set_backup(conn, conn.key[0], True)
    a.touch(conn)
    for _d in a.poll_transmit(net.now):
        pass
    pure = [s for s in wa.segs if s[1] == 0]
    assert isinstance(pure[0][2][1], wm.MpPrio) and not pure[0][2][0].data_fin
    assert pure[1][2][0].data_fin and len(pure[1][2]) == 1


@pytest.mark.parametrize("csum", [False, True], ids=["plain", "checksum"])
def test_each_new_chunk_gets_the_dss_the_writer_itself_would_write(csum: bool) -> None:
    # the subflow memoises a data segment's options; for the next chunk (a new mapping,
    # all else unchanged) it swaps the mapping into the last DSS instead of asking the
    # writer again: the options must be what the writer decides, byte for byte
    from stack.mptcp.subflow import TxMap
    _a, _net, conn, _wa = _established_pair()
    sf = conn.msk.subflows[0]
    sf.msk.csum_enabled = csum
    base = sf.tx_next
    for i, (ssn, n, off) in enumerate([(base, 1000, 5), (base + 1000, 1400, 1005),
                                       (base + 2400, 700, 2405)]):
        sf.add_tx_map(TxMap(ssn, n, off, 0x1234 + i if csum else 0))
        fast = sf.established_options(ssn, n, False, 28)
        slow = mo.write_options(mo.established_options(sf, ssn, n, 28))
        assert fast == slow, i
        dss = _dss(fast)
        assert (isinstance(dss, wm.Dss) and dss.dsn == conn.msk.wire_dsn(off)
                and dss.ssn == ssn and dss.data_len == n)
        assert dss.checksum == (0x1234 + i if csum else None)


def _dss(opts):  # type: ignore[no-untyped-def]
    (raw,) = [o for o in opts if isinstance(o, tcp.UnknownOption)]
    return wm.parse_body(raw.data, False, True, True)


# --- the writer alone: a decision that changes nothing --------------------------------
DATA_ACK_ONLY = 4 + 8  # a DSS with a 64-bit data ACK and no mapping


def _queued_announce():  # type: ignore[no-untyped-def]
    _a, _net, conn, _wa = _established_pair()
    msk = conn.msk
    msk.pm.announce(1, b"\x0a\x00\x02\x02")  # ADD_ADDR id 1, 16 bytes with its HMAC
    return msk, msk.master


@pytest.mark.parametrize("remaining", [DATA_ACK_ONLY + 15, DATA_ACK_ONLY + 8, 16])
def test_add_addr_goes_alone_where_it_would_not_fit_beside_the_data_ack(remaining: int) -> None:
    # Linux 6.18 ("add-addr: always drop other suboptions"): the ADD_ADDR drops the DSS
    # and takes the whole room, so 16 bytes are enough whatever the data ACK needs
    msk, sf = _queued_announce()
    o = mo.established_options(sf, sf.tx_next, 0, remaining)
    assert o is not None and o.suboptions() == [o.add_addr] and o.add_addr.addr_id == 1
    assert not o.pure_ack  # nothing else was due
    assert msk.pm.add_addr_queue == [(1, b"\x0a\x00\x02\x02")]  # until written


@pytest.mark.parametrize("echo", [False, True], ids=["announce", "echo"])
def test_add_addr_that_does_not_fit_even_alone_is_dropped_and_counted(echo: bool) -> None:
    # (Linux `mptcp_pm_add_addr_signal`: AddAddrTxDrop / EchoAddTxDrop, instead of
    # waiting for ever; the pure ACK then carries the data ACK as usual)
    msk, sf = _queued_announce()
    if echo:
        msk.pm.add_addr_queue.clear()
        msk.pm.echo_queue.append(wm.AddAddr(2, b"\x0a\x00\x02\x01", echo=True))
    # the echo is 8 bytes, the announcement 16; the data ACK needs 12
    o = mo.established_options(sf, sf.tx_next, 0, 7 if echo else 15)
    assert o is not None and o.add_addr is None
    if echo:
        assert o.suboptions() == []
    else:
        assert o.suboptions() == [o.dss] and o.dss.data_ack is not None and o.dss.dsn is None
    assert not msk.pm.add_addr_queue and not msk.pm.echo_queue
    assert not msk.pm.add_addr_sent  # no retransmission armed
    assert msk.counters["EchoAddTxDrop" if echo else "AddAddrTxDrop"] == 1
    assert msk.counters["EchoAddTx"] == msk.counters["AddAddrTx"] == 0


def test_add_addr_takes_the_pure_ack_alone_and_leaves_the_queue_until_written() -> None:
    msk, sf = _queued_announce()
    o = mo.established_options(sf, sf.tx_next, 0, DATA_ACK_ONLY + 16)
    assert o is not None and o.add_addr is not None and o.add_addr.addr_id == 1
    assert o.suboptions() == [o.add_addr]  # no DSS beside it (Linux 6.18)
    # the writer decided; only `options_written` takes it off the queue and arms its
    # retransmission: the subflow's RTO from now (under `add_addr_timeout`)
    assert msk.pm.add_addr_queue and not msk.pm.add_addr_sent
    msk.options_written(sf, o)
    assert not msk.pm.add_addr_queue
    assert msk.pm.add_addr_sent[1].deadline == msk.now + min(msk.config.add_addr_timeout,
                                                            sf.engine.rto)
    assert msk.counters["AddAddrTx"] == 1


def test_add_addr_never_rides_on_data() -> None:
    _msk, sf = _queued_announce()
    o = mo.established_options(sf, sf.tx_next, 1000, 40)
    assert o is not None and o.add_addr is None


def test_no_room_for_the_data_ack_means_no_mptcp_option() -> None:
    _msk, sf = _queued_announce()
    o = mo.established_options(sf, sf.tx_next, 0, DATA_ACK_ONLY - 1)
    assert o is not None and o.suboptions() == []


def test_remove_addr_takes_as_many_ids_as_fit() -> None:
    _a, _net, conn, _wa = _established_pair()
    msk, sf = conn.msk, conn.msk.master
    msk.pm.rm_addr_queue.extend([3, 4, 5, 6])
    # REMOVE_ADDR is 3 bytes + one per id, padded to 4: 8 bytes hold 5 ids, 4 hold 1
    o = mo.established_options(sf, sf.tx_next, 0, DATA_ACK_ONLY + 4)
    assert o is not None and o.rm_addr == wm.RemoveAddr((3,))
    o = mo.established_options(sf, sf.tx_next, 0, DATA_ACK_ONLY + 8)
    assert o is not None and o.rm_addr == wm.RemoveAddr((3, 4, 5, 6))
    msk.options_written(sf, o)
    assert msk.pm.rm_addr_queue == [] and msk.counters["RmAddrTx"] == 1


def _asked_for_pure_acks(sf, monkeypatch: pytest.MonkeyPatch) -> list[object]:  # type: ignore[no-untyped-def]
    """The `send_pure_ack` calls on `sf`'s engine from now on (the announce already
    asked for one: the engine's flag cannot tell a new request)."""
    asked: list[object] = []
    monkeypatch.setattr(sf.engine, "send_pure_ack", lambda: asked.append(sf))
    return asked


def test_a_due_data_fin_yields_to_a_path_manager_signal_and_asks_for_another_ack(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _msk, sf = _queued_announce()
    msk = sf.msk
    msk.close()
    assert msk.data_fin_to_signal()
    asked = _asked_for_pure_acks(sf, monkeypatch)
    o = mo.established_options(sf, sf.tx_next, 0, 40)
    # the ADD_ADDR alone (Linux 6.18: no DSS beside it), and the writer asks for
    # another pure ACK for the DATA_FIN
    assert o is not None and o.add_addr is not None
    assert o.dss is None and o.pure_ack
    assert not msk.data_fin_on_wire
    msk.options_written(sf, o)
    assert asked == [sf]
    # which carries the DATA_FIN (the ADD_ADDR is no longer due)
    o = mo.established_options(sf, sf.tx_next, 0, 40)
    assert o is not None and o.add_addr is None
    assert o.dss is not None and o.dss.data_fin and not o.pure_ack
    msk.options_written(sf, o)
    assert asked == [sf] and msk.data_fin_on_wire


def test_an_add_addr_displacing_an_mp_fail_asks_for_another_pure_ack(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the ADD_ADDR goes alone (Linux 6.18), the MP_FAIL due on this subflow then goes on
    # the next pure ACK, asked for at once, not left waiting for other traffic
    msk, sf = _queued_announce()
    dsn = msk.wire_data_ack()
    sf.send_mp_fail = dsn
    asked = _asked_for_pure_acks(sf, monkeypatch)
    o = mo.established_options(sf, sf.tx_next, 0, 28)
    assert o is not None and o.suboptions() == [o.add_addr]
    msk.options_written(sf, o)
    assert asked == [sf] and sf.send_mp_fail == dsn
    o = mo.established_options(sf, sf.tx_next, 0, 28)
    assert o is not None and o.add_addr is None
    assert o.dss is not None and o.fail == wm.MpFail(dsn)
    msk.options_written(sf, o)
    assert sf.send_mp_fail is None and asked == [sf]
