"""`python -m tests.sim.fuzz`: hostile frames through the host, at scale.

Two of our stacks run real MPTCP connections in the simulator (a join, an ADD_ADDR,
data both ways; DSS checksums, v0, IPv6 and plain TCP in turn). Every packet the network
delivers also arrives, at the same moment, as mutated copies: so the mutants carry the
live connection's addresses, ports, sequence numbers, tokens and keys, and reach the
code behind the checksums, the window checks and the token lookups. The mutations:

- bits flipped and bytes set to edge values anywhere; a frame cut at any length, or
  grown with garbage; IP header fields (version, header length, total length, fragment
  bits, protocol) and TCP flags and sequence numbers changed;
- an MPTCP option of the frame rewritten in place (subtype, length, flags, body);
- new MPTCP options generated field by field, every suboption, with values valid,
  extreme or wrong (keys, tokens, HMACs, DSNs, lengths, address ids), on the frame;
- random bytes behind a valid IP header.

Most mutants get their IP and TCP checksums fixed, so the parsers behind them see them.
Nothing may raise out of `Stack.feed` or out of the timers and output that follow, and
every frame must be delivered or dropped under a counted reason (InReceives =
InDelivers + drops). The report gives frames fed, per mutation, the rate, exceptions
(each with its traceback and the frame, to reproduce) and the memory in use.

    python -m tests.sim.fuzz --frames 1000000 --seed 1
"""

from __future__ import annotations

import argparse
import random
import resource
import struct
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from stack.host import Stack, StackConfig, ip
from stack.mptcp.connection import MptcpConfig
from stack.wire import MalformedPacket, tcp
from stack.wire import mptcp as wm
from stack.wire.checksum import internet_checksum
from stack.wire.gso import complete_checksum, complete_checksum_v6

M64 = (1 << 64) - 1
EDGE = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)


@dataclass
class Report:
    frames: int = 0
    real: int = 0
    pairs: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    accounting: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rss_mb: float = 0.0
    drops: Counter[str] = field(default_factory=Counter)
    counters: Counter[str] = field(default_factory=Counter)  # all of both stacks, summed

    def line(self) -> str:
        rate = self.frames / self.seconds if self.seconds else 0.0
        return (f"fuzz: {self.frames} mutated frames (+{self.real} real) in {self.pairs} "
                f"connections, {self.seconds:.1f} s, {rate:,.0f} frames/s; exceptions "
                f"{len(self.exceptions)}; accounting errors {len(self.accounting)}; "
                f"max RSS {self.rss_mb:.0f} MB")


# ---- mutations ---------------------------------------------------------------------------
def _layout(p: bytes) -> tuple[int, int] | None:
    """(IP header length, TCP header length) of an IPv4/IPv6 TCP packet, if plausible."""
    if len(p) < 20:
        return None
    if p[0] >> 4 == 4:
        ihl = (p[0] & 0xF) * 4
        if p[9] != 6 or len(p) < ihl + 20:
            return None
    elif p[0] >> 4 == 6 and len(p) >= 60 and p[6] == 6:
        ihl = 40
    else:
        return None
    return ihl, (p[ihl + 12] >> 4) * 4


def fix_checksums(p: bytes) -> bytes:
    """IP header and TCP checksums (and IP lengths) made right for what the frame is."""
    lay = _layout(p)
    if lay is None:
        return p
    ihl, _ = lay
    buf = bytearray(p)
    if p[0] >> 4 == 4:
        struct.pack_into("!H", buf, 2, len(buf))
        struct.pack_into("!H", buf, 10, 0)
        struct.pack_into("!H", buf, 10, internet_checksum(bytes(buf[:ihl])))
        return complete_checksum(bytes(buf))
    struct.pack_into("!H", buf, 4, len(buf) - 40)
    return complete_checksum_v6(bytes(buf))


def flip_bits(r: random.Random, p: bytes) -> bytes:
    b = bytearray(p)
    for _ in range(r.randint(1, 8)):
        i = r.randrange(len(b))
        b[i] ^= 1 << r.randrange(8)
    return bytes(b)


def set_bytes(r: random.Random, p: bytes) -> bytes:
    b = bytearray(p)
    for _ in range(r.randint(1, 4)):
        b[r.randrange(len(b))] = r.choice(EDGE)
    return bytes(b)


def truncate(r: random.Random, p: bytes) -> bytes:
    return p[:r.randrange(len(p))]


def grow(r: random.Random, p: bytes) -> bytes:
    return p + r.randbytes(r.randint(1, 64))


def ip_fields(r: random.Random, p: bytes) -> bytes:
    b = bytearray(p)
    what = r.randrange(5)
    if what == 0:
        b[0] = (r.randrange(16) << 4) | (b[0] & 0xF)      # version
    elif what == 1 and b[0] >> 4 == 4:
        b[0] = (b[0] & 0xF0) | r.randrange(16)            # header length
    elif what == 2 and b[0] >> 4 == 4:
        struct.pack_into("!H", b, 2, r.choice((0, 1, 19, 20, len(b) + 1, 65535)))
    elif what == 3 and b[0] >> 4 == 4:
        struct.pack_into("!H", b, 6, r.choice((0x2000, 0x0001, 0x3FFF, 0x4000)))
    elif b[0] >> 4 == 4:
        b[9] = r.choice((1, 6, 17, 58, 255))              # protocol
    else:
        b[6] = r.choice((0, 6, 43, 44, 58, 59, 60))         # IPv6 next header
    return bytes(b)


def tcp_fields(r: random.Random, p: bytes) -> bytes:
    lay = _layout(p)
    if lay is None:
        return flip_bits(r, p)
    ihl, _ = lay
    b = bytearray(p)
    what = r.randrange(4)
    if what == 0:   # flags: any combination
        b[ihl + 13] = r.randrange(256)
    elif what == 1:  # sequence number near or far
        seq = struct.unpack_from("!I", b, ihl + 4)[0]
        step = r.choice((1, -1, 1000, -1000, 65536, 1 << 20, 1 << 31))
        struct.pack_into("!I", b, ihl + 4, (seq + step) & 0xFFFFFFFF)
    elif what == 2:  # acknowledgment number
        ack = struct.unpack_from("!I", b, ihl + 8)[0]
        step = r.choice((1, -1, 100000, 1 << 31, -(1 << 20)))
        struct.pack_into("!I", b, ihl + 8, (ack + step) & 0xFFFFFFFF)
    else:            # data offset
        b[ihl + 12] = (r.randrange(16) << 4) | (b[ihl + 12] & 0xF)
    return bytes(b)


def _mptcp_at(p: bytes, ihl: int, thl: int) -> list[int]:
    """Offsets of the MPTCP options (kind 30) in the TCP header."""
    out, i, end = [], ihl + 20, min(ihl + thl, len(p))
    while i < end:
        kind = p[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end or p[i + 1] < 2:
            break
        if kind == 30:
            out.append(i)
        i += p[i + 1]
    return out


def mptcp_in_place(r: random.Random, p: bytes) -> bytes:
    """Rewrite one MPTCP option of the frame: subtype, length, flags or body bytes."""
    lay = _layout(p)
    if lay is None:
        return flip_bits(r, p)
    at = _mptcp_at(p, *lay)
    if not at:
        return new_mptcp(r, p)
    i = r.choice(at)
    b = bytearray(p)
    n = b[i + 1]
    what = r.randrange(4)
    if what == 0:
        b[i + 2] = (r.randrange(16) << 4) | (b[i + 2] & 0xF)
    elif what == 1:
        b[i + 1] = r.choice((0, 1, 2, 3, 4, n - 1, n + 1, 40, 255))
    elif what == 2:
        b[i + 2] = (b[i + 2] & 0xF0) | r.randrange(16)
        if n > 3:
            b[i + 3] = r.randrange(256)
    else:
        for _ in range(r.randint(1, 4)):
            if n > 2:
                b[i + 2 + r.randrange(n - 2)] = r.randrange(256)
    return bytes(b)


def _u(r: random.Random, bits: int, near: int | None = None) -> int:
    """A value of `bits` bits: an edge, random, or (if given) `near` or next to it."""
    top = (1 << bits) - 1
    pick = r.randrange(5)
    if near is not None and pick < 2:
        return (near + r.choice((0, 0, 1, -1, 2))) & top
    if pick == 2:
        return r.choice((0, 1, top, top >> 1))
    return r.getrandbits(bits)


def random_option(r: random.Random, keys: tuple[int, ...]) -> tcp.UnknownOption:
    """One MPTCP suboption, field by field (or a raw body of any subtype)."""
    key = r.choice(keys) if keys and r.random() < 0.6 else None
    v4 = bytes(r.randbytes(4)) if r.random() < 0.5 else ip("10.0.2.2")
    sub = r.randrange(12)
    o: wm.MptcpOption
    if sub == 0:
        o = wm.MpCapable(r.choice((0, 1, 1, 2, 15)), r.randrange(256),
                         r.choice((None, _u(r, 64, key))), r.choice((None, _u(r, 64, key))),
                         r.choice((None, _u(r, 16))), r.choice((None, _u(r, 16))))
    elif sub == 1:
        o = wm.MpJoinSyn(r.random() < 0.5, _u(r, 8), _u(r, 32), _u(r, 32))
    elif sub == 2:
        o = wm.MpJoinSynAck(r.random() < 0.5, _u(r, 8), _u(r, 64), _u(r, 32))
    elif sub == 3:
        o = wm.MpJoinAck(r.randbytes(20))
    elif sub == 4:
        d64, a64 = r.random() < 0.5, r.random() < 0.5
        has_map = r.random() < 0.7
        o = wm.Dss(data_ack=r.choice((None, _u(r, 64 if a64 else 32))), data_ack64=a64,
                   dsn=_u(r, 64 if d64 else 32) if has_map else None, dsn64=d64,
                   ssn=_u(r, 32) if has_map else 0, data_len=_u(r, 16) if has_map else 0,
                   checksum=r.choice((None, _u(r, 16))) if has_map else None,
                   data_fin=r.random() < 0.2)
    elif sub == 5:
        o = wm.AddAddr(_u(r, 8), v4 if r.random() < 0.7 else r.randbytes(16),
                       r.choice((None, _u(r, 16))), r.choice((None, _u(r, 64))),
                       r.random() < 0.3, r.choice((0, 1)))
    elif sub == 6:
        o = wm.RemoveAddr(tuple(_u(r, 8) for _ in range(r.randint(1, 8))))
    elif sub == 7:
        o = wm.MpPrio(r.random() < 0.5, r.choice((None, _u(r, 8))))
    elif sub == 8:
        o = wm.MpFail(_u(r, 64))
    elif sub == 9:
        o = wm.MpFastclose(_u(r, 64, key))
    elif sub == 10:
        o = wm.MpTcpRst(_u(r, 8), _u(r, 4))
    else:  # any subtype, any body
        return tcp.UnknownOption(30, bytes((r.randrange(256),)) + r.randbytes(r.randint(0, 30)))
    try:
        return wm.to_tcp_option(o)
    except (ValueError, struct.error, OverflowError):
        return tcp.UnknownOption(30, bytes((sub << 4,)) + r.randbytes(r.randint(0, 22)))


KEYS: tuple[int, ...] = ()  # the live connections' keys (set per connection)


def new_mptcp(r: random.Random, p: bytes) -> bytes:
    """The frame with its TCP options replaced by generated MPTCP options (IPv4)."""
    lay = _layout(p)
    if lay is None or p[0] >> 4 != 4:
        return set_bytes(r, p)
    ihl, _ = lay
    try:
        hdr, doff = tcp.parse(p[ihl:])
    except MalformedPacket:
        return set_bytes(r, p)
    opts: list[tcp.TcpOption] = [o for o in hdr.options if type(o) is tcp.Timestamps]
    room = 40 - (12 if opts else 0)
    for _ in range(r.randint(1, 3)):
        o = random_option(r, KEYS)
        if len(o.data) + 2 <= room:
            opts.append(o)
            room -= len(o.data) + 2
    h = tcp.TcpHeader(hdr.src_port, hdr.dst_port, hdr.seq, hdr.ack, hdr.flags, hdr.window,
                      opts)
    try:
        seg = tcp.emit(h, p[ihl + doff:], p[12:16], p[16:20])
    except (ValueError, struct.error):
        return set_bytes(r, p)
    head = bytearray(p[:ihl])
    struct.pack_into("!H", head, 2, ihl + len(seg))
    return bytes(head) + seg


def garbage(r: random.Random, p: bytes) -> bytes:
    """Random bytes behind the frame's IP header."""
    n = 40 if p and p[0] >> 4 == 6 else 20
    return p[:n] + r.randbytes(r.randint(0, 80))


MUTATIONS: dict[str, Callable[[random.Random, bytes], bytes]] = {
    "flip-bits": flip_bits, "set-bytes": set_bytes, "truncate": truncate, "grow": grow,
    "ip-fields": ip_fields, "tcp-fields": tcp_fields, "mptcp-in-place": mptcp_in_place,
    "new-mptcp": new_mptcp, "garbage": garbage,
}
WEIGHTS = {"flip-bits": 3, "set-bytes": 2, "truncate": 1, "grow": 1, "ip-fields": 1,
           "tcp-fields": 3, "mptcp-in-place": 4, "new-mptcp": 5, "garbage": 1}


# ---- the run -----------------------------------------------------------------------------
def _pair(r: random.Random, n: int) -> tuple[Stack, Stack, dict[str, Any]]:
    """Two stacks for connection number `n`: the variants in turn."""
    from tests.sim.apps import multipath_pair
    from tests.sim.net import LinkProfile
    variant = n % 5
    cfg = MptcpConfig(checksum=variant == 1, version=0 if variant == 2 else 1)
    if variant == 3:  # plain TCP
        a = Stack([ip("10.0.1.2")], rng=random.Random(r.random()),
                  config=StackConfig(mptcp=None))
        b = Stack([ip("10.0.1.1")], rng=random.Random(r.random()),
                  config=StackConfig(mptcp=None))
        return a, b, {"server": ip("10.0.1.1"), "join": None, "announce": None}
    if variant == 4:  # IPv6
        from tests.sim.test_ipv6_sim import A6, B6, v6_pair
        a, b, _ = v6_pair(r.randrange(1 << 30), LinkProfile(), True)
        return a, b, {"server": B6, "join": None, "announce": None, "client": A6}
    a, b, _ = multipath_pair(seed=r.randrange(1 << 30), cfg_a=cfg, cfg_b=cfg)
    return a, b, {"server": ip("10.0.1.1"), "join": [(ip("10.0.2.2"), False)],
                  "announce": [ip("10.0.2.1")]}


def run(frames: int, seed: int, per_packet: int = 3, data: int = 200_000,
        on_connection: Callable[[Report], None] | None = None) -> Report:
    """Connections one after the other, each fed mutants, until `frames` were fed."""
    r = random.Random(seed)
    rep = Report()
    t0 = time.monotonic()
    while rep.frames < frames:
        _connection(r, rep, frames, per_packet, data)
        rep.seconds = time.monotonic() - t0
        rep.rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if on_connection is not None:
            on_connection(rep)
    return rep


def _connection(r: random.Random, rep: Report, frames: int, per_packet: int,
                data: int) -> None:
    """One connection (the variant by its number): a transfer each way, every packet
    delivered to either stack followed by `per_packet` mutants of it; then the
    accounting of both stacks."""
    from tests.sim.apps import bulk
    from tests.sim.net import LinkProfile, SimNet

    a, b, how = _pair(r, rep.pairs)
    rep.pairs += 1
    net = SimNet([a, b], seed=r.randrange(1 << 30),
                 profile=LinkProfile(delay=0.002, rate_bps=50e6, loss=0.01))
    names = list(MUTATIONS)
    weights = [WEIGHTS[n] for n in names]

    def hooked(stack: Stack) -> Callable[..., None]:
        real = stack.feed

        def feed(packet: bytes, now: float, csum_ok: bool = False) -> None:
            global KEYS
            rep.real += 1
            _guard(rep, "feed(real)", packet, partial(real, packet, now, csum_ok))
            KEYS = _keys(a, b)
            for _ in range(per_packet if rep.frames < frames else 0):
                kind = r.choices(names, weights)[0]
                m = MUTATIONS[kind](r, bytes(packet)) if packet else b""
                if m and r.random() < 0.8:
                    m = fix_checksums(m)
                rep.kinds[kind] += 1
                rep.frames += 1
                _guard(rep, f"feed({kind})", m, partial(real, m, now, csum_ok))
        return feed

    a.feed = hooked(a)  # type: ignore[method-assign]
    b.feed = hooked(b)  # type: ignore[method-assign]
    payload = r.randbytes(data)
    _guard(rep, "connection", b"", partial(
        bulk, a, b, net, payload, payload[::-1], max_time=30, server=how["server"],
        join_from=how["join"], announce=how["announce"]))
    _guard(rep, "timers", b"", partial(net.run, 3.0))
    for s in (a, b):
        c = s.counters
        for k, v in s.all_counters().items():
            if not str(k).startswith("Drop:"):
                rep.counters[str(k)] += v
        drops = sum(v for k, v in c.items() if k.startswith("Drop:"))
        for k, v in c.items():
            if k.startswith("Drop:"):
                rep.drops[k] += v
        if c["InReceives"] != c["InDelivers"] + drops:
            rep.accounting.append(f"connection {rep.pairs}: InReceives {c['InReceives']} "
                                  f"!= InDelivers {c['InDelivers']} + drops {drops}")


def _keys(a: Stack, b: Stack) -> tuple[int, ...]:
    out = []
    for s in (a, b):
        for c in list(s.conns.values())[:4]:
            msk = c.msk
            if msk is not None:
                out.append(msk.local_key)
                if msk.remote_key is not None:
                    out.append(msk.remote_key)
    return tuple(out)


def _guard(rep: Report, where: str, frame: bytes, call: Callable[[], object]) -> None:
    try:
        call()
    except Exception as e:  # the finding: whatever escapes is a bug to report
        rep.exceptions.append({"where": where, "error": f"{type(e).__name__}: {e}",
                               "traceback": traceback.format_exc(limit=-14),
                               "frame": frame.hex()})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.sim.fuzz", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=100_000,
                   help="mutated frames to feed (default 100000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--per-packet", type=int, default=3,
                   help="mutants of each real packet (default 3)")
    p.add_argument("--show", type=int, default=3, help="exceptions printed in full")
    args = p.parse_args(argv)

    def progress(rep: Report) -> None:
        if sys.stderr.isatty():
            print(f"\r{rep.line()}", end="", file=sys.stderr, flush=True)

    rep = run(args.frames, args.seed, args.per_packet, on_connection=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(rep.line())
    print("mutations: " + ", ".join(f"{k} {v}" for k, v in rep.kinds.most_common()))
    print("top drop reasons: " + ", ".join(f"{k[5:]} {v}" for k, v in
                                           rep.drops.most_common(8)))
    deep = [(k, v) for k, v in rep.counters.most_common() if v and any(
        k.startswith(p) for p in ("MP", "AddAddr", "DSS", "RmAddr", "Data", "NoDSS",
                                  "TCPChallenge", "TCPSYNChallenge", "Echo", "OFO"))]
    print("how deep they went (MPTCP and RFC 5961 counters): " +
          ", ".join(f"{k} {v}" for k, v in deep[:24]))
    seen: set[str] = set()
    for e in rep.exceptions:
        where = e["traceback"].strip().splitlines()[-2].strip()
        if where in seen or len(seen) >= args.show:
            continue
        seen.add(where)
        print(f"\n{e['where']}: {e['error']}\n{e['traceback']}frame {e['frame']}")
    for line in rep.accounting[:args.show]:
        print(line)
    return 1 if rep.exceptions or rep.accounting else 0


if __name__ == "__main__":
    sys.exit(main())
