"""Forged segments against a live MPTCP connection (RFC 5961, RFC 8684 section 5): an
attacker who knows the 4-tuple (and, for the in-window cases, the sequence numbers: an
on-path view) but not the keys. Each forgery is rejected and counted, and none of them
closes, stalls or corrupts the connection: the transfer finishes both ways with every
byte right and the join still up."""

from __future__ import annotations

import random

import pytest

from stack.host import Stack, ip
from stack.tcp.engine import TcpEngine
from stack.wire import ipv4, tcp
from stack.wire import mptcp as wm
from tests.sim.apps import Side, bulk, multipath_pair
from tests.sim.net import LinkProfile

A1, A2, B1 = ip("10.0.1.2"), ip("10.0.2.2"), ip("10.0.1.1")
DATA = random.Random(11).randbytes(3_000_000)
KEY = 0x0123456789ABCDEF  # nobody's


def segment(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
            opts: list[tcp.TcpOption] | None = None, payload: bytes = b"") -> bytes:
    h = tcp.TcpHeader(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 500,
                      opts or [])
    seg = tcp.emit(h, payload, src, dst)
    return ipv4.emit(ipv4.IPv4Header(src, dst, ipv4.PROTO_TCP), len(seg)) + seg


def forged(b: Stack, which: str) -> bytes | None:
    """The forgery `which`, as from the client's first subflow to the server `b`, built
    on the server's view of that subflow (what it expects next, what it sent); None
    when this is not the moment for it (a mapping of our own is best placed between
    two of the client's: inside one, the server resets the subflow, as Linux does,
    DSSNotMatching)."""
    conn = next(c for c in b.conns.values() if c.key[2] == A1)
    eng: TcpEngine = conn.engine
    rnxt, una, nxt = eng.rcv_nxt.value, eng.snd_una.value, eng.snd_nxt.value
    _, lport, _, rport = conn.key
    msk = conn.msk
    assert msk is not None

    def seg(seq: int, ack: int, flags: int, opts: list[tcp.TcpOption] | None = None,
            payload: bytes = b"") -> bytes:
        return segment(A1, B1, rport, lport, seq, ack, flags, opts, payload)

    far = 1 << 30
    ACK, RST, SYN = tcp.ACK, tcp.RST, tcp.SYN
    opt = wm.to_tcp_option
    match which:
        case "rst outside the window":
            return seg(rnxt + far, 0, RST)
        case "rst inside the window":
            return seg(rnxt + 100, una, RST | ACK)
        case "syn inside the window":
            return seg(rnxt + 5, 0, SYN)
        case "data outside the window":
            return seg(rnxt + far, una, ACK, payload=b"x" * 100)
        case "data inside the window, ack never sent":
            return seg(rnxt, nxt + far, ACK, payload=b"x" * 100)
        case "data inside the window, ack too old":
            return seg(rnxt, una - 2 * far, ACK, payload=b"x" * 100)
        case "mp_fastclose with a wrong key":
            return seg(rnxt, una, ACK, [opt(wm.MpFastclose(KEY))])
        case "add_addr with a wrong hmac":
            return seg(rnxt, una, ACK, [opt(wm.AddAddr(9, ip("10.0.9.9"), None, KEY))])
        case "add_addr without an hmac (rfc 6824's layout)":
            return seg(rnxt, una, ACK, [opt(wm.AddAddr(9, ip("10.0.9.9"), None, None,
                                                       False, 0))])
        case "remove_addr outside the window":
            return seg(rnxt + far, una, ACK, [opt(wm.RemoveAddr((1,)))])
        case "remove_addr inside the window, bad ack":
            return seg(rnxt, nxt + far, ACK, [opt(wm.RemoveAddr((1,)))])
        case "mp_prio outside the window":
            return seg(rnxt + far, una, ACK, [opt(wm.MpPrio(True, None))])
        case "mp_tcprst outside the window":
            return seg(rnxt + far, una, RST | ACK, [opt(wm.MpTcpRst(1, 0))])
        case "dss mapping far outside the data-level window":
            ssn = (rnxt - eng.irs.value) & 0xFFFFFFFF
            sf = msk.subflow_of(eng)
            cur = sf.rx_cur
            if (cur is not None and cur.ssn + cur.length > ssn) or sf.rx_maps:
                return None
            dsn = (msk.wire_data_ack() + (1 << 40)) & ((1 << 64) - 1)
            return seg(rnxt, una, ACK, [opt(wm.Dss(dsn=dsn, dsn64=True, ssn=ssn,
                                                    data_len=100))], b"y" * 100)
        case "data ack far beyond what was sent":
            beyond = (msk.local_idsn + 1 + msk.snd_nxt + (1 << 40)) & ((1 << 64) - 1)
            return seg(rnxt, una, ACK, [opt(wm.Dss(data_ack=beyond, data_ack64=True))])
    raise AssertionError(which)


# forgery -> the server's counter that rises (by at least 1)
CASES = {
    "rst outside the window": "Drop:rst-out-of-window",
    "rst inside the window": "TCPChallengeACK",
    "syn inside the window": "TCPSYNChallenge",
    "data outside the window": "Drop:out-of-window",
    "data inside the window, ack never sent": "Drop:ack-unsent",
    "data inside the window, ack too old": "Drop:ack-too-old",
    "mp_fastclose with a wrong key": "MPFastcloseBadKey",
    "add_addr with a wrong hmac": "AddAddrHMacFailure",
    "add_addr without an hmac (rfc 6824's layout)": "OptionIgnored:mptcp-add-addr-v0",
    "remove_addr outside the window": "Drop:out-of-window",
    "remove_addr inside the window, bad ack": "Drop:ack-unsent",
    "mp_prio outside the window": "Drop:out-of-window",
    "mp_tcprst outside the window": "Drop:rst-out-of-window",
    "dss mapping far outside the data-level window": "NoDSSInWindow",
    "data ack far beyond what was sent": "DataAckBeyondSent",
}


def attacked(which: str, times: int = 3) -> tuple[Side, Side, Stack, Stack, int]:
    """The transfer (3 MB each way, a join), the forgery fed to the server `times`
    times once a third has arrived; the counter's rise."""
    a, b, net = multipath_pair(seed=12, profile=LinkProfile(delay=0.003, rate_bps=80e6))
    state: dict[str, int] = {"sent": 0, "before": 0}

    def step(_sa: Side, sb: Side) -> None:
        if state["sent"] < times and len(sb.got) > len(DATA) // 3 * (1 + state["sent"] / 10):
            f = forged(b, which)
            if f is None:
                return
            if state["sent"] == 0:
                state["before"] = b.all_counters()[CASES[which]]
            b.feed(f, net.now)
            state["sent"] += 1

    sa, sb = bulk(a, b, net, DATA, DATA[::-1], join_from=[(A2, False)], max_time=120,
                  on_step=step)
    assert state["sent"] == times
    return sa, sb, a, b, b.all_counters()[CASES[which]] - state["before"]


@pytest.mark.parametrize("which", list(CASES))
def test_a_forgery_is_rejected_counted_and_changes_nothing(which: str) -> None:
    sa, sb, a, b, rose = attacked(which)
    assert rose >= 1, (which, CASES[which])
    # the connection is whole: every byte both ways, closed cleanly, the join kept
    assert bytes(sb.got) == DATA and bytes(sa.got) == DATA[::-1]
    assert sa.error is None and sb.error is None, (sa.error, sb.error)
    assert sa.conn is not None and sa.conn.msk is not None
    msk = sa.conn.msk
    assert len(msk.subflows) == 2 and not any(s.is_backup for s in msk.subflows)
    ca, cb = a.all_counters(), b.all_counters()
    assert ca["RmAddr"] == cb["RmAddr"] == 0 and cb["MPFastcloseRx"] == 0
    assert ca["MPRstRx"] == 0 and cb["MPRstRx"] == 0


def test_challenge_acks_are_rate_limited() -> None:
    """RFC 5961 7: a flood of in-window RSTs gets at most the limit of challenge ACKs
    per second (Linux net.ipv4.tcp_challenge_ack_limit, 1000); the rest are counted
    (TCPChallengeACKLimit) and get no answer."""
    a, b, net = multipath_pair(seed=13, profile=LinkProfile(delay=0.003))
    b.listen(5000)
    conn = a.connect(B1, 5000, 0.0)
    net.run(0.2)
    before = b.all_counters()
    answers = 0
    for i in range(3000):  # 3000 in 30 ms, within one second
        t = 0.25 + i * 1e-5
        f = forged(b, "rst inside the window")
        assert f is not None
        b.feed(f, t)
        answers += len(b.poll_transmit(t))
    after = b.all_counters()
    assert after["TCPChallengeACK"] - before["TCPChallengeACK"] == 1000
    assert after["TCPChallengeACKLimit"] - before["TCPChallengeACKLimit"] == 2000
    assert answers == 1000
    net.run(0.5)
    assert conn.engine.state.name == "ESTABLISHED"
