"""The `--trace` ladder's frame numbers, subflow labels and clock (tools/trace.py).

Every line is `#N  <time>  sfK  us <arrow> peer ...`: N counts every packet the tracer
is called with (= the frame number in the `--pcap` file written from the same tap),
the time is seconds since the connection's first packet (its MP_CAPABLE SYN; MP_JOIN
subflows share their connection's clock), and `sfK` is defined once by a header line
with the 4-tuple and the address ids. Checked on kernel-captured packets with two
subflows interleaved, and end to end on two simulated stacks against the pcap."""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass, field
from types import SimpleNamespace

from stack.host import ip
from stack.mptcp import crypto
from stack.wire import ipv4, pcap, tcp
from stack.wire import mptcp as wm
from tests.sim.apps import bulk, multipath_pair
from tests.unit import golden
from tests.unit import test_mptcp_options as captured
from tests.unit.test_trace import (
    KEY_B_CLI,
    KEY_B_SRV,
    MPTCP_HANDSHAKE,
    connection_b_handshake,
    flip,
    idsn,
    segment,
)
from tools.trace import INDENT, LadderTracer

LINE = re.compile(r"^  #(\d+) +(\d+\.\d{6})  (sf\d+) +us (--|<-)")
HEADER = re.compile(r"^  (sf\d+): (\S+) > (\S+) \(us > peer\), (.*); t=0 at #(\d+)$")


@dataclass
class Line:
    frame: int
    time: str
    label: str
    direction: str  # "out" / "in", from the arrow
    index: int  # line number in the ladder


@dataclass
class Header:
    ours: str
    peer: str
    kind: str
    t0_frame: int
    index: int = field(compare=False)  # line number in the ladder


def ladder(text: str) -> tuple[list[Line], dict[str, Header]]:
    """The packet lines and the subflow headers of a ladder; each label defined once,
    before its first line."""
    lines: list[Line] = []
    headers: dict[str, Header] = {}
    for i, s in enumerate(text.splitlines()):
        if m := LINE.match(s):
            lines.append(Line(int(m[1]), m[2], m[3], "out" if m[4] == "--" else "in", i))
            assert m[3] in headers, f"{m[3]} used before its header: {s}"
        elif h := HEADER.match(s):
            assert h[1] not in headers, f"{h[1]} defined twice"
            headers[h[1]] = Header(h[2], h[3], h[4], int(h[5]), i)
    return lines, headers


def run(packets: list[tuple[str, bytes, float]], **kw: object) -> tuple[str, LadderTracer]:
    out = io.StringIO()
    tracer = LadderTracer(out, **kw)  # type: ignore[arg-type]
    for direction, pkt, now in packets:
        tracer(direction, pkt, now)
    tracer.flush()
    text = out.getvalue()
    assert "trace error" not in text and "could not derive" not in text, text
    return text, tracer


def at(text: str, frame: int) -> str:
    """The ladder from the line of `frame` to the next packet line (its derived lines)."""
    rows = text.splitlines()
    start = next(i for i, s in enumerate(rows) if s.startswith(f"  #{frame} "))
    end = next((i for i in range(start + 1, len(rows)) if LINE.match(rows[i])), len(rows))
    return "\n".join(rows[start:end])


# --- two subflows interleaved: kernel packets of connection B ------------------------------
C1, S1 = ("10.0.1.254", 0xC885), ("10.0.1.1", 7101)  # connection B's initial subflow


def interleaved() -> list[tuple[str, bytes, float]]:
    """Connection B as its client saw it: the MP_CAPABLE handshake, then the kernel's
    MP_JOIN handshake (captured) with initial-subflow segments in between, on uneven
    times that start far from zero."""
    cli1, srv1 = (idsn(KEY_B_CLI) + 1) % 2**64, (idsn(KEY_B_SRV) + 1) % 2**64
    data = segment(*S1, *C1, tcp.ACK | tcp.PSH, 5001, 1001,
                   [wm.Dss(cli1, True, srv1, True, 1, 5)], b"hello")
    ack = segment(*C1, *S1, tcp.ACK, 1001, 5006, [wm.Dss(srv1 + 5, True)])
    more = segment(*S1, *C1, tcp.ACK | tcp.PSH, 5006, 1001,
                   [wm.Dss(cli1, True, srv1 + 5, True, 6, 3)], b"bye")
    hs = connection_b_handshake()
    return [(hs[0][0], hs[0][1], 1000.0), (hs[1][0], hs[1][1], 1000.0125),
            (hs[2][0], hs[2][1], 1000.0126),
            ("out", captured.MPJ_SYN, 1000.5),      # sf2
            ("in", data, 1000.5031),                # sf1
            ("in", captured.MPJ_SYNACK, 1000.5102),  # sf2
            ("out", ack, 1000.5103),                # sf1
            ("out", captured.MPJ_ACK, 1000.5104),   # sf2
            ("in", more, 1001.25)]                  # sf1


LABELS = ["sf1", "sf1", "sf1", "sf2", "sf1", "sf2", "sf1", "sf2", "sf1"]


def test_interleaved_subflows_share_the_connections_clock_as_the_client() -> None:
    pkts = interleaved()
    text, tracer = run(pkts)
    lines, headers = ladder(text)
    # one line per packet, numbered as the packets came, each naming its subflow
    assert [ln.frame for ln in lines] == list(range(1, len(pkts) + 1))
    assert tracer.frames == len(pkts)
    assert [ln.label for ln in lines] == LABELS
    assert [ln.direction for ln in lines] == [d for d, _, _ in pkts]
    # one clock: seconds since the MP_CAPABLE SYN, on the join's lines too
    assert [ln.time for ln in lines] == [f"{now - 1000.0:.6f}" for _, _, now in pkts]
    times = [float(ln.time) for ln in lines]
    assert times == sorted(times)
    assert headers["sf1"] == Header("10.0.1.254:51333", "10.0.1.1:7101",
                                    "MP_CAPABLE, address ids us 0, peer 0", 1, index=1)
    sf2 = headers["sf2"]
    assert (sf2.ours, sf2.peer, sf2.t0_frame) == ("10.0.2.254:42293", "10.0.2.1:7101", 1)
    token = crypto.key_token(KEY_B_SRV)
    assert sf2.kind == (f"MP_JOIN of sf1's connection (token {token:08x}),"
                        " address ids us 1, peer ?")
    # the responder's id arrives in the SYN/ACK (frame 6): said there, once
    said = [s for s in text.splitlines() if "address ids us 1, peer 5" in s]
    assert said == [INDENT + "sf2: address ids us 1, peer 5"]
    assert "sf2: address ids" in at(text, 6)
    # the derived values are unchanged, each under its own packet
    assert "join token 19f8bad9 == token of the peer's key" in at(text, 4)
    assert "first mapping from peer: DSN" in at(text, 5) and "verified" in at(text, 5)
    assert "join thmac" in at(text, 6) and at(text, 6).endswith("verified")
    assert "join HMAC" in at(text, 8) and at(text, 8).endswith("verified")
    assert "MISMATCH" not in text


def test_interleaved_subflows_share_the_connections_clock_as_the_server() -> None:
    """The MP_CAPABLE SYN came in: the clock starts at it, whichever side sent it."""
    pkts = [(flip(d), p, now) for d, p, now in interleaved()]
    text, _ = run(pkts)
    lines, headers = ladder(text)
    assert [ln.frame for ln in lines] == list(range(1, len(pkts) + 1))
    assert [ln.label for ln in lines] == LABELS
    assert [ln.time for ln in lines] == [f"{now - 1000.0:.6f}" for _, _, now in pkts]
    assert headers["sf1"].ours == "10.0.1.1:7101" and headers["sf1"].t0_frame == 1
    assert headers["sf2"].ours == "10.0.2.1:7101" and headers["sf2"].peer == "10.0.2.254:42293"
    assert headers["sf2"].kind.endswith("address ids us ?, peer 1")
    assert INDENT + "sf2: address ids us 5, peer 1" in text.splitlines()
    assert "join token 19f8bad9 == token of our key" in text and "MISMATCH" not in text


def test_frame_numbers_count_every_packet_shown_or_not() -> None:
    """Hidden segments, non-TCP packets and undecodable ones are frames too."""
    pkts = [("out", golden.TCP_SYN, 5.0), ("out", golden.ICMP_ECHO_REQUEST, 5.1),
            ("in", golden.TCP_SYNACK, 5.2), ("in", golden.TCP_SYNACK[:30], 5.3),
            ("out", golden.TCP_ACK, 5.4), ("out", golden.TCP_DATA, 5.5),
            ("out", golden.TCP_FIN, 5.6)]
    text, tracer = run(pkts, show_data=0)
    lines, headers = ladder(text)
    assert [(ln.frame, ln.time) for ln in lines] == \
        [(1, "0.000000"), (3, "0.200000"), (7, "0.600000")]
    assert "  #4 [in] malformed packet" in text
    assert tracer.frames == 7
    assert headers["sf1"].kind == "TCP" and headers["sf1"].t0_frame == 1


def test_a_plain_tcp_connection_has_its_own_clock() -> None:
    """After an MPTCP connection, a TCP connection counts from its own first packet."""
    pkts = [(d, p, 10.0 + i) for i, (d, p) in enumerate(MPTCP_HANDSHAKE)]
    pkts += [("out", golden.TCP_SYN, 20.0), ("in", golden.TCP_SYNACK, 20.5)]
    text, _ = run(pkts)
    lines, headers = ladder(text)
    assert headers["sf2"].kind == "TCP" and headers["sf2"].t0_frame == 6
    assert [(ln.frame, ln.label, ln.time) for ln in lines][-2:] == \
        [(6, "sf2", "0.000000"), (7, "sf2", "0.500000")]
    assert lines[4].time == "4.000000"  # the MPTCP connection's, from its SYN


def test_a_new_connection_on_a_used_4_tuple_is_a_new_subflow() -> None:
    """A retransmitted SYN stays on its subflow and clock; a SYN with another ISN on
    the same 4-tuple starts a new one."""
    c, s = ("10.0.1.2", 40000), ("10.0.1.1", 5000)
    pkts = [("out", segment(*c, *s, tcp.SYN, 1000, 0, []), 1.0),
            ("out", segment(*c, *s, tcp.SYN, 1000, 0, []), 2.0),
            ("in", segment(*s, *c, tcp.RST | tcp.ACK, 0, 1001, []), 2.01),
            ("out", segment(*c, *s, tcp.SYN, 9000, 0, []), 3.0)]
    text, _ = run(pkts)
    lines, headers = ladder(text)
    assert [(ln.label, ln.time) for ln in lines] == \
        [("sf1", "0.000000"), ("sf1", "1.000000"), ("sf1", "1.010000"), ("sf2", "0.000000")]
    assert headers["sf2"].t0_frame == 4 and headers["sf2"].ours == "10.0.1.2:40000"


def test_joins_to_a_connection_only_the_stack_knows_share_one_clock() -> None:
    """The tracer missed the MP_CAPABLE handshake; the stack's token table names the
    connection: its joins count from the first of them traced."""
    token = crypto.key_token(KEY_B_SRV)
    _t, srv_idsn = crypto.key_token_idsn(KEY_B_SRV, 1)
    cli_token, cli_idsn = crypto.key_token_idsn(KEY_B_CLI, 1)
    msk = SimpleNamespace(version=1, local_key=KEY_B_SRV, local_token=token,
                          local_idsn=srv_idsn, remote_key=KEY_B_CLI, remote_token=cli_token,
                          remote_idsn=cli_idsn, fallback=False, fallback_reason=None)
    fake = SimpleNamespace(conns={}, tokens={token: SimpleNamespace(msk=msk)})
    us = ("10.0.2.1", 7101)
    pkts = [("in", segment("10.0.2.254", 42293, *us, tcp.SYN, 1, 0,
                           [wm.MpJoinSyn(False, 1, token, 7)]), 50.0),
            ("in", segment("10.0.3.254", 42294, *us, tcp.SYN, 2, 0,
                           [wm.MpJoinSyn(False, 2, token, 8)]), 50.25)]
    text, _ = run(pkts, stack=fake)
    lines, headers = ladder(text)
    assert [(ln.label, ln.time) for ln in lines] == [("sf1", "0.000000"), ("sf2", "0.250000")]
    for h in headers.values():
        assert h.t0_frame == 1
        assert h.kind.startswith("MP_JOIN of a connection whose handshake is not in this trace")
    assert len([s for s in text.splitlines() if "== token of our key" in s
                and s.endswith("verified")]) == 2


def test_a_join_to_an_unknown_token_keeps_its_own_clock() -> None:
    text, _ = run([("out", golden.TCP_SYN, 1.0), ("in", captured.MPJ_SYN, 3.0)])
    lines, headers = ladder(text)
    assert headers["sf2"].kind == ("MP_JOIN (token 19f8bad9: no connection in this trace),"
                                   " address ids us ?, peer 1")
    assert headers["sf2"].t0_frame == 2 and lines[1].time == "0.000000"


# --- end to end: two simulated stacks, the pcap written from the same tap -----------------
def sim_two_subflows() -> list[tuple[str, LadderTracer, list[tuple[float, bytes]]]]:
    """The client (10.0.1.2, joining from 10.0.2.2) and the server, each with a tap
    that writes the pcap and then calls the tracer, as tools/cli.py does. Every segment
    is shown. Returns (ladder, tracer, pcap records) for each side."""
    a, b, net = multipath_pair(7)
    sides = []
    for stk in (a, b):
        out, buf = io.StringIO(), io.BytesIO()
        tracer = LadderTracer(out, show_data=10**9, stack=stk)
        writer = pcap.PcapWriter(buf)

        def tap(direction: str, packet: bytes, now: float,
                w: pcap.PcapWriter = writer, t: LadderTracer = tracer) -> None:
            w.write(now, packet)
            t(direction, packet, now)
        stk.tap = tap
        sides.append((out, tracer, buf))
    data = random.Random(5).randbytes(60_000)
    sa, sb = bulk(a, b, net, data, data[::-1], join_from=[(ip("10.0.2.2"), False)])
    assert sb.got == data and sa.got == data[::-1]
    assert len(sa.conn.msk.subflows) == 2  # type: ignore[union-attr]
    result = []
    for out, tracer, buf in sides:
        tracer.flush()
        result.append((out.getvalue(), tracer, pcap.read(buf.getvalue())))
    return result


def four_tuple(packet: bytes, direction: str) -> tuple[str, str]:
    """(ours, peer) of a packet as `a.b.c.d:port` strings."""
    h, end = ipv4.parse(packet)
    th, _ = tcp.parse(packet[h.header_len:end])
    src = f"{'.'.join(map(str, h.src))}:{th.src_port}"
    dst = f"{'.'.join(map(str, h.dst))}:{th.dst_port}"
    return (src, dst) if direction == "out" else (dst, src)


def test_sim_two_subflows_frames_and_times_match_the_pcap() -> None:
    for text, tracer, records in sim_two_subflows():
        assert "trace error" not in text and "MISMATCH" not in text
        lines, headers = ladder(text)
        assert set(headers) == {"sf1", "sf2"}
        assert headers["sf1"].kind.startswith("MP_CAPABLE, address ids us 0, peer 0")
        assert headers["sf2"].kind.startswith("MP_JOIN of sf1's connection")
        assert headers["sf1"].t0_frame == headers["sf2"].t0_frame == 1
        # every packet is a frame of the pcap and a line of the ladder, in the same order
        assert tracer.frames == len(records)
        assert [ln.frame for ln in lines] == list(range(1, len(records) + 1))
        t0 = records[0][0]  # the MP_CAPABLE SYN, sent or received
        for ln in lines:
            ts, packet = records[ln.frame - 1]
            h = headers[ln.label]
            assert four_tuple(packet, ln.direction) == (h.ours, h.peer), (ln, h)
            assert abs(float(ln.time) - (ts - t0)) < 2e-6, (ln, ts - t0)
        # one clock: monotonic across the subflows, which interleave
        times = [float(ln.time) for ln in lines]
        assert times == sorted(times)
        labels = [ln.label for ln in lines]
        first2 = labels.index("sf2")
        assert "sf1" in labels[first2:] and "sf2" in labels[labels.index("sf1", first2):]
        # the join's handshake keeps its derived values
        for needle in ("join thmac", "join HMAC"):
            (line,) = [s for s in text.splitlines() if needle in s]
            assert line.endswith("verified")
