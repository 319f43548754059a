#!/usr/bin/env python3
"""Capture IP packets on one interface (AF_PACKET), as hex lines or pcap; and the
recipe that produced the golden vectors in tests/unit/golden.py.

    tools/capture.py sniff -i path1 --netns mptcp-peer --count 10 [-o FILE] [--format hex|pcap]
    tools/capture.py golden -o tests/unit/golden.py      # needs root; builds its own topology

`sniff` uses an AF_PACKET SOCK_DGRAM socket (ETH_P_ALL, keeping IPv4), so the kernel strips
the link-layer header (14 bytes on a veth, none on a TUN) and we get IPv4 packets as they
crossed the interface, both directions. Hex format: one line per packet,
`in|out <hex>`. Pcap format: LINKTYPE_RAW (101), readable by tshark. Standalone
(stdlib only) so it runs with a bare python3 inside a namespace; `--netns NS` re-runs
itself under `ip netns exec NS`.

Checksums: on a veth the kernel may leave TCP checksums partial (checksum offload) and
send 64 KB GSO packets; for faithful captures turn offloads off on both ends first
(`ethtool -K path1 tx off tso off gso off gro off`), as `golden` does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TextIO

ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
LINKTYPE_RAW = 101


class PcapWriter:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_RAW))

    def write(self, ts: float, pkt: bytes) -> None:
        sec = int(ts)
        self.f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(pkt), len(pkt)))
        self.f.write(pkt)
        self.f.flush()


def open_socket(iface: str) -> socket.socket:
    # ETH_P_ALL, not ETH_P_IP: a protocol-specific packet socket sees only received
    # packets; outgoing ones are handed to ETH_P_ALL taps only (dev_queue_xmit_nit).
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    s.bind((iface, ETH_P_ALL))
    return s


def matches(pkt: bytes, proto: str | None, port: int | None) -> bool:
    if len(pkt) < 20 or pkt[0] >> 4 != 4:
        return False
    p = pkt[9]
    if proto is not None and p != {"tcp": 6, "udp": 17, "icmp": 1}[proto]:
        return False
    if port is not None:
        if p not in (6, 17):
            return False
        ihl = (pkt[0] & 15) * 4
        if len(pkt) < ihl + 4:
            return False
        sport, dport = struct.unpack_from("!HH", pkt, ihl)
        return port in (sport, dport)
    return True


def sniff(args: argparse.Namespace) -> int:
    if args.netns:
        argv = [a for a in sys.argv[1:]]
        i = argv.index("--netns")
        del argv[i:i + 2]
        os.execvp("ip", ["ip", "netns", "exec", args.netns, sys.executable,
                         os.path.abspath(__file__), *argv])
    s = open_socket(args.interface)
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    out_b: BinaryIO | None = None
    out_t: TextIO | None = None
    pcap: PcapWriter | None = None
    if args.format == "pcap":
        out_b = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
        pcap = PcapWriter(out_b)
    else:
        out_t = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115
    print(f"capture: listening on {args.interface}", file=sys.stderr, flush=True)
    end = time.monotonic() + args.timeout if args.timeout else None
    n = 0
    s.settimeout(0.1)
    while not stop and (args.count is None or n < args.count):
        if end is not None and time.monotonic() >= end:
            break
        try:
            pkt, sll = s.recvfrom(262144)
        except TimeoutError:
            continue
        except InterruptedError:
            continue
        if sll[1] != ETH_P_IP or not matches(pkt, args.proto, args.port):
            continue
        n += 1
        if pcap is not None:
            pcap.write(time.time(), pkt)
        else:
            assert out_t is not None
            direction = "out" if sll[2] == PACKET_OUTGOING else "in"
            out_t.write(f"{direction} {pkt.hex()}\n")
            out_t.flush()
    for f in (out_b, out_t):
        if f is not None and f not in (sys.stdout, sys.stdout.buffer):
            f.close()
    return 0


# --- the golden-vector recipe -------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
KPEER = REPO / "tests" / "interop" / "kpeer.py"


class Recipe:
    """Kernel <-> kernel traffic in a private topology, captured on the peer's path1."""

    def __init__(self) -> None:
        self.prefix = f"g{os.getpid() % 10000}"
        self.user = f"{self.prefix}-user"
        self.peer = f"{self.prefix}-peer"

    def sh(self, *cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)

    def ns(self, ns: str, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.sh("ip", "netns", "exec", ns, *cmd, **kw)

    def up(self) -> None:
        self.sh(str(REPO / "netns-setup.sh"), "up", "--paths", "1", "--prefix", self.prefix)
        for ns in (self.user, self.peer):
            self.ns(ns, "ethtool", "-K", "path1", "tx", "off", "tso", "off", "gso", "off",
                    "gro", "off")

    def down(self) -> None:
        self.sh(str(REPO / "netns-setup.sh"), "down", "--prefix", self.prefix, check=False)

    def capture(self, action: Callable[[], Any], port: int | None = None, proto: str | None = None,
                settle: float = 0.3) -> list[tuple[str, bytes]]:
        cmd = ["ip", "netns", "exec", self.peer, sys.executable, os.path.abspath(__file__),
               "sniff", "-i", "path1", "--timeout", "30"]
        if port is not None:
            cmd += ["--port", str(port)]
        if proto is not None:
            cmd += ["--proto", proto]
        cap = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert cap.stderr is not None
        cap.stderr.readline()  # "capture: listening on path1"
        try:
            action()
            time.sleep(settle)
        finally:
            cap.send_signal(signal.SIGTERM)
            out, _ = cap.communicate(timeout=10)
        pkts = []
        for line in out.splitlines():
            d, h = line.split()
            pkts.append((d, bytes.fromhex(h)))
        return pkts

    def kpeer(self, ns: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(KPEER), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_listen(self, port: int) -> None:
        for _ in range(200):
            if self.ns(self.peer, "ss", "-Hltn", f"sport = :{port}").stdout.strip():
                return
            time.sleep(0.02)
        raise TimeoutError(port)

    def exchange(self, port: int, client_args: list[str], server_args: list[str]
                 ) -> tuple[list[tuple[str, bytes]], dict[str, Any], dict[str, Any]]:
        srv = self.kpeer(self.peer, "server", "--port", str(port), "--once", *server_args)
        self.wait_listen(port)
        res: dict[str, Any] = {}

        def act() -> None:
            cp = self.ns(self.user, sys.executable, str(KPEER), "client", "10.0.1.1", str(port),
                         "--bind", "10.0.1.254", *client_args)
            res["client"] = json.loads(cp.stdout.splitlines()[-1])
            out, _ = srv.communicate(timeout=30)
            res["server"] = json.loads(out.splitlines()[-1])

        pkts = self.capture(act, port=port)
        return pkts, res["client"], res["server"]


def _tcp(pkt: bytes) -> tuple[int, int, bytes]:
    """(flags, payload length, options) of an IPv4/TCP packet."""
    ihl = (pkt[0] & 15) * 4
    total = struct.unpack_from("!H", pkt, 2)[0]
    doff = (pkt[ihl + 12] >> 4) * 4
    return pkt[ihl + 13], total - ihl - doff, pkt[ihl + 20:ihl + doff]


def _has_option(opts: bytes, kind: int, subtype: int | None = None) -> bool:
    i = 0
    while i < len(opts):
        k = opts[i]
        if k == 0:
            return False
        if k == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            return False
        if k == kind and (subtype is None or (opts[i + 2] >> 4) == subtype):
            return True
        i += opts[i + 1]
    return False


def golden(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("capture.py golden: must run as root", file=sys.stderr)
        return 1
    r = Recipe()
    entries: list[tuple[str, str, bytes]] = []  # (name, how, packet)

    def pick(pkts: list[tuple[str, bytes]], pred: Callable[[bytes], Any], what: str) -> bytes:
        for _, p in pkts:
            if pred(p):
                return p
        raise RuntimeError(f"no packet for {what}: {[p.hex() for _, p in pkts]}")

    kernel = os.uname().release
    try:
        r.up()
        def c2p(p: bytes) -> bool:  # client -> peer
            return p[12:16] == bytes([10, 0, 1, 254])

        def p2c(p: bytes) -> bool:
            return p[12:16] == bytes([10, 0, 1, 1])

        S, A, F, R, _P = 0x02, 0x10, 0x01, 0x04, 0x08

        # 1. Plain TCP: handshake, data, FIN.
        data = b"golden vector: kernel TCP data segment\n"
        Path("/tmp/golden-data").write_bytes(data)
        pkts, cli, srv = r.exchange(7000, ["--send", "/tmp/golden-data"], [])
        how = (f"kernel {kernel} TCP client (10.0.1.254, user ns) -> kernel server 10.0.1.1:7000"
               f" (peer ns), offloads off, captured on the peer's path1")
        entries += [
            ("TCP_SYN", f"SYN; {how}",
             pick(pkts, lambda p: c2p(p) and _tcp(p)[0] == S, "SYN")),
            ("TCP_SYNACK", f"SYN/ACK; {how}",
             pick(pkts, lambda p: p2c(p) and _tcp(p)[0] == S | A, "SYN/ACK")),
            ("TCP_ACK", f"pure ACK (third ACK, timestamps); {how}",
             pick(pkts, lambda p: c2p(p) and _tcp(p)[0] == A and _tcp(p)[1] == 0, "ACK")),
            ("TCP_DATA", f"data segment ({len(data)} bytes, PSH/ACK); {how}",
             pick(pkts, lambda p: c2p(p) and _tcp(p)[1] > 0, "data")),
            ("TCP_FIN", f"FIN/ACK from the client after its data; {how}",
             pick(pkts, lambda p: c2p(p) and _tcp(p)[0] & F, "FIN")),
        ]

        # 2. RST from a closed port.
        def connect_closed() -> None:
            r.ns(r.user, sys.executable, str(KPEER), "client", "10.0.1.1", "7001",
                 "--bind", "10.0.1.254", check=False)

        pkts = r.capture(connect_closed, port=7001)
        entries.append(("TCP_RST", (f"RST/ACK from kernel {kernel} peer 10.0.1.1 for a SYN to "
                        "closed port 7001, captured on the peer's path1"),
                        pick(pkts, lambda p: p2c(p) and _tcp(p)[0] & R, "RST")))

        # 3. SACK: the peer's input drops the 2nd full-size data segment once
        #    (numgen counts only the large segments this rule sees; the retransmission
        #    passes), so segments 3.. arrive out of order and the peer SACKs them.
        r.ns(r.peer, "nft", "-f", "-", input="""
table ip golden {
    chain input {
        type filter hook input priority 0;
        tcp dport 7002 meta length > 1000 numgen inc mod 1000000 == 1 drop
    }
}
""")
        try:
            pkts, cli, srv = r.exchange(7002, ["--send-bytes", "20000"], [])
        finally:
            r.ns(r.peer, "nft", "delete", "table", "ip", "golden", check=False)
        entries.append(("TCP_SACK", (f"ACK with a SACK block from kernel {kernel} server 10.0.1.1:"
                        "7002 after its nft input hook dropped the client's 2nd data segment "
                        "once (20000 bytes sent), captured on the peer's path1"),
                        pick(pkts, lambda p: p2c(p) and _has_option(_tcp(p)[2], 5), "SACK")))

        # 4. MPTCP: MP_CAPABLE handshake and DSS data.
        # The server echoes, so the client's data is surely the first data segment
        # (MP_CAPABLE + data) and the server's echo carries a DSS mapping.
        pkts, cli, srv = r.exchange(7003, ["--mptcp", "--send-bytes", "100"],
                                    ["--mptcp", "--echo"])
        how = (f"kernel {kernel} MPTCP client socket(AF_INET, SOCK_STREAM, 262) 10.0.1.254 -> "
               f"kernel MPTCP server 10.0.1.1:7003; client token {cli['token']}, server token "
               f"{srv['token']} (MPTCP_INFO); captured on the peer's path1")
        def mpc(p: bytes) -> bool:
            return _has_option(_tcp(p)[2], 30, 0)

        def dss(p: bytes) -> bool:
            return _has_option(_tcp(p)[2], 30, 2)

        entries += [
            ("MPTCP_SYN", f"SYN with MP_CAPABLE; {how}",
             pick(pkts, lambda p: c2p(p) and _tcp(p)[0] == S and mpc(p), "MPC SYN")),
            ("MPTCP_SYNACK", f"SYN/ACK with MP_CAPABLE (server key); {how}",
             pick(pkts, lambda p: p2c(p) and _tcp(p)[0] == S | A and mpc(p), "MPC SYN/ACK")),
            ("MPTCP_ACK", f"third ACK with MP_CAPABLE (both keys); {how}",
             pick(pkts, lambda p: c2p(p) and _tcp(p)[0] == A and _tcp(p)[1] == 0 and mpc(p),
                  "MPC ACK")),
            ("MPTCP_DATA_MPC", (f"client's first data segment (100 bytes), MP_CAPABLE with data "
             f"length; {how}"),
             pick(pkts, lambda p: c2p(p) and _tcp(p)[1] > 0 and mpc(p), "MPC data")),
            ("MPTCP_DATA_DSS", f"server's data segment (the 100 bytes echoed) with DSS; {how}",
             pick(pkts, lambda p: p2c(p) and _tcp(p)[1] > 0 and dss(p), "DSS data")),
        ]
        tokens = {"client": cli["token"], "server": srv["token"]}

        # 5. ICMP echo, and port unreachable for UDP to a closed port.
        pkts = r.capture(lambda: r.ns(r.user, "ping", "-c", "1", "-W", "2", "-p", "a5",
                                      "10.0.1.1"), proto="icmp")
        how = f"`ping -c 1 -p a5 10.0.1.1` from the user ns, kernel {kernel}, peer's path1"
        entries += [
            ("ICMP_ECHO_REQUEST", f"echo request; {how}",
             pick(pkts, lambda p: c2p(p) and p[20] == 8, "echo request")),
            ("ICMP_ECHO_REPLY", f"echo reply from the peer's kernel; {how}",
             pick(pkts, lambda p: p2c(p) and p[20] == 0, "echo reply")),
        ]

        def udp_closed() -> None:
            r.ns(r.user, sys.executable, "-c",
                 "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                 "s.bind(('10.0.1.254', 40000)); s.sendto(b'golden udp probe', "
                 "('10.0.1.1', 7999))")

        pkts = r.capture(udp_closed, proto="icmp")
        entries.append(("ICMP_PORT_UNREACH", (f"port unreachable from kernel {kernel} peer "
                        "10.0.1.1 for a UDP datagram 10.0.1.254:40000 -> 10.0.1.1:7999 (closed),"
                        " captured on the peer's path1"),
                        pick(pkts, lambda p: p2c(p) and p[20] == 3, "port unreachable")))
    finally:
        r.down()

    out = [
        '"""Golden vectors: IPv4 packets captured from the Linux kernel in the test topology.',
        "",
        "Produced by `tools/capture.py golden -o tests/unit/golden.py` (root): a private",
        "netns-setup.sh topology (--paths 1), checksum/segmentation offloads off on both ends",
        "of path1, kernel-to-kernel traffic captured with an AF_PACKET socket on the",
        "peer's path1 (link-layer header stripped). Every packet is exactly as the kernel sent",
        "it, checksums included. Do not edit by hand; regenerate.",
        '"""',
        "",
        f"KERNEL = {kernel!r}",
        "",
        "# MPTCP tokens of the MPTCP_* connection, from the kernel (getsockopt MPTCP_INFO):",
        "# token = first 4 bytes of SHA-256(key), the client key is in MPTCP_ACK.",
        f"MPTCP_CLIENT_TOKEN = {tokens['client']!r}",
        f"MPTCP_SERVER_TOKEN = {tokens['server']!r}",
        "",
    ]
    write_vectors(out, entries, "GOLDEN", args.output)
    return 0


def write_vectors(head: list[str], entries: list[tuple[str, str, bytes]], table: str,
                  output: str | None) -> None:
    """A vectors module: `head` (its docstring and constants), then each packet as a
    commented `bytes.fromhex` constant, then `table` naming them all; to `output` or
    stdout."""
    out = list(head)
    for name, how, pkt in entries:
        out += textwrap.wrap(how, 96, initial_indent="# ", subsequent_indent="# ")
        h = pkt.hex()
        out.append(f"{name} = bytes.fromhex(")
        for i in range(0, len(h), 80):
            out.append(f'    "{h[i:i + 80]}"')
        out.append(")")
        out.append("")
    out.append(f"{table}: dict[str, bytes] = {{")
    for name, _, _ in entries:
        out.append(f'    "{name}": {name},')
    out.append("}")
    text = "\n".join(out) + "\n"
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="capture.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("sniff", help="capture IPv4 packets on an interface")
    sp.add_argument("-i", "--interface", required=True)
    sp.add_argument("--netns", help="run inside this network namespace")
    sp.add_argument("-c", "--count", type=int, help="stop after N packets")
    sp.add_argument("-t", "--timeout", type=float, help="stop after S seconds")
    sp.add_argument("--format", choices=("hex", "pcap"), default="hex")
    sp.add_argument("-o", "--output", help="file (default stdout)")
    sp.add_argument("--proto", choices=("tcp", "udp", "icmp"))
    sp.add_argument("--port", type=int, help="TCP/UDP source or destination port")
    sp = sub.add_parser("golden", help="regenerate tests/unit/golden.py (root)")
    sp.add_argument("-o", "--output")
    a = p.parse_args(argv)
    return sniff(a) if a.cmd == "sniff" else golden(a)


if __name__ == "__main__":
    sys.exit(main())
