"""`mptcp-tun`: run our userspace stack on a TUN device against a real Linux peer.

Run it inside the user namespace that netns-setup.sh makes, e.g.
    ip netns exec mptcp-user mptcp-tun connect 10.0.1.1 5000 --send-bytes 10M --trace
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

from stack.addr import fmt, parse_addr_port
from stack.api import StreamReader, StreamWriter, open_connection, start_server
from stack.diag import Finding
from stack.host import Connection, ConnEvent, HostEvent, Stack, StackConfig, ip
from stack.impair import Impairer, Impairment
from stack.mptcp.connection import FAULTS, MptcpConfig
from stack.mptcp.pm import EndpointFlags
from stack.mptcp.sched import SCHEDULERS
from stack.shell import DeviceError, TunShell, wall_clock_offset
from stack.tcp.engine import TcpConfig
from stack.wire.pcap import PcapWriter
from tools import analyze, bench, control
from tools.events import EventLog
from tools.interval import IntervalReporter
from tools.sink import Sink
from tools.trace import LadderTracer

EXIT_OK, EXIT_CONN, EXIT_USAGE, EXIT_SETUP, EXIT_UNMET, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
CHUNK = 256 * 1024
POOL = 4 * 1024 * 1024 + 7  # the random pool --send-bytes cuts its chunks from

EPILOG = """\
examples (inside the user namespace: ip netns exec mptcp-user ...):
  mptcp-tun connect 10.0.1.1 5000 --send-bytes 10M --trace     # send 10 MB, show the handshake
  mptcp-tun connect 10.0.1.1 5000 --output got.bin             # receive until the peer closes
  mptcp-tun listen 5000 --once --output got.bin --pcap run.pcap
  mptcp-tun listen 5000 --echo                                 # echo server, until Ctrl-C
  mptcp-tun connect 10.0.1.1 5000 --subflow 10.0.2.2 --send-bytes 50M   # two paths
  mptcp-tun listen 5000 --announce 10.0.2.2 --control /tmp/ctl &        # steer it live:
  mptcp-tun ctl /tmp/ctl status                                # subflows, bytes on each
  mptcp-tun ctl /tmp/ctl backup 10.0.1.2 on                    # MP_PRIO (see 'ctl -h')
  mptcp-tun bench                                              # goodput vs the kernel

exit status: 0 the connection ended cleanly and every byte was delivered; 1 the
connection failed (refused, reset, timed out, unreachable, incomplete, or --timeout
ran out); 2 bad usage; 3 setup problem (no TUN device, not root); 4 every byte was
delivered, but something asked for did not happen (MPTCP fell back, a join was
refused, an announcement ignored, DSS checksums failed: the 'diagnosis:' lines say
which); 130 interrupted.

diagnosis: after the summary, one line per finding, '<severity> <code>: <text>
[frame N (received|sent at T s on <subflow>)] (hint: ...)'; frame N is the packet's
number in --pcap and in the --trace ladder (#N), T the connection's clock. Codes are
stable (see the README): join-refused, join-bad-hmac, join-unknown-token,
join-not-opened, join-initial-denied, add-addr-ignored, add-addr-not-echoed, add-addr-other-family,
mpc-stripped,
mpc-version-unsupported, mpc-syn-blackholed, dss-stripped, dss-checksum-failed,
fallback, path-failed, subflow-reset, fastclose, window-stall. --json puts them in
"diagnosis"; --events writes them as DIAGNOSIS events.
"""


def parse_size(text: str) -> int:
    """'10M' -> 10_000_000 (K/M/G are powers of 1000; Ki/Mi/Gi of 1024)."""
    t = text.strip()
    mult = {"K": 10**3, "M": 10**6, "G": 10**9, "KI": 1 << 10, "MI": 1 << 20, "GI": 1 << 30}
    for suffix in ("KI", "MI", "GI", "K", "M", "G"):
        if t.upper().endswith(suffix):
            return int(float(t[: -len(suffix)]) * mult[suffix])
    return int(t)


def _impairment(text: str) -> Impairment:
    try:
        return Impairment.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mptcp-tun", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A userspace TCP/MPTCP stack on a TUN device, talking to a real Linux peer.",
        epilog=EPILOG)
    sub = p.add_subparsers(dest="command", required=True,
                           metavar="{connect,listen,ctl,bench}")

    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("device and addresses")
    g.add_argument("--dev", default="mptun0", help="TUN device (default: mptun0)")
    g.add_argument("--addr", action="append", metavar="A",
                   help="our stack's address (repeatable; default: the 10.0.i.2 host routes "
                        "onto the TUN device, as netns-setup.sh makes them)")
    g.add_argument("--no-offload", action="store_true",
                   help="plain TUN frames: no virtio-net header, no GSO/checksum offload")
    g = common.add_argument_group("data")
    g.add_argument("--send", metavar="FILE", help="send FILE, then close our side")
    g.add_argument("--send-bytes", metavar="N", type=parse_size,
                   help="send N pseudo-random bytes (10M, 1Gi, ...), then close our side")
    g.add_argument("--send-seconds", metavar="S", type=float,
                   help="send pseudo-random bytes for S seconds, then close our side (long "
                        "runs; the summary's sent_sha256 is what the peer must have)")
    g.add_argument("--output", metavar="FILE", help="write what we receive to FILE ('-' = stdout)")
    g.add_argument("--join-pause", type=float, metavar="S",
                   help="send the first 100 bytes, then wait S seconds before the rest, so "
                        "that joins complete while the connection is young (a Linux peer "
                        "refuses joins once it has our DATA_FIN): the kernel selftests' "
                        "mptcp_connect -j, 0.2 s")
    g.add_argument("--pause-after", type=parse_size, metavar="N",
                   help="stop sending for --pause S seconds once N bytes are written (the "
                        "kernel selftests' link-failure runs: a file, a pause, a link "
                        "cut, the file again)")
    g.add_argument("--pause", type=float, metavar="S", default=2.0,
                   help="the --pause-after pause (default 2 s)")
    g = common.add_argument_group("protocol")
    g.add_argument("--no-mptcp", action="store_true",
                   help="plain TCP: no MP_CAPABLE on our SYN, none accepted on a listener")
    g.add_argument("--checksum", action="store_true",
                   help="request DSS checksums (the MP_CAPABLE A flag); the peer may too")
    g.add_argument("--mptcp-version", type=int, choices=[0, 1], default=1,
                   help="1: RFC 8684 (default); 0: the RFC 6824 SYN of the seed's "
                        "out-of-tree kernel (upstream Linux answers it as plain TCP)")
    g.add_argument("--deny-join-id0", action="store_true",
                   help="set the MP_CAPABLE C flag: peers must not join our initial address "
                        "and port (the kernel's net.mptcp.allow_join_initial_addr_port=0)")
    def count(text: str) -> int:
        n = int(text)
        if n < 0:
            raise argparse.ArgumentTypeError(f"{n} < 0")
        return n

    g.add_argument("--syn-retrans-before-fallback", type=count, metavar="N", default=2,
                   help="retransmissions of our SYN that keep MP_CAPABLE before a plain SYN "
                        "(TCP fallback; a blackhole for MPTCP SYNs is then remembered): the "
                        "kernel's net.mptcp.syn_retrans_before_tcp_fallback (default: 2)")
    g.add_argument("--no-nagle", action="store_true", help="disable Nagle's algorithm")
    g.add_argument("--congestion", choices=["cubic", "reno"], default="cubic",
                   help="congestion control (default: cubic, as Linux)")
    g.add_argument("--timeout", type=float, metavar="S",
                   help="give up after S seconds (exit 1)")
    g = common.add_argument_group("multipath")
    g.add_argument("--limits", nargs=2, type=int, metavar=("SUBFLOWS", "ADD_ADDR_ACCEPTED"),
                   default=[8, 8],
                   help="most additional subflows per connection, and most announced "
                        "addresses we join (default: 8 8; the kernel's are 2 0)")
    g.add_argument("--backup", action="append", metavar="A", default=[],
                   help="subflows from our address A are backups: sent with the MP_JOIN B "
                        "flag, used only when no other subflow works (repeatable)")
    g.add_argument("--fullmesh", action="append", metavar="A", default=[],
                   help="join every address the peer announces from our address A (and "
                        "from each other --fullmesh address), like a kernel 'subflow "
                        "fullmesh' endpoint; connect also opens a join from A at once "
                        "(repeatable)")
    g.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="default",
                   help="which subflow carries the next data: default (lowest expected "
                        "delivery time, as Linux), roundrobin, redundant (all of them)")
    g.add_argument("--fault", action="append", choices=sorted(FAULTS), default=[],
                   help="inject a protocol fault, to see the peer refuse it: "
                        + "; ".join(f"{k}: {v}" for k, v in sorted(FAULTS.items())))
    g.add_argument("--control", metavar="SOCKET",
                   help="accept path-manager commands on this Unix socket while running "
                        "(add/remove subflows, announce/remove addresses, MP_PRIO, "
                        "fastclose): see 'mptcp-tun ctl --help'")
    g = common.add_argument_group(
        "impairments", "between our stack and the device, per path: the delay, loss and "
        "middleboxes netem would give (this is a user feature too: provoke one path)")
    g.add_argument("--impair", action="append", metavar="ADDR:K=V,...", default=[],
                   type=_impairment,
                   help="impair the packets to or from ADDR (ours or the peer's on a path; "
                        "* for all), both directions unless dir=in|out: delay=25ms, "
                        "jitter=5ms, loss=1%%, duplicate=1%%, reorder=5%% (held back by "
                        "reorder_delay=4ms), corrupt=0.1%% (a payload byte, TCP checksum "
                        "fixed), drop=add_addr+mp_prio (packets carrying these MPTCP "
                        "suboptions; mptcp: any), strip (MPTCP options to NOPs). "
                        "Repeatable; the first rule matching a packet applies. E.g. "
                        "--impair 10.0.2.2:delay=25ms,loss=1%%")
    g.add_argument("--impair-seed", type=int, metavar="N",
                   help="seed the impairments' randomness (default: random, printed in "
                        "the summary to replay a run)")
    g = common.add_argument_group("observability")
    g.add_argument("--events", metavar="FILE", help="JSON lines of connection events")
    g.add_argument("--pcap", metavar="FILE", help="write every packet to FILE (Wireshark)")
    g.add_argument("--trace", action="store_true", help="the handshake as a ladder on stderr")
    g.add_argument("--stats", action="store_true", help="dump the stack's counters at exit")
    g.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    g.add_argument("--interval", type=float, metavar="S",
                   help="every S seconds, one line per subflow and one per connection on "
                        "stderr: bytes and goodput each way, RTT, cwnd, retransmissions, "
                        "the data-level window (as iperf3 -i; default 2 s on a terminal "
                        "without --json, else off; 0: off)")
    g.add_argument("--seed", type=int, help="seed our randomness (ISNs, ports, payload)")
    g.add_argument("--no-sha256", dest="sha256", action="store_false",
                   help="do not hash the bytes sent and received (a throughput run: "
                        "SHA-256 costs as much CPU as the stack); the summary's "
                        "sent_sha256 / received_sha256 are then null")

    c = sub.add_parser("connect", parents=[common], help="active open to HOST PORT",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--local-port", type=int, help="our port (default: ephemeral)")
    c.add_argument("--subflow", action="append", metavar="A", default=[],
                   help="open an MPTCP join from our address A once the connection is "
                        "fully established, like a kernel 'subflow' endpoint (repeatable)")
    c.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="N connections one after another, each sending what --send-bytes "
                        "or --send says and reading until the peer closes; one summary: "
                        "how many ended cleanly and the rate (connections/s), as a "
                        "connection-rate benchmark (bench --connections) runs it")
    lp = sub.add_parser("listen", parents=[common], help="passive open on PORT",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    lp.add_argument("port", type=int)
    lp.add_argument("--echo", action="store_true", help="send back what arrives")
    lp.add_argument("--once", action="store_true", help="serve the first connection, then exit")
    lp.add_argument("--bind", action="append", metavar="A", default=[],
                    help="listen at our address A only (repeatable: a listener at each, on "
                         "the same port); default every address. Joins, too, reach us "
                         "only at an address we listen on, as Linux's")
    lp.add_argument("--announce", action="append", metavar="A[:PORT]", default=[],
                    help="announce our address A (ADD_ADDR) to each MPTCP client once fully "
                         "established, like a kernel 'signal' endpoint (repeatable); with "
                         "a PORT ([A]:PORT for IPv6), as 'signal port PORT': the ADD_ADDR "
                         "carries it, joins go there, and that port takes joins only (an "
                         "MP_CAPABLE SYN gets an RST, MPCapableEndpAttempt)")
    lp.add_argument("--syncookies", type=int, choices=[0, 1, 2], default=1,
                    help="SYN cookies, as Linux's net.ipv4.tcp_syncookies: 1 (default) "
                         "once the SYN backlog is full, 2 for every SYN (no state before "
                         "the ACK; MP_CAPABLE and MP_JOIN keep working), 0 never (SYNs "
                         "over the backlog are dropped)")
    lp.add_argument("--backlog", type=int, metavar="N", default=128,
                    help="half-open connections the listener keeps before SYN cookies "
                         "(net.ipv4.tcp_max_syn_backlog; default 128)")
    control.configure(sub.add_parser(
        "ctl", help="send a command to a running mptcp-tun --control SOCKET"))
    analyze.configure(sub.add_parser(
        "analyze", help="list, check and explain the MPTCP connections of a capture file "
                        "(pcap/pcapng; no root)"))
    bench.configure(sub.add_parser(
        "bench", help="goodput of our stack vs the kernel (needs root)"))
    return p


@dataclass
class Result:
    """What one connection did, for the summary line and the exit status."""
    local: str = ""
    remote: str = ""
    sent: int = 0                # bytes the peer acknowledged
    written: int = 0             # bytes our application gave the stack
    received: int = 0
    sent_sha256: str | None = ""
    received_sha256: str | None = ""
    started: float = 0.0
    connected: float = 0.0       # when connect returned (the handshake done); 0: listener
    ended: float = 0.0
    error: str | None = None
    clean: bool = False
    mptcp: bool = False          # MPTCP was asked for on this connection
    fallback: bool = False       # ... and it fell back to TCP
    fallback_reason: str | None = None
    checksum: bool = False       # DSS checksums in use
    token: str | None = None
    remote_token: str | None = None
    local_key: str | None = None
    idsn: int | None = None
    remote_idsn: int | None = None
    subflows: int = 1
    subflow_bytes: list[int] = field(default_factory=list)  # data mapped onto each
    subflow_rx_bytes: list[int] = field(default_factory=list)  # data received on each
    resent_bytes: int = 0        # data sent again at the data level (reinjection, data RTO)
    window_probes: int = 0       # data-level zero-window probes (one acked byte each)
    segments_in: int = 0         # TCP segments (a GRO/GSO super-packet is one) received
    segments_out: int = 0        # and sent, on every subflow
    findings: list[Finding] = field(default_factory=list)  # the diagnosis
    conn: Connection | None = None
    t0: float = 0.0              # the connection's clock origin (its first packet)

    def take_conn(self, conn: Connection, stack: Stack, now: float) -> None:
        """What the stack knows at the end: bytes acknowledged, MPTCP, the diagnosis."""
        acked = conn.msk.snd_una if conn.msk is not None else conn.engine.snd_una_rel - 1
        self.sent = max(0, min(self.written, acked))
        # TCP segments on every subflow, GRO/GSO super-packets counted once each (the
        # unit of the stack's per-packet work: bytes / segments is their mean size)
        counts = conn.counters()
        self.segments_in, self.segments_out = counts["InSegs"], counts["OutSegs"]
        self.take_mptcp(conn)
        self.t0 = conn.diag_t0
        self.findings = stack.conclude(conn, now)

    @property
    def unmet(self) -> bool:
        return any(f.unmet for f in self.findings)

    def take_mptcp(self, conn: Connection) -> None:
        msk = conn.msk
        if msk is None:
            self.mptcp = False  # plain TCP: --no-mptcp, or a client that did not ask
            return
        self.mptcp = True
        self.fallback, self.fallback_reason = msk.fallback, msk.fallback_reason
        self.checksum = msk.csum_enabled  # negotiated (a fallback may have ended them)
        self.token = f"{msk.local_token:08x}"
        self.remote_token = f"{msk.remote_token:08x}" if msk.remote_token is not None else None
        self.local_key = f"{msk.local_key:016x}"
        self.idsn = msk.local_idsn
        self.remote_idsn = msk.remote_idsn if msk.remote_key is not None else None
        self.subflows = max(1, sum(1 for sf in msk.subflows
                                   if sf.fully_established and sf.join_failed is None))
        live = [sf for sf in msk.subflows if sf.fully_established and sf.join_failed is None]
        self.subflow_bytes = [sf.tx_next - 1 for sf in live]
        self.subflow_rx_bytes = [sf.rx_next - 1 for sf in live]
        counts = conn.counters()  # msk.counters are emptied once the host forgets it
        self.resent_bytes = counts["Reinjected"] + counts["MPTCPRetransBytes"]
        self.window_probes = counts["WinProbe"]

    def summary(self, args: argparse.Namespace) -> dict[str, object]:
        secs = max(self.ended - self.started, 1e-9)
        return {"local": self.local, "remote": self.remote, "sent": self.sent,
                "received": self.received, "seconds": round(secs, 6),
                "connect_seconds": round(self.connected - self.started, 6)
                if self.connected else None,
                "goodput_mbps": round((self.sent + self.received) * 8 / secs / 1e6, 3),
                "subflows": self.subflows, "subflow_bytes": self.subflow_bytes,
                "subflow_rx_bytes": self.subflow_rx_bytes, "resent_bytes": self.resent_bytes,
                "window_probes": self.window_probes,
                "segments_in": self.segments_in, "segments_out": self.segments_out,
                "mptcp": self.mptcp and not self.fallback,
                "fallback": self.fallback, "fallback_reason": self.fallback_reason,
                "checksum": self.checksum, "token": self.token,
                "remote_token": self.remote_token, "local_key": self.local_key,
                "idsn": self.idsn, "remote_idsn": self.remote_idsn,
                "sent_sha256": self.sent_sha256, "received_sha256": self.received_sha256,
                "written": self.written, "clean": self.clean, "error": self.error,
                "diagnosis": [f.as_dict(self.t0) for f in self.findings]}

    def line(self) -> str:
        secs = max(self.ended - self.started, 1e-9)
        mbps = (self.sent + self.received) * 8 / secs / 1e6
        state = "clean close" if self.clean else f"FAILED: {self.error}"
        if not self.mptcp:
            proto = "TCP (MPTCP off)"
        elif self.fallback:
            proto = f"fallback to TCP ({self.fallback_reason})"
        elif self.remote_token is None:
            proto = f"MPTCP token {self.token}, not established"
        else:
            proto = f"MPTCP token {self.token} remote {self.remote_token}"
        unsent = f" (of {self.written} written)" if self.written != self.sent else ""
        csum = "on" if self.checksum else "off"
        if self.checksum and self.fallback:
            csum = "on until the fallback"
        return (f"{self.local} -> {self.remote}: sent {self.sent} B{unsent}, received "
                f"{self.received} B in {secs:.3f} s, {mbps:.1f} Mbit/s, {self.subflows} "
                f"subflow{'s' if self.subflows != 1 else ''}, {proto}, checksum {csum}, {state}")

    def diagnosis_lines(self) -> list[str]:
        return [f"diagnosis: {f.line(self.t0)}" for f in self.findings]


def payload_source(args: argparse.Namespace, send: BinaryIO | None,
                   rng: random.Random, pool: bytes | None = None,
                   ) -> Callable[[], bytes | memoryview] | None:
    """A function returning the next chunk to send (b"" at the end), or None. `pool`:
    the random bytes to cut chunks from (default: new ones from `rng`; making them
    costs 10 ms, which `connect --repeat` pays once)."""
    if send is not None:
        return lambda: send.read(CHUNK)
    if args.send_bytes is not None or args.send_seconds is not None:
        # Pseudo-random bytes without a per-byte cost: one random pool, each chunk cut
        # from it at a shifting offset (consecutive chunks differ, so a sha256 still
        # catches lost, duplicated or reordered data). randbytes per chunk cost more
        # CPU than the stack itself in the bench.
        view = memoryview(pool if pool is not None else rng.randbytes(POOL))
        left = [args.send_bytes if args.send_bytes is not None else 1 << 62]
        count = [0]
        until = None if args.send_seconds is None else time.monotonic() + args.send_seconds

        def nxt() -> bytes | memoryview:
            if until is not None and time.monotonic() >= until:
                left[0] = 0
            n = min(CHUNK, left[0])
            left[0] -= n
            count[0] += 1
            off = (count[0] * 7919) % (POOL - CHUNK)
            return view[off:off + n] if n else b""  # a view of the pool: no copy
        return nxt
    return None


def _pauses(args: argparse.Namespace) -> list[tuple[int, float]]:
    """Where our sending stops for a while: --join-pause, --pause-after/--pause."""
    out = [(100, args.join_pause)] if args.join_pause else []
    if args.pause_after is not None:
        out.append((args.pause_after, args.pause))
    return out


class _NoHash:
    """Stands in for a hashlib object when the bytes are not hashed (--no-sha256)."""

    def update(self, data: object) -> None:
        pass

    def hexdigest(self) -> None:
        return None


async def run_connection(reader: StreamReader, writer: StreamWriter, res: Result,
                         source: Callable[[], bytes | memoryview] | None, sink: Sink | None,
                         echo: bool, sha256: bool = True,
                         pauses: Sequence[tuple[int, float]] = ()) -> None:
    """Send our data (then half-close) while reading the peer's until EOF; `sha256`:
    hash both streams for the summary; `pauses`: (offset, seconds): stop sending for
    that long once that many bytes are written (`--join-pause`, `--pause-after`)."""
    conn = writer.connection
    res.local = fmt(conn.key[0], conn.key[1])
    res.remote = fmt(conn.key[2], conn.key[3])
    sent_hash: Any = hashlib.sha256() if sha256 else _NoHash()
    recv_hash: Any = hashlib.sha256() if sha256 else _NoHash()

    async def send() -> None:
        if source is None:
            return
        todo = sorted(pauses)

        async def write(piece: bytes | memoryview) -> None:
            writer.write(piece)
            sent_hash.update(piece)
            res.written += len(piece)
            await writer.drain()

        while chunk := source():
            while todo and res.written + len(chunk) >= todo[0][0]:
                at, seconds = todo.pop(0)
                head = max(at - res.written, 0)
                await write(chunk[:head])
                await asyncio.sleep(seconds)
                chunk = chunk[head:]
            if chunk:
                await write(chunk)
        writer.close()

    async def receive() -> None:
        while data := await reader.read(CHUNK):
            res.received += len(data)
            recv_hash.update(data)
            if sink is not None:
                # a full pipe: wait here, reading nothing more, so the stack's receive
                # buffer fills and our window closes (tools/sink.py)
                await sink.write(data)
            if echo:
                writer.write(data)
                sent_hash.update(data)
                res.written += len(data)
                await writer.drain()

    try:
        await asyncio.gather(send(), receive())
        writer.close()  # after the peer's FIN: close our side too (no-op if already)
        await writer.wait_closed()
        res.clean = True
    except (OSError, asyncio.IncompleteReadError) as e:
        res.error = str(e)
    finally:
        res.ended = time.monotonic()
        res.sent_sha256, res.received_sha256 = sent_hash.hexdigest(), recv_hash.hexdigest()
        res.conn = conn


def _report(res: Result, args: argparse.Namespace, shell: TunShell,
            events: EventLog | None) -> None:
    """The summary line (or JSON object), then one 'diagnosis:' line per finding."""
    out = sys.stderr if args.output == "-" else sys.stdout
    if res.conn is not None:
        seen = len(res.conn.msk.diag.findings) if res.conn.msk is not None else 0
        res.take_conn(res.conn, shell.stack, shell.now())
        if events is not None:
            # the findings the end showed, as events too (the others were, as made)
            for f in res.findings[seen:]:
                events.finding(res.conn, f, shell.now())
    summary = res.summary(args)
    if shell.impair is not None:
        summary["impairments"] = shell.impair.report()
    text = json.dumps(summary) if args.json else res.line()
    print(text, file=out, flush=True)
    if not args.json:
        for line in shell.impair.lines() if shell.impair is not None else ():
            print(line, file=out, flush=True)
        for line in res.diagnosis_lines():
            print(line, file=out, flush=True)


@dataclass
class Outputs:
    """The files a run writes, opened before the loop starts and closed by `files`."""
    files: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    pcap: PcapWriter | None = None
    events: TextIO | None = None
    sink: Sink | None = None
    send: BinaryIO | None = None


def open_outputs(args: argparse.Namespace) -> Outputs:
    # SIM115: each file stays open for the whole run and is closed by out.files (an ExitStack)
    out = Outputs()
    if args.pcap:
        out.pcap = PcapWriter(out.files.enter_context(open(args.pcap, "wb")))  # noqa: SIM115
    if args.events:
        out.events = out.files.enter_context(open(args.events, "w"))  # noqa: SIM115
    if args.output:
        f = sys.stdout.buffer if args.output == "-" else \
            out.files.enter_context(open(args.output, "wb"))  # noqa: SIM115
        out.sink = Sink(f)
        out.files.callback(out.sink.close)  # before the file closes (LIFO)
    if args.send:
        out.send = out.files.enter_context(open(args.send, "rb"))  # noqa: SIM115
    return out


async def amain(args: argparse.Namespace, io: Outputs, timed_out: list[bool]) -> int:
    rng = random.Random(args.seed)
    tcfg = TcpConfig(nagle=not args.no_nagle, congestion=args.congestion)
    mcfg = None if args.no_mptcp else MptcpConfig(
        version=args.mptcp_version, checksum=args.checksum, scheduler=args.scheduler,
        subflows_max=args.limits[0], add_addr_accepted_max=args.limits[1],
        faults=frozenset(args.fault), deny_join_id0=args.deny_join_id0,
        syn_retrans_before_tcp_fallback=args.syn_retrans_before_fallback)
    shell = TunShell(args.dev, args.addr, offload=not args.no_offload,
                     config=StackConfig(tcp=tcfg, mptcp=mcfg,
                                        syncookies=getattr(args, "syncookies", 1),
                                        syn_backlog=getattr(args, "backlog", 128)),
                     rng=random.Random(rng.getrandbits(64)),
                     randbytes=random.Random(rng.getrandbits(64)).randbytes
                     if args.seed is not None else os.urandom,
                     impair=Impairer(args.impair, args.impair_seed) if args.impair else None)
    shell.stack.endpoints.set_flag([ip(a) for a in args.backup], EndpointFlags.BACKUP)
    shell.stack.endpoints.set_flag([ip(a) for a in args.fullmesh], EndpointFlags.FULLMESH)
    tracer = LadderTracer() if args.trace else None
    if tracer is not None:
        tracer.stack = shell.stack  # derived values are checked against the stack's view
    pcap, sink = io.pcap, io.sink
    results: list[Result] = []
    interrupted = False
    created: list[Connection] = []  # every connection that had an event, in order
    events: EventLog | None = None

    def remember(ev: HostEvent, now: float) -> None:
        if isinstance(ev, ConnEvent) and (not created or created[-1] is not ev.conn) \
                and ev.conn not in created:
            created.append(ev.conn)
    shell.observers.append(remember)
    ctl_server: asyncio.AbstractServer | None = None
    reporting: asyncio.Task[None] | None = None  # --interval
    shell.start()
    shell.stack.diag.t0 = shell.now()  # host-level findings: times since we started
    try:
        clock = wall_clock_offset(shell)
        if tracer or pcap:
            def tap(direction: str, packet: bytes, now: float) -> None:
                # one time for both: the `now` the stack was given for this packet
                if pcap is not None:
                    pcap.write(now + clock, packet)
                if tracer is not None:
                    tracer(direction, packet, now)
            shell.stack.tap = tap
        if io.events is not None:
            events = EventLog(io.events, shell.now())
            shell.observers.append(events)
        if args.control:
            ctl_server = await control.serve(shell, args.control)
        every = args.interval if args.interval is not None else (
            2.0 if sys.stderr.isatty() and not args.json else 0.0)
        if every > 0:
            reporter = IntervalReporter(
                lambda: [c for c in created if not c.sock.is_closed], shell.now, every)
            reporting = asyncio.get_running_loop().create_task(reporter.run())
        source = payload_source(args, io.send, rng)
        if args.command == "connect":
            pool = random.Random(args.seed).randbytes(POOL) if args.repeat > 1 else None
            for i in range(max(args.repeat, 1)):
                if i:  # the same bytes each time
                    if io.send is not None:
                        io.send.seek(0)
                    source = payload_source(args, io.send, rng, pool)
                res = Result(started=time.monotonic())
                results.append(res)
                try:
                    reader, writer = await open_connection(
                        args.host, args.port, shell=shell, local_port=args.local_port,
                        subflows=_joins_from(args))
                except OSError as e:
                    res.error, res.ended = str(e), time.monotonic()
                else:
                    res.connected = time.monotonic()
                    await run_connection(reader, writer, res, source, sink, False,
                                         args.sha256, _pauses(args))
        else:
            done = asyncio.Event()

            async def serve(reader: StreamReader, writer: StreamWriter) -> None:
                res = Result(started=time.monotonic())
                results.append(res)
                await run_connection(reader, writer, res, source, sink, args.echo,
                                     args.sha256, _pauses(args))
                if args.once:
                    done.set()
                else:
                    _report(res, args, shell, events)

            try:
                servers = [await start_server(serve, args.port, host=b, shell=shell,
                                              announce=args.announce)
                           for b in args.bind or [None]]
            except OSError as e:  # (an address that is not ours, a port taken)
                print(f"mptcp-tun: listen: {e}", file=sys.stderr)
                return EXIT_USAGE
            print(f"listening on port {args.port} at "
                  f"{', '.join(args.bind or _addrs(shell))}", file=sys.stderr, flush=True)
            await done.wait()
            for server in servers:
                server.close()
        # Let our last ACKs/FIN go out before the device closes.
        await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        # Ctrl-C / SIGTERM / --timeout: still say what happened to each connection
        interrupted = not timed_out[0]
        why = "interrupted" if interrupted else f"gave up after {args.timeout} s (--timeout)"
        for res in results:
            if not res.clean and res.error is None:
                res.error = why
                res.ended = res.ended or time.monotonic()
    finally:
        if reporting is not None:
            reporting.cancel()
        if ctl_server is not None:
            ctl_server.close()
            with contextlib.suppress(OSError):
                os.unlink(args.control)
        shell.close()
    if args.command == "connect" and results and results[0].conn is None and created:
        # it never got to run (refused, timed out, given up): what the stack saw of it
        res = results[0]
        res.conn = created[0]
        k = created[0].key
        res.local, res.remote = fmt(k[0], k[1]), fmt(k[2], k[3])
    elif args.command == "connect" and results and not results[0].remote:
        try:
            results[0].remote = fmt(ip(args.host), args.port)
        except OSError:
            results[0].remote = f"{args.host}:{args.port}"
    if args.command == "connect" and args.repeat > 1:
        return _report_repeat(results, args)
    if args.command == "connect" or args.once or interrupted or timed_out[0]:
        for res in results:
            res.mptcp = res.mptcp or not args.no_mptcp
            _report(res, args, shell, events)
            if res.error:
                print(f"mptcp-tun: {res.error}", file=sys.stderr)
    host = shell.stack.diag.findings  # about packets no connection owns (unknown tokens)
    for f in host:
        # at T s since mptcp-tun started (the host's clock origin, set above)
        print(f"diagnosis: {f.line(shell.stack.diag.t0)}",
              file=sys.stdout if args.output != "-" else sys.stderr)
    if args.stats:
        print(shell.stack.format_counters(), file=sys.stderr)
    if interrupted:
        return EXIT_INTERRUPTED
    if not results or not all(r.clean for r in results):
        return EXIT_CONN
    if any(r.unmet for r in results) or any(f.unmet for f in host):
        return EXIT_UNMET
    return EXIT_OK


def _report_repeat(results: list[Result], args: argparse.Namespace) -> int:
    """`connect --repeat N`: one summary for the N connections."""
    clean = [r for r in results if r.clean]
    secs = max((results[-1].ended or time.monotonic()) - results[0].started, 1e-9) \
        if results else 0.0
    errors = sorted({r.error or "not clean" for r in results if not r.clean})
    rec = {"repeat": len(results), "clean": len(clean), "seconds": round(secs, 3),
           "rate_cps": round(len(clean) / secs, 1) if secs else 0.0,
           "written": sum(r.written for r in results),
           "received": sum(r.received for r in results),
           "errors": errors[:5]}
    if args.json:
        print(json.dumps(rec), flush=True)
    else:
        print(f"{rec['repeat']} connections to {args.host}:{args.port}, {rec['clean']} "
              f"clean, in {secs:.3f} s: {rec['rate_cps']} connections/s"
              + (f"; errors: {', '.join(errors[:5])}" if errors else ""), flush=True)
    return EXIT_OK if len(clean) == len(results) else EXIT_CONN


def _joins_from(args: argparse.Namespace) -> list[str]:
    """connect: the addresses to open joins from once fully established: --subflow
    ones and --fullmesh ones (the stack skips the initial subflow's own)."""
    return list(dict.fromkeys(args.subflow + args.fullmesh))


def _addrs(shell: TunShell) -> list[str]:
    from stack.host import ntoa
    return [ntoa(a) for a in shell.stack.addrs]


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>


def tune_malloc() -> bool:
    """Keep glibc from serving our big buffers with fresh mmap()s. A receive buffer of
    a few hundred KB to MBs, joined or grown and freed thousands of times a second,
    lands by default above the mmap threshold: every one is new pages, zero-filled on
    first touch (page faults by the hundred thousand per GB), and glibc's dynamic
    threshold only sometimes learns to stop. Measured over path1, 500 MB kernel -> ours:
    TCP swung between 5.4 and 8.5 Gbit/s from run to run (0.9 vs 0.6 s of our CPU,
    the same segment count), MPTCP stayed at 5.7; with the heap kept (these two
    settings) TCP 8.7 and MPTCP 7.4, every run. False where there is no glibc."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(M_MMAP_THRESHOLD, 32 << 20)  # the most glibc allows on 64-bit
    ok &= mallopt(M_TRIM_THRESHOLD, 128 << 20)
    return bool(ok)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command == "ctl":
        return control.run(args)
    if args.command == "bench":
        return bench.run(args)
    if args.command == "analyze":
        try:
            return analyze.run(args)
        except BrokenPipeError:  # `analyze ... | head`: the reader has gone, quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + signal.SIGPIPE
    tune_malloc()
    if sum(x is not None and x is not False for x in
           (args.send, args.send_bytes, args.send_seconds)) > 1:
        print("mptcp-tun: --send, --send-bytes and --send-seconds are exclusive",
              file=sys.stderr)
        return EXIT_USAGE
    if any(n < 0 for n in args.limits):
        print("mptcp-tun: --limits takes two numbers >= 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        for a in getattr(args, "announce", []):
            parse_addr_port(a)
        for a in args.backup + args.fullmesh + getattr(args, "subflow", []) \
                + getattr(args, "bind", []):
            ip(a)
    except OSError:
        try:
            with_port = parse_addr_port(a)[1] is not None
        except OSError:
            with_port = False
        why = ("an address with a port: only --announce takes one (a port-based "
               "endpoint); give the address alone") if with_port \
            else "not an IPv4 or IPv6 address (with --announce, optionally :PORT)"
        print(f"mptcp-tun: {why}: {a!r}", file=sys.stderr)
        return EXIT_USAGE
    if args.send and not os.path.isfile(args.send):
        print(f"mptcp-tun: --send {args.send}: no such file", file=sys.stderr)
        return EXIT_USAGE

    async def guarded() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        timed_out = [False]
        if args.timeout:
            def give_up() -> None:
                timed_out[0] = True
                task.cancel()
            loop.call_later(args.timeout, give_up)
        return await amain(args, io, timed_out)

    try:
        io = open_outputs(args)
    except OSError as e:
        print(f"mptcp-tun: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with io.files:
            return asyncio.run(guarded())
    except DeviceError as e:
        print(f"mptcp-tun: {e}", file=sys.stderr)
        return EXIT_SETUP
    except asyncio.CancelledError:
        print("mptcp-tun: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
