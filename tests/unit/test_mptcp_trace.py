"""Packet traces of our stack against a hand-played Linux peer (tests/unit/mptcp_trace.py):
the MP_CAPABLE handshake and the option writer's decisions, one segment at a time,
including those a tight 40-byte option budget forces.

Option budget arithmetic used below (RFC 8684 3; Linux `mptcp_established_options`,
MPTCP placed before SACK as `tcp_established_options` does): 40 bytes of TCP options;
NOP NOP TIMESTAMPS 12; a DSS with only the 64-bit data ACK 4 + 8 = 12; a full DSS
(data ACK 64 + 64-bit mapping) 26 padded to 28, or 28 with its checksum; ADD_ADDR
(IPv4, HMAC) 16, its echo 8; REMOVE_ADDR 3 + n (padded); MP_PRIO 3 (padded to 4); SACK
2 + 8 per block, after two NOPs.

An ADD_ADDR (or its echo) goes on a pure ACK ALONE, no DSS or other suboption beside it
(Linux 6.18, measured; commit "mptcp: add-addr: always drop other suboptions": "a plain
dup-ack from TCP perspective"): what it displaces goes on the next pure ACK.
"""

from __future__ import annotations

import pytest

from stack.mptcp import crypto
from stack.wire import tcp
from stack.wire.mptcp import AddAddr, Dss, MpCapable, MpPrio, RemoveAddr
from stack.wire.tcp import ACK, PSH, SYN
from tests.unit.mptcp_trace import (
    HMAC_SHA256,
    OUR_ADDR,
    OUR_ADDR2,
    OUR_ADDRS,
    PEER_ADDR,
    PEER_PORT,
    SERVER_PORT,
    Sf,
    Trace,
)

KEY_US = 0x9A3C51E207B4D86F
KEY_PEER = 0x2B7E151628AED2A6
A_FLAG = 0x80  # MP_CAPABLE A: checksums required


def ack_hmac(addr_id: int, addr: bytes) -> int:
    """The HMAC our ADD_ADDR must carry: sender key (ours) first (RFC 8684 3.4.1)."""
    return crypto.add_addr_hmac(KEY_US, KEY_PEER, addr_id, addr)


# ==== Tests for the harness itself ========================================================

def test_the_module_docstring_example() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)  # MP_CAPABLE handshake done
    t.send(t.sf, payload=b"hello", mptcp=[t.map(b"hello")])  # data with a DSS mapping
    t.advance(0.04)  # our delayed ACK timer
    t.recv(t.sf, flags=ACK, seq=1, ack=6, payload_len=0,
           mptcp=[Dss(data_ack=t.peer_dsn(5), data_ack64=True)])
    t.recv_nothing()


def test_recv_fails_on_a_suboption_that_is_not_expected() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.app_close()
    with pytest.raises(AssertionError, match="DATA_FIN"):
        t.recv(t.sf, payload_len=0, mptcp=[t.our_data_ack()])  # the DATA_FIN is there too


# ==== Tests for the MP_CAPABLE handshake ================================================

def test_server_synack_carries_our_key_and_the_third_ack_establishes() -> None:
    t = Trace(our_key=KEY_US, peer_key=KEY_PEER)
    t.stack.listen(SERVER_PORT)
    sf = Sf((PEER_ADDR, PEER_PORT), (OUR_ADDR, SERVER_PORT), 1_000_000)
    t.subflows.append(sf)
    t.send(sf, flags=SYN, ack=0, mptcp=[MpCapable(1, HMAC_SHA256)])
    synack = t.recv(sf, flags=SYN | ACK, seq=0, ack=1, payload_len=0,
                    mptcp=[MpCapable(1, HMAC_SHA256, sender_key=KEY_US)])
    # Linux's order: MSS, SACK_PERM, TS, NOP, WS, then MPTCP (12 bytes): 20 + 12
    assert [type(o) for o in synack.options] == [tcp.Mss, tcp.SackPermitted, tcp.Timestamps,
                                                 tcp.WindowScale]
    assert synack.options_len == 32
    t.recv_nothing()
    assert t.mptcp_events() == []
    t.send(sf, mptcp=[MpCapable(1, HMAC_SHA256, KEY_PEER, KEY_US)])
    t.recv_nothing()
    assert t.mptcp_events() == ["CREATED", "ESTABLISHED"]
    c = t.counters()
    assert (c["MPCapableSYNRX"], c["MPCapableACKRX"]) == (1, 1)
    assert t.deadline() is None


def test_server_takes_the_checksum_request_of_the_syn() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, csum=True)
    # (Trace.server checked the SYN/ACK: MP_CAPABLE flags A|H with our key)
    d = b"abc"
    t.send(t.sf, payload=d, mptcp=[t.map(d)])  # the mapping carries its checksum
    t.advance(0.04)  # delayed ACK
    t.recv(t.sf, seq=1, ack=4, payload_len=0, mptcp=[t.our_data_ack(3)], time=1.04)
    assert t.msk.recv() == d
    assert t.mpc_flags() == A_FLAG | HMAC_SHA256


def test_client_syn_has_no_key_and_the_third_ack_has_both_keys() -> None:
    t = Trace.client(our_key=KEY_US, peer_key=KEY_PEER, fully_established=False)
    # Trace.client checked: SYN with the 4-byte MP_CAPABLE, third ACK with both keys,
    # ours first (RFC 8684 3.1)
    assert t.mptcp_events() == ["CREATED"]
    assert t.counter("MPCapableSYNACKRX") == 1
    # the server's first DSS (a data ACK) tells us it has our key: fully established
    t.send(t.sf, mptcp=[t.data_ack()])
    t.recv_nothing()
    assert t.mptcp_events() == ["ESTABLISHED"]


# ==== Tests for MP_CAPABLE on the client's first data ====================================

def test_client_first_data_segment_carries_mp_capable_with_the_data_level_length() -> None:
    t = Trace.client(our_key=KEY_US, peer_key=KEY_PEER, fully_established=False)
    t.app_send(b"z" * 10)
    # 22 bytes: both keys + the first mapping's length, no DSS beside it
    seg = t.recv(t.sf, flags=ACK | PSH, seq=1, ack=1, payload=b"z" * 10,
                 mptcp=[MpCapable(1, HMAC_SHA256, KEY_US, KEY_PEER, data_len=10)])
    assert seg.options_len == 12 + 24
    # the peer's data ACK makes us fully established: DSS from now on
    t.send(t.sf, mptcp=[t.data_ack()])
    t.app_send(b"w" * 10)
    t.recv(t.sf, flags=ACK | PSH, seq=11, payload_len=10,
           mptcp=[Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(10), dsn64=True,
                      ssn=11, data_len=10)])
    t.recv_nothing()


def test_client_first_data_segment_with_checksums_carries_the_mapping_checksum() -> None:
    t = Trace.client(our_key=KEY_US, peer_key=KEY_PEER, csum=True, fully_established=False)
    d = b"z" * 10
    t.app_send(d)
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload=d, mptcp=[MpCapable(
        1, A_FLAG | HMAC_SHA256, KEY_US, KEY_PEER, data_len=10,
        checksum=crypto.dss_checksum(t.our_dsn(0), 1, 10, d))])


# ==== Tests for the DSS on data segments =================================================

def test_data_segment_maps_its_payload_with_64_bit_dsn_and_data_ack() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.app_send(b"x" * 100)
    seg = t.recv(t.sf, flags=ACK | PSH, seq=1, ack=1, payload=b"x" * 100, mptcp=[
        Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(0), dsn64=True, ssn=1,
            data_len=100)])
    assert seg.options_len == 40  # 12 timestamps + 28 full DSS: the reserved room
    t.recv_nothing()


def test_data_segment_dss_with_checksum() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, csum=True)
    d = b"checksummed"
    t.app_send(d)
    seg = t.recv(t.sf, flags=ACK | PSH, seq=1, payload=d, mptcp=[
        Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(0), dsn64=True, ssn=1,
            data_len=len(d), checksum=crypto.dss_checksum(t.our_dsn(0), 1, len(d), d))])
    # 28 bytes beside the timestamps, no padding: exactly the 40
    assert seg.options_len == 12 + 28


# ==== Tests for DATA_FIN on a pure ACK ===================================================

def test_data_fin_goes_on_a_pure_ack_as_a_one_byte_mapping_with_ssn_0() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.app_close()
    t.recv(t.sf, flags=ACK, seq=1, ack=1, payload_len=0, mptcp=[
        Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(0), dsn64=True, ssn=0,
            data_len=1, data_fin=True)])
    t.recv_nothing()


def test_data_fin_after_data_with_checksum() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, csum=True)
    d = b"y" * 10
    t.app_send(d)
    t.app_close()
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload=d, mptcp=[
        Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(0), dsn64=True, ssn=1,
            data_len=10, checksum=crypto.dss_checksum(t.our_dsn(0), 1, 10, d))])
    # the DATA_FIN's checksum covers the pseudo-header only (length 1, no data)
    t.recv(t.sf, flags=ACK, seq=11, payload_len=0, mptcp=[
        Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(10), dsn64=True, ssn=0,
            data_len=1, checksum=crypto.dss_checksum(t.our_dsn(10), 0, 1, b""),
            data_fin=True)])
    t.recv_nothing()


def test_data_fin_waits_for_a_second_pure_ack_when_an_add_addr_is_due() -> None:
    # the ADD_ADDR takes the first pure ACK alone (Linux 6.18: no DSS beside it), the
    # DATA_FIN (with the data ACK) goes on the next pure ACK, right after
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.announce(OUR_ADDR2)
    t.app_close()
    seg = t.recv(t.sf, flags=ACK, seq=1, payload_len=0, mptcp=[
        AddAddr(1, OUR_ADDR2, hmac=ack_hmac(1, OUR_ADDR2))])
    assert seg.options_len == 12 + 16
    t.recv(t.sf, flags=ACK, seq=1, payload_len=0, mptcp=[
        Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(0), dsn64=True, ssn=0,
            data_len=1, data_fin=True)])
    t.recv_nothing()


# ==== Tests for ADD_ADDR under the option budget =========================================

def test_add_addr_goes_on_a_pure_ack_never_on_data() -> None:
    # (Linux: only on a pure ACK, `skb_is_tcp_pure_ack`; and alone there, its DSS
    # dropped: the data ACK went on the data segment before it)
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    assert t.mptcp_events() == ["CREATED", "ESTABLISHED"]
    t.msk.send(b"d" * 10)
    t.announce(OUR_ADDR2)
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload_len=10, mptcp=[
        Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(0), dsn64=True, ssn=1,
            data_len=10)])
    seg = t.recv(t.sf, flags=ACK, seq=11, payload_len=0, mptcp=[
        AddAddr(1, OUR_ADDR2, hmac=ack_hmac(1, OUR_ADDR2))])
    assert seg.options_len == 12 + 16
    t.recv_nothing()
    assert t.counter("AddAddrTx") == 1
    assert t.mptcp_events() == []  # ANNOUNCED is the peer's announcement, not ours


def test_add_addr_alone_on_its_pure_ack_leaves_room_for_one_sack_block() -> None:
    # 12 timestamps + 16 ADD_ADDR (alone, Linux 6.18: no data ACK beside it) = 28; MPTCP
    # has precedence over SACK (as in Linux's tcp_established_options), which gets the
    # rest: (40 - 28 - 4) // 8 = 1 block, 12 bytes with its NOPs: 40 in all
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.map(b"a" * 100)  # the peer's first 100 bytes are "lost"
    d = b"b" * 100
    t.send(t.sf, seq=101, payload=d, mptcp=[t.map(d, ssn=101, off=100)])
    t.recv(t.sf, seq=1, ack=1, payload_len=0, sack=[(101, 201)], mptcp=[t.our_data_ack(0)])
    t.announce(OUR_ADDR2)
    seg = t.recv(t.sf, seq=1, ack=1, payload_len=0, sack=[(101, 201)],
                 mptcp=[AddAddr(1, OUR_ADDR2, hmac=ack_hmac(1, OUR_ADDR2))])
    assert seg.options_len == 40
    t.recv_nothing()
    # the next ACK has the data ACK again, and one SACK block, the newest
    # ((40 - 24 - 4) // 8 = 1)
    d2 = b"c" * 100
    t.send(t.sf, seq=301, payload=d2, mptcp=[t.map(d2, ssn=301, off=300)])
    t.recv(t.sf, seq=1, ack=1, payload_len=0, sack=[(301, 401)],
           mptcp=[t.our_data_ack(0)])
    t.recv_nothing()


def test_without_timestamps_add_addr_leaves_room_for_two_sack_blocks() -> None:
    # 16 ADD_ADDR alone (Linux 6.18: no data ACK beside it); (40 - 16 - 4) // 8 = 2
    # blocks, the newest, of the three the data ACKs carried (12 + 4 + 24 = 40)
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, ts=False)
    t.map(b"a" * 100)
    for left in (101, 301, 501):
        d = b"b" * 100
        t.send(t.sf, seq=left, payload=d, mptcp=[t.map(d, ssn=left, off=left - 1)])
    t.recv(t.sf, seq=1, ack=1, sack=[(101, 201)], mptcp=[t.our_data_ack(0)])
    t.recv(t.sf, seq=1, ack=1, sack=[(301, 401), (101, 201)], mptcp=[t.our_data_ack(0)])
    t.recv(t.sf, seq=1, ack=1, sack=[(501, 601), (301, 401), (101, 201)],
           mptcp=[t.our_data_ack(0)])
    t.announce(OUR_ADDR2)
    seg = t.recv(t.sf, seq=1, ack=1, sack=[(501, 601), (301, 401)],
                 mptcp=[AddAddr(1, OUR_ADDR2, hmac=ack_hmac(1, OUR_ADDR2))])
    assert seg.options == [] and seg.options_len == 16 + 4 + 16
    t.recv_nothing()


def test_add_addr_displaces_remove_addr_which_gets_the_next_pure_ack() -> None:
    # ADD_ADDR and REMOVE_ADDR never share a segment (Linux: add_addr, else rm_addr; and
    # the ADD_ADDR goes alone). Both asked for before the stack transmits: the
    # REMOVE_ADDR goes on a second pure ACK at once (Linux sends one ACK per signal),
    # never left waiting for other traffic
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.stack.announce(t.connection, OUR_ADDR2)
    t.stack.remove_addr(t.connection, OUR_ADDRS[2])
    t.recv(t.sf, payload_len=0, mptcp=[AddAddr(1, OUR_ADDR2, hmac=ack_hmac(1, OUR_ADDR2))])
    t.recv(t.sf, payload_len=0, mptcp=[t.our_data_ack(), RemoveAddr((2,))])
    t.recv_nothing()
    t.send(t.sf, mptcp=[t.data_ack(), AddAddr(1, OUR_ADDR2, echo=True)])  # the echo
    t.recv_nothing()
    assert (t.counter("RmAddrTx"), t.counter("EchoAdd")) == (1, 1)

def test_remove_addr_asked_for_after_the_add_addr_went_gets_its_own_pure_ack() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.announce(OUR_ADDR2)
    t.remove_addr(OUR_ADDRS[2])
    t.recv(t.sf, payload_len=0, mptcp=[AddAddr(1, OUR_ADDR2, hmac=ack_hmac(1, OUR_ADDR2))])
    t.recv(t.sf, payload_len=0, mptcp=[t.our_data_ack(), RemoveAddr((2,))])
    t.recv_nothing()


def test_add_addr_and_mp_prio_share_the_pure_ack_without_the_dss() -> None:
    # Linux's mptcp_established_options: the ADD_ADDR drops the DSS ("add-addr: always
    # drop other suboptions", 6.18), then mptcp_established_options_mp_prio still runs
    # and mptcp_write_options writes both: 12 (timestamps) + 16 + 4
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.stack.announce(t.connection, OUR_ADDR2)
    assert t.stack.set_backup(t.connection, OUR_ADDR, True) == 1
    seg = t.recv(t.sf, payload_len=0, mptcp=[AddAddr(1, OUR_ADDR2, hmac=ack_hmac(1, OUR_ADDR2)),
                                             MpPrio(True)])
    assert seg.options_len == 12 + 16 + 4
    t.recv_nothing()
    assert t.counter("MPPrioTx") == 1


def test_without_timestamps_add_addr_and_mp_prio_share_the_pure_ack_too() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, ts=False)
    t.stack.announce(t.connection, OUR_ADDR2)
    t.stack.set_backup(t.connection, OUR_ADDR, True)
    seg = t.recv(t.sf, payload_len=0, mptcp=[AddAddr(1, OUR_ADDR2, hmac=ack_hmac(1, OUR_ADDR2)),
                                             MpPrio(True)])
    assert seg.options_len == 16 + 4
    t.recv_nothing()
    assert t.counter("MPPrioTx") == 1


# ==== Tests for REMOVE_ADDR and MP_PRIO ==================================================

def test_remove_addr_carries_at_most_8_ids_the_ninth_goes_on_the_next_pure_ack() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, addrs=OUR_ADDRS)
    for addr in OUR_ADDRS[1:]:  # ids 1..9, all before the stack transmits
        t.stack.remove_addr(t.connection, addr)
    # 12 + 12 + aligned(3 + 8) = 36: the kernel's MPTCP_RM_IDS_MAX (8) limits, not room
    seg = t.recv(t.sf, payload_len=0,
                 mptcp=[t.our_data_ack(), RemoveAddr((1, 2, 3, 4, 5, 6, 7, 8))])
    assert seg.options_len == 36
    t.recv(t.sf, payload_len=0, mptcp=[t.our_data_ack(), RemoveAddr((9,))])
    t.recv_nothing()
    assert t.counter("RmAddrTx") == 2

def test_mp_prio_after_set_backup_goes_on_a_pure_ack_once() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    assert t.set_backup(OUR_ADDR, True) == 1
    t.recv(t.sf, seq=1, ack=1, payload_len=0, mptcp=[t.our_data_ack(), MpPrio(True)])
    t.recv_nothing()
    assert t.mptcp_events() == ["CREATED", "ESTABLISHED", "SF_PRIORITY"]
    assert t.set_backup(OUR_ADDR, True) == 0  # no change: nothing sent
    t.recv_nothing()
    assert t.set_backup(OUR_ADDR, False) == 1
    t.recv(t.sf, payload_len=0, mptcp=[t.our_data_ack(), MpPrio(False)])
    assert t.counter("MPPrioTx") == 2


def test_without_timestamps_remove_addr_and_mp_prio_ride_on_a_data_segment() -> None:
    # 28 full DSS + 4 leaves room on a data segment; the pure ACK asked for them then
    # goes out with the data ACK alone
    for call in ("remove_addr", "set_backup"):
        t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, ts=False)
        t.msk.send(b"d" * 10)
        if call == "remove_addr":
            t.remove_addr(OUR_ADDR2)
            extra: RemoveAddr | MpPrio = RemoveAddr((1,))
        else:
            t.set_backup(OUR_ADDR, True)
            extra = MpPrio(True)
        seg = t.recv(t.sf, flags=ACK | PSH, seq=1, payload_len=10, mptcp=[
            Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(0), dsn64=True,
                ssn=1, data_len=10), extra])
        assert seg.options_len == 32
        t.recv(t.sf, seq=11, payload_len=0, mptcp=[t.our_data_ack()])
        t.recv_nothing()
