"""Per-path impairments between our stack and the device: a fault injector in the spirit
of smoltcp's `FaultInjector`, for the delay, loss and middlebox behaviour this
machine's kernel cannot give (no `netem`), on one path at a time.

A rule (`Impairment`) applies to the packets whose source or destination address is
its `addr` (our address on a path, or the peer's; `*` for every packet), in the
directions it names; the first rule that matches a packet is the one applied. Per
packet, in this order:

- `drop`: a packet carrying any of the named MPTCP suboptions is dropped
  (`mp_capable`, `mp_join`, `dss`, `add_addr`, `rm_addr`, `mp_prio`, `mp_fail`,
  `mp_fastclose`, `mp_tcprst`, or `mptcp` for any);
- `strip`: every MPTCP option is overwritten with NOPs (a middlebox that strips
  unknown options; the TCP checksum is fixed, as such a middlebox does);
- `loss`: dropped with this probability;
- `corrupt`: with this probability, one payload byte of a data-carrying segment is
  inverted and the TCP checksum fixed (only a DSS checksum can tell);
- `delay` for every packet, plus up to `jitter` more (uniform; packets may pass each
  other), plus `reorder_delay` for the fraction `reorder` of them (held back, so later
  ones overtake them);
- `duplicate`: with this probability, delivered twice.

`delay` and `jitter` apply to each direction the rule covers (`dir=both`, the default:
the round trip grows by twice the delay), as netem's on both ends of a link.

Offloads: the device hands us TSO/GRO super-packets of up to 64 KB. A rule with
per-packet randomness (loss, corrupt, jitter, reorder, duplicate) cuts them into the
MSS-sized segments the wire carries first (software GSO), so `loss=1%` loses 1% of
segments, not of super-packets; a rule that only delays, drops by suboption or strips
keeps them whole. Packets are counted as segments.

Sans-I/O: `outbound` and `inbound` take `now` and return when each resulting packet is
due; the shell holds them until then. Seeded: the same seed and the same packets give
the same losses."""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter
from dataclasses import dataclass

from stack.addr import Addr, ip, ntoa
from stack.host import Datagram
from stack.wire import gso, ipv6, tcp
from stack.wire.errors import MalformedPacket

SUBTYPES = {"mp_capable": 0, "mp_join": 1, "dss": 2, "add_addr": 3, "rm_addr": 4,
            "mp_prio": 5, "mp_fail": 6, "mp_fastclose": 7, "mp_tcprst": 8}
ANY_MPTCP = -1  # `drop=mptcp`: any MPTCP option
_SUBTYPE_NAMES = {v: k for k, v in SUBTYPES.items()} | {ANY_MPTCP: "mptcp"}
_DIRS = ("both", "in", "out")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_PROBABILITIES = ("loss", "duplicate", "reorder", "corrupt")
_DURATIONS = ("delay", "jitter", "reorder_delay")
KINDS = ("packets", "dropped", "stripped", "lost", "corrupted", "delayed", "reordered",
         "duplicated")


def _duration(key: str, text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)(us|ms|s)", text.strip())
    if m is None:
        if re.fullmatch(r"0+(\.0*)?", text.strip()):
            return 0.0
        raise ValueError(f"{key}={text}: a duration with its unit (25ms, 1.5s, 500us)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _probability(key: str, text: str) -> float:
    t = text.strip()
    try:
        p = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError(f"{key}={text}: a probability (1%, 0.5%, or a fraction "
                         f"such as 0.01)") from None
    if not t.endswith("%") and p > 1:
        raise ValueError(f"{key}={text}: more than 1 (did you mean {t}%?)")
    if not 0 <= p <= 1:
        raise ValueError(f"{key}={text}: not between 0 and 100%")
    return p


def _subtypes(text: str) -> frozenset[int]:
    out = set()
    for name in text.split("+"):
        n = name.strip().lower().replace("-", "_")
        if n == "mptcp":
            out.add(ANY_MPTCP)
        elif n in SUBTYPES:
            out.add(SUBTYPES[n])
        elif n.isdigit() and int(n) < 16:
            out.add(int(n))
        else:
            raise ValueError(f"drop={text}: {name!r} is no MPTCP suboption (one or more of "
                             f"{', '.join(SUBTYPES)}, mptcp; joined with '+')")
    return frozenset(out)


@dataclass(frozen=True)
class Impairment:
    """One rule. `addr` None: every packet."""
    addr: Addr | None = None
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.004
    corrupt: float = 0.0
    drop: frozenset[int] = frozenset()
    strip: bool = False
    dir: str = "both"

    def __post_init__(self) -> None:
        if self.dir not in _DIRS:
            raise ValueError(f"dir={self.dir}: one of {', '.join(_DIRS)}")
        for k in _DURATIONS:
            if getattr(self, k) < 0:
                raise ValueError(f"{k} < 0")
        for k in _PROBABILITIES:
            if not 0 <= getattr(self, k) <= 1:
                raise ValueError(f"{k}={getattr(self, k)}: a probability is 0..1")
        if not any((self.delay, self.jitter, self.loss, self.duplicate, self.reorder,
                    self.corrupt, self.drop, self.strip)):
            raise ValueError("no impairment given (delay=, jitter=, loss=, duplicate=, "
                             "reorder=, corrupt=, drop=, strip)")

    @property
    def per_packet(self) -> bool:
        """Random per packet: super-packets are cut into segments first."""
        return bool(self.loss or self.jitter or self.reorder or self.duplicate or self.corrupt)

    @property
    def only_delays(self) -> bool:
        return not (self.per_packet or self.drop or self.strip)

    @classmethod
    def parse(cls, spec: str) -> Impairment:
        """`ADDR:key=value,...` (ADDR: an IPv4 address, an IPv6 one, bracketed or not,
        or `*`), e.g. `10.0.2.2:delay=25ms,loss=1%`, `[fd00:2::2]:drop=add_addr`,
        `*:strip,dir=out`. Raises ValueError saying what is wrong."""
        head, sep, body = spec.rpartition(":")
        if not sep or not head:
            raise ValueError(f"{spec!r}: ADDR:key=value,... (e.g. 10.0.2.2:delay=25ms,loss=1%)")
        addr: Addr | None = None
        if head != "*":
            try:
                addr = ip(head)
            except OSError:
                raise ValueError(f"{spec!r}: {head!r} is not an address (or *)") from None
        kw: dict[str, object] = {"addr": addr}
        for item in body.split(","):
            key, eq, value = (s.strip() for s in item.partition("="))
            key = key.lower().replace("-", "_")
            if key == "strip" and (not eq or value.lower() in ("1", "yes", "on", "true")):
                kw["strip"] = True
            elif not eq:
                raise ValueError(f"{spec!r}: {item!r} is not key=value")
            elif key in _DURATIONS:
                kw[key] = _duration(key, value)
            elif key in _PROBABILITIES:
                kw[key] = _probability(key, value)
            elif key == "drop":
                kw["drop"] = _subtypes(value)
            elif key == "dir":
                kw["dir"] = value.lower()
            else:
                raise ValueError(f"{spec!r}: unknown key {key!r} (delay, jitter, loss, "
                                 f"duplicate, reorder, reorder_delay, corrupt, drop, "
                                 f"strip, dir)")
        return cls(**kw)  # type: ignore[arg-type]

    def __str__(self) -> str:
        where = "*" if self.addr is None else (
            f"[{ntoa(self.addr)}]" if len(self.addr) == 16 else ntoa(self.addr))
        parts = []
        for k in _DURATIONS:
            v = getattr(self, k)
            if v and (k != "reorder_delay" or self.reorder):
                parts.append(f"{k}={v * 1000:g}ms")
        parts += [f"{k}={getattr(self, k) * 100:g}%" for k in _PROBABILITIES if getattr(self, k)]
        if self.drop:
            parts.append("drop=" + "+".join(sorted(_SUBTYPE_NAMES.get(s, str(s))
                                                   for s in self.drop)))
        if self.strip:
            parts.append("strip")
        if self.dir != "both":
            parts.append(f"dir={self.dir}")
        return f"{where}:{','.join(parts)}"


# ---- the packet, as far as the rules look into it ---------------------------------------
def _addresses(pkt: bytes | bytearray | memoryview) -> tuple[bytes, bytes] | None:
    if len(pkt) >= 20 and pkt[0] >> 4 == 4:
        return bytes(pkt[12:16]), bytes(pkt[16:20])
    if len(pkt) >= 40 and pkt[0] >> 4 == 6:
        return bytes(pkt[8:24]), bytes(pkt[24:40])
    return None


def tcp_offset(pkt: bytes | bytearray | memoryview) -> int | None:
    """Where the TCP header starts, or None: not TCP, a fragment, or malformed (such a
    packet is only delayed or lost; the stack judges it)."""
    try:
        if pkt[0] >> 4 == 4:
            off = (pkt[0] & 0x0F) * 4
            if pkt[9] != 6 or len(pkt) < off + tcp.HEADER_LEN or \
                    int.from_bytes(pkt[6:8], "big") & 0x3FFF:
                return None
        else:
            hdr, _end = ipv6.parse(pkt)
            if hdr.proto != ipv6.NH_TCP or hdr.is_fragment:
                return None
            off = hdr.header_len
    except (IndexError, MalformedPacket):
        return None
    thl = (pkt[off + 12] >> 4) * 4 if len(pkt) > off + 12 else 0
    return off if tcp.HEADER_LEN <= thl <= len(pkt) - off else None


def mptcp_options(pkt: bytes | bytearray | memoryview, off: int) -> list[tuple[int, int, int]]:
    """(position, length, subtype) of each MPTCP option of the TCP header at `off`."""
    end = off + (pkt[off + 12] >> 4) * 4
    i = off + tcp.HEADER_LEN
    out = []
    while i < end:
        kind = pkt[i]
        if kind == tcp.OPT_EOL:
            break
        if kind == tcp.OPT_NOP:
            i += 1
            continue
        if i + 1 >= end or pkt[i + 1] < 2 or i + pkt[i + 1] > end:
            break
        length = pkt[i + 1]
        if kind == tcp.OPT_MPTCP and length >= 3:
            out.append((i, length, pkt[i + 2] >> 4))
        i += length
    return out


def _complete(buf: bytearray) -> bytes:
    """The TCP checksum recomputed (after a change, or from a partial sum)."""
    return gso.complete_checksum(buf) if buf[0] >> 4 == 4 else gso.complete_checksum_v6(buf)


def _segments(pkt: bytes, gso_size: int) -> list[bytes]:
    """A super-packet as the wire carries it (checksums complete)."""
    if pkt[0] >> 4 == 4:
        return gso.segment_tcp4(pkt, gso_size)
    return gso.segment_tcp6(pkt, gso_size)


class Impairer:
    """The rules and their state: the seeded random numbers and the counters
    (`counters[i][kind]`, kinds in `KINDS`). `seed` None: a random one, kept in `seed`
    so that a run can be replayed."""

    def __init__(self, rules: list[Impairment], seed: int | None = None) -> None:
        self.rules = list(rules)
        self.seed = random.SystemRandom().getrandbits(32) if seed is None else seed
        self.rng = random.Random(self.seed)
        self.counters: list[Counter[str]] = [Counter() for _ in self.rules]
        self._by_addr = all(r.addr is not None for r in self.rules)
        self._addrs = {r.addr for r in self.rules}

    def rule_for(self, pkt: bytes | bytearray | memoryview, direction: str) -> int | None:
        pair = _addresses(pkt)
        if self._by_addr and (pair is None or (pair[0] not in self._addrs
                                               and pair[1] not in self._addrs)):
            return None
        for i, r in enumerate(self.rules):
            if r.dir not in ("both", direction):
                continue
            if r.addr is None or (pair is not None and r.addr in pair):
                return i
        return None

    # ---- the two directions ------------------------------------------------------------
    def outbound(self, d: Datagram, now: float) -> list[tuple[float, Datagram]]:
        """What becomes of a packet our stack sends: (due, packet) pairs, none if it is
        dropped. An unimpaired packet comes back as it is (due `now`)."""
        i = self.rule_for(d.data, "out")
        if i is None:
            return [(now, d)]
        rule = self.rules[i]
        if rule.only_delays:
            # held as it is, super-packet and offloads included; the payload copied out
            # of the send buffer, which may be compacted before the packet is due
            n = -(-len(d.payload) // d.gso_size) if d.gso_size and d.payload else 1
            self.counters[i]["packets"] += n  # counted as the wire's segments
            self.counters[i]["delayed"] += n
            return [(now + rule.delay, dataclasses.replace(d, data=bytes(d.data),
                                                           payload=bytes(d.payload)))]
        pkt = bytes(d.data) + bytes(d.payload) if d.payload else bytes(d.data)
        off = tcp_offset(pkt)
        if off is None or not rule.per_packet:
            # dropped, stripped or delayed as it is, offloads kept: the device completes
            # the checksum of a csum_partial packet (stripping leaves the pseudo-header
            # sum as it was) and cuts a super-packet
            return [(due, dataclasses.replace(d, data=p, payload=b""))
                    for due, p in self._apply(i, pkt, now, partial=d.csum_partial)]
        if d.gso_size and len(pkt) - off - d.l4_header_len > d.gso_size:
            wire = _segments(pkt, d.gso_size)
        else:
            wire = [_complete(bytearray(pkt))] if d.csum_partial else [pkt]
        return [(due, Datagram(p, l4_offset=d.l4_offset, l4_header_len=d.l4_header_len))
                for seg in wire for due, p in self._apply(i, seg, now)]

    def inbound(self, pkt: bytes | memoryview, trusted: bool, gso_size: int,
                now: float) -> list[tuple[float, bytes | memoryview, bool]]:
        """What becomes of a packet the device gave us (`gso_size`: the virtio-net
        header's, for a GRO super-packet): (due, packet, trusted) triples."""
        i = self.rule_for(pkt, "in")
        if i is None:
            return [(now, pkt, trusted)]
        rule = self.rules[i]
        if rule.only_delays:
            self.counters[i]["packets"] += 1
            self.counters[i]["delayed"] += 1
            return [(now + rule.delay, pkt, trusted)]
        raw = bytes(pkt)
        off = tcp_offset(raw)
        if off is not None and gso_size and rule.per_packet and \
                len(raw) - off - (raw[off + 12] >> 4) * 4 > gso_size:
            wire = _segments(raw, gso_size)
            trusted = True  # checksums computed here
        else:
            wire = [raw]
        return [(due, p, trusted or p is not raw)
                for seg in wire for due, p in self._apply(i, seg, now)]

    # ---- one wire packet ---------------------------------------------------------------
    def _apply(self, i: int, pkt: bytes, now: float,
               partial: bool = False) -> list[tuple[float, bytes]]:
        """One wire packet through rule `i`. `partial`: its TCP checksum field holds the
        pseudo-header sum, for the device to complete (left so after a change)."""
        rule, count, rng = self.rules[i], self.counters[i], self.rng
        count["packets"] += 1
        off = tcp_offset(pkt) if rule.drop or rule.strip or rule.corrupt else None
        buf: bytearray | None = None
        if off is not None and (rule.drop or rule.strip):
            opts = mptcp_options(pkt, off)
            if opts and rule.drop and (ANY_MPTCP in rule.drop or
                                       any(sub in rule.drop for _, _, sub in opts)):
                count["dropped"] += 1
                return []
            if opts and rule.strip:
                buf = bytearray(pkt)
                for pos, length, _ in opts:
                    buf[pos:pos + length] = bytes((tcp.OPT_NOP,)) * length
                count["stripped"] += 1
        if rule.loss and rng.random() < rule.loss:
            count["lost"] += 1
            return []
        if off is not None and rule.corrupt and rng.random() < rule.corrupt:
            start = off + (pkt[off + 12] >> 4) * 4
            if start < len(pkt):
                buf = buf if buf is not None else bytearray(pkt)
                buf[rng.randrange(start, len(pkt))] ^= 0xFF
                count["corrupted"] += 1
        if buf is not None:
            pkt = bytes(buf) if partial else _complete(buf)
        due = now + rule.delay
        if rule.jitter:
            due += rng.random() * rule.jitter
        if rule.reorder and rng.random() < rule.reorder:
            due += rule.reorder_delay
            count["reordered"] += 1
        if due > now:
            count["delayed"] += 1
        if rule.duplicate and rng.random() < rule.duplicate:
            count["duplicated"] += 1
            return [(due, pkt), (due, pkt)]
        return [(due, pkt)]

    # ---- what it did ---------------------------------------------------------------------
    def report(self) -> dict[str, object]:
        """For the summary: the seed, and per rule its spec and non-zero counters."""
        return {"seed": self.seed,
                "rules": [{"rule": str(r), **{k: c[k] for k in KINDS if c[k]}}
                          for r, c in zip(self.rules, self.counters, strict=True)]}

    def lines(self) -> list[str]:
        out = []
        for r, c in zip(self.rules, self.counters, strict=True):
            done = ", ".join(f"{c[k]} {k}" for k in KINDS[1:] if c[k]) or "nothing done"
            out.append(f"impair {r}: {c['packets']} packets, {done} (--impair-seed {self.seed})")
        return out
