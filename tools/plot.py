"""`analyze --plot FILE.png|svg`: one MPTCP connection of a capture drawn.

`--plot-kind dsn` (default): the data sequence number of every data segment against
time, one colour per subflow, for the direction that carried more data; the data ACK
line the other direction sends; markers for TCP retransmissions (circles) and
reinjections (crosses: a data-level range first sent on another subflow); and vertical
lines for ADD_ADDR, REMOVE_ADDR, MP_PRIO and each subflow's start and end.
`--plot-kind goodput`: per-subflow goodput (new data-level bytes) over time, 100 ms bins.

matplotlib (a declared dependency of the tools) draws it off screen (Agg).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stack.mptcp import crypto
from stack.wire import MalformedPacket, tcp
from stack.wire.mptcp import AddAddr, Dss, MpCapable, MpPrio, RemoveAddr, parse_body
from stack.wire.tcp import ACK, OPT_MPTCP, SYN

if TYPE_CHECKING:
    from tools.analyze import Analysis, Connection

BIN = 0.1  # goodput bins, seconds


@dataclass
class Series:
    """What the plot draws, in seconds since the connection's first packet and
    data-level bytes since the first data byte of the plotted direction."""
    way: str                                    # "c2s" or "s2c"
    points: dict[int, list[tuple[float, int]]] = field(default_factory=dict)  # subflow ->
    acks: list[tuple[float, int]] = field(default_factory=list)
    retrans: list[tuple[float, int]] = field(default_factory=list)
    reinjected: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    new_bytes: dict[int, list[tuple[float, int]]] = field(default_factory=dict)


class Covered:
    """Data-level ranges already seen, merged: `add` says how many bytes are new."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, a: int, b: int) -> int:
        i = bisect.bisect_left(self.ends, a)  # the first range that ends at or after a
        j = i
        new = b - a
        lo, hi = a, b
        while j < len(self.starts) and self.starts[j] <= b:
            new -= max(0, min(b, self.ends[j]) - max(a, self.starts[j]))
            lo, hi = min(lo, self.starts[j]), max(hi, self.ends[j])
            j += 1
        self.starts[i:j], self.ends[i:j] = [lo], [hi]
        return new


def series(an: Analysis, conn: Connection) -> Series:
    from tools.analyze import _segment

    way = max(("c2s", "s2c"), key=lambda w: sum(f.bytes[w] for f in conn.subflows))
    cap = an.capture
    first = min(cap.frames[f.frames[0]].time for f in conn.subflows if f.frames)
    s = Series(way)
    key = conn.initial.client_key if way == "c2s" else conn.initial.server_key
    # the plotted direction's first DSN (IDSN + 1); without the key, its first mapping's
    base = None if key is None else (crypto.key_token_idsn(key, conn.version)[1] + 1)
    maps: dict[int, list[tuple[int, int, int]]] = {}  # subflow -> (ssn, dsn, length)
    isn: dict[tuple[int, str], int] = {}
    high: dict[int, int] = {}      # per subflow: highest relative seq end sent
    owner: list[tuple[int, int, int]] = []  # (dsn start, end, subflow) first sent
    covered = Covered()
    for n, f in enumerate(conn.subflows):
        s.points[n], s.new_bytes[n] = [], []
        s.events.append((cap.frames[f.frames[0]].time - first, f"sf{n + 1} starts"))
        if "closed" in f.end or "reset" in f.end:
            s.events.append((f.last - first, f"sf{n + 1} ends"))
    frames = sorted((i, n) for n, f in enumerate(conn.subflows) for i in f.frames)
    for i, n in frames:
        fr = cap.frames[i]
        try:
            got = _segment(fr.packet) if fr.packet else None
        except MalformedPacket:
            continue
        if got is None:
            continue
        src, _, hdr, plen, _ = got
        f = conn.subflows[n]
        w = "c2s" if (src, hdr.src_port) == f.client else "s2c"
        if hdr.flags & SYN:
            isn[(n, w)] = hdr.seq
        t = fr.time - first
        for o in hdr.options:
            if type(o) is not tcp.UnknownOption or o.kind != OPT_MPTCP:
                continue
            try:
                m = parse_body(o.data, bool(hdr.flags & SYN), bool(hdr.flags & ACK), plen > 0)
            except MalformedPacket:
                continue
            if type(m) is AddAddr and not m.echo:
                s.events.append((t, "ADD_ADDR"))
            elif type(m) is RemoveAddr:
                s.events.append((t, "REMOVE_ADDR"))
            elif type(m) is MpPrio:
                s.events.append((t, "MP_PRIO"))
            elif type(m) is MpCapable and m.data_len and w == way and base is not None:
                # v1: the client's first data carries its mapping in MP_CAPABLE
                maps.setdefault(n, []).append((1, base, m.data_len))
            elif type(m) is Dss:
                if w == way and m.dsn is not None and m.data_len:
                    maps.setdefault(n, []).append((m.ssn, m.dsn, m.data_len))
                    if base is None:
                        base = m.dsn
                elif w != way and m.data_ack is not None and base is not None:
                    s.acks.append((t, (m.data_ack - base) & _mask(m.data_ack64)))
        if w != way or not plen or (n, w) not in isn:
            continue
        rel = (hdr.seq - isn[(n, w)]) & 0xFFFFFFFF
        m = next(((ssn, dsn, ln) for ssn, dsn, ln in reversed(maps.get(n, []))
                  if ssn <= rel < ssn + ln), None)
        if m is None or base is None:
            continue
        d = ((m[1] + rel - m[0]) - base) & 0xFFFFFFFFFFFFFFFF
        s.points[n].append((t, d))
        end = rel + plen
        if high.get(n, -1) >= end:
            s.retrans.append((t, d))
        high[n] = max(high.get(n, -1), end)
        new = covered.add(d, d + plen)
        if new:
            s.new_bytes[n].append((t, new))
            owner.append((d, d + plen, n))
        elif any(a < d + plen and d < b and sf != n for a, b, sf in owner):
            s.reinjected.append((t, d))
    return s


def _mask(wide: bool) -> int:
    return 0xFFFFFFFFFFFFFFFF if wide else 0xFFFFFFFF


def draw(an: Analysis, conn: Connection, path: str, kind: str = "dsn") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = series(an, conn)
    direction = "client > server" if s.way == "c2s" else "server > client"
    fig, ax = plt.subplots(figsize=(11, 6), dpi=110)
    colours = plt.get_cmap("tab10")
    if kind == "goodput":
        for n, pts in s.new_bytes.items():
            bins: dict[int, int] = {}
            for t, b in pts:
                bins[int(t / BIN)] = bins.get(int(t / BIN), 0) + b
            if bins:
                xs = [k * BIN for k in range(max(bins) + 1)]
                ys = [bins.get(k, 0) * 8 / BIN / 1e6 for k in range(max(bins) + 1)]
                ax.plot(xs, ys, color=colours(n % 10), label=f"sf{n + 1}", drawstyle="steps-post")
        ax.set_ylabel("goodput, Mbit/s (new data-level bytes)")
    else:
        for n, pts in s.points.items():
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] / 1e6 for p in pts], s=3,
                           color=colours(n % 10), label=f"sf{n + 1}")
        if s.acks:
            # the highest data ACK so far: subflows carry older ones interleaved
            run, top = [], 0
            for t, v in s.acks:
                top = max(top, v)
                run.append((t, top))
            ax.plot([a[0] for a in run], [a[1] / 1e6 for a in run], color="black",
                    linewidth=0.8, drawstyle="steps-post", label="data ACK")
        if s.retrans:
            ax.scatter([p[0] for p in s.retrans], [p[1] / 1e6 for p in s.retrans], s=30,
                       facecolors="none", edgecolors="red", label="TCP retransmission")
        if s.reinjected:
            ax.scatter([p[0] for p in s.reinjected], [p[1] / 1e6 for p in s.reinjected],
                       s=30, marker="x", color="purple", label="reinjection")
        ax.set_ylabel("data sequence number, MB since the first byte")
    for t, what in _merged(s.events):
        ax.axvline(t, color="grey", linestyle=":", linewidth=0.8)
        ax.annotate(what, (t, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                    fontsize=7, va="top", ha="right", color="grey")
    ax.set_xlabel("seconds since the connection's first packet")
    ax.set_title(f"MPTCP connection {conn.number}, {direction} "
                 f"({len(conn.subflows)} subflows)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _merged(events: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """Events closer than 1% of the time axis share one line and one label (their
    names joined), so that simultaneous ones (joins opened at once) stay readable."""
    if not events:
        return []
    ev = sorted(events)
    gap = max((ev[-1][0] - ev[0][0]) * 0.01, 1e-6)
    out: list[tuple[float, list[str]]] = []
    for t, what in ev:
        if out and t - out[-1][0] <= gap:
            if what not in out[-1][1]:
                out[-1][1].append(what)
        else:
            out.append((t, [what]))
    return [(t, ", ".join(names)) for t, names in out]
