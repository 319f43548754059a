"""`--trace`: the TCP handshake (and teardown) as a ladder on stderr.

A packet tap (`Stack.tap`): it decodes each IP/TCP packet on its own, so it shows what
is on the wire, not what the engine believes. SYN, FIN and RST segments are always
shown, plus the first few segments each way once established; the rest is counted and
summarised when the connection ends. Sequence numbers are shown relative to each
side's ISN (as Wireshark does) after the SYN, which shows the absolute ISN.
"""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from stack.wire import MalformedPacket, ipv4, tcp
from stack.wire.tcp import ACK, FIN, RST, SYN

SHOW_DATA = 3  # data/ACK segments shown each way after the handshake
WIDTH = 34


def describe_options(opts: list[tcp.TcpOption]) -> str:
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
            parts.append("sack " + " ".join(f"{l}:{r}" for l, r in o.blocks))
        elif isinstance(o, tcp.Nop):
            parts.append("nop")
        elif isinstance(o, tcp.Eol):
            parts.append("eol")
        elif isinstance(o, tcp.UnknownOption):
            parts.append(f"opt-{o.kind} len {len(o.data) + 2}")
    return ", ".join(parts)


@dataclass
class _Flow:
    ours: tuple[str, int]
    peer: tuple[str, int]
    t0: float
    isn: dict[str, int] = field(default_factory=dict)  # "in"/"out" -> ISN of that sender
    shown: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    hidden: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    bytes: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    ended: bool = False


class LadderTracer:
    def __init__(self, out: TextIO | None = None, show_data: int = SHOW_DATA) -> None:
        self.out = out or sys.stderr
        self.show_data = show_data
        self.flows: dict[tuple[str, int, str, int], _Flow] = {}

    def __call__(self, direction: str, packet: bytes) -> None:
        try:
            iph, end = ipv4.parse(packet, verify_checksum=False)
            if iph.proto != ipv4.PROTO_TCP or iph.is_fragment:
                return
            seg = memoryview(packet)[iph.header_len:end]
            hdr, doff = tcp.parse(seg)
        except MalformedPacket as e:
            self.out.write(f"  [{direction}] malformed packet: {e}\n")
            return
        src, dst = socket.inet_ntoa(iph.src), socket.inet_ntoa(iph.dst)
        if direction == "out":
            key = (src, hdr.src_port, dst, hdr.dst_port)
        else:
            key = (dst, hdr.dst_port, src, hdr.src_port)
        flow = self.flows.get(key)
        now = time.monotonic()
        if flow is None:
            flow = self.flows[key] = _Flow(key[:2], key[2:], now)
            self.out.write(f"\n  us {key[0]}:{key[1]}{'':{WIDTH - 12}}peer {key[2]}:{key[3]}\n")
        plen = len(seg) - doff
        flow.bytes[direction] += plen
        control = hdr.flags & (SYN | FIN | RST)
        if hdr.flags & SYN:
            flow.isn[direction] = hdr.seq
        if not control and flow.shown[direction] >= self.show_data:
            flow.hidden[direction] += 1
            return
        if not control:
            flow.shown[direction] += 1
        self._line(flow, direction, hdr, plen, now)
        if hdr.flags & RST or (hdr.flags & FIN and direction == "in" and not flow.ended):
            if hdr.flags & RST:
                flow.ended = True
            self._summary(flow)

    def _line(self, flow: _Flow, direction: str, hdr: tcp.TcpHeader, plen: int, now: float) -> None:
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
        opts = describe_options(hdr.options)
        if opts:
            fields.append(f"[{opts}]")
        label = f" {name} "
        if direction == "out":
            arrow = "--" + label + "-" * max(1, WIDTH - len(label) - 3) + ">"
        else:
            arrow = "<" + "-" * max(1, WIDTH - len(label) - 3) + label + "--"
        self.out.write(f"  {now - flow.t0:9.6f}  us {arrow} peer   {' '.join(fields)}\n")

    def _summary(self, flow: _Flow) -> None:
        h = flow.hidden
        if h["in"] or h["out"]:
            self.out.write(f"  {'':9}  ... {h['out']} more segments out, {h['in']} in "
                           f"({flow.bytes['out']} bytes sent, {flow.bytes['in']} received)\n")
            h["in"] = h["out"] = 0
