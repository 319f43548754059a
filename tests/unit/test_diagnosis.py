"""Diagnosis findings (stack/diag.py) on packet sequences played by hand: each code is
made by the packet that proves it, points at that packet's frame number (the stack's
count of packets in and out, as --pcap numbers them), and no other finding is claimed."""

from __future__ import annotations

from stack.diag import Code, Diagnosis, Finding, FrameClock, PacketRef, Severity
from stack.mptcp import crypto
from stack.mptcp.connection import MptcpConfig
from stack.wire import mptcp as wm
from stack.wire.mptcp import MPTCP_RST_ERESOURCE, AddAddr, Dss, MpJoinSynAck, MpTcpRst
from stack.wire.tcp import ACK, RST, SYN
from tests.unit.mptcp_trace import (
    OUR_ADDR,
    OUR_ADDR2,
    PEER_ADDR,
    PEER_ADDR2,
    SERVER_PORT,
    Sf,
    Trace,
)

KEY_US = 0x9A3C51E207B4D86F
KEY_PEER = 0x2B7E151628AED2A6


def findings(t: Trace) -> list[Finding]:
    return list(t.msk.diag.findings)


def only(t: Trace, code: Code) -> Finding:
    """The one finding there is, of `code` (nothing else claimed)."""
    fs = findings(t)
    assert [f.code for f in fs] == [code], [f.line(0) for f in fs]
    return fs[0]


def test_a_finding_line_names_code_packet_and_hint() -> None:
    d = Diagnosis(FrameClock(), t0=10.0)
    ref = PacketRef(7, 10.25, "in", (OUR_ADDR, 5000, PEER_ADDR, 40000))
    f = d.add(Code.SUBFLOW_RESET, Severity.WARNING, "the peer reset it", ref, hint="look")
    assert f is not None and f.unmet is False
    assert f.line(10.0) == ("warning subflow-reset: the peer reset it [frame 7 (received at "
                            "0.2500 s on 10.0.1.2:5000 > 10.0.1.1:40000)] (hint: look)")
    assert f.as_dict(10.0)["packet"] == {"frame": 7, "time": 0.25, "direction": "in",
                                         "subflow": "10.0.1.2:5000 > 10.0.1.1:40000"}
    assert d.add(Code.SUBFLOW_RESET, Severity.WARNING, "again", ref) is None  # once per key


# ---- the MP_CAPABLE handshake --------------------------------------------------------------
def _client_synack(mptcp: list[wm.MptcpOption], *, version: int = 1,
                   nops: int = 0) -> Trace:
    t = Trace(our_key=KEY_US, peer_key=KEY_PEER, mptcp=MptcpConfig(version=version))
    t.conn = t.stack.connect(PEER_ADDR, SERVER_PORT, t.now)
    src, _ = t._head()
    t.sf = Sf((PEER_ADDR, SERVER_PORT), src, 2_000_000)
    t.subflows.append(t.sf)
    syn = t.take(t.sf)
    assert syn.flags == SYN
    t.send(t.sf, flags=SYN | ACK, ack=1, mptcp=mptcp, extra_nops=nops)
    return t


def test_a_syn_ack_without_mp_capable_is_a_peer_without_mptcp() -> None:
    t = _client_synack([])
    f = only(t, Code.FALLBACK)
    assert "does not speak MPTCP" in f.text and f.unmet
    assert f.packet is not None and (f.packet.frame, f.packet.direction) == (2, "in")


def test_nops_where_mp_capable_was_are_a_stripped_option() -> None:
    # nft `reset tcp option mptcp` overwrites the 12-byte option with NOPs
    t = _client_synack([], nops=12)
    f = only(t, Code.MPC_STRIPPED)
    assert "12 NOPs" in f.text and f.packet is not None and f.packet.frame == 2


def test_our_v0_syn_answered_without_mp_capable_is_an_unsupported_version() -> None:
    t = _client_synack([], version=0)
    f = only(t, Code.MPC_VERSION_UNSUPPORTED)
    assert "v0" in f.text and "v1" in f.hint


# ---- joins ---------------------------------------------------------------------------------
def _our_join_synack(t: Trace, *, bad_hmac: bool = False) -> Sf:
    """Our client opened a join from OUR_ADDR2 to the peer's initial address: the peer
    answers its SYN with a SYN/ACK (a wrong truncated HMAC if `bad_hmac`)."""
    t.stack.add_subflow(t.connection, OUR_ADDR2, t.now)
    src, dst = t._head()
    sf = Sf(dst, src, 5_000_000, peer_nonce=0x1234)
    t.subflows.append(sf)
    syn = t.take(sf)
    (mpj,) = syn.mptcp
    assert isinstance(mpj, wm.MpJoinSyn)
    thmac = crypto.join_synack_hmac(KEY_PEER, KEY_US, 0x1234, mpj.nonce) ^ (1 if bad_hmac else 0)
    t.send(sf, flags=SYN | ACK, ack=1, mptcp=[MpJoinSynAck(False, 0, thmac, 0x1234)])
    return sf


def test_a_join_reset_after_our_third_ack_is_refused_by_the_peers_limit() -> None:
    t = Trace.client(our_key=KEY_US, peer_key=KEY_PEER)
    sf = _our_join_synack(t)
    third = t.take(sf)
    assert isinstance(third.mptcp[0], wm.MpJoinAck)
    rst_frame = t.stack.frames.n + 1
    t.send(sf, flags=RST, ack=None, mptcp=[MpTcpRst(MPTCP_RST_ERESOURCE, 0)])
    f = only(t, Code.JOIN_REFUSED)
    assert "after our third ACK" in f.text and "reason 2" in f.text
    assert "subflow limit" in f.hint and f.unmet
    assert f.packet is not None and (f.packet.frame, f.packet.direction) == (rst_frame, "in")
    assert f.packet.subflow == (OUR_ADDR2, sf.us[1], PEER_ADDR, SERVER_PORT)


def test_a_bad_join_syn_ack_hmac_names_both_values() -> None:
    t = Trace.client(our_key=KEY_US, peer_key=KEY_PEER)
    synack_frame = t.stack.frames.n + 2  # after our join SYN
    _our_join_synack(t, bad_hmac=True)
    f = only(t, Code.JOIN_BAD_HMAC)
    assert "expected 0x" in f.text and f.packet is not None
    assert (f.packet.frame, f.packet.direction) == (synack_frame, "in")


def test_a_join_naming_no_token_of_ours_is_a_host_level_finding() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    sf = Sf((PEER_ADDR2, 40001), (OUR_ADDR, SERVER_PORT), 3_000_000)
    t.subflows.append(sf)
    frame = t.stack.frames.n + 1
    t.send(sf, flags=SYN, ack=0, mptcp=[wm.MpJoinSyn(False, 1, 0xDEADBEEF, 7)])
    t.recv(sf, flags=RST | ACK, mptcp=[MpTcpRst(1, 0)])
    (f,) = t.stack.diag.findings
    assert f.code is Code.JOIN_UNKNOWN_TOKEN and "deadbeef" in f.text
    assert f"{t.our_token:08x}" in f.text  # ours, for comparison
    assert f.packet is not None and f.packet.frame == frame
    assert findings(t) == []


def test_an_established_subflow_reset_with_a_reason_is_explained() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    j = t.join(addr_id=1)
    t.take(j)  # our fourth ACK
    frame = t.stack.frames.n + 1
    t.send(j, flags=RST, ack=None, mptcp=[MpTcpRst(5, 0)])
    f = only(t, Code.SUBFLOW_RESET)
    assert "reason 5" in f.text and "unacceptable performance" in f.text
    assert f.packet is not None and f.packet.frame == frame
    # regression: the MP_TCPRST event named the master's 4-tuple, not the reset one's
    (ev,) = [e.event for e in t.events if getattr(e, "event", None) is not None
             and getattr(e.event, "name", None) == "MP_TCPRST"]
    assert (ev.saddr, ev.sport, ev.daddr, ev.dport) == (j.us[0], j.us[1], j.peer[0], j.peer[1])


# ---- ADD_ADDR --------------------------------------------------------------------------------
def test_an_add_addr_never_echoed_is_given_up_after_its_retries() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.stack.announce(t.connection, OUR_ADDR2)
    last = 0
    while True:
        t._poll()
        while t.outbox:
            before = t.stack.frames.n - len(t.outbox)
            seg = t.take(t.sf)
            if any(isinstance(o, AddAddr) for o in seg.mptcp):
                last = before + 1
        if findings(t):
            break
        t.fire()
    f = only(t, Code.ADD_ADDR_NOT_ECHOED)
    assert "never echoed" in f.text and f.unmet
    assert f.packet is not None and (f.packet.frame, f.packet.direction) == (last, "out")


def test_an_echoed_add_addr_nobody_joins_is_ignored() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.stack.announce(t.connection, OUR_ADDR2)
    seg = t.take(t.sf)
    (a,) = [o for o in seg.mptcp if isinstance(o, AddAddr)]
    echo_frame = t.stack.frames.n + 1
    t.send(t.sf, mptcp=[t.data_ack(), AddAddr(a.addr_id, a.addr, echo=True)])
    assert findings(t) == []
    t.stack.conclude(t.connection, t.now + 5)
    f = only(t, Code.ADD_ADDR_IGNORED)
    assert "10.0.2.2" in f.text and "add_addr_accepted" in f.hint
    assert f.packet is not None and f.packet.frame == echo_frame


def test_a_join_to_the_announced_address_means_it_was_not_ignored() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    t.stack.announce(t.connection, OUR_ADDR2)
    seg = t.take(t.sf)
    (a,) = [o for o in seg.mptcp if isinstance(o, AddAddr)]
    t.send(t.sf, mptcp=[t.data_ack(), AddAddr(a.addr_id, a.addr, echo=True)])
    t.join(us=(OUR_ADDR2, SERVER_PORT), our_addr_id=a.addr_id)
    t.stack.conclude(t.connection, t.now + 5)
    assert findings(t) == []


# ---- data ----------------------------------------------------------------------------------
def test_a_data_level_window_shut_at_the_end_is_a_window_stall() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    shut = t.stack.frames.n + 1
    t.send(t.sf, window=0, mptcp=[Dss(data_ack=t.our_dsn(0), data_ack64=True)])
    t.app_send(b"x" * 1000)
    t.advance(3.0)
    t.stack.conclude(t.connection, t.now)
    f = only(t, Code.WINDOW_STALL)
    assert "data-level window has been 0" in f.text and "not reading" in f.hint
    assert f.packet is not None and f.packet.frame == shut
    assert not f.unmet


def test_a_clean_connection_has_no_findings() -> None:
    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    d = b"hello"
    t.send(t.sf, payload=d, mptcp=[t.map(d)])
    t.stack.conclude(t.connection, t.now)
    assert findings(t) == [] and t.stack.diag.findings == []
    assert ACK  # (flags imported for the harness' defaults)


# ---- the API under a fast close ------------------------------------------------------------
class _Shell:
    def kick(self, conn: object) -> None:
        pass


def test_writing_after_the_peer_fast_closed_raises_the_reset_not_a_send_error() -> None:
    # regression: `TcpError: send() after close()` came out of api.push as a traceback
    # when MP_FASTCLOSE arrived while we were sending (its Closed event not yet taken)
    from stack import api

    t = Trace.server(our_key=KEY_US, peer_key=KEY_PEER)
    stream = api._Stream(_Shell(), t.connection)  # type: ignore[arg-type]
    writer = api.StreamWriter(stream)
    t.send(t.sf, flags=RST, ack=None, mptcp=[wm.MpFastclose(KEY_US), MpTcpRst(0, 0)])
    writer.write(b"x" * 1000)  # the app had not heard yet
    assert isinstance(stream.error, ConnectionResetError)
    assert "fast-closed" in str(stream.error) and stream.done
