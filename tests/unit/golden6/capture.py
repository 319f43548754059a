#!/usr/bin/env python3
"""The recipe that produced tests/unit/golden6/vectors.py: IPv6 packets captured from
the Linux kernel (root; builds and removes its own topology).

    sudo .venv/bin/python tests/unit/golden6/capture.py golden -o tests/unit/golden6/vectors.py

It runs `./netns-setup.sh up --paths 2 --prefix g6x` (IPv4 only) and adds IPv6 by hand:
fd00:i::1/64 on the peer's path<i>, fd00:i::2/64 on the user namespace's path<i>
(nodad), offloads off on both ends of both paths (complete checksums, no GSO), ICMPv6
error rate limits off in both namespaces. Then kernel-to-kernel traffic between the two
namespaces (the user namespace's kernel is the client, at fd00:1::2), captured with an
AF_PACKET socket on the peer's path1 and path2 (link-layer header stripped, IPv6 only):

- TCP over IPv6, and TCP with sticky IPV6_HOPOPTS + IPV6_DSTOPTS (an experimental
  option 0x1e, action "skip") and with a type-4 routing header (segments left 0);
- MPTCP over IPv6: MP_CAPABLE, DSS, and ADD_ADDR6 from the server's kernel path
  manager (`ip mptcp endpoint add fd00:2::1 dev path2 signal`, then again with
  `port 7204`), its echo, and the client's MP_JOIN towards it. With a port the option
  is 30 bytes, which does not fit beside TCP timestamps (12 of the 40 bytes): the
  kernel drops it (MPTcpExtAddAddrTx 0, AddAddrTxDrop 1), so that connection goes without
  timestamps (net.ipv4.tcp_timestamps=0 on the client);
- ICMPv6: `ping -6` echo; a UDP datagram to a closed port (destination unreachable); a
  2000-byte UDP datagram (two fragments, and the unreachable quoting the reassembled
  datagram); packet too big and time exceeded from the user namespace acting as a
  router (forwarding on, path2's MTU lowered to 1280); parameter problems for packets
  crafted with an IPPROTO_RAW socket (unknown next header, unknown option with action
  10, routing header with segments left 1, hop-by-hop not first).

`./netns-setup.sh down --prefix g6x` at the end, whatever happened. Stdlib only (it
re-runs itself inside the namespaces for the sniffers, clients and servers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.capture import write_vectors

REPO = Path(__file__).resolve().parents[3]
SELF = os.path.abspath(__file__)
PREFIX = "g6x"
USER, PEER = f"{PREFIX}-user", f"{PREFIX}-peer"
ETH_P_ALL = 0x0003
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
IPV6_HOPOPTS, IPV6_RTHDR, IPV6_DSTOPTS = 54, 57, 59

PEER1, USER1 = "fd00:1::1", "fd00:1::2"
PEER2, USER2 = "fd00:2::1", "fd00:2::2"
FAR = "fd00:99::5"  # behind the user namespace's router, via path2


def a6(s: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, s)


# --- helpers run inside a namespace ----------------------------------------------------
def sniff(args: argparse.Namespace) -> int:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    s.bind((args.interface, ETH_P_ALL))
    s.settimeout(0.1)
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    print("listening", file=sys.stderr, flush=True)
    while not stop:
        try:
            pkt, sll = s.recvfrom(262144)
        except (TimeoutError, InterruptedError):
            continue
        if sll[1] != ETH_P_IPV6:
            continue
        d = "out" if sll[2] == PACKET_OUTGOING else "in"
        print(f"{time.time():.6f} {d} {pkt.hex()}", flush=True)
    return 0


def mptcp_token(s: socket.socket) -> str | None:
    try:
        raw = s.getsockopt(SOL_MPTCP, MPTCP_INFO, 256)
    except OSError:
        return None
    return f"{struct.unpack_from('=I', raw, 12)[0]:08x}"


def serve(args: argparse.Namespace) -> int:
    proto = IPPROTO_MPTCP if args.mptcp else 0
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, proto)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::", args.port))
    ls.listen(8)
    print("listening", file=sys.stderr, flush=True)
    ls.settimeout(30)
    c, _ = ls.accept()
    n = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        n += len(b)
        if args.echo:
            c.sendall(b)
    tok = mptcp_token(c) if args.mptcp else None
    c.close()
    print(json.dumps({"rx": n, "token": tok}), flush=True)
    return 0


def connect(args: argparse.Namespace) -> int:
    proto = IPPROTO_MPTCP if args.mptcp else 0
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, proto)
    if args.hopopts:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_HOPOPTS, bytes.fromhex(args.hopopts))
    if args.dstopts:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_DSTOPTS, bytes.fromhex(args.dstopts))
    if args.rthdr:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RTHDR, bytes.fromhex(args.rthdr))
    s.bind((args.bind, 0))
    s.settimeout(10)
    s.connect((args.host, args.port))
    s.sendall(args.data.encode())
    got = b""
    if args.echo:
        while len(got) < len(args.data):
            got += s.recv(65536)
    time.sleep(args.linger)
    tok = mptcp_token(s) if args.mptcp else None
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    s.close()
    print(json.dumps({"echo": got.decode(), "token": tok}), flush=True)
    return 0


def rawsend(args: argparse.Namespace) -> int:
    """Send one whole IPv6 packet (hex) with an IPPROTO_RAW socket (header included)."""
    pkt = bytes.fromhex(args.packet)
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(pkt, (socket.inet_ntop(socket.AF_INET6, pkt[24:40]), 0))
    return 0


def udpsend(args: argparse.Namespace) -> int:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    if args.dstopts:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_DSTOPTS, bytes.fromhex(args.dstopts))
    s.bind((args.bind, args.sport))
    s.sendto(args.fill.encode() * (args.size // len(args.fill)), (args.host, args.port))
    return 0


# --- the recipe --------------------------------------------------------------------------
def sh(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


def ns(n: str, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", n, *cmd, **kw)


def me(n: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", n, sys.executable, SELF, *args]


def up() -> None:
    sh(str(REPO / "netns-setup.sh"), "up", "--paths", "2", "--prefix", PREFIX)
    for n in (USER, PEER):
        ns(n, "sysctl", "-q", "-w", "net.ipv6.icmp.ratelimit=0", "net.ipv6.conf.all.seg6_enabled=1",
           "net.ipv6.conf.path1.seg6_enabled=1", "net.ipv6.conf.default.seg6_enabled=1")
        for dev in ("path1", "path2"):
            ns(n, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off")
            ns(n, "sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=0")
    for i in (1, 2):
        sh("ip", "-n", PEER, "addr", "replace", f"fd00:{i}::1/64", "dev", f"path{i}", "nodad")
        sh("ip", "-n", USER, "addr", "replace", f"fd00:{i}::2/64", "dev", f"path{i}", "nodad")
    # the user namespace routes fd00:99::/64 towards the peer over path2 (MTU lowered
    # later); the peer reaches it through path1
    sh("ip", "-n", USER, "-6", "route", "replace", "fd00:99::/64", "via", PEER2, "dev", "path2")
    sh("ip", "-n", PEER, "-6", "route", "replace", "fd00:99::/64", "via", USER1, "dev", "path1")
    sh("ip", "-n", USER, "mptcp", "limits", "set", "subflows", "4", "add_addr_accepted", "4")
    time.sleep(0.5)


def down() -> None:
    sh(str(REPO / "netns-setup.sh"), "down", "--prefix", PREFIX, check=False)


Pkt = tuple[float, str, str, bytes]  # (time, interface, direction, packet)


def capture(action: Callable[[], Any], settle: float = 0.3) -> list[Pkt]:
    caps = []
    for dev in ("path1", "path2"):
        p = subprocess.Popen(me(PEER, "sniff", "-i", dev), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        assert p.stderr is not None
        p.stderr.readline()
        caps.append((dev, p))
    try:
        action()
        time.sleep(settle)
    finally:
        for _, p in caps:
            p.send_signal(signal.SIGTERM)
    pkts: list[Pkt] = []
    for dev, p in caps:
        out, _ = p.communicate(timeout=10)
        for line in out.splitlines():
            t, d, h = line.split()
            pkts.append((float(t), dev, d, bytes.fromhex(h)))
    pkts.sort(key=lambda x: x[0])
    return pkts


def wait_listen(port: int) -> None:
    for _ in range(200):
        if ns(PEER, "ss", "-Hltn", f"sport = :{port}").stdout.strip():
            return
        time.sleep(0.02)
    raise TimeoutError(port)


def exchange(port: int, data: str, mptcp: bool = False, echo: bool = False, linger: float = 0.0,
             **sockopts: str) -> tuple[list[Pkt], dict[str, Any], dict[str, Any]]:
    sargs = ["serve", "--port", str(port)] + (["--mptcp"] if mptcp else []) + \
        (["--echo"] if echo else [])
    srv = subprocess.Popen(me(PEER, *sargs), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    wait_listen(port)
    res: dict[str, Any] = {}
    cargs = ["connect", PEER1, str(port), "--bind", USER1, "--data", data,
             "--linger", str(linger)] + (["--mptcp"] if mptcp else []) + \
        (["--echo"] if echo else [])
    for k, v in sockopts.items():
        cargs += [f"--{k}", v]

    def act() -> None:
        cp = subprocess.run(me(USER, *cargs), capture_output=True, text=True, check=True)
        res["client"] = json.loads(cp.stdout.splitlines()[-1])
        out, _ = srv.communicate(timeout=30)
        res["server"] = json.loads(out.splitlines()[-1])

    pkts = capture(act)
    return pkts, res["client"], res["server"]


# --- looking at captured packets (no ext headers unless said) --------------------------
def nh_walk(p: bytes) -> tuple[int, int]:
    """(upper-layer protocol, offset) after hop-by-hop/routing/dest options."""
    nh, off = p[6], 40
    while nh in (0, 43, 60) and off + 2 <= len(p):
        nh, off = p[off], off + (p[off + 1] + 1) * 8
    return nh, off


def tcp_info(p: bytes) -> tuple[int, int, bytes]:
    """(flags, payload length, options) of an IPv6/TCP packet; (0, -1, b"") if not TCP."""
    nh, off = nh_walk(p)
    if nh != 6:
        return 0, -1, b""
    doff = (p[off + 12] >> 4) * 4
    return p[off + 13], len(p) - off - doff, p[off + 20:off + doff]


def mptcp_subtypes(opts: bytes) -> list[tuple[int, int]]:
    """(subtype, length) of each MPTCP option."""
    out, i = [], 0
    while i < len(opts):
        k = opts[i]
        if k == 0:
            break
        if k == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        if k == 30:
            out.append((opts[i + 2] >> 4, opts[i + 1]))
        i += opts[i + 1]
    return out


def src_is(p: bytes, a: str) -> bool:
    return p[8:24] == a6(a)


def golden(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("capture.py golden: must run as root", file=sys.stderr)
        return 1
    kernel = os.uname().release
    entries: list[tuple[str, str, bytes]] = []
    extra: dict[str, str] = {}

    def pick(pkts: list[Pkt], pred: Callable[[bytes], Any], what: str,
             dev: str | None = None) -> bytes:
        for _, d, _, p in pkts:
            if (dev is None or d == dev) and pred(p):
                return p
        raise RuntimeError(f"no packet for {what}: {[(d, p.hex()) for _, d, _, p in pkts]}")

    S, A, F = 0x02, 0x10, 0x01
    try:
        up()
        # 1. TCP over IPv6.
        data = "golden vector: kernel TCP over IPv6\n"
        pkts, _, _ = exchange(7100, data)
        how = (f"kernel {kernel} TCP client [{USER1}] (user ns) -> kernel server [{PEER1}]:7100"
               " (peer ns), offloads off, captured on the peer's path1")
        c2p = lambda p: src_is(p, USER1)  # noqa: E731
        p2c = lambda p: src_is(p, PEER1)  # noqa: E731
        entries += [
            ("TCP6_SYN", f"SYN; {how}",
             pick(pkts, lambda p: c2p(p) and tcp_info(p)[0] == S, "SYN")),
            ("TCP6_SYNACK", f"SYN/ACK; {how}",
             pick(pkts, lambda p: p2c(p) and tcp_info(p)[0] == S | A, "SYN/ACK")),
            ("TCP6_DATA", f"data segment ({len(data)} bytes, PSH/ACK); {how}",
             pick(pkts, lambda p: c2p(p) and tcp_info(p)[1] > 0, "data")),
            ("TCP6_FIN", f"FIN/ACK from the client; {how}",
             pick(pkts, lambda p: c2p(p) and tcp_info(p)[0] & F, "FIN")),
        ]

        # 2. TCP with hop-by-hop and destination options (sticky socket options).
        hbh, dst = "00001e0401020304", "00001e04a1b2c3d4"
        pkts, _, _ = exchange(7101, "golden vector: with extension headers\n",
                              hopopts=hbh, dstopts=dst)
        how = (f"kernel {kernel} TCP client [{USER1}] -> [{PEER1}]:7101 with setsockopt "
               f"IPV6_HOPOPTS {hbh} and IPV6_DSTOPTS {dst} (option 0x1e, action skip), "
               "captured on the peer's path1")
        entries += [
            ("TCP6_EXT_SYN", f"SYN with hop-by-hop + destination options; {how}",
             pick(pkts, lambda p: c2p(p) and p[6] == 0 and tcp_info(p)[0] == S, "ext SYN")),
            ("TCP6_EXT_DATA", f"data segment with hop-by-hop + destination options; {how}",
             pick(pkts, lambda p: c2p(p) and p[6] == 0 and tcp_info(p)[1] > 0, "ext data")),
        ]

        # 3. TCP with a segment routing header (type 4), segments left 0, whose one
        #    segment is the peer (seg6_enabled on the peer so it accepts it).
        srh = "00020400000000" + "00" + a6(PEER1).hex()
        try:
            pkts, _, _ = exchange(7102, "golden vector: with a routing header\n", rthdr=srh)
        except subprocess.CalledProcessError as e:
            print(f"routing header capture failed: {e.stderr}", file=sys.stderr)
        else:
            how = (f"kernel {kernel} TCP client [{USER1}] -> [{PEER1}]:7102 with setsockopt "
                   f"IPV6_RTHDR {srh} (type 4, segments left 0), peer seg6_enabled, captured on "
                   "the peer's path1")
            entries.append(("TCP6_RTHDR_SYN", f"SYN with a routing header; {how}",
                            pick(pkts, lambda p: c2p(p) and p[6] == 43 and tcp_info(p)[0] == S,
                                 "SRH SYN")))

        # 4. MPTCP over IPv6: MP_CAPABLE, DSS.
        pkts, cli, srv = exchange(7103, "m" * 100, mptcp=True, echo=True)
        how = (f"kernel {kernel} MPTCP client socket(AF_INET6, SOCK_STREAM, 262) [{USER1}] -> "
               f"kernel MPTCP server [{PEER1}]:7103; client token {cli['token']}, server token "
               f"{srv['token']} (MPTCP_INFO); captured on the peer's path1")
        extra["MPTCP6_CLIENT_TOKEN"] = cli["token"]
        extra["MPTCP6_SERVER_TOKEN"] = srv["token"]

        def sub(p: bytes) -> list[int]:
            return [s for s, _ in mptcp_subtypes(tcp_info(p)[2])]

        entries += [
            ("MPTCP6_SYN", f"SYN with MP_CAPABLE; {how}",
             pick(pkts, lambda p: c2p(p) and tcp_info(p)[0] == S and 0 in sub(p), "MPC SYN")),
            ("MPTCP6_SYNACK", f"SYN/ACK with MP_CAPABLE; {how}",
             pick(pkts, lambda p: p2c(p) and tcp_info(p)[0] == S | A and 0 in sub(p),
                  "MPC SYN/ACK")),
            ("MPTCP6_ACK", f"third ACK with MP_CAPABLE (both keys); {how}",
             pick(pkts, lambda p: c2p(p) and tcp_info(p)[0] == A and tcp_info(p)[1] == 0
                  and 0 in sub(p), "MPC ACK")),
            ("MPTCP6_DATA_DSS", f"server's data segment (100 bytes echoed) with DSS; {how}",
             pick(pkts, lambda p: p2c(p) and tcp_info(p)[1] > 0 and 2 in sub(p), "DSS data")),
        ]

        # 5. ADD_ADDR6 from the server's kernel path manager, without and with a port.
        #    With a port, ADD_ADDR6 takes 30 bytes: with TCP timestamps (12) that is more
        #    than the 40 bytes of options, and the kernel never sends it; so the client
        #    (and thus the connection) goes without timestamps for that one.
        for port, tag, ep_port in ((7104, "", []), (7105, "_PORT", ["port", "7204"])):
            ts = "0" if ep_port else "1"
            ns(USER, "sysctl", "-q", "-w", f"net.ipv4.tcp_timestamps={ts}")
            sh("ip", "-n", PEER, "mptcp", "endpoint", "flush")
            sh("ip", "-n", PEER, "mptcp", "endpoint", "add", PEER2, *ep_port, "dev", "path2",
               "signal")
            for _attempt in range(3):  # the announcement is the path manager's, in time
                pkts, cli, srv = exchange(port, "a" * 100, mptcp=True, echo=True, linger=1.5)
                if any(src_is(p, PEER1) and 3 in sub(p) for _, _, _, p in pkts):
                    break
            ep = f"`ip mptcp endpoint add {PEER2} {' '.join(ep_port)} dev path2 signal`".replace(
                "  ", " ")
            how = (f"kernel {kernel} MPTCP client [{USER1}] -> kernel MPTCP server "
                   f"[{PEER1}]:{port} whose path manager has {ep}; client limits subflows 4 "
                   f"add_addr_accepted 4, net.ipv4.tcp_timestamps={ts}; client token "
                   f"{cli['token']}, server token "
                   f"{srv['token']}; captured on the peer's path1 and path2")
            lo = tag.lower()
            extra[f"ADDADDR6{tag}_CLIENT_TOKEN"] = cli["token"]
            extra[f"ADDADDR6{tag}_SERVER_TOKEN"] = srv["token"]
            entries += [
                (f"ADDADDR6{tag}_MPC_ACK", f"third ACK with MP_CAPABLE (both keys){lo}; {how}",
                 pick(pkts, lambda p: c2p(p) and tcp_info(p)[0] == A and tcp_info(p)[1] == 0
                      and 0 in sub(p), "MPC ACK")),
                (f"ADDADDR6{tag}", f"ADD_ADDR6 from the server; {how}",
                 pick(pkts, lambda p: p2c(p) and 3 in sub(p), "ADD_ADDR")),
                (f"ADDADDR6{tag}_ECHO", f"the client's ADD_ADDR6 echo; {how}",
                 pick(pkts, lambda p: c2p(p) and 3 in sub(p), "ADD_ADDR echo")),
                (f"MPJOIN6{tag}_SYN", f"the client's MP_JOIN SYN to the announced address; {how}",
                 pick(pkts, lambda p: src_is(p, USER2) and tcp_info(p)[0] == S and 1 in sub(p),
                      "MP_JOIN SYN", dev="path2")),
            ]
        sh("ip", "-n", PEER, "mptcp", "endpoint", "flush")
        ns(USER, "sysctl", "-q", "-w", "net.ipv4.tcp_timestamps=1")

        # 6. ICMPv6 echo.
        pkts = capture(lambda: ns(USER, "ping", "-6", "-c", "1", "-W", "2", "-p", "a5", "-I",
                                  USER1, PEER1))
        how = f"`ping -6 -c 1 -p a5 -I {USER1} {PEER1}` from the user ns, kernel {kernel}"
        entries += [
            ("ICMP6_ECHO_REQUEST", f"echo request; {how}",
             pick(pkts, lambda p: c2p(p) and p[6] == 58 and p[40] == 128, "echo request")),
            ("ICMP6_ECHO_REPLY", f"echo reply from the peer's kernel; {how}",
             pick(pkts, lambda p: p2c(p) and p[6] == 58 and p[40] == 129, "echo reply")),
        ]

        # 7. Destination unreachable (port), and fragments.
        def udp(size: int, sport: int, **kw: str) -> Callable[[], Any]:
            extra_args = [x for k, v in kw.items() for x in (f"--{k}", v)]
            return lambda: subprocess.run(me(USER, "udpsend", PEER1, "7999", "--bind", USER1,
                                             "--sport", str(sport), "--size", str(size),
                                             *extra_args), check=True)

        pkts = capture(udp(16, 40000))
        entries.append(("ICMP6_PORT_UNREACH", (f"destination unreachable (port) from kernel "
                        f"{kernel} peer {PEER1} for a 16-byte UDP datagram [{USER1}]:40000 -> "
                        f"[{PEER1}]:7999 (closed)"),
                        pick(pkts, lambda p: p2c(p) and p[6] == 58 and p[40] == 1, "unreach")))
        pkts = capture(udp(2000, 40001))
        how = (f"a 2000-byte UDP datagram [{USER1}]:40001 -> [{PEER1}]:7999 (closed) from kernel "
               f"{kernel}, fragmented by the sender (path MTU 1500)")
        entries += [
            ("FRAG6_FIRST", f"first fragment (offset 0, M); {how}",
             pick(pkts, lambda p: c2p(p) and p[6] == 44 and struct.unpack_from("!H", p, 42)[0]
                  == 1, "first fragment")),
            ("FRAG6_LAST", f"last fragment (offset 1448, no M); {how}",
             pick(pkts, lambda p: c2p(p) and p[6] == 44 and struct.unpack_from("!H", p, 42)[0]
                  & 0xFFF9 == 1448, "last fragment")),
            ("ICMP6_PORT_UNREACH_BIG", (f"the peer's destination unreachable quoting the "
             f"reassembled datagram (1232 bytes of it); {how}"),
             pick(pkts, lambda p: p2c(p) and p[6] == 58 and p[40] == 1, "unreach (big)")),
        ]

        # 8. Parameter problem: unknown option with action 10 in destination options.
        pkts = capture(udp(16, 40002, dstopts="00009e0401020304"))
        entries.append(("ICMP6_PARAMPROB_OPTION", (f"parameter problem (code 2) from kernel "
                        f"{kernel} peer {PEER1} for a UDP datagram from [{USER1}]:40002 with "
                        "IPV6_DSTOPTS 00009e0401020304 (option 0x9e: action 10)"),
                        pick(pkts, lambda p: p2c(p) and p[6] == 58 and p[40] == 4, "paramprob 2")))

        # 9. Parameter problems for crafted packets (IPPROTO_RAW, header included).
        def crafted(nh: int, body: bytes) -> bytes:
            return struct.pack("!IHBB16s16s", 0x60000000, len(body), nh, 64, a6(USER1),
                               a6(PEER1)) + body

        probes = {
            "ICMP6_PARAMPROB_NEXTHDR": ("unknown next header 253",
                                        crafted(253, b"golden: next header 253!")),
            "ICMP6_PARAMPROB_ROUTING": ("a routing header of type 253 with segments left 1",
                                        crafted(43, bytes((59, 0, 253, 1)) + bytes(4))),
            "ICMP6_PARAMPROB_HBH_LATER": ("a hop-by-hop header after a destination options "
                                          "header", crafted(60, bytes((0, 0, 1, 4)) + bytes(4)
                                                            + bytes((59, 0, 1, 4)) + bytes(4))),
        }
        for name, (what, pkt) in probes.items():
            pkts = capture(lambda pkt=pkt: subprocess.run(
                me(USER, "rawsend", pkt.hex()), check=True))
            entries.append((name, (f"parameter problem from kernel {kernel} peer {PEER1} for "
                            f"{what}, sent from the user ns with an IPPROTO_RAW socket"),
                            pick(pkts, lambda p: p2c(p) and p[6] == 58 and p[40] == 4, name)))

        # 10. Packet too big and time exceeded from the user namespace as a router.
        ns(USER, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
        sh("ip", "-n", USER, "link", "set", "path2", "mtu", "1280")
        sh("ip", "-n", PEER, "link", "set", "path2", "mtu", "1280")
        time.sleep(0.3)
        pkts = capture(lambda: ns(PEER, "ping", "-6", "-c", "1", "-W", "2", "-s", "1400", "-M",
                                  "do", "-p", "5a", "-I", PEER1, FAR, check=False))
        how = (f"`ping -6 -c 1 -s 1400 -M do -p 5a -I {PEER1} {FAR}` from the peer ns, routed "
               f"by the user ns (kernel {kernel}, forwarding on) to path2 with MTU 1280")
        entries += [
            ("ICMP6_BIG_ECHO", f"the 1448-byte echo request; {how}",
             pick(pkts, lambda p: p2c(p) and p[6] == 58 and p[40] == 128, "big echo")),
            ("ICMP6_PACKET_TOO_BIG", f"packet too big from the router ({USER1}); {how}",
             pick(pkts, lambda p: c2p(p) and p[6] == 58 and p[40] == 2, "PTB")),
        ]
        pkts = capture(lambda: ns(PEER, "ping", "-6", "-c", "1", "-W", "2", "-t", "1", "-I",
                                  PEER1, FAR, check=False))
        entries.append(("ICMP6_TIME_EXCEEDED", (f"time exceeded (hop limit) from the user ns "
                        f"router ({USER1}) for `ping -6 -c 1 -t 1 -I {PEER1} {FAR}` from the "
                        f"peer ns, kernel {kernel}"),
                        pick(pkts, lambda p: c2p(p) and p[6] == 58 and p[40] == 3,
                             "time exceeded")))
    finally:
        down()

    out = [
        '"""Golden vectors: IPv6 packets captured from the Linux kernel (tests/unit/golden6/).',
        "",
        "Produced by `tests/unit/golden6/capture.py golden -o tests/unit/golden6/vectors.py`",
        "(root; see its docstring for the topology and the traffic). Every packet is exactly",
        "as the kernel sent it, checksums included. Do not edit by hand; regenerate.",
        '"""',
        "",
        f"KERNEL = {kernel!r}",
        "",
    ]
    for k, v in extra.items():
        out.append(f"{k} = {v!r}")
    out.append("")
    write_vectors(out, entries, "GOLDEN6", args.output)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    g = sp.add_parser("golden")
    g.add_argument("-o", "--output")
    s = sp.add_parser("sniff")
    s.add_argument("-i", "--interface", required=True)
    v = sp.add_parser("serve")
    v.add_argument("--port", type=int, required=True)
    v.add_argument("--mptcp", action="store_true")
    v.add_argument("--echo", action="store_true")
    c = sp.add_parser("connect")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--bind", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--mptcp", action="store_true")
    c.add_argument("--echo", action="store_true")
    c.add_argument("--linger", type=float, default=0.0)
    c.add_argument("--hopopts")
    c.add_argument("--dstopts")
    c.add_argument("--rthdr")
    r = sp.add_parser("rawsend")
    r.add_argument("packet")
    u = sp.add_parser("udpsend")
    u.add_argument("host")
    u.add_argument("port", type=int)
    u.add_argument("--bind", required=True)
    u.add_argument("--sport", type=int, required=True)
    u.add_argument("--size", type=int, required=True)
    u.add_argument("--fill", default="golden6!")
    u.add_argument("--dstopts")
    args = ap.parse_args()
    with contextlib.suppress(BrokenPipeError):
        return {"golden": golden, "sniff": sniff, "serve": serve, "connect": connect,
                "rawsend": rawsend, "udpsend": udpsend}[args.cmd](args)
    return 1


if __name__ == "__main__":
    sys.exit(main())
