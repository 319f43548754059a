"""`mptcp-tun analyze FILE`: any capture of MPTCP connections, the kernel's or ours,
listed, checked and explained, with no root and no TUN.

The capture is read with dpkt (pcap and pcapng; link types Ethernet, Linux cooked
capture v1 and v2, which `tcpdump -i any` writes, and raw IP); each IPv4 or IPv6 TCP
segment is decoded by our own wire code. A first pass groups the TCP flows: the
MP_CAPABLE handshakes give each connection's keys, hence its two tokens, and an MP_JOIN
SYN names the token of the host it joins, which links the subflow to its connection and
tells which host opened it. Plain TCP flows, and MP_CAPABLE SYNs answered without it
(fallback), are kept apart.

For one connection (`--connection N`) the packets of its subflows go through the
`--trace` ladder (tools/trace.py), whose lines carry the capture's own frame numbers:
every derived value (tokens, IDSNs, echoed keys, first DSNs, join HMACs both ways,
ADD_ADDR HMACs, DSS checksums, the MP_FASTCLOSE key, data ACKs, DATA_FIN) is computed
from the wire and marked verified or MISMATCH. "us" in the ladder is the client's host
(the MP_CAPABLE SYN's sender), "peer" the server's. Then statistics per subflow: bytes
and share each way, TCP retransmissions, reinjections (a data-level range sent on
another subflow before), when it started and how it ended.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from stack.addr import fmt, ip, ntoa
from stack.diag import Diagnosis
from stack.mptcp import crypto
from stack.wire import MalformedPacket, ipv4, ipv6, tcp
from stack.wire.mptcp import (
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinSyn,
    MpPrio,
    MpTcpRst,
    RemoveAddr,
    parse_body,
)
from stack.wire.tcp import ACK, FIN, OPT_MPTCP, RST, SYN
from tools.findings import Derived, diagnose
from tools.trace import LadderTracer

# link types (https://www.tcpdump.org/linktypes.html) and where their IP packet starts
LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_SLL, LINKTYPE_SLL2 = 1, 101, 113, 276
LINKTYPE_IPV4, LINKTYPE_IPV6 = 228, 229
DLT_RAW = (12, 14)  # the platform-specific values of raw IP some writers use
LINK_NAMES = {LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP",
              LINKTYPE_SLL: "Linux cooked v1", LINKTYPE_SLL2: "Linux cooked v2",
              LINKTYPE_IPV4: "raw IPv4", LINKTYPE_IPV6: "raw IPv6", 12: "raw IP",
              14: "raw IP"}
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD


class CaptureError(Exception):
    """The file cannot be analysed: one line says why."""


@dataclass(slots=True)
class Frame:
    number: int      # 1-based, as Wireshark numbers them
    time: float      # seconds since the epoch
    packet: bytes | None  # the IP packet (None: not IP, or not decodable)


@dataclass
class Capture:
    path: str
    frames: list[Frame]
    link: str
    truncated: str | None = None  # why reading stopped early, if it did


def read_capture(path: str | Path) -> Capture:
    """Every frame of a pcap or pcapng file, its IP packet cut out of the link header."""
    import dpkt  # (a declared dependency of the tools, not of stack/)

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CaptureError(f"{p}: {e.strerror or e}") from e
    if not data:
        raise CaptureError(f"{p}: empty file")
    magic = data[:4]
    try:
        if magic == b"\x0a\x0d\x0d\x0a":
            reader: Any = dpkt.pcapng.Reader(io.BytesIO(data))
        elif magic in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                       b"\xa1\xb2\x3c\x4d"):
            reader = dpkt.pcap.Reader(io.BytesIO(data))
        else:
            raise CaptureError(f"{p}: not a pcap or pcapng file (it starts with "
                               f"{data[:4].hex()})")
    except (ValueError, dpkt.NeedData, dpkt.UnpackError, struct.error) as e:
        raise CaptureError(f"{p}: a truncated or damaged capture header ({e})") from e
    linktype = reader.datalink()
    if linktype not in LINK_NAMES:
        raise CaptureError(f"{p}: link type {linktype} is not one analyze reads (Ethernet, "
                           "Linux cooked v1/v2, raw IP)")
    frames: list[Frame] = []
    truncated = None
    it = iter(reader)
    while True:
        try:
            ts, buf = next(it)
        except StopIteration:
            break
        except (ValueError, dpkt.NeedData, dpkt.UnpackError, struct.error) as e:
            truncated = f"the file ends inside frame {len(frames) + 1} ({e or 'truncated'})"
            break
        frames.append(Frame(len(frames) + 1, float(ts), _ip_of(linktype, bytes(buf))))
    if truncated is None and magic != b"\x0a\x0d\x0d\x0a":
        whole, truncated = _pcap_cut(data)
        del frames[whole:]  # dpkt's pcap reader hands out a record cut short as it is
    return Capture(str(p), frames, LINK_NAMES[linktype], truncated)


def _pcap_cut(data: bytes) -> tuple[int, str | None]:
    """(whole records, why the file is cut or None): walks the pcap record headers
    (dpkt does not say when the last record is incomplete)."""
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    off, n = 24, 0
    while off + 16 <= len(data):
        (caplen,) = struct.unpack_from(order + "I", data, off + 8)
        if off + 16 + caplen > len(data):
            return n, (f"the file ends inside frame {n + 1} ({len(data) - off - 16} of its "
                       f"{caplen} bytes)")
        off, n = off + 16 + caplen, n + 1
    if off < len(data):
        return n, f"the file ends inside the record header of frame {n + 1}"
    return n, None


def _ip_of(linktype: int, buf: bytes) -> bytes | None:
    """The IP packet of a frame of `linktype`, or None (not IPv4/IPv6, or too short)."""
    import dpkt

    try:
        if linktype == LINKTYPE_ETHERNET:
            eth = dpkt.ethernet.Ethernet(buf)
            tags = getattr(eth, "vlan_tags", None) or []
            off, kind = 14 + 4 * len(tags), tags[-1].type if tags else eth.type
        elif linktype == LINKTYPE_SLL:
            kind, off = dpkt.sll.SLL(buf).ethtype, 16
        elif linktype == LINKTYPE_SLL2:
            kind, off = dpkt.sll2.SLL2(buf).ethtype, 20
        else:
            return buf if buf and buf[0] >> 4 in (4, 6) else None
    except (dpkt.NeedData, dpkt.UnpackError, struct.error, ValueError):
        return None
    return buf[off:] if kind in (ETH_IPV4, ETH_IPV6) else None


# ---- the first pass: flows and connections ---------------------------------------------
Endpoint = tuple[str, int]


@dataclass
class Flow:
    """One TCP connection (a subflow, or plain TCP) of the capture."""
    client: Endpoint   # the SYN's sender (else the first packet's)
    server: Endpoint
    frames: list[int] = field(default_factory=list)  # indexes into Capture.frames
    syn_seen: bool = False
    mpc_syn: bool = False
    mpc_synack: bool | None = None  # None: no SYN/ACK seen
    version: int | None = None
    client_key: int | None = None
    server_key: int | None = None
    join_token: int | None = None  # the token the MP_JOIN SYN names
    bytes: dict[str, int] = field(default_factory=lambda: {"c2s": 0, "s2c": 0})
    retrans: dict[str, int] = field(default_factory=lambda: {"c2s": 0, "s2c": 0})
    high: dict[str, int] = field(default_factory=dict)  # highest seq end seen, per way
    # (way, dsn, length, ssn, frame) of each mapping, in the order first seen
    maps: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    map_set: set[tuple[str, int, int, int]] = field(default_factory=set)
    first: float = 0.0
    last: float = 0.0
    established: float | None = None  # the client's first ACK after the SYN/ACK
    ended: float | None = None        # its first FIN or RST
    end: str = "open at the end of the capture"
    # what the offline diagnosis (tools/findings.py) reads, frames as indexes:
    syns: list[tuple[int, bool]] = field(default_factory=list)  # (frame, MP_CAPABLE?)
    synack: int | None = None
    signals: list[tuple[int, str, object]] = field(default_factory=list)  # (frame, way, opt)
    rst: tuple[int, str, int | None] | None = None  # (frame, way, MP_TCPRST reason)
    resent: dict[str, dict[int, list[int]]] = field(
        default_factory=lambda: {"c2s": {}, "s2c": {}})  # way -> seq -> [frame, times]
    acked: dict[str, int] = field(default_factory=dict)  # way -> the other's highest ACK
    zero: dict[str, tuple[int, float]] = field(default_factory=dict)  # way -> 0 window since
    stalls: list[tuple[int, str, float]] = field(default_factory=list)  # (frame, way, s)

    @property
    def is_join(self) -> bool:
        return self.join_token is not None


@dataclass
class Connection:
    """An MPTCP connection: its MP_CAPABLE subflow and its joins."""
    number: int
    initial: Flow
    joins: list[Flow] = field(default_factory=list)
    join_dirs: list[str] = field(default_factory=list)  # per join: "client" | "server"

    @property
    def version(self) -> int:
        v = self.initial.version
        return 1 if v is None else v

    def tokens(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for who, key in (("client", self.initial.client_key),
                         ("server", self.initial.server_key)):
            out[who] = None if key is None else crypto.key_token_idsn(key, self.version)[0]
        return out

    @property
    def fallback(self) -> str | None:
        if self.initial.mpc_synack is False:
            return "the SYN/ACK carried no MP_CAPABLE: plain TCP"
        return None

    @property
    def subflows(self) -> list[Flow]:
        return [self.initial, *self.joins]


@dataclass
class Analysis:
    capture: Capture
    connections: list[Connection]
    tcp: list[Flow]             # plain TCP flows (no MPTCP option in their SYN)
    orphans: list[Flow]         # joins whose connection is not in the capture
    malformed: int = 0


def _segment(packet: bytes) -> tuple[str, str, tcp.TcpHeader, int, memoryview] | None:
    """(src, dst, TCP header, payload length, payload) of an IPv4/IPv6 TCP packet.
    A super-packet (TSO/GRO: total length 0 or beyond the frame) and a frame cut by the
    snap length are taken as far as the frame goes."""
    if packet[0] >> 4 == 6:
        h6, end = ipv6.parse(packet)
        if h6.proto != ipv6.NH_TCP or h6.is_fragment:
            return None
        src, dst, hlen = h6.src, h6.dst, h6.header_len
    else:
        h4, end = ipv4.parse(packet, verify_checksum=False, quoted=True)
        if h4.proto != ipv4.PROTO_TCP or h4.is_fragment:
            return None
        src, dst, hlen = h4.src, h4.dst, h4.header_len
        if h4.total_length == 0:  # TSO: "IP total length 0"
            end = len(packet)
    seg = memoryview(packet)[hlen:end]
    hdr, doff = tcp.parse(seg)
    return ntoa(src), ntoa(dst), hdr, len(seg) - doff, seg[doff:]


STALL = 1.0  # seconds a receive window stays 0 before the diagnosis reports it
_SIGNALS = (AddAddr, RemoveAddr, MpPrio, MpFastclose, MpFail)


def analyse(cap: Capture) -> Analysis:
    flows: dict[frozenset[Endpoint], Flow] = {}
    order: list[Flow] = []
    malformed = 0
    for i, fr in enumerate(cap.frames):
        if fr.packet is None or not fr.packet:
            continue
        try:
            got = _segment(fr.packet)
        except MalformedPacket:
            malformed += 1
            continue
        if got is None:
            continue
        src, dst, hdr, plen, _ = got
        a, b = (src, hdr.src_port), (dst, hdr.dst_port)
        k = frozenset((a, b))
        flow = flows.get(k)
        syn_only = hdr.flags & (SYN | ACK) == SYN
        if flow is None or (syn_only and flow.syn_seen and flow.frames
                            and _new_isn(cap, flow, hdr)):
            flow = Flow(a, b, first=fr.time)
            flows[k] = flow
            order.append(flow)
        flow.frames.append(i)
        flow.last = fr.time
        way = "c2s" if a == flow.client else "s2c"
        mopts = [o for o in hdr.options
                 if type(o) is tcp.UnknownOption and o.kind == OPT_MPTCP]
        if syn_only:
            flow.syn_seen = True
            flow.client, flow.server = a, b
            way = "c2s"
            flow.syns.append((i, any(_is_mpc(o) for o in mopts)))
        _account(flow, way, hdr, plen, i)
        _watch(flow, way, hdr, i, fr.time)
        reason = None
        for o in mopts:
            try:
                m = parse_body(o.data, bool(hdr.flags & SYN), bool(hdr.flags & ACK),
                               plen > 0)
            except MalformedPacket:
                malformed += 1
                continue
            _take_option(flow, way, hdr, m, i, plen)
            if isinstance(m, _SIGNALS):
                flow.signals.append((i, way, m))
            elif type(m) is MpTcpRst:
                reason = m.reason
        if hdr.flags & SYN and hdr.flags & ACK and way == "s2c":
            flow.synack = i if flow.synack is None else flow.synack
            if flow.mpc_syn and flow.mpc_synack is None:
                flow.mpc_synack = any(_is_mpc(o) for o in mopts)
        elif (flow.established is None and flow.synack is not None and way == "c2s"
              and hdr.flags & (SYN | RST | ACK) == ACK):
            flow.established = fr.time
        by = "client" if way == "c2s" else "server"
        if hdr.flags & RST:
            if flow.rst is None:  # the first: an answer to it says less
                flow.rst = (i, way, reason)
                flow.ended = fr.time
                flow.end = f"reset by the {by} (frame {fr.number})"
        elif hdr.flags & FIN and flow.rst is None:
            flow.ended = fr.time if flow.ended is None else flow.ended
            flow.end = f"closed (FIN at frame {fr.number})"
    for flow in order:  # a window still shut when the capture ends
        for way, (i, since) in flow.zero.items():
            if flow.last - since >= STALL:
                flow.stalls.append((i, way, flow.last - since))
    return _group(cap, order, malformed)


def _watch(flow: Flow, way: str, hdr: tcp.TcpHeader, i: int, now: float) -> None:
    """The other way's highest ACK, and the runs of a zero receive window."""
    if not hdr.flags & ACK or hdr.flags & (SYN | RST):
        return
    other = "s2c" if way == "c2s" else "c2s"
    acked = flow.acked.get(other)
    if acked is None or ((hdr.ack - acked) & 0xFFFFFFFF) < 0x80000000:
        flow.acked[other] = hdr.ack
    shut = flow.zero.get(way)
    if hdr.window == 0:
        if shut is None:
            flow.zero[way] = (i, now)
    elif shut is not None:
        del flow.zero[way]
        if now - shut[1] >= STALL:
            flow.stalls.append((shut[0], way, now - shut[1]))


def _new_isn(cap: Capture, flow: Flow, hdr: tcp.TcpHeader) -> bool:
    """A SYN on a 4-tuple already seen: a new connection if its ISN differs."""
    first = cap.frames[flow.frames[0]].packet
    try:
        got = _segment(first) if first else None
    except MalformedPacket:
        return True
    return got is not None and got[2].flags & SYN != 0 and got[2].seq != hdr.seq


def _is_mpc(o: tcp.UnknownOption) -> bool:
    return bool(o.data) and o.data[0] >> 4 == 0


def _account(flow: Flow, way: str, hdr: tcp.TcpHeader, plen: int, i: int) -> None:
    """Payload bytes, and segments sent again (a FIN counts as its sequence number)."""
    span = plen + (1 if hdr.flags & FIN else 0)
    if not span or hdr.flags & (SYN | RST):
        return
    flow.bytes[way] += plen
    end = (hdr.seq + span) & 0xFFFFFFFF
    high = flow.high.get(way)
    if high is not None and ((high - end) & 0xFFFFFFFF) < 0x80000000:
        flow.retrans[way] += 1  # ends at or below what was already sent: sent again
        seen = flow.resent[way].setdefault(hdr.seq, [i, 0])
        seen[1] += 1
    else:
        flow.high[way] = end


def _take_option(flow: Flow, way: str, hdr: tcp.TcpHeader, m: object, i: int,
                 plen: int) -> None:
    if type(m) is MpCapable:
        flow.version = m.version
        if hdr.flags & SYN and not hdr.flags & ACK:
            flow.mpc_syn = True
            if m.sender_key:  # v0: the client's key is in its SYN
                flow.client_key = m.sender_key
        elif hdr.flags & SYN:
            flow.server_key = m.sender_key or flow.server_key
        elif m.sender_key and m.receiver_key:  # the third ACK: both keys
            c, s = (m.sender_key, m.receiver_key) if way == "c2s" else \
                (m.receiver_key, m.sender_key)
            flow.client_key, flow.server_key = c, s
    elif type(m) is MpJoinSyn and hdr.flags & SYN and not hdr.flags & ACK:
        flow.join_token = m.token
    elif type(m) is Dss and m.dsn is not None and m.data_len and plen:  # (not a bare DATA_FIN)
        mapping = (way, m.dsn, m.data_len, m.ssn)
        if mapping not in flow.map_set:  # (every segment of a mapping repeats it)
            flow.map_set.add(mapping)
            flow.maps.append((*mapping, i))


def _group(cap: Capture, order: list[Flow], malformed: int) -> Analysis:
    conns: list[Connection] = []
    tcp_flows: list[Flow] = []
    joins: list[Flow] = []
    for f in order:
        if f.mpc_syn:
            conns.append(Connection(len(conns) + 1, f))
        elif f.is_join:
            joins.append(f)
        else:
            tcp_flows.append(f)
    by_token: dict[int, tuple[Connection, str]] = {}
    for c in conns:
        for who, tok in c.tokens().items():
            if tok is not None:
                by_token[tok] = (c, who)
    orphans = []
    for f in joins:
        assert f.join_token is not None
        hit = by_token.get(f.join_token)
        if hit is None:
            orphans.append(f)
            continue
        c, who = hit
        c.joins.append(f)
        # the SYN names the token of the host it goes to: the server's means the
        # client's host opened the join
        c.join_dirs.append("client" if who == "server" else "server")
    return Analysis(cap, conns, tcp_flows, orphans, malformed)


# ---- output ----------------------------------------------------------------------------
def _ep(e: Endpoint) -> str:
    return fmt(ip(e[0]), e[1])


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n} B"


def listing(an: Analysis, out: TextIO) -> None:
    cap = an.capture
    span = cap.frames[-1].time - cap.frames[0].time if cap.frames else 0.0
    out.write(f"{cap.path}: {len(cap.frames)} frames ({cap.link}), {span:.3f} s\n")
    if cap.truncated:
        out.write(f"  warning: {cap.truncated}; analysed up to there\n")
    if an.malformed:
        out.write(f"  {an.malformed} malformed TCP/MPTCP headers skipped\n")
    out.write(f"\nMPTCP connections: {len(an.connections)}\n")
    for c in an.connections:
        toks = c.tokens()
        tk = ", ".join(f"{w} {t:08x}" if t is not None else f"{w} ?" for w, t in toks.items())
        c2s = sum(f.bytes["c2s"] for f in c.subflows)
        s2c = sum(f.bytes["s2c"] for f in c.subflows)
        state = f"fallback ({c.fallback})" if c.fallback else f"{len(c.subflows)} subflows"
        out.write(f"  {c.number}. v{c.version} {_ep(c.initial.client)} > "
                  f"{_ep(c.initial.server)}: tokens {tk}; {state}; client > server "
                  f"{_mb(c2s)}, server > client {_mb(s2c)}\n")
        for j, f in enumerate(c.subflows):
            kind = "MP_CAPABLE" if j == 0 else f"MP_JOIN by the {c.join_dirs[j - 1]}"
            out.write(f"       sf{j + 1} {_ep(f.client)} > {_ep(f.server)} {kind}, "
                      f"frames {len(f.frames)}; {f.end}\n")
    if an.orphans:
        out.write(f"\nMP_JOIN subflows of connections not in the capture: {len(an.orphans)}\n")
        for f in an.orphans:
            out.write(f"  {_ep(f.client)} > {_ep(f.server)} token {f.join_token:08x}\n")
    out.write(f"\nTCP connections without MPTCP: {len(an.tcp)}\n")
    for f in an.tcp:
        out.write(f"  {_ep(f.client)} > {_ep(f.server)}: {_mb(f.bytes['c2s'])} / "
                  f"{_mb(f.bytes['s2c'])}; {f.end}\n")


def ladder(an: Analysis, conn: Connection, out: TextIO, show_data: int,
           derived: Derived | None = None) -> None:
    """The connection's packets through the `--trace` ladder, numbered as in the file;
    every derived value also goes to `derived` (the offline diagnosis reads them)."""
    tracer = LadderTracer(out, show_data=show_data,
                          on_derived=derived)
    cap = an.capture
    # frame -> (its subflow, whether that subflow's SYN came from the client's host)
    owner = {i: (f, who == "client") for f, who in
             zip(conn.subflows, ["client", *conn.join_dirs], strict=True) for i in f.frames}
    frames = sorted(owner)
    t0 = cap.frames[frames[0]].time if frames else 0.0
    out.write("(us = the client's host, the MP_CAPABLE SYN's sender; peer = the server's)\n")
    for i in frames:
        fr = cap.frames[i]
        assert fr.packet is not None
        try:
            got = _segment(fr.packet)
        except MalformedPacket:
            continue
        if got is None:
            continue
        src, _, hdr, _, _ = got
        flow, opened_by_client = owner[i]
        from_client = ((src, hdr.src_port) == flow.client) == opened_by_client
        tracer(("out" if from_client else "in"), fr.packet, fr.time - t0, frame=fr.number)
    tracer.flush()


def stats(conn: Connection) -> list[dict[str, Any]]:
    """Per subflow: bytes and share each way, TCP retransmissions, reinjections (a
    mapping whose data-level range was first sent on another subflow), data-level
    retransmissions (the same range sent again on the same subflow, under new subflow
    sequence numbers), and when it started, was established and ended (seconds since
    the connection's first packet), and how."""
    total = {w: sum(f.bytes[w] for f in conn.subflows) or 1 for w in ("c2s", "s2c")}
    t0 = conn.initial.first
    rows: list[dict[str, Any]] = []
    for n, f in enumerate(conn.subflows):
        rows.append({"subflow": f"sf{n + 1}", "client": _ep(f.client),
                     "server": _ep(f.server),
                     "bytes": dict(f.bytes),
                     "share": {w: round(100 * f.bytes[w] / total[w], 1) for w in total},
                     "retransmissions": dict(f.retrans), "reinjections": 0,
                     "data_retransmissions": 0,
                     "start": round(f.first - t0, 6),
                     "established": None if f.established is None else
                     round(f.established - t0, 6),
                     "ended": None if f.ended is None else round(f.ended - t0, 6),
                     "last": round(f.last - t0, 6), "end": f.end})
    # (way, dsn, end) -> the subflows that sent it so far; overlaps found by a sweep
    maps = sorted((m[0], m[1], m[4], m[1] + m[2], n) for n, f in enumerate(conn.subflows)
                  for m in f.maps)
    reach: dict[str, list[tuple[int, int]]] = {"c2s": [], "s2c": []}  # (end, subflow)
    for way, dsn, _, end, n in maps:
        earlier = [sf for e, sf in reach[way] if e > dsn]
        if any(sf != n for sf in earlier):
            rows[n]["reinjections"] += 1
        elif n in earlier:
            rows[n]["data_retransmissions"] += 1
        reach[way] = [(e, sf) for e, sf in reach[way] if e > dsn] + [(end, n)]
    return rows


def write_stats(conn: Connection, rows: list[dict[str, Any]], out: TextIO) -> None:
    out.write(f"\nconnection {conn.number}: per subflow (client > server | server > client;"
              f" times in s since its first packet)\n")
    for r in rows:
        b, s, rt = r["bytes"], r["share"], r["retransmissions"]
        est = "never established" if r["established"] is None else \
            f"established {r['established']:.3f}"
        end = f"ended {r['ended']:.3f}" if r["ended"] is not None else "open"
        out.write(f"  {r['subflow']} {r['client']} > {r['server']}: {_mb(b['c2s'])} "
                  f"({s['c2s']}%) | {_mb(b['s2c'])} ({s['s2c']}%); retransmissions "
                  f"{rt['c2s']} | {rt['s2c']}; reinjected mappings {r['reinjections']}, "
                  f"sent again on it {r['data_retransmissions']}\n"
                  f"      started {r['start']:.3f}, {est}, {end}: {r['end']}\n")


def to_json(an: Analysis, conn: Connection | None) -> dict[str, Any]:
    def flow(f: Flow) -> dict[str, Any]:
        return {"client": _ep(f.client), "server": _ep(f.server), "frames": len(f.frames),
                "bytes": dict(f.bytes), "end": f.end}
    out: dict[str, Any] = {
        "file": an.capture.path, "frames": len(an.capture.frames), "link": an.capture.link,
        "truncated": an.capture.truncated, "malformed": an.malformed,
        "connections": [{"number": c.number, "version": c.version,
                         "tokens": {w: None if t is None else f"{t:08x}"
                                    for w, t in c.tokens().items()},
                         "keys": {"client": _hex(c.initial.client_key),
                                  "server": _hex(c.initial.server_key)},
                         "fallback": c.fallback,
                         "subflows": [dict(flow(f), kind="MP_CAPABLE" if n == 0 else
                                           f"MP_JOIN by the {c.join_dirs[n - 1]}")
                                      for n, f in enumerate(c.subflows)]}
                        for c in an.connections],
        "tcp": [flow(f) for f in an.tcp],
        "orphan_joins": [dict(flow(f), token=f"{f.join_token:08x}") for f in an.orphans]}
    if conn is not None:
        out["stats"] = {"connection": conn.number, "subflows": stats(conn)}
        derived = Derived()
        ladder(an, conn, io.StringIO(), 0, derived)
        diag = diagnose(an, conn, derived)
        out["findings"] = [f.as_dict(diag.t0) for f in diag.findings]
    return out


def _hex(v: int | None) -> str | None:
    return None if v is None else f"{v:016x}"


def pick(an: Analysis, which: str) -> Connection:
    """`--connection N` (its number in the listing) or a token (hex, either host's)."""
    if which.isdigit() and 1 <= int(which) <= len(an.connections):
        return an.connections[int(which) - 1]
    try:
        tok = int(which.removeprefix("0x"), 16)
    except ValueError:
        tok = None
    for c in an.connections:
        if tok is not None and tok in c.tokens().values():
            return c
    raise CaptureError(f"no connection {which!r} in the capture (numbers 1-"
                       f"{len(an.connections)}, or a token the listing shows)")


# ---- the command -------------------------------------------------------------------------
def configure(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("\n\n", 1)[0] if __doc__ else None
    p.add_argument("file", help="a pcap or pcapng capture (tcpdump -w, Wireshark, --pcap)")
    p.add_argument("--connection", metavar="N|TOKEN",
                   help="the ladder and statistics of one MPTCP connection: its number in "
                        "the listing, or either host's token (hex)")
    p.add_argument("--json", action="store_true", help="the result as one JSON object")
    p.add_argument("--plot", metavar="FILE.png|FILE.svg",
                   help="draw the connection (--connection, else the first): data sequence "
                        "numbers against time per subflow, the data ACK line, "
                        "retransmissions, reinjections and path-manager events")
    p.add_argument("--plot-kind", choices=["dsn", "goodput"], default="dsn",
                   help="dsn (default), or goodput: new data-level bytes per subflow over "
                        "time")
    p.add_argument("--show-data", type=int, default=3, metavar="N",
                   help="data segments shown per subflow and direction in the ladder "
                        "before they are only counted (default 3)")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        an = analyse(read_capture(args.file))
        conn = pick(an, args.connection) if args.connection else None
    except CaptureError as e:
        print(f"mptcp-tun analyze: {e}", file=sys.stderr)
        return 2
    if args.plot:
        target = conn or (an.connections[0] if an.connections else None)
        if target is None:
            print("mptcp-tun analyze: no MPTCP connection to plot", file=sys.stderr)
            return 2
        from tools import plot
        try:
            plot.draw(an, target, args.plot, args.plot_kind)
        except (OSError, ValueError) as e:
            print(f"mptcp-tun analyze: cannot write {args.plot}: {e}", file=sys.stderr)
            return 2
    if args.json:
        out.write(json.dumps(to_json(an, conn)) + "\n")
        return 0
    listing(an, out)
    if conn is None and len(an.connections) == 1:
        conn = an.connections[0]  # the only one: no need to name it
    if conn is not None:
        out.write(f"\nconnection {conn.number}:\n")
        derived = Derived()
        ladder(an, conn, out, args.show_data, derived)
        write_stats(conn, stats(conn), out)
        write_findings(conn, diagnose(an, conn, derived), out)
    return 0


def write_findings(conn: Connection, diag: Diagnosis, out: TextIO) -> None:
    n = len(diag.findings)
    out.write(f"\nconnection {conn.number}: {n or 'no'} finding{'s' if n != 1 else ''}"
              f"{' (sent / received: by the client host)' if n else ''}\n")
    for f in diag.findings:
        out.write(f"  {f.line(diag.t0)}\n")
