"""Packet traces (tests/unit/mptcp_trace.py): what our stack does with each MPTCP option
the peer sends, one outcome per test (Linux `mptcp_incoming_options` and the path
manager's handlers), with the segments it answers and the counters it keeps."""

from __future__ import annotations

import pytest

from stack.mptcp import crypto
from stack.tcp.engine import Closed, PeerFinished
from stack.wire import mptcp as wm
from stack.wire.mptcp import (
    MPTCP_RST_EMIDDLEBOX,
    MPTCP_RST_EMPTCP,
    AddAddr,
    Dss,
    MpFail,
    MpFastclose,
    MpPrio,
    MpTcpRst,
    RemoveAddr,
)
from stack.wire.tcp import ACK, FIN, PSH, RST
from tests.unit.mptcp_trace import OUR_ADDR2, PEER_ADDR2, SERVER_PORT, Trace, event_name

KEY_US = 0x9A3C51E207B4D86F
KEY_PEER = 0x2B7E151628AED2A6


def peer_add_addr(addr_id: int = 1, addr: bytes = PEER_ADDR2, hmac_xor: int = 0) -> AddAddr:
    """The peer's ADD_ADDR: its HMAC keyed peer key first (RFC 8684 3.4.1)."""
    return AddAddr(addr_id, addr, hmac=crypto.add_addr_hmac(KEY_PEER, KEY_US, addr_id, addr)
                   ^ hmac_xor)


def server() -> Trace:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    assert t.mptcp_events() == ["CREATED", "ESTABLISHED"]
    return t


# ==== Tests for ADD_ADDR =================================================================

def test_add_addr_with_a_good_hmac_is_echoed_exactly() -> None:
    t = server()
    t.send(t.sf, mptcp=[t.data_ack(), peer_add_addr()])
    # alone on its pure ACK, no DSS beside it (Linux 6.18: "add-addr: always drop other
    # suboptions", the echo included)
    seg = t.recv(t.sf, seq=1, ack=1, payload_len=0, mptcp=[
        AddAddr(1, PEER_ADDR2, port=None, hmac=None, echo=True)])
    assert seg.options_len == 12 + 8  # the echo has no HMAC: 8 bytes
    t.recv_nothing()
    assert t.mptcp_events() == ["ANNOUNCED"]
    assert (t.counter("AddAddr"), t.counter("AddAddrHMacFailure")) == (1, 0)


def test_add_addr_to_our_client_is_echoed_and_joined() -> None:
    # the in-stack path manager joins an announced address (a `subflow` endpoint's
    # behaviour) from our address on its subnet, 10.0.2.2 (our address id 1)
    t = Trace.client(our_key=KEY_US, peer_key=KEY_PEER)
    assert t.mptcp_events() == ["CREATED", "ESTABLISHED"]
    t.send(t.sf, mptcp=[t.data_ack(), peer_add_addr()])
    t.recv(t.sf, payload_len=0, mptcp=[AddAddr(1, PEER_ADDR2, echo=True)])  # alone
    # accept_join checks the MP_JOIN SYN (the peer's token, our id 1), answers with the
    # truncated HMAC and checks our third ACK's HMAC
    j = t.accept_join(peer=(PEER_ADDR2, SERVER_PORT), addr_id=1, our_addr_id=1)
    assert j.us[0] == OUR_ADDR2
    t.recv_nothing()
    assert t.mptcp_events() == ["ANNOUNCED", "SF_ESTABLISHED"]
    c = t.counters()
    assert (c["AddAddr"], c["MPJoinSynTx"], c["MPJoinSynAckRx"]) == (1, 1, 1)


def test_add_addr_with_a_bad_hmac_is_ignored_and_counted() -> None:
    t = server()
    t.send(t.sf, mptcp=[t.data_ack(), peer_add_addr(hmac_xor=1)])
    t.recv_nothing()  # no echo, no event
    assert t.mptcp_events() == []
    assert (t.counter("AddAddr"), t.counter("AddAddrHMacFailure")) == (0, 1)


def test_a_repeated_add_addr_is_echoed_again() -> None:
    t = server()
    for _ in range(2):
        t.send(t.sf, mptcp=[t.data_ack(), peer_add_addr()])
        t.recv(t.sf, payload_len=0, mptcp=[AddAddr(1, PEER_ADDR2, echo=True)])
    assert t.mptcp_events() == ["ANNOUNCED"]  # one event: the address is known
    assert (t.counter("AddAddr"), t.counter("AddAddrRepeated")) == (2, 1)


# ==== Tests for REMOVE_ADDR and MP_PRIO ==================================================

def test_remove_addr_closes_the_subflow_to_that_address() -> None:
    t = server()
    j = t.join(addr_id=1)
    t.recv(j, seq=1, ack=1, payload_len=0, mptcp=[t.our_data_ack()])  # the 4th ACK
    assert t.mptcp_events() == ["SF_ESTABLISHED"]
    t.send(t.sf, mptcp=[t.data_ack(), RemoveAddr((1,))])
    t.recv(j, flags=FIN | ACK, seq=1, ack=1, payload_len=0, mptcp=[t.our_data_ack()])
    t.recv_nothing()  # nothing on the master
    assert t.mptcp_events() == ["REMOVED"]
    # as Linux counts them: RmSubflow is the remover's (mptcp_join.sh chk_rm_nr)
    assert (t.counter("RmAddr"), t.counter("RmSubflow")) == (1, 0)
    # the peer's FIN/ACK ends the subflow; the connection lives on on the master
    t.send(j, flags=FIN | ACK, mptcp=[t.data_ack()])
    t.recv(j, flags=ACK, seq=2, ack=2, payload_len=0, mptcp=[t.our_data_ack()])
    assert t.mptcp_events() == ["SF_CLOSED"]
    t.app_send(b"still here")
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload=b"still here", mptcp=[
        Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(0), dsn64=True, ssn=1,
            data_len=10)])


def test_join_responder_answers_the_third_ack_with_a_4th_ack() -> None:
    # RFC 8684 3.2: the responder acknowledges the joiner's third ACK (its HMAC) with a
    # fourth, pure ACK (with the data ACK, as Linux sends it): the joiner may send data
    # only after it
    t = server()
    j = t.join(addr_id=1)
    t.recv(j, seq=1, ack=1, payload_len=0, time=1.0, mptcp=[t.our_data_ack()])
    t.recv_nothing()
    d = b"j" * 10
    t.send(j, payload=d, mptcp=[t.map(d, sf=j)])
    t.advance(0.04)
    t.recv(j, seq=1, ack=11, payload_len=0, mptcp=[t.our_data_ack()])
    assert t.msk.recv() == d
    assert t.counter("MPJoinAckRx") == 1


def test_mp_prio_is_counted_and_reported() -> None:
    t = server()
    t.send(t.sf, mptcp=[t.data_ack(), MpPrio(True)])
    t.recv_nothing()  # MP_PRIO is not acknowledged at the MPTCP level
    assert t.mptcp_events() == ["SF_PRIORITY"]
    assert t.counter("MPPrioRx") == 1


# ==== Tests for MP_FASTCLOSE =============================================================

def test_mp_fastclose_with_our_key_on_an_ack_resets_the_connection() -> None:
    t = server()
    t.conn_events()
    t.send(t.sf, mptcp=[t.data_ack(), MpFastclose(KEY_US)])
    # every subflow is reset; an RST carries MP_TCPRST and no DSS, as Linux's
    # (`mptcp_established_options_rst`; MP_FASTCLOSE only from the side that closes)
    t.recv(t.sf, flags=RST | ACK, seq=1, ack=1, payload_len=0,
           mptcp=[MpTcpRst(reason=0, flags=0)])
    t.recv_nothing()
    evs = t.conn_events()
    why = "the peer fast-closed the connection (MP_FASTCLOSE)"
    assert Closed("reset", why) in evs
    assert [event_name(e) for e in evs if event_name(e)] == ["MP_FASTCLOSE", "DIAGNOSIS",
                                                             "CLOSED"]
    f = next(e.finding for e in evs if event_name(e) == "DIAGNOSIS")
    assert (f.code, f.severity) == ("fastclose", "info")
    assert "verified" in f.text and f.packet.direction == "in"
    assert t.counter("MPFastcloseRx") == 1
    assert t.deadline() is None


def test_mp_fastclose_with_our_key_on_an_rst_closes_without_a_reply() -> None:
    t = server()
    t.send(t.sf, flags=RST | ACK,
           mptcp=[MpFastclose(KEY_US), MpTcpRst(reason=MPTCP_RST_EMPTCP, flags=0)])
    t.recv_nothing()  # an RST is never answered
    assert t.mptcp_events() == ["MP_TCPRST", "MP_FASTCLOSE", "CLOSED"]
    assert (t.counter("MPFastcloseRx"), t.counter("MPRstRx")) == (1, 1)


def test_mp_fastclose_with_a_wrong_key_is_counted_and_ignored() -> None:
    t = server()
    t.send(t.sf, mptcp=[t.data_ack(), MpFastclose(KEY_PEER)])
    t.recv_nothing()
    assert t.mptcp_events() == []
    assert (t.counter("MPFastcloseBadKey"), t.counter("MPFastcloseRx")) == (1, 0)
    d = b"alive"
    t.send(t.sf, payload=d, mptcp=[t.map(d)])
    t.advance(0.04)
    t.recv(t.sf, seq=1, ack=6, payload_len=0, mptcp=[t.our_data_ack()])
    assert t.msk.recv() == d


# ==== Tests for DATA_FIN =================================================================

def test_data_fin_on_a_pure_ack_is_data_acked_plus_one_at_once() -> None:
    t = server()
    d = b"hello"
    t.send(t.sf, payload=d, mptcp=[t.map(d)])
    t.recv_nothing()  # the data waits for the delayed ACK ...
    t.send(t.sf, mptcp=[Dss(data_ack=t.our_dsn(0), data_ack64=True, dsn=t.peer_dsn(5),
                            dsn64=True, ssn=0, data_len=1, data_fin=True)])
    # ... the DATA_FIN is acked at once: data ACK = DSN of the DATA_FIN + 1
    t.recv(t.sf, seq=1, ack=6, payload_len=0, time=1.0,
           mptcp=[Dss(data_ack=t.peer_dsn(6), data_ack64=True)])
    t.recv_nothing()
    assert PeerFinished() in t.conn_events()
    assert t.msk.recv() == d


def test_data_fin_in_the_mapping_of_the_last_data_is_data_acked_plus_one() -> None:
    t = server()
    d = b"bye"
    t.send(t.sf, payload=d, mptcp=[t.map(d, data_fin=True)])  # data_len 4: 3 + DATA_FIN
    t.recv(t.sf, seq=1, ack=4, payload_len=0,
           mptcp=[Dss(data_ack=t.peer_dsn(4), data_ack64=True)])
    t.recv_nothing()
    assert PeerFinished() in t.conn_events()


# ==== Tests for invalid mappings =========================================================

def test_a_mapping_overlapping_the_current_one_resets_the_subflow() -> None:
    t = server()
    d = b"a" * 50
    # a 100-byte mapping of which 50 bytes arrive, then a different mapping for the
    # next 50 (RFC 8684 3.3.1: mappings may not change under the bytes they cover)
    t.send(t.sf, payload=d, mptcp=[Dss(data_ack=t.our_dsn(0), data_ack64=True,
                                       dsn=t.peer_dsn(0), dsn64=True, ssn=1, data_len=100)])
    t.recv_nothing()
    t.send(t.sf, payload=d, mptcp=[Dss(data_ack=t.our_dsn(0), data_ack64=True,
                                       dsn=t.peer_dsn(1000), dsn64=True, ssn=51, data_len=50)])
    t.recv(t.sf, flags=RST | ACK, seq=1, ack=51, payload_len=0,
           mptcp=[MpTcpRst(reason=MPTCP_RST_EMPTCP, flags=0)])
    t.recv_nothing()
    assert t.mptcp_events() == ["CLOSED"]
    assert (t.counter("DSSNotMatching"), t.counter("MPRstTx")) == (1, 1)


def test_a_dss_checksum_where_none_was_negotiated_resets_the_subflow() -> None:
    t = server()
    d = b"a" * 50
    t.send(t.sf, payload=d, mptcp=[Dss(
        data_ack=t.our_dsn(0), data_ack64=True, dsn=t.peer_dsn(0), dsn64=True, ssn=1,
        data_len=50, checksum=crypto.dss_checksum(t.peer_dsn(0), 1, 50, d))])
    t.recv(t.sf, flags=RST | ACK, seq=1, ack=1, payload_len=0,
           mptcp=[MpTcpRst(reason=MPTCP_RST_EMPTCP, flags=0)])
    t.recv_nothing()
    assert t.mptcp_events() == ["CLOSED"]
    assert t.counter("DSSChecksumMismatch") == 1


def test_no_dss_checksum_where_one_was_negotiated_resets_the_subflow() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, csum=True)
    d = b"a" * 50
    t.send(t.sf, payload=d, mptcp=[Dss(data_ack=t.our_dsn(0), data_ack64=True,
                                       dsn=t.peer_dsn(0), dsn64=True, ssn=1, data_len=50)])
    t.recv(t.sf, flags=RST | ACK, seq=1, ack=1, payload_len=0,
           mptcp=[MpTcpRst(reason=MPTCP_RST_EMPTCP, flags=0)])
    assert t.counter("DSSChecksumMismatch") == 1


def test_a_bad_checksum_on_the_first_mapping_falls_back_without_mp_fail() -> None:
    # Linux `subflow_check_data_avail`: MP_FAIL only once a good checksum was seen (or
    # on a join); a bad first mapping is a peer or middlebox wrong from the start: a
    # silent fallback, one-sided (the peer's next data still carries its DSS)
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, csum=True)
    t.mptcp_events()
    d = b"c" * 20
    good = t.map(d)
    assert good.checksum is not None
    t.send(t.sf, payload=d, mptcp=[Dss(good.data_ack, True, good.dsn, True, good.ssn,
                                       good.data_len, good.checksum ^ 0xFFFF)])
    assert t.mptcp_events() == ["FALLBACK"]
    assert t.findings() == ["dss-checksum-failed"]
    assert (t.counter("DataCsumErr"), t.counter("MPFailTx")) == (1, 0)
    assert t.msk.recv() == d  # a single subflow: TCP semantics win, the bytes count
    t.advance(0.04)
    # no MP_FAIL; the data ACK goes on (the peer has not fallen back)
    t.recv(t.sf, seq=1, ack=21, payload_len=0,
           mptcp=[Dss(data_ack=t.peer_dsn(20), data_ack64=True)])


def _bad_second_mapping(t: Trace) -> wm.Dss:
    """A good first mapping (the checksum is seen to work), then a bad second one."""
    d1, d2 = b"a" * 20, b"b" * 30
    t.send(t.sf, payload=d1, mptcp=[t.map(d1)])
    good = t.map(d2)
    assert good.checksum is not None
    t.send(t.sf, payload=d2, mptcp=[Dss(good.data_ack, True, good.dsn, True, good.ssn,
                                        good.data_len, good.checksum ^ 0xFFFF)])
    return good


def test_a_bad_checksum_after_a_good_one_sends_mp_fail_and_waits_for_the_answer() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, csum=True)
    t.mptcp_events()
    bad = _bad_second_mapping(t)
    # MP_FAIL with the failed mapping's DSN, at once; no fallback until the peer's
    # infinite mapping (Linux `mptcp_subflow_fail`), the bytes delivered meanwhile
    t.recv(t.sf, seq=1, ack=51, payload_len=0,
           mptcp=[Dss(data_ack=t.peer_dsn(50), data_ack64=True), MpFail(bad.dsn)])
    assert t.mptcp_events() == ["MP_FAIL"]
    assert t.findings() == ["dss-checksum-failed"]
    assert (t.counter("DataCsumErr"), t.counter("MPFailTx")) == (1, 1)
    assert not t.msk.fallback
    assert t.msk.recv() == b"a" * 20 + b"b" * 30
    # the peer answers: MP_FAIL, then its data with an infinite mapping
    t.send(t.sf, mptcp=[t.data_ack(), MpFail(t.our_dsn(0))])
    assert t.mptcp_events() == ["MP_FAIL"] and not t.msk.fallback
    d3 = b"tcp now"
    t.send(t.sf, payload=d3, mptcp=[Dss(data_ack=t.our_dsn(0), data_ack64=True,
                                        dsn=t.peer_dsn(50), dsn64=True, ssn=51, data_len=0,
                                        checksum=0)])
    assert t.mptcp_events() == ["FALLBACK"]
    assert "infinite mapping" in (t.msk.fallback_reason or "")
    assert (t.counter("MPFailRx"), t.counter("InfiniteMapRx")) == (1, 1)
    assert t.msk.recv() == d3


def test_no_answer_to_our_mp_fail_resets_the_subflow_after_rto_max() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER, csum=True)
    bad = _bad_second_mapping(t)
    t.recv(t.sf, seq=1, ack=51, payload_len=0,
           mptcp=[Dss(data_ack=t.peer_dsn(50), data_ack64=True), MpFail(bad.dsn)])
    assert t.deadline() == pytest.approx(t.now + 120.0)
    t.advance(120.0)
    t.recv(t.sf, flags=RST | ACK, seq=1, ack=51, payload_len=0,
           mptcp=[MpTcpRst(reason=MPTCP_RST_EMIDDLEBOX, flags=0)])


def test_mp_fail_beside_a_dss_is_taken_as_alone() -> None:
    # Linux sends MP_FAIL beside a DSS (`mptcp_established_options` adds it after
    # `..._dss`): the DSS is read, and the MP_FAIL answered as when it comes alone
    t = server()
    t.send(t.sf, mptcp=[t.data_ack(), MpFail(t.our_dsn(0))])
    # the answer at once (`mptcp_pm_mp_fail_received`: MP_FAIL on an ACK)
    t.recv(t.sf, seq=1, ack=1, payload_len=0, mptcp=[MpFail(t.peer_dsn(0))])
    t.recv_nothing()
    assert t.mptcp_events() == ["MP_FAIL", "FALLBACK"]
    assert t.findings() == ["dss-checksum-failed"]
    assert t.counter("MPFailRx") == 1
    t.app_send(b"first")
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload=b"first", mptcp=[
        Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(0), dsn64=True, ssn=1,
            data_len=0)])


def test_mp_fail_from_the_peer_is_answered_with_mp_fail_and_one_infinite_mapping() -> None:
    t = server()
    t.send(t.sf, mptcp=[MpFail(t.our_dsn(0))])  # alone: no DSS beside it
    t.recv(t.sf, seq=1, ack=1, payload_len=0, mptcp=[MpFail(t.peer_dsn(0))])
    t.recv_nothing()
    assert t.mptcp_events() == ["MP_FAIL", "FALLBACK"]
    t.app_send(b"first")
    # RFC 8684 3.7: data-level length 0 = infinite; subflow byte 1 is data offset 0
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload=b"first", mptcp=[
        Dss(data_ack=t.peer_dsn(0), data_ack64=True, dsn=t.our_dsn(0), dsn64=True, ssn=1,
            data_len=0)])
    t.send(t.sf)
    t.app_send(b"second")
    t.recv(t.sf, flags=ACK | PSH, seq=6, payload=b"second", mptcp=[])
    assert (t.counter("MPFailRx"), t.counter("MPFailTx"), t.counter("InfiniteMapTx")) \
        == (1, 1, 1)
    # a late MP_FAIL after the fallback is counted, not acted on
    t.send(t.sf, mptcp=[MpFail(t.our_dsn(0))])
    assert t.counter("MPFailRx") == 2
    assert t.mptcp_events() == ["MP_FAIL"]


def test_an_infinite_mapping_falls_back_to_tcp() -> None:
    t = server()
    d = b"a" * 50
    t.send(t.sf, payload=d, mptcp=[Dss(data_ack=t.our_dsn(0), data_ack64=True,
                                       dsn=t.peer_dsn(0), dsn64=True, ssn=1, data_len=0)])
    assert t.mptcp_events() == ["FALLBACK"]
    assert (t.counter("InfiniteMapRx"), t.counter("InfiniteFallback")) == (1, 1)
    t.send(t.sf, payload=d)  # plain TCP from here: no options, still delivered
    t.advance(0.04)
    t.recv(t.sf, seq=1, ack=101, payload_len=0, mptcp=[])
    assert t.msk.recv() == d + d
    t.app_send(b"reply")
    t.recv(t.sf, flags=ACK | PSH, seq=1, payload=b"reply", mptcp=[])
    t.recv_nothing()


def test_an_ack_without_mptcp_options_after_the_handshake_falls_back() -> None:
    # the client's first segment after the handshake lost our keys' confirmation:
    # Linux `check_fully_established` -> MPCapableDataFallback (options stripped)
    t = Trace.client(our_key=KEY_US, peer_key=KEY_PEER, fully_established=False)
    t.mptcp_events()
    d = b"plain"
    t.send(t.sf, payload=d, flags=ACK | PSH)
    assert t.mptcp_events() == ["FALLBACK"]
    assert t.counter("MPCapableDataFallback") == 1
    assert t.findings() == ["dss-stripped"]
    t.advance(0.04)
    # one-sided: our options still reach the peer, so the data ACK goes on (else it
    # would resend at the data level what we have)
    t.recv(t.sf, seq=1, ack=6, payload_len=0,
           mptcp=[Dss(data_ack=t.peer_dsn(5), data_ack64=True)])
    assert t.msk.recv() == d
