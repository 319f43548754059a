"""Forged segments from the peer namespace at a live connection of our stack.

    python tests/interop/forge.py --dev path1 --ours 10.0.1.2 --port 7810

Run as root in the namespace of the kernel peer, before a kernel MPTCP client there
sends to our listener and pauses. It watches the kernel's own segments on --dev (a
packet socket) to learn the connection's 4-tuple, the kernel's next sequence number and
its last acknowledgment of ours (an on-path view: what an attacker in the window
needs); once the connection is quiet (the pause), it sends, as
the kernel and through a raw socket, each forgery (`python ... --list`) three times, and
prints one JSON object: what it sent."""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stack.wire import ipv4, tcp
from stack.wire import mptcp as wm

ETH_P_ALL = 0x0003  # (a protocol-specific packet socket sees no outgoing packets)
FAR = 1 << 30


def watch(dev: str, ours: bytes, port: int, quiet: float = 0.7,
          timeout: float = 20.0) -> dict[str, int]:
    """The kernel's latest segment to us on `dev` (4-tuple, seq + length, ack) once
    the connection has gone quiet for `quiet` seconds (the sender's pause: the numbers
    hold still)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    s.bind((dev, 0))
    s.settimeout(0.1)
    last: dict[str, int] = {}
    end = time.monotonic() + timeout
    heard = 0.0
    while time.monotonic() < end:
        if last and time.monotonic() - heard >= quiet:
            break
        try:
            pkt = s.recv(65535)
        except TimeoutError:
            continue
        if len(pkt) < 40 or pkt[0] >> 4 != 4 or pkt[9] != 6 or pkt[16:20] != ours:
            continue
        ihl = (pkt[0] & 0xF) * 4
        sport, dport, seq, ack = struct.unpack_from("!HHII", pkt, ihl)
        if dport != port:
            continue
        doff = (pkt[ihl + 12] >> 4) * 4
        total = struct.unpack_from("!H", pkt, 2)[0]
        heard = time.monotonic()
        last = {"src": int.from_bytes(pkt[12:16], "big"), "sport": sport,
                "nxt": (seq + max(0, min(total, len(pkt)) - ihl - doff)) & 0xFFFFFFFF,
                "ack": ack}
    s.close()
    if not last or time.monotonic() - heard < quiet:
        raise SystemExit("forge: the connection was not seen, or never went quiet")
    return last


def forgeries(rnxt: int, una: int) -> dict[str, tuple[int, int, int, list[tcp.TcpOption],
                                                      bytes]]:
    """name -> (seq, ack, flags, options, payload), from the kernel's next sequence
    number (`rnxt`, what we expect) and the last ACK we sent it (`una`)."""
    opt = wm.to_tcp_option
    A, R, S = tcp.ACK, tcp.RST, tcp.SYN
    key = random.getrandbits(64)
    return {
        "rst outside the window": (rnxt + FAR, 0, R, [], b""),
        "rst inside the window": (rnxt + 100, una, R | A, [], b""),
        "syn inside the window": (rnxt + 5, 0, S, [], b""),
        "data outside the window": (rnxt + FAR, una, A, [], b"x" * 100),
        "data with an ack never sent": (rnxt, una + FAR, A, [], b"x" * 100),
        "mp_fastclose with a wrong key": (rnxt, una, A, [opt(wm.MpFastclose(key))], b""),
        "add_addr with a wrong hmac": (rnxt, una, A, [opt(wm.AddAddr(9, bytes((10, 9, 9, 9)),
                                                                     None, key))], b""),
        "remove_addr outside the window": (rnxt + FAR, una, A,
                                           [opt(wm.RemoveAddr((0, 1)))], b""),
        "mp_prio outside the window": (rnxt + FAR, una, A, [opt(wm.MpPrio(True, None))], b""),
        "mp_tcprst outside the window": (rnxt + FAR, una, R | A,
                                         [opt(wm.MpTcpRst(1, 0))], b""),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dev", default="path1")
    p.add_argument("--ours", default="10.0.1.2")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--times", type=int, default=3)
    p.add_argument("--list", action="store_true")
    args = p.parse_args()
    if args.list:
        print("\n".join(forgeries(0, 0)))
        return 0
    ours = socket.inet_aton(args.ours)
    seen = watch(args.dev, ours, args.port)
    src = seen["src"].to_bytes(4, "big")
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    sent: dict[str, int] = {}
    for name, (seq, ack, flags, opts, payload) in forgeries(seen["nxt"], seen["ack"]).items():
        h = tcp.TcpHeader(seen["sport"], args.port, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags,
                          500, opts)
        seg = tcp.emit(h, payload, src, ours)
        pkt = ipv4.emit(ipv4.IPv4Header(src, ours, ipv4.PROTO_TCP), len(seg)) + seg
        for _ in range(args.times):
            raw.sendto(pkt, (args.ours, 0))
        sent[name] = args.times
        time.sleep(0.02)
    print(json.dumps({"sent": sent, "sport": seen["sport"], "seq": seen["nxt"],
                      "ack": seen["ack"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
