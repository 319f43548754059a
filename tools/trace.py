"""`--trace`: the TCP/MPTCP handshake (and teardown) as a ladder on stderr.

A `Stack.tap`: called for every packet as `tracer(direction, packet, now)` with the
`now` the stack was given for it, so the ladder's times are the stack's clock, the one
the pcap records are stamped from; the tracer reads no clock of its own. It decodes
each IP/TCP packet on its own, so it shows what is on the wire, not what the engine
believes.

Each packet's line starts with its frame number `#N`: the tracer counts every packet it
is called with (in and out, shown or not, TCP or not) from 1, so N is the packet's
frame number in the `--pcap` file written from the same tap. Then the time, in seconds
since the connection's first packet: one clock per connection, so the MP_JOIN subflows
of an MPTCP connection (linked to it by the token their SYN names) count from its
MP_CAPABLE SYN, whichever side sent it; a plain TCP connection counts from its own
first packet. Then the subflow's label (`sf1`, `sf2`, ..., one per 4-tuple and
connection, numbered in the order the trace meets them), defined once by a header line
before its first packet, for instance (one line)

  sf2: 10.0.2.2:47496 > 10.0.1.1:5000 (us > peer), MP_JOIN of sf1's connection
       (token 5fb61e84), address ids us 1, peer ?; t=0 at #1

with the 4-tuple as the stack's diagnosis (stack/diag.py) writes it, ours first. An
address id the handshake has not shown yet is `?`; the segment that shows it gets a
line with both.

SYN, FIN and RST segments are always shown, plus the first few segments each way once
established; the rest is counted and summarised (under the subflow's label) when the
subflow ends. Sequence numbers are shown relative to each side's ISN (as Wireshark
does) after the SYN, which shows the absolute ISN.

MPTCP options are decoded in the ladder line (`stack.wire.mptcp.describe`). Under
the line, indented, come the values derived from what is on the wire, each computed
here and, where there is something to hold it against, marked `verified` or
`MISMATCH`: a key's token and IDSN (SHA-256 for v1, SHA-1 for v0), the keys echoed in
the third ACK, the first DSN each way (= IDSN + 1), DSS checksums, data ACKs and
DATA_FIN relative to the IDSN, MP_JOIN and ADD_ADDR HMACs, the MP_FASTCLOSE key, and
fallback. Segments carrying MP_CAPABLE, MP_JOIN, ADD_ADDR, REMOVE_ADDR, MP_PRIO,
MP_FAIL, MP_FASTCLOSE, MP_TCPRST, a DATA_FIN or the first mapping of a direction are
always shown. With `stack` set (the host `Stack` whose tap this is) the keys, tokens
and IDSNs on the wire are also compared with the stack's own connection state (`msk`).

"Us" is the traced stack, "peer" the other end; "out"/"in" are the tap's directions.
A tap sees an incoming packet before the stack processes it, so a comparison with the
state that packet creates (the peer's key) is printed at the next tap call (or
`flush()`). The tracer never raises: anything it cannot decode becomes one line.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from stack.addr import ntoa
from stack.mptcp import crypto
from stack.wire import MalformedPacket, ipv4, ipv6, tcp
from stack.wire.mptcp import (
    MPC_FLAG_A,
    MPTCP_DSS_DATA_FIN,
    MPTCP_DSS_HAS_MAP,
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MptcpOption,
    MptcpSubtype,
    describe,
    parse_body,
)
from stack.wire.tcp import ACK, FIN, OPT_MPTCP, RST, SYN

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from stack.host import Stack
    from stack.mptcp.connection import MptcpConnection

SHOW_DATA = 3  # data/ACK segments shown each way after the handshake
SPREAD_MAX = 16  # mappings gathered at once per subflow and direction (a lost segment
                 # leaves one incomplete: the oldest goes)
WIDTH = 34
FRAME_W, LABEL_W = 7, 4  # "#N" and "sfN" columns
INDENT = " " * (2 + FRAME_W + 1 + 9 + 2 + LABEL_W + 1 + 3)  # derived-value lines, under the arrow
VERIFIED, MISMATCH = "verified", "MISMATCH"

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
# Segments with these suboptions are always shown (MP_CAPABLE: the handshake).
_ALWAYS_SHOWN = frozenset(int(s) for s in (
    MptcpSubtype.MP_CAPABLE, MptcpSubtype.MP_JOIN, MptcpSubtype.ADD_ADDR,
    MptcpSubtype.REMOVE_ADDR, MptcpSubtype.MP_PRIO, MptcpSubtype.MP_FAIL,
    MptcpSubtype.MP_FASTCLOSE, MptcpSubtype.MP_TCPRST))
_DSS = int(MptcpSubtype.DSS)
_HASH = {0: "SHA-1", 1: "SHA-256"}
# `describe` shows a key's token and IDSN in brackets; the derived lines show them here.
_KEY_NOTE = re.compile(r" \(token [0-9a-f]{8}, idsn 0x[0-9a-f]{16}\)")


def _mark(ok: bool, detail: str = "") -> str:
    return VERIFIED if ok else MISMATCH + (f" ({detail})" if detail else "")


def _who(direction: str) -> str:
    return "us" if direction == "out" else "peer"


def _whose(direction: str) -> str:
    return "our" if direction == "out" else "the peer's"


def _other(direction: str) -> str:
    return "in" if direction == "out" else "out"


def _mptcp_text(m: MptcpOption) -> str:
    s = describe(m)
    return _KEY_NOTE.sub("", s) if type(m) is MpCapable else s


def _decode_mptcp(o: tcp.UnknownOption, syn: bool | None, ack: bool,
                  has_data: bool | None) -> tuple[MptcpOption | None, str]:
    """(the option if Linux would accept it on this segment, its text)."""
    try:
        m = parse_body(o.data, syn, ack, has_data)
        return m, _mptcp_text(m)
    except MalformedPacket as e:
        err = e
    try:
        loose = parse_body(o.data)  # a valid layout, but not on this segment
    except MalformedPacket:
        return None, f"MPTCP malformed ({err}) {bytes(o.data).hex()}"
    return None, f"{_mptcp_text(loose)} (ignored by Linux here: {err})"


def describe_options(opts: list[tcp.TcpOption], mptcp: Iterator[str] | None = None) -> str:
    """The options as one string. MPTCP options are decoded; `mptcp` gives their texts
    in order when the caller has decoded them already (with the segment's context)."""
    parts = []
    for o in opts:
        if isinstance(o, tcp.Mss):
            parts.append(f"mss {o.value}")
        elif isinstance(o, tcp.WindowScale):
            parts.append(f"wscale {o.shift}")
        elif isinstance(o, tcp.SackPermitted):
            parts.append("sackOK")
        elif isinstance(o, tcp.Timestamps):
            parts.append(f"TS val {o.tsval} ecr {o.tsecr}")
        elif isinstance(o, tcp.Sack):
            parts.append("sack " + " ".join(f"{left}:{right}" for left, right in o.blocks))
        elif isinstance(o, tcp.Nop):
            parts.append("nop")
        elif isinstance(o, tcp.Eol):
            parts.append("eol")
        elif isinstance(o, tcp.UnknownOption):
            if o.kind == OPT_MPTCP:
                text = next(mptcp, None) if mptcp is not None else None
                parts.append(text if text is not None else _decode_mptcp(o, None, False, None)[1])
            else:
                parts.append(f"opt-{o.kind} len {len(o.data) + 2}")
    return ", ".join(parts)


@dataclass(eq=False)
class _MpConn:
    """One MPTCP connection as the wire shows it, shared by its subflows. Dicts are
    keyed by direction of the sender: "out" = us, "in" = the peer."""

    version: int
    t0: float = 0.0  # the clock: `now` of the connection's first packet (its MP_CAPABLE SYN)
    t0_frame: int = 0  # and that packet's frame number
    origin: str = ""  # label of the subflow that carried the MP_CAPABLE handshake
    key: dict[str, int] = field(default_factory=dict)
    token: dict[str, int] = field(default_factory=dict)
    idsn: dict[str, int] = field(default_factory=dict)
    csum: bool = False  # the A flag seen on either side: DSS checksums in use
    fallback: bool = False
    first_map: set[str] = field(default_factory=set)  # directions whose first mapping was seen
    last_dsn: dict[str, int] = field(default_factory=dict)  # for widening 32-bit DSNs
    checked: set[str] = field(default_factory=set)  # stack comparisons already printed
    msk: MptcpConnection | None = None


@dataclass(eq=False)
class _Flow:
    ours: tuple[str, int]
    peer: tuple[str, int]
    t0: float  # the connection's clock (an MPTCP join: its connection's)
    label: str = ""  # "sf1", ... in the header line and on every line
    t0_frame: int = 0  # frame number of the packet at t0
    bkey: tuple[bytes, int, bytes, int] = (b"", 0, b"", 0)  # the stack's Connection key
    isn: dict[str, int] = field(default_factory=dict)  # "in"/"out" -> ISN of that sender
    shown: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    hidden: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    bytes: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    ended: bool = False
    # MPTCP
    mp: _MpConn | None = None
    client: str | None = None  # direction of the SYN
    syn_mpc: bool = False  # the SYN carried MP_CAPABLE
    synack_mpc: bool = False  # the SYN/ACK did
    third_ack: bool = False  # the client's first established-state segment was seen
    is_join: bool = False
    join: dict[str, int] = field(default_factory=dict)  # token, nonce_a, nonce_b
    want_fallback_reason: bool = False
    ids: dict[str, int] = field(default_factory=dict)  # "out"/"in" -> MPTCP address id
    ids_told: bool = False  # both ids shown (in the header, or under the segment)
    # DSS checksums of mappings spread over several segments: their payload gathered
    # per direction until whole, then checked
    spread: dict[str, dict[tuple[int, int, int], _Spread]] = field(
        default_factory=lambda: {"in": {}, "out": {}})


@dataclass(eq=False)
class _Spread:
    """A mapping's payload, gathered from the segments that carry it."""
    dsn: int
    ssn: int
    data_len: int
    checksum: int
    buf: bytearray
    have: bytearray  # 1 per byte already seen
    missing: int
    segments: int = 0

    def add(self, rel: int, payload: memoryview) -> bool:
        """The payload of a segment starting at relative sequence `rel`; True once the
        mapping is whole."""
        a = max(rel, self.ssn) - self.ssn
        b = min(rel + len(payload), self.ssn + len(self.buf)) - self.ssn
        if a < b:
            self.segments += 1
            self.missing -= self.have[a:b].count(0)
            self.buf[a:b] = payload[a + self.ssn - rel:b + self.ssn - rel]
            self.have[a:b] = b"\x01" * (b - a)
        return self.missing == 0


class LadderTracer:
    """The `--trace` ladder: `tracer(direction, packet, now)` for every IPv4 packet a
    `Stack.tap` sees, `now` being the stack's time for it. Set `stack` (the traced host
    `Stack`) to compare the wire with the stack's own state."""

    def __init__(self, out: TextIO | None = None, show_data: int = SHOW_DATA,
                 stack: Stack | None = None,
                 on_derived: Callable[[int, str, tuple[bytes, int, bytes, int], str], None]
                 | None = None) -> None:
        self.out = out or sys.stderr
        self.show_data = show_data
        self.stack = stack
        # called with (frame, direction, subflow key, line) for every derived value,
        # the packets the ladder only counts included (the offline diagnosis reads them)
        self.on_derived = on_derived
        self.flows: dict[tuple[str, int, str, int], _Flow] = {}
        self.tokens: dict[int, tuple[_MpConn, str]] = {}  # token -> (connection, whose)
        self._pending: list[_Flow] = []  # stack comparisons waiting for an "in" packet
        self.frames = 0  # packets seen: the frame number (1-based) of the last, as in --pcap
        self.subflows = 0  # labels handed out

    def __call__(self, direction: str, packet: bytes, now: float,
                 frame: int | None = None) -> None:
        """`frame`: the packet's frame number when the caller knows it (a capture file
        read back, filtered to one connection); else the count of packets so far."""
        self.frames = self.frames + 1 if frame is None else frame
        try:
            if self._pending:
                self.flush()
            self._trace(direction, packet, now)
        except Exception as e:  # a tracer must never take the stack down
            self.out.write(f"  #{self.frames} [{direction}] trace error:"
                           f" {type(e).__name__}: {e}\n")

    def flush(self) -> None:
        """Print the stack comparisons waiting for the stack to process an incoming
        packet (done at the next tap call anyway)."""
        pending, self._pending = self._pending, []
        for flow in pending:
            self._write(self._stack_lines(flow))

    def _write(self, lines: list[str]) -> None:
        for s in lines:
            self.out.write(f"{INDENT}{s}\n")

    def _trace(self, direction: str, packet: bytes, now: float) -> None:
        try:
            if packet and packet[0] >> 4 == 6:
                ip6, end = ipv6.parse(packet)
                if ip6.proto != ipv6.NH_TCP or ip6.is_fragment:
                    return
                saddr, daddr, hlen = ip6.src, ip6.dst, ip6.header_len
            else:
                iph, end = ipv4.parse(packet, verify_checksum=False)
                if iph.proto != ipv4.PROTO_TCP or iph.is_fragment:
                    return
                saddr, daddr, hlen = iph.src, iph.dst, iph.header_len
            seg = memoryview(packet)[hlen:end]
            hdr, doff = tcp.parse(seg)
        except MalformedPacket as e:
            self.out.write(f"  #{self.frames} [{direction}] malformed packet: {e}\n")
            return
        src, dst = ntoa(saddr), ntoa(daddr)
        if direction == "out":
            key = (src, hdr.src_port, dst, hdr.dst_port)
            bkey = (bytes(saddr), hdr.src_port, bytes(daddr), hdr.dst_port)
        else:
            key = (dst, hdr.dst_port, src, hdr.src_port)
            bkey = (bytes(daddr), hdr.dst_port, bytes(saddr), hdr.src_port)
        mopts = [o for o in hdr.options if type(o) is tcp.UnknownOption and o.kind == OPT_MPTCP]
        flow = self.flows.get(key)
        if flow is None or (hdr.flags & (SYN | ACK) == SYN
                            and flow.isn.get(direction, hdr.seq) != hdr.seq):
            # a new 4-tuple, or a new connection on it (a SYN with another ISN)
            flow = self.flows[key] = self._new_flow(key, bkey, direction, hdr, mopts, now)
        plen = len(seg) - doff
        flow.bytes[direction] += plen
        control = hdr.flags & (SYN | FIN | RST)
        if hdr.flags & SYN:
            flow.isn[direction] = hdr.seq
        notable = bool(mopts) and self._notable(flow, direction, mopts)
        shown = True
        if not control and not notable:
            if flow.shown[direction] >= self.show_data:
                flow.hidden[direction] += 1
                shown = False
                if self.on_derived is None:
                    return
            else:
                flow.shown[direction] += 1
        decoded: list[tuple[MptcpOption | None, str]] = []
        if mopts:
            syn, ack = bool(hdr.flags & SYN), bool(hdr.flags & ACK)
            decoded = [_decode_mptcp(o, syn, ack, plen > 0) for o in mopts]
        if shown:
            self._line(flow, direction, hdr, plen, now, iter([t for _, t in decoded]))
        if mopts or flow.mp is not None:
            try:
                lines = self._derive(flow, direction, hdr, seg[doff:],
                                     [m for m, _ in decoded if m is not None])
            except Exception as e:  # one line, never a crash
                lines = [f"could not derive MPTCP values: {type(e).__name__}: {e}"]
            if self.on_derived is not None:
                for line in lines:
                    self.on_derived(self.frames, direction, flow.bkey, line)
            if not shown and any(MISMATCH in x for x in lines):  # never hide a mismatch
                flow.hidden[direction] -= 1
                shown = True
                self._line(flow, direction, hdr, plen, now, iter([t for _, t in decoded]))
            if shown:
                self._write(lines)
        if hdr.flags & RST or (hdr.flags & FIN and direction == "in" and not flow.ended):
            if hdr.flags & RST:
                flow.ended = True
            self._summary(flow)

    def _new_flow(self, key: tuple[str, int, str, int], bkey: tuple[bytes, int, bytes, int],
                  direction: str, hdr: tcp.TcpHeader, mopts: list[tcp.UnknownOption],
                  now: float) -> _Flow:
        """A subflow's first packet: its label, its clock (an MP_JOIN SYN's: that of the
        connection its token names) and the header line that defines the label."""
        self.subflows += 1
        flow = _Flow(key[:2], key[2:], now, bkey=bkey, label=f"sf{self.subflows}",
                     t0_frame=self.frames)
        kind = "TCP" if hdr.flags & SYN else "handshake not traced"
        if hdr.flags & SYN:
            for o in mopts:
                try:
                    m = parse_body(o.data)
                except MalformedPacket:
                    continue
                if type(m) is MpCapable:
                    kind = "MP_CAPABLE"
                    flow.ids = {"out": 0, "in": 0}  # the initial subflow's (RFC 8684 3.4.1)
                elif type(m) is MpJoinSyn:
                    flow.ids = {direction: m.addr_id}
                    hit = self._join_target(m.token, direction, flow)
                    if hit is None:
                        kind = f"MP_JOIN (token {m.token:08x}: no connection in this trace)"
                    else:
                        mp = hit[0]
                        flow.t0, flow.t0_frame = mp.t0, mp.t0_frame
                        owner = (f"{mp.origin}'s connection" if mp.origin else
                                 "a connection whose handshake is not in this trace")
                        kind = f"MP_JOIN of {owner} (token {m.token:08x})"
                elif type(m) is MpJoinSynAck:
                    kind = "MP_JOIN (its SYN not in this trace)"
                    flow.ids = {direction: m.addr_id}
        if flow.ids:
            kind += f", address ids us {self._id(flow, 'out')}, peer {self._id(flow, 'in')}"
            flow.ids_told = len(flow.ids) == 2
        self.out.write(f"\n  {flow.label}: {_hp(key[0], key[1])} > {_hp(key[2], key[3])} "
                       f"(us > peer), {kind}; t=0 at #{flow.t0_frame}\n")
        return flow

    @staticmethod
    def _id(flow: _Flow, d: str) -> str:
        return str(flow.ids[d]) if d in flow.ids else "?"

    def _new_mp(self, flow: _Flow, version: int) -> _MpConn:
        """A connection first seen on `flow`: its clock is the flow's."""
        return _MpConn(version, t0=flow.t0, t0_frame=flow.t0_frame, origin=flow.label)

    def _notable(self, flow: _Flow, direction: str, mopts: list[tcp.UnknownOption]) -> bool:
        """Whether a segment's MPTCP options make it worth a line even past SHOW_DATA:
        handshake and control suboptions, DATA_FIN, the first mapping of a direction."""
        for o in mopts:
            d = o.data
            if not d:
                return True  # malformed: show it
            sub = d[0] >> 4
            if sub in _ALWAYS_SHOWN:
                return True
            if sub == _DSS and len(d) > 1:
                if d[1] & MPTCP_DSS_DATA_FIN:
                    return True
                if d[1] & MPTCP_DSS_HAS_MAP and (flow.mp is None
                                                 or direction not in flow.mp.first_map):
                    return True
        return False

    def _line(self, flow: _Flow, direction: str, hdr: tcp.TcpHeader, plen: int, now: float,
              mptcp: Iterator[str] | None = None) -> None:
        other = "in" if direction == "out" else "out"
        name = {SYN: "SYN", SYN | ACK: "SYN/ACK", RST: "RST", RST | ACK: "RST/ACK"}.get(
            hdr.flags & (SYN | ACK | RST))
        if name is None:
            name = ("FIN" if hdr.flags & FIN else "") + ("/ACK" if hdr.flags & FIN else "ACK")
            name = name.lstrip("/")
            if plen:
                name = f"DATA({plen})" + ("+FIN" if hdr.flags & FIN else "")
        seq = hdr.seq if hdr.flags & SYN or direction not in flow.isn else \
            (hdr.seq - flow.isn[direction]) & 0xFFFFFFFF
        fields = [f"seq={seq}"]
        if hdr.flags & ACK:
            ack = hdr.ack if other not in flow.isn else (hdr.ack - flow.isn[other]) & 0xFFFFFFFF
            fields.append(f"ack={ack}")
        fields.append(f"win={hdr.window}")
        opts = describe_options(hdr.options, mptcp)
        if opts:
            fields.append(f"[{opts}]")
        label = f" {name} "
        if direction == "out":
            arrow = "--" + label + "-" * max(1, WIDTH - len(label) - 3) + ">"
        else:
            arrow = "<" + "-" * max(1, WIDTH - len(label) - 3) + label + "--"
        frame = f"#{self.frames}"
        self.out.write(f"  {frame:<{FRAME_W}} {now - flow.t0:9.6f}  {flow.label:<{LABEL_W}} us"
                       f" {arrow} peer   {' '.join(fields)}\n")

    def _summary(self, flow: _Flow) -> None:
        h = flow.hidden
        if h["in"] or h["out"]:
            self.out.write(f"  {'':<{FRAME_W}} {'':9}  {flow.label:<{LABEL_W}} ..."
                           f" {h['out']} more segments out, {h['in']} in "
                           f"({flow.bytes['out']} bytes sent, {flow.bytes['in']} received)\n")
            h["in"] = h["out"] = 0

    # ---- MPTCP: values derived from the wire -------------------------------------------
    def _derive(self, flow: _Flow, d: str, hdr: tcp.TcpHeader, payload: memoryview,
                opts: list[MptcpOption]) -> list[str]:
        lines: list[str] = []
        other = _other(d)
        syn, ack = bool(hdr.flags & SYN), bool(hdr.flags & ACK)
        mpc: MpCapable | None = None
        for m in opts:
            if type(m) is MpCapable:
                mpc = m
        has_join = any(type(m) in (MpJoinSyn, MpJoinSynAck, MpJoinAck) for m in opts)
        mp = flow.mp
        if syn and not ack:
            flow.client = d
            flow.syn_mpc = mpc is not None
            if mpc is not None:
                if mp is None or mp.key or mp.fallback:
                    # a new connection on this 4-tuple
                    mp = flow.mp = self._new_mp(flow, mpc.version)
                mp.version = mpc.version
                mp.csum = bool(mpc.flags & MPC_FLAG_A)
                if mpc.sender_key is not None:  # v0: the SYN carries the client's key
                    lines += self._key(mp, d, mpc.sender_key, mpc.version)
        elif syn:
            flow.synack_mpc = mpc is not None
            if mpc is not None:
                if mp is None:
                    mp = flow.mp = self._new_mp(flow, mpc.version)
                elif flow.syn_mpc and mpc.version != mp.version:
                    lines.append(f"MP_CAPABLE v{mpc.version} answers a v{mp.version} SYN")
                mp.version = mpc.version
                mp.csum = mp.csum or bool(mpc.flags & MPC_FLAG_A)
                if mpc.sender_key is not None:
                    lines += self._key(mp, d, mpc.sender_key, mpc.version)
            elif mp is not None and flow.syn_mpc and not has_join and not hdr.flags & RST:
                mp.fallback = True
                flow.want_fallback_reason = True
                lines.append("MPTCP fallback: the SYN/ACK carried no MP_CAPABLE -> plain TCP")
        elif not hdr.flags & RST:
            if mpc is not None:
                if mp is None:
                    mp = flow.mp = self._new_mp(flow, mpc.version)
                lines += self._mpc_established(flow, mp, d, mpc, payload, hdr)
            elif (mp is not None and not mp.fallback and d == flow.client and not flow.third_ack
                  and flow.synack_mpc and not flow.is_join):
                mp.fallback = True
                flow.want_fallback_reason = True
                lines.append("MPTCP fallback: the third ACK carried no MP_CAPABLE -> plain TCP")
            if d == flow.client:
                flow.third_ack = True
        if mp is None and any(type(m) is not MpCapable for m in opts):
            # options without a traced handshake (started mid-connection, or a join)
            mp = flow.mp = self._new_mp(flow, 1)
        if mp is None:
            return lines
        for m in opts:
            if isinstance(m, Dss):
                lines += self._dss(flow, mp, d, hdr, payload, m)
            elif isinstance(m, MpJoinSyn):
                lines += self._join_syn(flow, d, m)
                mp = flow.mp or mp
            elif isinstance(m, MpJoinSynAck):
                flow.join["nonce_b"] = m.nonce
                flow.ids[d] = m.addr_id
                lines += self._ids_line(flow)
                lines += self._join_hmac(flow, mp, d, m.thmac, None)
            elif isinstance(m, MpJoinAck):
                lines += self._join_hmac(flow, mp, d, None, m.hmac)
            elif isinstance(m, AddAddr):
                lines += self._add_addr(mp, d, m)
            elif isinstance(m, MpFastclose):
                if other in mp.key:
                    lines.append(f"MP_FASTCLOSE key 0x{m.receiver_key:016x} =="
                                 f" {_whose(other)} key: {_mark(m.receiver_key == mp.key[other])}")
            elif isinstance(m, MpFail):
                lines.append(f"MP_FAIL at DSN {self._rel(mp, other, m.dsn, True)}")
        if payload and (flow.spread["in"] or flow.spread["out"]) and d in flow.isn:
            lines += self._gather(flow, d, (hdr.seq - flow.isn[d]) & M32, payload)
        if self.stack is not None:
            lines += self._stack_lines(flow)
            if d == "in":  # the stack has not processed it yet: look again afterwards
                self._pending.append(flow)
        return lines

    def _key(self, mp: _MpConn, d: str, key: int, version: int) -> list[str]:
        mp.key[d] = key
        if version not in _HASH:
            return [f"{_whose(d)} key 0x{key:016x}: version {version}, token and IDSN unknown"]
        token, idsn = crypto.key_token_idsn(key, version)
        mp.token[d], mp.idsn[d] = token, idsn
        self.tokens[token] = (mp, d)
        return [(f"{_whose(d)} key 0x{key:016x} -> token {token:08x}, IDSN 0x{idsn:016x}"
                f" ({_HASH[version]})")]

    def _mpc_established(self, flow: _Flow, mp: _MpConn, d: str, mpc: MpCapable,
                         payload: memoryview, hdr: tcp.TcpHeader) -> list[str]:
        """MP_CAPABLE after the SYNs: the third ACK (both keys) or the first data
        (both keys + the data-level length of the implicit first mapping)."""
        lines: list[str] = []
        other = _other(d)
        mp.csum = mp.csum or bool(mpc.flags & MPC_FLAG_A)
        if mpc.sender_key is not None:
            if d not in mp.key:
                lines += self._key(mp, d, mpc.sender_key, mpc.version)
            else:
                where = "its SYN" if mp.version == 0 else "its earlier MP_CAPABLE"
                lines.append(f"sender key 0x{mpc.sender_key:016x} == {_whose(d)} key in {where}:"
                             f" {_mark(mpc.sender_key == mp.key[d], f'0x{mp.key[d]:016x}')}")
        if mpc.receiver_key is not None:
            if other in mp.key:
                mark = _mark(mpc.receiver_key == mp.key[other], f"0x{mp.key[other]:016x}")
                lines.append(f"receiver key 0x{mpc.receiver_key:016x} == {_whose(other)} key in"
                             f" the SYN/ACK: {mark}")
            else:
                lines += self._key(mp, other, mpc.receiver_key, mpc.version)
        if mpc.data_len is not None:
            first = d not in mp.first_map
            mp.first_map.add(d)
            if d in mp.idsn:
                dsn = (mp.idsn[d] + 1) & M64
                mp.last_dsn[d] = dsn
                lines.append(f"{'first' if first else 'repeated'} mapping from {_who(d)}"
                             f" (implicit): DSN = IDSN({_who(d)})+1 = 0x{dsn:016x}, ssn 1,"
                             f" data_len {mpc.data_len}")
                lines += self._csum(flow, mp, d, hdr, payload, dsn, 1, mpc.data_len, False,
                                    mpc.checksum)
            else:
                lines.append(f"mapping (implicit): DSN = IDSN({_who(d)})+1 (key unknown), ssn 1,"
                             f" data_len {mpc.data_len}")
        return lines

    def _rel(self, mp: _MpConn, whose: str, value: int, wide: bool) -> str:
        """A data-level sequence number as IDSN+1+N of the side whose data it counts."""
        text = f"0x{value:0{16 if wide else 8}x}"
        if whose not in mp.idsn:
            return text
        base = mp.idsn[whose] + 1
        bits = 64 if wide else 32
        r = (value - base) & ((1 << bits) - 1)
        off = f"-{(1 << bits) - r}" if r >= 1 << (bits - 1) else f"+{r}"
        return f"{text} = IDSN({_who(whose)})+1{off}" + ("" if wide else " (low 32 bits)")

    def _dsn64(self, mp: _MpConn, d: str, raw: int, wide: bool) -> int | None:
        if wide:
            return raw
        ref = mp.last_dsn.get(d)
        if ref is None:
            if d not in mp.idsn:
                return None
            ref = (mp.idsn[d] + 1) & M64
        return (ref + ((raw - ref + (1 << 31)) & M32) - (1 << 31)) & M64

    def _dss(self, flow: _Flow, mp: _MpConn, d: str, hdr: tcp.TcpHeader, payload: memoryview,
             m: Dss) -> list[str]:
        lines: list[str] = []
        other = _other(d)
        if m.data_ack is not None:
            lines.append(f"data_ack {self._rel(mp, other, m.data_ack, m.data_ack64)}")
        if m.dsn is None:
            return lines
        dsn = self._dsn64(mp, d, m.dsn, m.dsn64)
        first = d not in mp.first_map
        mp.first_map.add(d)
        if dsn is not None:
            mp.last_dsn[d] = dsn
        if first and d in mp.idsn:
            exp = (mp.idsn[d] + 1) & M64
            ok = m.dsn == (exp if m.dsn64 else exp & M32)
            wire = f"0x{m.dsn:0{16 if m.dsn64 else 8}x}"
            lines.append(f"first mapping from {_who(d)}: DSN {wire} == IDSN({_who(d)})+1:"
                         f" {_mark(ok, self._rel(mp, d, m.dsn, m.dsn64))}"
                         f" (ssn {m.ssn}, data_len {m.data_len})")
        else:
            lines.append(f"mapping: DSN {self._rel(mp, d, m.dsn, m.dsn64)}, ssn {m.ssn},"
                         f" data_len {m.data_len}")
        if m.data_len == 0:
            lines.append("infinite mapping (data_len 0): the connection falls back to plain TCP")
        if m.data_fin and dsn is not None:
            fin = (dsn + m.data_len - 1) & M64
            lines.append(f"DATA_FIN at DSN {self._rel(mp, d, fin, True)}")
        lines += self._csum(flow, mp, d, hdr, payload, dsn, m.ssn, m.data_len, m.data_fin,
                            m.checksum)
        return lines

    def _csum(self, flow: _Flow, mp: _MpConn, d: str, hdr: tcp.TcpHeader, payload: memoryview,
              dsn: int | None, ssn: int, data_len: int, data_fin: bool,
              csum: int | None) -> list[str]:
        """The DSS checksum (RFC 8684 3.3.1), recomputed when this packet carries the
        whole mapping."""
        if csum is None:
            if mp.csum and data_len:
                return [f"no DSS checksum though checksums are in use: {MISMATCH}"]
            return []
        lines = []
        if not mp.csum and mp.key:
            lines.append(f"a DSS checksum though no MP_CAPABLE asked for them (A flag): {MISMATCH}")
        plen = len(payload)
        rel = (hdr.seq - flow.isn[d]) & M32 if d in flow.isn else None
        starts = ssn == 0 or rel is None or rel == ssn
        if dsn is None:
            return [*lines, f"checksum 0x{csum:04x}: the 64-bit DSN is unknown: not checked"]
        if data_fin and data_len == 1:  # a DATA_FIN alone: no payload of its own
            payload, plen = memoryview(b""), 0
        elif not (starts and (plen == data_len or (data_fin and data_len == plen + 1))):
            if rel is None or ssn == 0:
                return [*lines, (f"checksum 0x{csum:04x} covers {data_len} bytes over"
                                 " several segments: not checked (no SYN seen)")]
            spread = flow.spread[d]
            k = (dsn, ssn, data_len)
            if k not in spread:
                if len(spread) >= SPREAD_MAX:
                    del spread[next(iter(spread))]
                need = data_len - (1 if data_fin else 0)
                spread[k] = _Spread(dsn, ssn, data_len, csum, bytearray(need),
                                    bytearray(need), need)
                lines.append(f"checksum 0x{csum:04x} covers {data_len} bytes over several"
                             " segments: checked once they are all seen")
            return lines
        calc = crypto.dss_checksum(dsn, ssn, data_len, payload)
        ok = crypto.dss_checksum_ok(dsn, ssn, data_len, payload, csum)
        lines.append(f"DSS checksum 0x{csum:04x} over DSN 0x{dsn:016x}, ssn {ssn}, len"
                     f" {data_len}, {plen} bytes: {_mark(ok, f'computed 0x{calc:04x}')}")
        return lines

    @staticmethod
    def _gather(flow: _Flow, d: str, rel: int, payload: memoryview) -> list[str]:
        """A segment's payload into the mappings it belongs to; the checksum of each
        mapping it completes."""
        lines = []
        spread = flow.spread[d]
        for k, m in list(spread.items()):
            if m.add(rel, payload):
                del spread[k]
                ok = crypto.dss_checksum_ok(m.dsn, m.ssn, m.data_len, m.buf, m.checksum)
                calc = crypto.dss_checksum(m.dsn, m.ssn, m.data_len, m.buf)
                lines.append(f"DSS checksum 0x{m.checksum:04x} over DSN 0x{m.dsn:016x}, ssn"
                             f" {m.ssn}, len {m.data_len}, {len(m.buf)} bytes from"
                             f" {m.segments} segments:"
                             f" {_mark(ok, f'computed 0x{calc:04x}')}")
        return lines

    def _ids_line(self, flow: _Flow) -> list[str]:
        """Both address ids once the handshake has shown the one the header lacked."""
        if flow.ids_told or len(flow.ids) < 2:
            return []
        flow.ids_told = True
        return [f"{flow.label}: address ids us {flow.ids['out']}, peer {flow.ids['in']}"]

    def _join_target(self, token: int, d: str, flow: _Flow) -> tuple[_MpConn, str] | None:
        """The connection (and whose key) an MP_JOIN SYN sent by `d` on `flow` names by
        `token`: one this trace saw, else (for a join to us) the stack's own."""
        hit = self.tokens.get(token)
        if hit is None and self.stack is not None and d == "in":
            owner = self.stack.tokens.get(token)
            msk = owner.msk if owner is not None else None
            if msk is not None:  # ours, though the tracer missed the handshake
                # its clock starts at this join (the first packet of it traced)
                mp = _MpConn(msk.version, t0=flow.t0, t0_frame=flow.t0_frame, msk=msk)
                mp.key["out"], mp.token["out"], mp.idsn["out"] = \
                    msk.local_key, msk.local_token, msk.local_idsn
                self.tokens[msk.local_token] = (mp, "out")  # later joins find it here
                if msk.remote_key is not None and msk.remote_token is not None:
                    mp.key["in"], mp.token["in"], mp.idsn["in"] = \
                        msk.remote_key, msk.remote_token, msk.remote_idsn
                    self.tokens[msk.remote_token] = (mp, "in")
                hit = (mp, "out")
        return hit

    def _join_syn(self, flow: _Flow, d: str, m: MpJoinSyn) -> list[str]:
        flow.is_join = True
        flow.join = {"token": m.token, "nonce_a": m.nonce}
        flow.ids[d] = m.addr_id
        other = _other(d)
        hit = self._join_target(m.token, d, flow)
        if hit is None:
            flow.mp = flow.mp or self._new_mp(flow, 1)
            return [(f"join token {m.token:08x}: no connection in this trace has it"
                    f" (HMACs not checked)")]
        mp, whose = hit
        flow.mp = mp
        return [(f"join token {m.token:08x} == token of {_whose(whose)} key"
                f" 0x{mp.key[whose]:016x}:"
                f" {_mark(whose == other, 'that is the joiner own token')}")]

    def _join_hmac(self, flow: _Flow, mp: _MpConn, d: str, thmac: int | None,
                   hmac: bytes | None) -> list[str]:
        """The MP_JOIN SYN/ACK's truncated HMAC (d = the responder) or the third ACK's
        HMAC (d = the joiner), RFC 8684 3.2."""
        other = _other(d)
        na, nb = flow.join.get("nonce_a"), flow.join.get("nonce_b")
        if d not in mp.key or other not in mp.key or na is None or nb is None \
                or mp.version not in _HASH:
            return ["join HMAC: keys or nonces not seen: not checked"]
        if thmac is not None:
            exp = crypto.join_synack_hmac(mp.key[d], mp.key[other], nb, na, mp.version)
            return [(f"join thmac = HMAC(key {_who(d)} || key {_who(other)}, R_B || R_A)[0:8]"
                    f" 0x{exp:016x}: {_mark(exp == thmac)}")]
        assert hmac is not None
        mac = crypto.join_ack_hmac(mp.key[d], mp.key[other], na, nb, mp.version)
        return [(f"join HMAC = HMAC(key {_who(d)} || key {_who(other)}, R_A || R_B)[0:20]"
                f" {mac.hex()}: {_mark(mac == hmac)}")]

    def _add_addr(self, mp: _MpConn, d: str, m: AddAddr) -> list[str]:
        other = _other(d)
        if m.hmac is None:
            return []
        if d not in mp.key or other not in mp.key:
            return ["ADD_ADDR HMAC: keys not seen: not checked"]
        exp = crypto.add_addr_hmac(mp.key[d], mp.key[other], m.addr_id, m.addr, m.port)
        return [(f"ADD_ADDR hmac = HMAC(key {_who(d)} || key {_who(other)}, id || addr || port)"
                f"[-8:] 0x{exp:016x}: {_mark(exp == m.hmac)}")]

    # ---- the stack's own view ------------------------------------------------------------
    def _msk(self, flow: _Flow) -> MptcpConnection | None:
        mp = flow.mp
        if mp is None:
            return None
        if mp.msk is None and self.stack is not None:
            conn = self.stack.conns.get(flow.bkey)
            if conn is not None and conn.msk is not None:
                mp.msk = conn.msk
        return mp.msk

    def _stack_lines(self, flow: _Flow) -> list[str]:
        """The keys, tokens and IDSNs on the wire against the stack's `msk`, each once."""
        mp, msk = flow.mp, self._msk(flow)
        if mp is None or msk is None:
            return []
        lines: list[str] = []
        for d, attr in (("out", "local"), ("in", "remote")):
            key = mp.key.get(d)
            mkey: int | None = getattr(msk, f"{attr}_key")
            if key is None or attr in mp.checked or mkey is None:
                continue
            mp.checked.add(attr)
            lines.append(f"stack: {_whose(d)} key 0x{key:016x} == msk.{attr}_key:"
                         f" {_mark(key == mkey, f'msk has 0x{mkey:016x}')}")
            if d in mp.token:
                t, i = mp.token[d], mp.idsn[d]
                mt: int | None = getattr(msk, f"{attr}_token")
                mi: int = getattr(msk, f"{attr}_idsn")
                ok = t == mt and i == mi
                lines.append(f"stack: token {t:08x}, IDSN 0x{i:016x} == msk.{attr}_token,"
                             f" msk.{attr}_idsn: "
                             f"{_mark(ok, f'msk has {mt or 0:08x}, 0x{mi:016x}')}")
        if flow.want_fallback_reason and msk.fallback:
            flow.want_fallback_reason = False
            lines.append(f"stack: msk.fallback_reason: {msk.fallback_reason}")
        return lines


def _hp(host: str, port: int) -> str:
    """'10.0.1.2:5000', '[fd00:1::2]:5000'."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
