"""A SYN flood from spoofed sources, as fast as one Python process can send.

    python tests/interop/synflood.py DST PORT --seconds S [--kind mix|plain|mpc|join]

Run as root in the namespace that floods (the peer's). Packets are built once (4096 of
them, random source addresses in 198.18.0.0/15, the benchmarking range, random ports,
random ISNs) and sent in a loop over a raw socket (IP_HDRINCL): plain SYNs, SYNs with
MP_CAPABLE v1, and MP_JOIN SYNs naming random tokens; `mix` cycles through the three.
Prints one JSON object: packets sent, seconds, rate."""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stack.wire import ipv4, tcp
from stack.wire import mptcp as wm

KINDS = ("plain", "mpc", "join")


def syn(r: random.Random, dst: bytes, port: int, kind: str) -> bytes:
    src = bytes((198, 18 + r.randrange(2), r.randrange(256), r.randrange(1, 255)))
    opts: list[tcp.TcpOption] = [tcp.Mss(1460), tcp.SackPermitted(),
                                 tcp.Timestamps(r.getrandbits(32), 0), tcp.Nop(),
                                 tcp.WindowScale(7)]
    if kind == "mpc":
        opts.append(wm.to_tcp_option(wm.MpCapable(1, 0x01)))
    elif kind == "join":
        opts.append(wm.to_tcp_option(wm.MpJoinSyn(False, r.randrange(256),
                                                  r.getrandbits(32), r.getrandbits(32))))
    h = tcp.TcpHeader(r.randrange(1024, 65536), port, r.getrandbits(32), 0, tcp.SYN,
                      64240, opts)
    seg = tcp.emit(h, b"", src, dst)
    return ipv4.emit(ipv4.IPv4Header(src, dst, ipv4.PROTO_TCP), len(seg)) + seg


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dst")
    p.add_argument("port", type=int)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--kind", choices=("mix", *KINDS), default="mix")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    r = random.Random(args.seed)
    dst = socket.inet_aton(args.dst)
    kinds = KINDS if args.kind == "mix" else (args.kind,)
    pkts = [syn(r, dst, args.port, kinds[i % len(kinds)]) for i in range(4096)]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    to = (args.dst, 0)
    sent = errors = 0
    t0 = time.monotonic()
    end = t0 + args.seconds
    send = s.sendto
    while time.monotonic() < end:
        for pkt in pkts:  # a batch between clock reads
            try:
                send(pkt, to)
                sent += 1
            except OSError:  # ENOBUFS: the device queue is full; go on
                errors += 1
    secs = time.monotonic() - t0
    print(json.dumps({"sent": sent, "send_errors": errors, "seconds": round(secs, 3),
                      "rate_pps": round(sent / secs), "kinds": list(kinds)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
