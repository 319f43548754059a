"""Issue 9: the MP_CAPABLE C flag and MP_CAPABLE SYN blackholes, packet by packet.

- C flag (RFC 8684 3.1, "do not attempt to establish new subflows to this address and
  port"): a Linux server with `net.mptcp.allow_join_initial_addr_port=0` sets it on its
  SYN/ACK (flags 0x21, seen on the wire from kernel 6.18); our path manager then opens
  no join to that address and port (the kernel's `fill_remote_addresses_vec`), says so
  in a `join-initial-denied` finding pointing at the SYN/ACK, and joins an address the
  peer announces instead (with `add_addr_accepted` 0 too: the kernel's C-flag case).
  `MptcpConfig.deny_join_id0` makes us set it (SYN, SYN/ACK, third ACK); as a listener
  we still take a join to our initial address, as Linux 6.18 does.
- Blackholes (the kernel's net/mptcp/ctrl.c): after `syn_retrans_before_tcp_fallback`
  (2) unanswered retransmissions with MP_CAPABLE, the next SYN is plain and the
  connection falls back (MPCapableSYNTXDrop); if that plain SYN is answered, the host
  remembers a blackhole (Blackhole) and MPTCP active opens are plain TCP for
  `blackhole_timeout` (MPCapableSYNTXDisabled), doubled per repeat, until an
  MP_CAPABLE SYN/ACK is seen again.
"""

from __future__ import annotations

import pytest

from stack.diag import Code, Finding
from stack.host import MpcBlackhole
from stack.mptcp import crypto
from stack.mptcp.connection import MptcpConfig
from stack.wire.mptcp import MPC_FLAG_C, MPC_FLAG_H, AddAddr, MpCapable
from stack.wire.tcp import ACK, SYN
from tests.unit.mptcp_trace import (
    OUR_ADDR,
    OUR_ADDR2,
    PEER_ADDR,
    PEER_ADDR2,
    PEER_PORT,
    SERVER_PORT,
    Sf,
    Trace,
)

K_US, K_PEER = 0x1D2C3B4A59687766, 0x0F1E2D3C4B5A6978
H, HC = MPC_FLAG_H, MPC_FLAG_H | MPC_FLAG_C


def connecting(mptcp: MptcpConfig | None = None, t: Trace | None = None,
               join_from: list[tuple[bytes, bool]] | None = None,
               peer_iss: int = 2_000_000) -> Trace:
    """Our stack opens a connection to 10.0.1.1:5000 (on `t`'s stack, or a new one);
    `t.sf` is its subflow as the peer sees it, its first SYN not yet taken."""
    if t is None:
        t = Trace(our_key=K_US, peer_key=K_PEER, mptcp=mptcp or MptcpConfig())
    t.conn = t.stack.connect(PEER_ADDR, SERVER_PORT, t.now, join_from=join_from)
    t._poll()
    src, _ = t._head()
    t.sf = Sf((PEER_ADDR, SERVER_PORT), src, peer_iss)
    t.subflows.append(t.sf)
    return t


def handshake(t: Trace, synack_flags: int, our_flags: int = H) -> None:
    """Our MP_CAPABLE SYN, the peer's SYN/ACK with `synack_flags`, our third ACK."""
    t.recv(t.sf, flags=SYN, seq=0, ack=0, mptcp=[MpCapable(1, our_flags)])
    t.send(t.sf, flags=SYN | ACK, ack=1, mptcp=[MpCapable(1, synack_flags, sender_key=K_PEER)])
    t.recv(t.sf, flags=ACK, seq=1, ack=1, payload_len=0,
           mptcp=[MpCapable(1, our_flags, t.msk.local_key, K_PEER)])


def only(findings: list[Finding], code: Code) -> Finding:
    got = [f for f in findings if f.code is code]
    assert len(got) == 1, findings
    return got[0]


# ==== the C flag on the peer's SYN/ACK ====================================================
def test_synack_c_flag_no_join_to_the_initial_address() -> None:
    t = connecting(join_from=[(OUR_ADDR2, False)])
    handshake(t, HC)
    assert t.msk.pm.remote_deny_join_id0
    t.send(t.sf, mptcp=[t.data_ack()])  # fully established: the path manager's turn
    t.recv_nothing()  # before: an MP_JOIN SYN from 10.0.2.2 to 10.0.1.1:5000
    # an ADD_ADDR may still come and take the endpoint (the next test): the finding
    # waits for the end
    assert t.counter("MPJoinSynTx") == 0 and t.findings() == []
    t.msk.conclude(t.now)
    assert t.counter("MPJoinSynTx") == 0 and t.counter("JoinInitialDenied") == 1
    assert [f.code for f in t.msk.diag.findings] == [Code.JOIN_INITIAL_DENIED]
    f = only(t.msk.diag.findings, Code.JOIN_INITIAL_DENIED)
    assert f.severity == "warning"
    assert f.text == ("the peer set the C flag on its SYN/ACK: no join to 10.0.1.1:5000; "
                      "not made: from 10.0.2.2")
    # the packet that proves it: the SYN/ACK (frame 2, after our SYN), received
    assert f.packet is not None and (f.packet.frame, f.packet.direction) == (2, "in")
    assert f.packet.subflow == t.msk.master.key
    # an explicit join to the initial address is refused as well (`ip mptcp subflow add`)
    with pytest.raises(OSError, match="C flag"):
        t.stack.add_subflow(t.connection, OUR_ADDR2, t.now)
    t.recv_nothing()


def test_without_the_c_flag_the_subflow_endpoint_joins_the_initial_address() -> None:
    t = connecting(join_from=[(OUR_ADDR2, False)])
    handshake(t, H)
    t.send(t.sf, mptcp=[t.data_ack()])
    t.accept_join(peer=(PEER_ADDR, SERVER_PORT), addr_id=0, our_addr_id=1)
    assert t.counter("MPJoinSynTx") == 1 and t.counter("JoinInitialDenied") == 0
    assert "join-initial-denied" not in t.findings()


def test_c_flag_an_announced_address_is_joined_from_the_subflow_endpoints() -> None:
    # the kernel's C-flag case: even accepting no ADD_ADDR (add_addr_accepted 0, the
    # kernel's default), the address announced right after the handshake is joined
    # from the `subflow` endpoints, which could not join the initial address
    t = connecting(MptcpConfig(add_addr_accepted_max=0), join_from=[(OUR_ADDR2, False)])
    handshake(t, HC)
    hmac = crypto.add_addr_hmac(K_PEER, K_US, 1, PEER_ADDR2, None)
    t.send(t.sf, mptcp=[t.data_ack(), AddAddr(1, PEER_ADDR2, hmac=hmac)])
    t.recv(t.sf, mptcp=[AddAddr(1, PEER_ADDR2, echo=True)])  # the echo, alone (Linux 6.18)
    t.accept_join(peer=(PEER_ADDR2, SERVER_PORT), addr_id=1, our_addr_id=1)
    assert t.counter("JoinInitialDenied") == 0 and t.counter("AddAddrNotAccepted") == 0
    assert "join-initial-denied" not in t.findings()
    t.recv_nothing()


def test_c_flag_an_address_announced_after_full_establishment_is_joined_too() -> None:
    # 6.18's C-flag case handles a late ADD_ADDR: the endpoints the C flag left without
    # a join at full establishment take the address announced afterwards (mptcp_join.sh
    # "default limits, server deny join id 0", which failed here when it came late)
    t = connecting(MptcpConfig(add_addr_accepted_max=0), join_from=[(OUR_ADDR2, False)])
    handshake(t, HC)
    t.send(t.sf, mptcp=[t.data_ack()])  # fully established: no join yet, none possible
    t.recv_nothing()
    hmac = crypto.add_addr_hmac(K_PEER, K_US, 1, PEER_ADDR2, None)
    t.send(t.sf, mptcp=[t.data_ack(), AddAddr(1, PEER_ADDR2, hmac=hmac)])
    t.recv(t.sf, mptcp=[AddAddr(1, PEER_ADDR2, echo=True)])
    t.accept_join(peer=(PEER_ADDR2, SERVER_PORT), addr_id=1, our_addr_id=1)
    t.msk.conclude(t.now)
    assert t.counter("JoinInitialDenied") == 0 and t.msk.diag.findings == []


# ==== the C flag we send (deny_join_id0) ===================================================
def test_deny_join_id0_client_sets_c_on_syn_and_third_ack() -> None:
    t = connecting(MptcpConfig(deny_join_id0=True))
    handshake(t, H, our_flags=HC)
    t.send(t.sf, mptcp=[t.data_ack()])
    t.recv_nothing()
    assert not t.msk.pm.remote_deny_join_id0


def test_deny_join_id0_listener_sets_c_and_still_takes_a_join_to_it() -> None:
    # Linux 6.18 with allow_join_initial_addr_port=0 sends C and yet accepts a join to
    # its initial address (MPJoinSynRx, MPJoinAckRx; measured): so do we
    t = Trace(our_key=K_US, peer_key=K_PEER, mptcp=MptcpConfig(deny_join_id0=True))
    t.stack.listen(SERVER_PORT)
    t.sf = Sf((PEER_ADDR, PEER_PORT), (OUR_ADDR, SERVER_PORT), 1_000_000)
    t.subflows.append(t.sf)
    t.send(t.sf, flags=SYN, ack=0, mptcp=[MpCapable(1, H)])
    t.recv(t.sf, flags=SYN | ACK, seq=0, ack=1, mptcp=[MpCapable(1, HC, sender_key=K_US)])
    t.send(t.sf, mptcp=[MpCapable(1, H, K_PEER, K_US)])
    t.recv_nothing()
    t.conn = next(e.conn for e in t.events if hasattr(e, "listener"))
    sf2 = t.join(peer=(PEER_ADDR2, PEER_PORT + 1), us=(OUR_ADDR, SERVER_PORT))
    t.recv(sf2, flags=ACK, seq=1, ack=1, mptcp=[t.our_data_ack()])
    assert t.counter("MPJoinAckRx") == 1 and t.counter("MPJoinRejected") == 0


def test_listener_remembers_the_clients_c_flag() -> None:
    t = Trace(our_key=K_US, peer_key=K_PEER)
    t.stack.listen(SERVER_PORT)
    t.sf = Sf((PEER_ADDR, PEER_PORT), (OUR_ADDR, SERVER_PORT), 1_000_000)
    t.subflows.append(t.sf)
    t.send(t.sf, flags=SYN, ack=0, mptcp=[MpCapable(1, HC)])
    t.recv(t.sf, flags=SYN | ACK, seq=0, ack=1, mptcp=[MpCapable(1, H, sender_key=K_US)])
    t.send(t.sf, mptcp=[MpCapable(1, HC, K_PEER, K_US)])
    t.conn = next(e.conn for e in t.events if hasattr(e, "listener"))
    assert t.msk.pm.remote_deny_join_id0
    with pytest.raises(OSError, match="C flag"):
        t.stack.add_subflow(t.connection, OUR_ADDR2, t.now)  # to the client's 10.0.1.1:40000
    f = only(t.msk.diag.findings, Code.JOIN_INITIAL_DENIED)
    assert f.text == ("the peer set the C flag on its SYN: no join to 10.0.1.1:40000; "
                      "not made: from 10.0.2.2")
    assert f.packet is not None and (f.packet.frame, f.packet.direction) == (1, "in")
    assert f.packet.subflow == t.msk.master.key
    # another address of the client's may be joined
    t.stack.add_subflow(t.connection, OUR_ADDR2, t.now, remote=PEER_ADDR2, rport=PEER_PORT)
    t._poll()
    syn = t.take()
    assert syn.flags == SYN and syn.dst == (PEER_ADDR2, PEER_PORT)


# ==== MP_CAPABLE SYN blackholes ============================================================
def drop_mpc_syns(t: Trace, n: int, t0: float) -> None:
    """Our first SYN and its retransmissions, MP_CAPABLE each, dropped: 1 s apart, as
    Linux 6.18's first SYN retries (tcp_syn_linear_timeouts)."""
    t.recv(t.sf, flags=SYN, mptcp=[MpCapable(1, H)], time=t0)
    for i in range(1, n):
        t.fire()
        t.recv(t.sf, flags=SYN, mptcp=[MpCapable(1, H)], time=t0 + i)


def test_mpc_syns_blackholed_plain_syn_falls_back_and_disables_mptcp() -> None:
    t = connecting()
    t0 = t.now
    drop_mpc_syns(t, 3, t0)  # the first SYN + syn_retrans_before_tcp_fallback (2)
    t.fire()
    # before: a 4th MP_CAPABLE SYN, and 7 of them over 127 s, then failure
    t.recv(t.sf, flags=SYN, mptcp=[], time=t0 + 3)  # as the kernel's: 0, 1, 2, then 3 s
    msk = t.msk
    assert msk.fallback and t.counter("MPCapableSYNTXDrop") == 1
    assert "MP_CAPABLE SYNs unanswered" in (msk.fallback_reason or "")
    assert "FALLBACK" in t.mptcp_events()
    assert t.counter("Blackhole") == 0 and t.findings() == []  # its answer decides
    t.send(t.sf, flags=SYN | ACK, ack=1)  # the plain SYN passes: a blackhole
    t.recv(t.sf, flags=ACK, seq=1, ack=1, mptcp=[])
    assert t.counter("Blackhole") == 1 and t.findings() == ["mpc-syn-blackholed"]
    f = only(msk.diag.findings, Code.MPC_SYN_BLACKHOLED)
    assert f.severity == "warning" and f.unmet
    assert f.text == ("3 MP_CAPABLE SYNs unanswered (3.0 s): sent a plain SYN, fell back to "
                      "TCP; MPTCP active opens disabled for 3600 s (blackhole)")
    # the packet: the plain SYN, our 4th frame
    assert f.packet is not None and (f.packet.frame, f.packet.direction) == (4, "out")
    assert f.packet.time == t0 + 3
    # plain TCP from here on
    t.app_send(b"hello")
    t.recv(t.sf, flags=ACK | 0x08, seq=1, payload=b"hello", mptcp=[])

    # the next active open on this host: a plain SYN at once, for an hour
    old = t.sf
    connecting(t=t)
    assert t.sf.us != old.us
    t.recv(t.sf, flags=SYN, mptcp=[])
    assert t.msk.fallback and t.counter("MPCapableSYNTXDisabled") == 1
    f = only(t.msk.diag.findings, Code.MPC_SYN_BLACKHOLED)
    assert f.text.startswith("MPTCP active opens are disabled for 3600 s more")
    assert f.packet is not None and f.packet.direction == "out"


def test_blackhole_period_expires_doubles_and_resets_on_mptcp_success() -> None:
    cfg = MptcpConfig(blackhole_timeout=10)
    t = connecting(cfg)
    drop_mpc_syns(t, 3, t.now)
    t.fire()
    t.recv(t.sf, flags=SYN, mptcp=[])
    t.send(t.sf, flags=SYN | ACK, ack=1)
    t.recv(t.sf, flags=ACK, mptcp=[])
    found = t.now  # the first blackhole: 10 s
    assert t.stack.blackhole.times == 1
    t.msk.abort()
    t.at(found + 9.5)
    connecting(t=t)
    t.recv(t.sf, flags=SYN, mptcp=[])  # still disabled
    t.msk.abort()
    t.at(found + 10)
    connecting(t=t)  # the period is over: MP_CAPABLE again, blackholed again
    drop_mpc_syns(t, 3, t.now)
    t.fire()
    t.recv(t.sf, flags=SYN, mptcp=[])
    t.send(t.sf, flags=SYN | ACK, ack=1)
    t.recv(t.sf, flags=ACK, mptcp=[])
    f = only(t.msk.diag.findings, Code.MPC_SYN_BLACKHOLED)
    assert f.text.endswith("disabled for 20 s (blackhole)")  # doubled
    second = t.now
    assert t.counter("Blackhole") == 2
    t.msk.abort()
    t.at(second + 20)
    connecting(t=t)  # over again; this time the peer answers MP_CAPABLE
    handshake(t, H)
    assert t.stack.blackhole.times == 0  # mptcp_active_enable
    assert t.counter("MPCapableSYNTXDisabled") == 1


def test_plain_syn_unanswered_too_is_no_blackhole() -> None:
    t = connecting()
    t0 = t.now
    drop_mpc_syns(t, 3, t0)
    t.fire()
    t.recv(t.sf, flags=SYN, mptcp=[], time=t0 + 3)  # as the kernel's: 0, 1, 2, then 3 s
    t.fire()
    t.recv(t.sf, flags=SYN, mptcp=[], time=t0 + 4)  # lost too: the path is down
    t.send(t.sf, flags=SYN | ACK, ack=1)
    t.recv(t.sf, flags=ACK, mptcp=[])
    assert t.counter("Blackhole") == 0 and t.stack.blackhole.times == 0
    f = only(t.msk.diag.findings, Code.MPC_SYN_BLACKHOLED)
    assert "the plain SYN went unanswered too" in f.text
    assert f.packet is not None and f.packet.frame == 4  # still the first plain SYN
    connecting(t=t)
    t.recv(t.sf, flags=SYN, mptcp=[MpCapable(1, H)])  # MPTCP stays enabled


def test_syn_retrans_before_tcp_fallback_is_configurable() -> None:
    t = connecting(MptcpConfig(syn_retrans_before_tcp_fallback=0))
    t0 = t.now
    drop_mpc_syns(t, 1, t0)
    t.fire()
    t.recv(t.sf, flags=SYN, mptcp=[], time=t0 + 1)  # the first retransmission is plain
    t.send(t.sf, flags=SYN | ACK, ack=1)
    f = only(t.msk.diag.findings, Code.MPC_SYN_BLACKHOLED)
    assert f.text.startswith("1 MP_CAPABLE SYNs unanswered (1.0 s)")


def test_blackhole_timeout_zero_falls_back_but_remembers_nothing() -> None:
    t = connecting(MptcpConfig(blackhole_timeout=0))
    drop_mpc_syns(t, 3, t.now)
    t.fire()
    t.recv(t.sf, flags=SYN, mptcp=[])
    t.send(t.sf, flags=SYN | ACK, ack=1)
    t.recv(t.sf, flags=ACK, mptcp=[])
    assert t.counter("MPCapableSYNTXDrop") == 1 and t.counter("Blackhole") == 0
    f = only(t.msk.diag.findings, Code.MPC_SYN_BLACKHOLED)
    assert f.text.endswith("blackhole detection is off (blackhole_timeout 0)")
    connecting(t=t)
    t.recv(t.sf, flags=SYN, mptcp=[MpCapable(1, H)])


def test_blackhole_memory_periods() -> None:
    m = MpcBlackhole()
    assert m.disabled_for(0, 3600) == 0
    assert m.disable(100, 3600) == 3600 and m.disabled_for(100, 3600) == 3600
    assert m.disabled_for(3699.5, 3600) == 0.5 and m.disabled_for(3700, 3600) == 0
    assert m.disable(3700, 3600) == 7200
    for _ in range(10):
        m.disable(3700, 3600)
    assert m.period(3600) == 64 * 3600  # at most 2^6 times (ctrl.c)
    assert m.disabled_for(3700, 0) == 0  # a timeout of 0 turns it all off
    m.enable()
    assert m.times == 0 and m.disabled_for(3700, 3600) == 0
    assert m.disable(1, 0) == 0 and m.times == 0
