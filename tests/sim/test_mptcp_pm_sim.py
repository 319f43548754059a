"""The runtime path manager and the schedulers between two of our stacks: removing a
subflow or an address (REMOVE_ADDR) from either side, MP_PRIO both ways, backups
taking over, the subflow limits, round-robin and redundant scheduling, MP_FASTCLOSE
across several subflows, checksums and three paths. Every transfer checks its bytes."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from stack.host import ip
from stack.mptcp.connection import MptcpConfig, MptcpEvent
from stack.mptcp.pm import EndpointFlags
from tests.sim.apps import Side, bulk, multipath_pair
from tests.sim.net import LinkProfile, PathCut

A1, A2, A3 = ip("10.0.1.2"), ip("10.0.2.2"), ip("10.0.3.2")
B1, B2 = ip("10.0.1.1"), ip("10.0.2.1")
FAST = LinkProfile(delay=0.003, rate_bps=100e6)


def once(cond: Callable[[Side, Side], bool],
         act: Callable[[Side, Side], None]) -> Callable[[Side, Side], None]:
    """An on_step hook that runs `act` the first time `cond` holds."""
    done = [False]

    def step(sa: Side, sb: Side) -> None:
        if not done[0] and sa.conn is not None and sb.conn is not None and cond(sa, sb):
            done[0] = True
            act(sa, sb)
    return step


def both_carry(sa: Side, sb: Side) -> bool:
    """Both of the client's subflows have carried data (the join is in use)."""
    msk = sa.conn.msk  # type: ignore[union-attr]
    return len(msk.subflows) == 2 and msk.subflows[1].tx_next > 200_000


def gone(sf: object) -> bool:
    """The subflow's TCP connection is over (TIME-WAIT counts: its active closer)."""
    eng = sf.engine  # type: ignore[attr-defined]
    return eng.is_closed or eng.state.name in ("TIME_WAIT", "CLOSED")


def sf_events(side: Side, name: str) -> list[MptcpEvent]:
    return [e for e in side.events if isinstance(e, MptcpEvent) and e.name == name]


def test_removing_our_subflow_mid_transfer_loses_no_byte() -> None:
    data = random.Random(1).randbytes(5_000_000)
    a, b, net = multipath_pair(seed=1, profile=FAST)
    sa, sb = bulk(a, b, net, data, data[::-1], join_from=[(A2, False)],
                  on_step=once(both_carry, lambda sa, sb: a.remove_subflow(sa.conn, A2)))
    assert bytes(sb.got) == data and bytes(sa.got) == data[::-1]
    assert sa.error is None and sb.error is None
    join_a, join_b = sa.conn.msk.subflows[1], sb.conn.msk.subflows[1]
    assert join_a.closing and gone(join_a) and gone(join_b)
    assert a.all_counters()["RmSubflow"] == 1
    assert sf_events(sb, "SF_CLOSED")  # the peer saw its subflow go (its FIN)
    assert not a.all_counters()["RmAddrTx"]  # a subflow, not the address


def test_remove_addr_from_the_client_closes_the_servers_subflow() -> None:
    data = random.Random(2).randbytes(5_000_000)
    a, b, net = multipath_pair(seed=2, profile=FAST)
    sa, sb = bulk(a, b, net, data, data[::-1], join_from=[(A2, False)],
                  on_step=once(both_carry, lambda sa, sb: a.remove_addr(sa.conn, A2)))
    assert bytes(sb.got) == data and bytes(sa.got) == data[::-1]
    assert sa.error is None and sb.error is None
    ca, cb = a.all_counters(), b.all_counters()
    assert ca["RmAddrTx"] == 1 and cb["RmAddr"] == 1
    (removed,) = sf_events(sb, "REMOVED")
    assert removed.remid == 1  # 10.0.2.2 is our address id 1
    assert gone(sb.conn.msk.subflows[1])


def test_remove_addr_from_the_server_of_an_announced_address() -> None:
    # b announces 10.0.2.1, a joins it, then b withdraws it: a closes the join and
    # frees the accepted-address slot
    data = random.Random(3).randbytes(5_000_000)
    a, b, net = multipath_pair(seed=3, profile=FAST)
    sa, sb = bulk(a, b, net, data, data[::-1], announce=[B2],
                  on_step=once(both_carry, lambda sa, sb: b.remove_addr(sb.conn, B2)))
    assert bytes(sb.got) == data and bytes(sa.got) == data[::-1]
    assert sa.error is None and sb.error is None
    msk = sa.conn.msk
    assert gone(msk.subflows[1]) and not msk.pm.accepted_ids
    assert 1 not in msk.pm.remote_addrs
    assert a.all_counters()["RmAddr"] == 1 and b.all_counters()["RmAddrTx"] == 1


def test_mp_prio_makes_the_peer_stop_sending_on_the_subflow() -> None:
    # b sends; a tells b (MP_PRIO) that its join is a backup: b maps no new data on it
    data = random.Random(4).randbytes(6_000_000)
    a, b, net = multipath_pair(seed=4, profile=FAST)
    at: dict[str, int] = {}

    def flip(sa: Side, sb: Side) -> None:
        assert a.set_backup(sa.conn, A2, True) == 1  # type: ignore[arg-type]

    def carried(sa: Side, sb: Side) -> bool:
        return len(sb.conn.msk.subflows) == 2 and sb.conn.msk.subflows[1].tx_next > 200_000

    def watch(sa: Side, sb: Side) -> None:
        flip_step(sa, sb)
        join_b = sb.conn.msk.subflows[1] if sb.conn and len(sb.conn.msk.subflows) > 1 else None
        if join_b is not None and join_b.remote_backup and "tx" not in at:
            at["tx"] = join_b.tx_next  # what b had mapped when MP_PRIO arrived

    flip_step = once(carried, flip)
    sa, sb = bulk(a, b, net, b"", data, join_from=[(A2, False)], on_step=watch)
    assert bytes(sa.got) == data and sa.error is None and sb.error is None
    join_b = sb.conn.msk.subflows[1]
    assert join_b.remote_backup and join_b.is_backup
    assert join_b.tx_next == at["tx"]  # nothing new after MP_PRIO
    assert a.all_counters()["MPPrioTx"] == 1 and b.all_counters()["MPPrioRx"] == 1
    assert sf_events(sb, "SF_PRIORITY") and sf_events(sb, "SF_PRIORITY")[0].backup


def test_mp_prio_clears_backup_and_the_subflow_carries_data_again() -> None:
    data = random.Random(5).randbytes(4_000_000)
    a, b, net = multipath_pair(seed=5, profile=FAST)

    def unbackup(sa: Side, sb: Side) -> None:
        assert a.set_backup(sa.conn, A2, False) == 1  # type: ignore[arg-type]

    def joined(sa: Side, sb: Side) -> bool:
        return len(sa.conn.msk.subflows) == 2 and sa.conn.msk.subflows[1].fully_established \
            and len(sb.got) > 500_000  # type: ignore[union-attr]

    sa, sb = bulk(a, b, net, data, join_from=[(A2, True)], on_step=once(joined, unbackup))
    assert bytes(sb.got) == data and sa.error is None
    join_a = sa.conn.msk.subflows[1]
    assert not join_a.backup and join_a.tx_next > 200_000
    assert not sb.conn.msk.subflows[1].remote_backup


def test_a_backup_takes_over_when_the_only_regular_path_dies() -> None:
    path1 = PathCut(A1)
    data = random.Random(6).randbytes(4_000_000)
    a, b, net = multipath_pair(seed=6, profile=LinkProfile(delay=0.003, rate_bps=100e6,
                                                           drop_filter=path1))
    mapped_on_backup_before: list[int] = []

    def kill(sa: Side, sb: Side) -> None:
        mapped_on_backup_before.append(sa.conn.msk.subflows[1].tx_next)  # type: ignore[union-attr]
        path1.down = True

    def started(sa: Side, sb: Side) -> bool:
        return len(sa.conn.msk.subflows) == 2 and sa.conn.msk.subflows[1].fully_established \
            and len(sb.got) > 1_000_000  # type: ignore[union-attr]

    sa, sb = bulk(a, b, net, data, join_from=[(A2, True)], max_time=300,
                  on_step=once(started, kill))
    assert bytes(sb.got) == data and sa.error is None and sb.error is None
    assert mapped_on_backup_before == [1]  # idle while path 1 worked
    assert sa.conn.msk.subflows[1].tx_next > 2_000_000  # then it carried the rest


@pytest.mark.parametrize("sched", ["roundrobin", "redundant"])
def test_alternative_schedulers_deliver_every_byte(sched: str) -> None:
    data = random.Random(7).randbytes(3_000_000)
    a, b, net = multipath_pair(seed=7, profile=FAST, cfg_a=MptcpConfig(scheduler=sched))
    sa, sb = bulk(a, b, net, data, join_from=[(A2, False)])
    assert bytes(sb.got) == data and sa.error is None and sb.error is None
    master, join = sa.conn.msk.subflows
    if sched == "redundant":
        # once the join is up, chunks go on both: much of the data is sent twice
        assert master.tx_next + join.tx_next > 1.5 * len(data)
        assert a.all_counters()["RedundantTx"] > 10
    else:
        # both paths used; the master's head start (the join comes one round trip
        # later) is all that separates them
        assert min(master.tx_next, join.tx_next) > 0.3 * len(data)
        assert not a.all_counters()["RedundantTx"]


def test_round_robin_takes_turns_and_skips_a_full_subflow() -> None:
    a = multipath_pair(paths=3, cfg_a=MptcpConfig(scheduler="roundrobin"))[0]
    msk = a.connect(B1, 5000, 0.0).msk
    sfs = [msk.master] + [msk.add_subflow(lambda sf: msk.master.engine, join=True)
                          for _ in range(2)]
    rr = msk.scheduler
    assert [rr.get_send(sfs, sfs)[0] for _ in range(4)] == [sfs[0], sfs[1], sfs[2], sfs[0]]
    assert rr.get_send([sfs[0], sfs[2]], sfs)[0] is sfs[2]  # sfs[1] had no room: skipped
    assert rr.get_send([sfs[0], sfs[1]], sfs)[0] is sfs[0]  # wraps around


def test_an_unknown_scheduler_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown MPTCP scheduler 'fastest'"):
        multipath_pair(cfg_a=MptcpConfig(scheduler="fastest"))[0].connect(B1, 5000, 0.0)


def test_three_paths_three_subflows_all_carry_data() -> None:
    data = random.Random(8).randbytes(6_000_000)
    a, b, net = multipath_pair(seed=8, profile=FAST, paths=3)
    sa, sb = bulk(a, b, net, data, data[::-1], join_from=[(A2, False), (A3, False)])
    assert bytes(sb.got) == data and bytes(sa.got) == data[::-1]
    for side in (sa, sb):
        sfs = side.conn.msk.subflows
        assert len(sfs) == 3 and all(sf.tx_next > 300_000 for sf in sfs), \
            [sf.tx_next for sf in sfs]
    assert len(sf_events(sb, "SF_ESTABLISHED")) == 2


def test_checksums_with_two_subflows_and_loss() -> None:
    data = random.Random(9).randbytes(3_000_000)
    prof = LinkProfile(delay=0.003, loss=0.01, reorder=0.02, rate_bps=100e6)
    a, b, net = multipath_pair(seed=9, profile=prof, cfg_a=MptcpConfig(checksum=True))
    sa, sb = bulk(a, b, net, data, data[::-1], join_from=[(A2, False)])
    assert bytes(sb.got) == data and bytes(sa.got) == data[::-1]
    assert sa.conn.msk.csum_enabled and sb.conn.msk.csum_enabled
    assert all(sf.tx_next > 100_000 for sf in sa.conn.msk.subflows)
    assert not a.all_counters()["DataCsumErr"] and not b.all_counters()["DataCsumErr"]


def test_the_subflow_limit_refuses_a_join_at_its_third_ack() -> None:
    """As Linux: the join SYN over the limit is answered (MPJoinSynRx, a SYN/ACK the
    joiner counts), the third ACK refused (MPJoinRejected, no MPJoinAckRx) with an RST
    carrying MP_TCPRST reason 3 (administratively prohibited)."""
    data = random.Random(10).randbytes(500_000)
    a, b, net = multipath_pair(seed=10, profile=FAST, cfg_b=MptcpConfig(subflows_max=0))
    sa, sb = bulk(a, b, net, data, join_from=[(A2, False)])
    assert bytes(sb.got) == data and sa.error is None
    ca, cb = a.all_counters(), b.all_counters()
    assert (cb["MPJoinSynRx"], ca["MPJoinSynAckRx"], cb["MPJoinAckRx"]) == (1, 1, 0)
    assert cb["MPJoinRejected"] == 1
    (closed,) = sf_events(sa, "SF_CLOSED")
    assert "reason 3" in (closed.detail or "")


def test_the_add_addr_limit_leaves_an_announced_address_unjoined() -> None:
    data = random.Random(11).randbytes(500_000)
    a, b, net = multipath_pair(seed=11, profile=FAST, cfg_a=MptcpConfig(add_addr_accepted_max=0))
    sa, sb = bulk(a, b, net, data, announce=[B2])
    assert bytes(sb.got) == data
    assert len(sa.conn.msk.subflows) == 1
    assert a.all_counters()["AddAddrNotAccepted"] == 1 and a.all_counters()["AddAddr"] == 1


@pytest.mark.parametrize("who", ["client", "server"])
def test_fastclose_with_two_subflows_resets_every_subflow(who: str) -> None:
    data = random.Random(12).randbytes(20_000_000)
    a, b, net = multipath_pair(seed=12, profile=FAST)

    def abort(sa: Side, sb: Side) -> None:
        side = sa if who == "client" else sb
        side.conn.sock.abort()  # type: ignore[union-attr]

    sa, sb = bulk(a, b, net, data, data, join_from=[(A2, False)], max_time=60,
                  on_step=once(both_carry, abort))
    aborter, peer = (sa, sb) if who == "client" else (sb, sa)
    ca, cp = (a, b) if who == "client" else (b, a)
    assert aborter.error == "aborted"
    assert peer.error is not None and "MP_FASTCLOSE" in peer.error
    assert ca.all_counters()["MPFastcloseTx"] >= 1 and cp.all_counters()["MPFastcloseRx"] == 1
    assert all(gone(sf) for sf in peer.conn.msk.subflows)
    assert len(peer.conn.msk.subflows) == 2


def test_fullmesh_joins_an_announced_address_from_every_fullmesh_address() -> None:
    # like a kernel client with `subflow fullmesh` endpoints 10.0.1.2 and 10.0.2.2: the
    # server's ADD_ADDR 10.0.2.1 is joined from both; 10.0.2.2 also joins 10.0.1.1
    data = random.Random(13).randbytes(3_000_000)
    a, b, net = multipath_pair(seed=13, profile=FAST)
    a.endpoints.set_flag([A1, A2], EndpointFlags.FULLMESH)
    sa, sb = bulk(a, b, net, data, announce=[B2], join_from=[(A1, False), (A2, False)])
    assert bytes(sb.got) == data and sa.error is None and sb.error is None
    pairs = {(sf.engine.local_addr, sf.engine.remote_addr) for sf in sa.conn.msk.subflows}
    assert pairs == {(A1, B1), (A2, B1), (A1, B2), (A2, B2)}
    assert all(sf.fully_established and sf.tx_next > 1 for sf in sa.conn.msk.subflows)


def test_a_fullmesh_endpoint_added_mid_connection_joins_every_remote_address() -> None:
    """ctl `fullmesh A3` (`ip mptcp endpoint add A3 subflow fullmesh` mid-connection):
    A3 joins each remote address the subflows use (B1 and the announced B2) at once,
    as mptcp_join.sh "fullmesh 2x2" counts it, and nothing twice."""
    data = random.Random(17).randbytes(3_000_000)
    a, b, net = multipath_pair(seed=17, profile=FAST, paths=3)
    added: list[int] = []

    def step(sa: Side, sb: Side) -> None:
        msk = sa.conn.msk if sa.conn is not None else None
        if not added and msk is not None and len([s for s in msk.subflows
                                                  if s.fully_established]) == 2:
            added.append(len(a.add_fullmesh(sa.conn, A3, net.now)))  # type: ignore[arg-type]
            assert a.add_fullmesh(sa.conn, A3, net.now) == []  # type: ignore[arg-type]

    sa, sb = bulk(a, b, net, data, announce=[B2], on_step=step)
    assert bytes(sb.got) == data and sa.error is None and added == [2]
    pairs = sorted((sf.engine.local_addr, sf.engine.remote_addr) for sf in sa.conn.msk.subflows)
    assert pairs == sorted([(A1, B1), (A2, B2), (A3, B1), (A3, B2)])


def test_announcements_go_one_at_a_time_each_after_the_last_echo() -> None:
    """Two `signal` addresses: the second ADD_ADDR waits for the first one's echo, as
    Linux's PM announces (a Linux peer still handling an ADD_ADDR drops the next one
    and counts AddAddrDrop); both are echoed and joined in the end."""
    data = random.Random(18).randbytes(2_000_000)
    a, b, net = multipath_pair(seed=18, profile=FAST, paths=3)
    B3 = ip("10.0.3.1")
    ahead: list[tuple[int, int]] = []

    def step(sa: Side, sb: Side) -> None:
        cb = b.all_counters()
        if cb["AddAddrTx"] > cb["EchoAdd"] + 1:
            ahead.append((cb["AddAddrTx"], cb["EchoAdd"]))

    sa, sb = bulk(a, b, net, data, announce=[B2, B3], on_step=step)
    assert bytes(sb.got) == data and sa.error is None and sb.error is None
    assert ahead == []
    cb = b.all_counters()
    assert cb["AddAddrTx"] == 2 and cb["EchoAdd"] == 2
    assert {sf.engine.remote_addr for sf in sa.conn.msk.subflows} == {B1, B2, B3}


def test_an_announced_multicast_address_is_not_joined_and_takes_no_slot() -> None:
    """As Linux's connect() to it fails (MPJoinSynTxConnectErr): with room for one
    announced address, a multicast announcement does not use it up."""
    data = random.Random(19).randbytes(1_000_000)
    a, b, net = multipath_pair(seed=19, profile=FAST, cfg_a=MptcpConfig(add_addr_accepted_max=1))
    sa, sb = bulk(a, b, net, data, announce=[ip("224.0.0.1"), B2])
    assert bytes(sb.got) == data and sa.error is None
    ca = a.all_counters()
    assert ca["MPJoinSynTxConnectErr"] == 1 and ca["AddAddr"] == 2
    assert {sf.engine.remote_addr for sf in sa.conn.msk.subflows} == {B1, B2}


def test_an_address_announced_with_a_port_is_joined_there_and_counted_as_linux_does() -> None:
    # mptcp_join.sh "signal address with port": b announces 10.0.2.1 port 10100; a's
    # join goes to that port, which takes joins only (an MP_CAPABLE connect there is
    # reset: "port-based signal endpoint must not accept mpc")
    data = random.Random(21).randbytes(2_000_000)
    a, b, net = multipath_pair(seed=21, profile=FAST)
    b.set_endpoint_port(B2, 10100)
    sa, sb = bulk(a, b, net, data, data[::-1], announce=[B2])
    assert bytes(sb.got) == data and bytes(sa.got) == data[::-1]
    (join,) = sa.conn.msk.subflows[1:]
    assert (join.engine.remote_addr, join.engine.remote_port) == (B2, 10100)
    ca, cb = a.all_counters(), b.all_counters()
    # chk_add_nr 1 1 1: PortAdd on the receiver (Linux counts the echo's port on the
    # announcer too), the join's SYN, SYN/ACK and ACK on the port
    assert (ca["AddAddr"], cb["EchoAdd"], ca["PortAdd"], cb["PortAdd"]) == (1, 1, 1, 1)
    assert (cb["MPJoinPortSynRx"], ca["MPJoinPortSynAckRx"], cb["MPJoinPortAckRx"]) == (1, 1, 1)
    assert cb["MismatchPortSynRx"] == cb["MismatchPortAckRx"] == 0
    # an MP_CAPABLE connect to the port-based endpoint: reset, MP_TCPRST reason 3
    c = a.connect(B2, 10100, net.now)
    net.run(net.now + 1.0)
    assert c.engine.is_closed and b.all_counters()["MPCapableEndpAttempt"] == 1


def test_a_join_to_a_port_its_connection_was_not_announced_is_refused() -> None:
    # the port-based endpoint exists, but this connection's server never announced it:
    # the join is reset (MismatchPortSynRx, `mptcp_pm_sport_in_anno_list`)
    data = random.Random(22).randbytes(1_000_000)
    a, b, net = multipath_pair(seed=22, profile=FAST)
    b.set_endpoint_port(B2, 10100)

    def join_the_port(sa: Side, sb: Side) -> None:
        a.add_subflow(sa.conn, A2, net.now, remote=B2, rport=10100)  # type: ignore[arg-type]

    sa, sb = bulk(a, b, net, data, on_step=once(
        lambda sa, sb: bool(sa.conn.msk.fully_established), join_the_port))  # type: ignore[union-attr]
    assert bytes(sb.got) == data
    assert b.all_counters()["MismatchPortSynRx"] == 1
    assert b.all_counters()["MPJoinPortSynRx"] == 0
    assert len([sf for sf in sa.conn.msk.subflows if sf.fully_established]) == 1


def test_the_initial_subflow_of_a_backup_address_becomes_a_backup_with_mp_prio() -> None:
    # mptcp_join.sh "mpc backup": the client's initial address is a backup endpoint, so
    # once fully established its initial subflow is a backup and says so (MP_PRIO)
    data = random.Random(23).randbytes(300_000)
    a, b, net = multipath_pair(seed=23, profile=FAST)
    a.endpoints.set_flag([A1], EndpointFlags.BACKUP)
    sa, sb = bulk(a, b, net, data, data[::-1])
    assert bytes(sb.got) == data and bytes(sa.got) == data[::-1]
    assert a.all_counters()["MPPrioTx"] == 1 and b.all_counters()["MPPrioRx"] == 1
    assert sa.conn.msk.master.backup and sb.conn.msk.master.remote_backup


def test_changing_the_fullmesh_flag_closes_the_join_and_opens_it_again() -> None:
    """ctl `flags A2 backup,fullmesh` (`ip mptcp endpoint change ... backup fullmesh`,
    mptcp_join.sh "set backup,fullmesh flags test"): MP_PRIO on A2's join first, then
    that join closed (RmSubflow, no REMOVE_ADDR) and A2 joins again, as a backup, every
    remote address the connection uses; `nofullmesh` back: one join again, no MP_PRIO."""
    data = random.Random(18).randbytes(4_000_000)
    a, b, net = multipath_pair(seed=18, profile=FAST)
    changes: list[dict[str, object]] = []

    def step(sa: Side, sb: Side) -> None:
        msk = sa.conn.msk if sa.conn is not None else None
        if msk is None:
            return
        live = [s for s in msk.subflows if s.fully_established and s.is_open]
        if not changes and len(live) == 2 and live[1].tx_next > 200_000:
            changes.append(a.change_endpoint(sa.conn, A2, net.now,  # type: ignore[arg-type]
                                             backup=True, fullmesh=True))
        elif len(changes) == 1 and len(live) == 2 and live[1].backup:  # the new join
            changes.append(a.change_endpoint(sa.conn, A2, net.now,  # type: ignore[arg-type]
                                             fullmesh=False))

    sa, sb = bulk(a, b, net, data, data[::-1], join_from=[(A2, False)], on_step=step)
    assert bytes(sb.got) == data and bytes(sa.got) == data[::-1]
    assert sa.error is None and sb.error is None
    assert [c["closed"] for c in changes] == [1, 1] and changes[0]["mp_prio"] == 1
    assert "mp_prio" not in changes[1]
    joins = [sf for sf in sa.conn.msk.subflows if sf.join]  # type: ignore[union-attr]
    assert len(joins) == 3 and [sf.backup for sf in joins] == [True, True, True]
    ca, cb = a.all_counters(), b.all_counters()
    assert ca["RmSubflow"] == 2 and ca["RmAddr"] == 0 and cb["RmAddr"] == 0
    assert cb["MPPrioRx"] == 1 and cb["MPJoinSynBackupRx"] == 2 and cb["MPJoinAckRx"] == 3


def test_a_v0_announcement_goes_in_rfc_6824s_layout_and_is_joined_not_echoed() -> None:
    """RFC 6824 3.4.1 (the seed's v0 dialect): ADD_ADDR has no HMAC and no echo, its
    nibble is the IP version. Our server announces its second address on a v0
    connection; our client joins it, echoes nothing, and the server does not repeat
    it waiting for an echo (before: the server sent the v1 layout with an HMAC, and a
    v0 announcement received was 'echoed' in a layout v0 lacks, which raised)."""
    from stack.wire import ipv4, tcp
    from stack.wire import mptcp as wm

    seen: list[wm.AddAddr] = []

    def watch(pkt: bytes) -> bytes:
        h, end = ipv4.parse(pkt, verify_checksum=False)
        hdr, _ = tcp.parse(memoryview(pkt)[h.header_len:end])
        for o in hdr.options:
            if isinstance(o, tcp.UnknownOption) and o.kind == tcp.OPT_MPTCP and o.data \
                    and o.data[0] >> 4 == 3:
                m = wm.parse_body(o.data, False, True, False)
                assert isinstance(m, wm.AddAddr)
                seen.append(m)
        return pkt

    v0 = MptcpConfig(version=0)
    a, b, net = multipath_pair(seed=41, profile=LinkProfile(delay=0.002, mangle=watch),
                               cfg_a=v0, cfg_b=v0)
    data = random.Random(41).randbytes(500_000)
    sa, sb = bulk(a, b, net, data, data[::-1], announce=[ip("10.0.2.1")])
    assert bytes(sb.got) == data and bytes(sa.got) == data[::-1]
    assert sa.error is None and sb.error is None
    (ann,) = seen  # once: no echo, no repetition
    assert ann.version == 0 and ann.hmac is None and not ann.echo
    assert ann.addr == ip("10.0.2.1")
    msk = sa.conn.msk
    assert len(msk.subflows) == 2 and msk.subflows[1].key[2] == ip("10.0.2.1")
    cb = b.all_counters()
    assert cb["AddAddrTx"] == 1 and cb["EchoAdd"] == 0 and a.all_counters()["AddAddr"] == 1
