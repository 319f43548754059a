#!/usr/bin/env python3
"""kpeer: the kernel-side peer for interop tests and benchmarks (a Linux socket).

Standalone (stdlib + payload.py next to it): run it inside a namespace, e.g.
    ip netns exec mptcp-peer python3 tests/interop/kpeer.py server --port 5000 --mptcp --once

Modes (each connection ends with ONE JSON line on stdout, see `report` below):
  server --port P [--bind A] [--echo] [--send-bytes N | --send FILE] [--once]
         listen (0.0.0.0 by default); receive until EOF (sha256 + count); --echo sends
         back what arrives; --send-bytes/--send sends while receiving, then closes.
  client HOST PORT [--bind A] [--send-bytes N | --send FILE] [--echo-check]
         connect, send, shut down the write side, receive until EOF. --echo-check:
         exit 1 unless what came back is exactly what was sent.
  sink   (--port P | HOST PORT)   receive and discard, report goodput (no hashing).
  source (--port P | HOST PORT) [--bytes N | --seconds T]   send as fast as possible.
Common: --mptcp (socket(AF_INET, SOCK_STREAM, 262)), --cc NAME (TCP_CONGESTION),
  --seed S (payload stream), --sha256-out FILE, --output FILE, --timeout S (idle),
  --rcvbuf N (SO_RCVBUF, set before listen/connect), --read-delay S (sleep S seconds
  before the first read: the receive buffer fills and the window closes),
  --abort-after S (receive for S seconds, then close with SO_LINGER 0 without a
  shutdown: an abort, RST; for MPTCP with unread data, MP_FASTCLOSE; the report says
  "aborted": true).
Sending: --join-pause S: 100 bytes, S seconds of sleep, the rest (mptcp_connect -j).
--pause-after N --pause S: send N bytes, sleep S seconds, then write 1000 bytes
  on their own (their own segment), sleep 0.2 s, then the rest.

The JSON report: mode, local, remote, mptcp (requested), fallback (kernel's MPTCP_INFO
fallback flag; null if not an MPTCP socket or unknown), token (the kernel's local MPTCP
token as `ip mptcp monitor` prints it), subflows (additional subflows, from
MPTCP_INFO), tx_bytes, tx_sha256, rx_bytes,
rx_sha256, seconds, rx_mbps, tx_mbps, ok, error (null or a short text).
Exit status: 0 when every connection ended cleanly (and --echo-check matched), else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from typing import Any, BinaryIO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import payload  # type: ignore[import-not-found,unused-ignore]  # next to this file

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
MPTCP_INFO_FLAG_FALLBACK = 0x1
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
RECV_SIZE = 1 << 18

_print_lock = threading.Lock()


def report(rec: dict[str, Any]) -> None:
    with _print_lock:
        sys.stdout.write(json.dumps(rec, sort_keys=True) + "\n")
        sys.stdout.flush()


def new_socket(opts: argparse.Namespace) -> socket.socket:
    proto = IPPROTO_MPTCP if opts.mptcp else 0
    # AF_INET6 for an IPv6 address to reach or bind, or --ipv6 (a dual-stack listener
    # on "::", taking IPv4 too as v4-mapped, as Linux MPTCP servers usually are)
    v6 = getattr(opts, "ipv6", False) or any(
        ":" in (getattr(opts, k, None) or "") for k in ("host", "bind"))
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM, proto)
    if v6 and getattr(opts, "v6only", False):
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if opts.cc:
        s.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, opts.cc.encode())
    if getattr(opts, "rcvbuf", None):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, opts.rcvbuf)
    return s


def mptcp_info(s: socket.socket) -> dict[str, Any]:
    """The kernel's struct mptcp_info (include/uapi/linux/mptcp.h), the fields we use."""
    try:
        raw = s.getsockopt(SOL_MPTCP, MPTCP_INFO, 256)
    except OSError as e:
        # The kernel refuses MPTCP_INFO on a connection that fell back to TCP.
        return {"fallback": True} if e.errno == errno.EOPNOTSUPP else {}
    if len(raw) < 16:
        return {}
    subflows = raw[0]
    flags, token = struct.unpack_from("=II", raw, 8)
    info: dict[str, Any] = {
        "subflows": subflows,
        "fallback": bool(flags & MPTCP_INFO_FLAG_FALLBACK),
        "token": f"{token:08x}",
    }
    if len(raw) >= 43:
        # __u64 write_seq, snd_una, rcv_nxt at 16; __u8 csum_enabled at 42. Read at EOF,
        # rcv_nxt = the peer's IDSN + 1 + bytes received + 1 (its DATA_FIN): the IDSN the
        # kernel derived from the peer's key.
        write_seq, snd_una, rcv_nxt = struct.unpack_from("=QQQ", raw, 16)
        info.update(write_seq=write_seq, snd_una=snd_una, rcv_nxt=rcv_nxt,
                    csum_enabled=bool(raw[42]))
    return info


def addr(a: Any) -> str:
    return f"{a[0]}:{a[1]}" if isinstance(a, tuple) else str(a)


class Conn:
    """One connection: concurrent send (payload/file/echo) and receive until EOF."""

    def __init__(self, s: socket.socket, opts: argparse.Namespace, mode: str) -> None:
        self.s = s
        self.opts = opts
        self.mode = mode
        self.rx = hashlib.sha256()
        self.tx = hashlib.sha256()
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.error: str | None = None
        self.t0 = time.monotonic()
        self.t_rx_first: float | None = None
        self.t_rx_end: float | None = None
        self.t_tx_end: float | None = None
        self.hash = mode not in ("sink", "source")
        self.out: BinaryIO | None = None
        self.info: dict[str, Any] = {}
        self.aborted = False

    def fail(self, what: str, e: BaseException) -> None:
        if self.error is None:
            name = errno.errorcode.get(getattr(e, "errno", None) or 0, "")
            self.error = f"{what}: {name + ' ' if name else ''}{e}".strip()

    # --- sending ---
    def _source_chunks(self) -> Any:
        o = self.opts
        if getattr(o, "send", None):
            with open(o.send, "rb") as f:
                while piece := f.read(RECV_SIZE):
                    yield piece
        elif getattr(o, "send_bytes", None) is not None:
            yield from payload.chunks(o.send_bytes, o.seed)
        elif self.mode == "source":
            buf = payload.payload(RECV_SIZE, o.seed)
            end = time.monotonic() + o.seconds if o.seconds is not None else None
            left = o.bytes
            while True:
                if end is not None and time.monotonic() >= end:
                    return
                if left is not None:
                    if left <= 0:
                        return
                    n = min(left, len(buf))
                    left -= n
                    yield buf if n == len(buf) else buf[:n]
                else:
                    yield buf

    def _paused(self, chunks: Any) -> Any:
        """--pause-after N: (piece, seconds to sleep after it): the stream cut at byte
        N (a pause of --pause S after it) and at N + 1000 (0.2 s after it), so that the
        1000 bytes after the pause leave alone, in their own segment. (Linux 6.18 puts
        its infinite mapping on the next skb it builds after an MP_FAIL, but sizes that
        skb's segments without the DSS option: a full-sized one exceeds the MTU and is
        dropped (IpFragFails) forever. A small write after the pause avoids it.)"""
        at = getattr(self.opts, "pause_after", None)
        cuts = {} if at is None else {at: self.opts.pause, at + 1000: 0.2}
        if getattr(self.opts, "join_pause", None):
            cuts[100] = self.opts.join_pause  # mptcp_connect -j
        pos = 0
        for piece in chunks:
            while piece:
                nxt = min((c for c in cuts if c > pos), default=None)
                n = len(piece) if nxt is None else min(len(piece), nxt - pos)
                pos += n
                yield piece[:n], cuts.get(pos, 0.0)
                piece = piece[n:]

    def sender(self) -> None:
        try:
            for piece, pause in self._paused(self._source_chunks()):
                self.s.sendall(piece)
                self.tx_bytes += len(piece)
                if self.hash:
                    self.tx.update(piece)
                if pause:
                    time.sleep(pause)
            self.t_tx_end = time.monotonic()
            self.s.shutdown(socket.SHUT_WR)
        except OSError as e:
            if not self.aborted:  # (an --abort-after closed the socket under us)
                self.fail("send", e)

    # --- receiving ---
    def receiver(self, echo: bool) -> None:
        delay = getattr(self.opts, "read_delay", None)
        if delay:
            time.sleep(delay)  # read nothing yet: the receive window closes
        abort_at = getattr(self.opts, "abort_after", None)
        try:
            while True:
                if abort_at is not None and time.monotonic() - self.t0 >= abort_at:
                    self.abort()
                    return
                data = self.s.recv(RECV_SIZE)
                if not data:
                    break
                if self.t_rx_first is None:
                    self.t_rx_first = time.monotonic()
                self.rx_bytes += len(data)
                if self.hash:
                    self.rx.update(data)
                if self.out is not None:
                    self.out.write(data)
                if echo:
                    self.s.sendall(data)
                    self.tx_bytes += len(data)
                    self.tx.update(data)
            self.t_rx_end = time.monotonic()
            if self.opts.mptcp:
                self.info.update(mptcp_info(self.s))
            if echo:
                self.s.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.fail("recv", e)

    def abort(self) -> None:
        """--abort-after: close now with SO_LINGER 0 (no shutdown, no FIN): an RST;
        an MPTCP socket with unread data sends MP_FASTCLOSE."""
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if self.opts.mptcp:
            self.info.update(mptcp_info(self.s))
        self.s.close()
        self.aborted = True
        self.t_rx_end = time.monotonic()

    def run(self) -> dict[str, Any]:
        o = self.opts
        self.s.settimeout(o.timeout)
        if o.output:
            self.out = open(o.output, "wb")  # noqa: SIM115 - closed at the end of run()
        local, remote = "", ""
        with contextlib.suppress(OSError):
            local, remote = addr(self.s.getsockname()), addr(self.s.getpeername())
        if o.mptcp:
            self.info = mptcp_info(self.s)
        echo = bool(getattr(o, "echo", False))
        sends = (
            self.mode == "source"
            or getattr(o, "send", None) is not None
            or getattr(o, "send_bytes", None) is not None
        )
        th = None
        if sends:
            th = threading.Thread(target=self.sender, daemon=True)
            th.start()
        elif not echo and self.mode in ("client",):
            # A client with nothing to send still closes its side so the peer sees EOF.
            try:
                self.s.shutdown(socket.SHUT_WR)
            except OSError as e:
                self.fail("shutdown", e)
        self.receiver(echo)
        if th is not None:
            th.join()
        if not sends and not echo and self.mode in ("server", "sink"):
            with contextlib.suppress(OSError):
                self.s.shutdown(socket.SHUT_WR)
        if self.out is not None:
            self.out.close()
        try:
            self.s.close()
        except OSError as e:
            self.fail("close", e)
        end = time.monotonic()
        seconds = end - self.t0
        rx_span = (self.t_rx_end or end) - (self.t_rx_first or self.t0)
        rec: dict[str, Any] = {
            "mode": self.mode,
            "local": local,
            "remote": remote,
            "mptcp": bool(o.mptcp),
            "fallback": self.info.get("fallback"),
            "token": self.info.get("token"),
            "subflows": self.info.get("subflows"),
            # MPTCP_INFO at EOF (None when not MPTCP): see mptcp_info()
            "rcv_nxt": self.info.get("rcv_nxt"),
            "csum_enabled": self.info.get("csum_enabled"),
            "rx_bytes": self.rx_bytes,
            "tx_bytes": self.tx_bytes,
            "rx_sha256": self.rx.hexdigest() if self.hash else None,
            "tx_sha256": self.tx.hexdigest() if self.hash else None,
            "seconds": round(seconds, 6),
            "rx_mbps": round(self.rx_bytes * 8 / rx_span / 1e6, 3) if rx_span > 0 else 0.0,
            "tx_mbps": round(self.tx_bytes * 8 / seconds / 1e6, 3) if seconds > 0 else 0.0,
            "error": self.error,
            "aborted": self.aborted,
        }
        if getattr(o, "echo_check", False) and self.error is None:
            rec["echo_ok"] = rec["rx_sha256"] == rec["tx_sha256"] and self.rx_bytes == self.tx_bytes
            if not rec["echo_ok"]:
                self.error = rec["error"] = "echo mismatch"
        rec["ok"] = self.error is None
        if getattr(o, "sha256_out", None) and self.hash:
            with open(o.sha256_out, "w") as f:
                f.write(rec["rx_sha256"] + "\n")
        return rec


def do_listen(opts: argparse.Namespace, mode: str) -> int:
    ls = new_socket(opts)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    wild = "::" if ls.family == socket.AF_INET6 else "0.0.0.0"
    ls.bind((opts.bind or wild, opts.port))
    ls.listen(64)
    print(f"kpeer: {mode} listening on {addr(ls.getsockname())}"
          f"{' (mptcp)' if opts.mptcp else ''}", file=sys.stderr, flush=True)
    status = 0
    lock = threading.Lock()

    def handle(s: socket.socket) -> None:
        nonlocal status
        rec = Conn(s, opts, mode).run()
        report(rec)
        if not rec["ok"]:
            with lock:
                status = 1

    while True:
        s, _ = ls.accept()
        if opts.once:
            # the listener stays open while the connection runs: the kernel takes
            # MP_JOIN SYNs for it through the listener
            handle(s)
            ls.close()
            return status
        threading.Thread(target=handle, args=(s,), daemon=True).start()


def do_connect(opts: argparse.Namespace, mode: str) -> int:
    s = new_socket(opts)
    if opts.bind:
        s.bind((opts.bind, 0))
    s.settimeout(opts.timeout)
    try:
        s.connect((opts.host, opts.port))
    except OSError as e:
        c = Conn(s, opts, mode)
        c.fail("connect", e)
        s.close()
        report({"mode": mode, "local": "", "remote": f"{opts.host}:{opts.port}",
                "mptcp": bool(opts.mptcp), "ok": False, "error": c.error})
        return 1
    rec = Conn(s, opts, mode).run()
    report(rec)
    return 0 if rec["ok"] else 1


def _connected(opts: argparse.Namespace) -> socket.socket:
    """A new socket connected to --host/--port (closed again if that fails)."""
    s = new_socket(opts)
    s.settimeout(opts.timeout)
    try:
        s.connect((opts.host, opts.port))
    except OSError:
        s.close()
        raise
    return s


def do_crr(opts: argparse.Namespace) -> int:
    """`crr`: connect, send --size bytes, shut down the write side, read until EOF,
    close; --count times, one after another. One JSON line: the rate."""
    data = bytes(opts.size)
    ok = 0
    errors: dict[str, int] = {}
    t0 = time.monotonic()
    for _ in range(opts.count):
        try:
            s = _connected(opts)
        except OSError as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            continue
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = 0
            while chunk := s.recv(RECV_SIZE):
                got += len(chunk)
            ok += 1
        except OSError as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
        finally:
            s.close()
    secs = time.monotonic() - t0
    report({"mode": "crr", "connections": opts.count, "ok_count": ok,
            "seconds": round(secs, 3), "rate_cps": round(ok / secs, 1) if secs else 0.0,
            "errors": errors, "ok": ok == opts.count})
    return 0 if ok == opts.count else 1


def do_hold(opts: argparse.Namespace) -> int:
    """`hold`: open --count connections (nothing sent), report, keep them open until
    SIGINT or SIGTERM, then close them all."""
    import signal
    socks = []
    t0 = time.monotonic()
    failed = 0
    for _ in range(opts.count):
        try:
            socks.append(_connected(opts))
        except OSError:
            failed += 1
    report({"mode": "hold", "opened": len(socks), "failed": failed,
            "seconds": round(time.monotonic() - t0, 3), "ok": failed == 0})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        time.sleep(0.2)
    for s in socks:
        s.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kpeer.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--mptcp", action="store_true", help="IPPROTO_MPTCP socket")
        sp.add_argument("--cc", help="TCP_CONGESTION, e.g. cubic")
        sp.add_argument("--bind", help="local address")
        sp.add_argument("--ipv6", action="store_true",
                        help="an AF_INET6 socket (a listener on '::' takes IPv4 as well)")
        sp.add_argument("--v6only", action="store_true", help="IPV6_V6ONLY on it")
        sp.add_argument("--seed", type=int, default=payload.DEFAULT_SEED)
        sp.add_argument("--timeout", type=float, default=60.0, help="idle timeout, s")
        sp.add_argument("--output", help="write the received bytes to FILE")
        sp.add_argument("--sha256-out", help="write the received bytes' sha256 to FILE")
        sp.add_argument("--rcvbuf", type=int, help="SO_RCVBUF, bytes")
        sp.add_argument("--read-delay", type=float, help="sleep S s before the first read")
        sp.add_argument("--abort-after", type=float, metavar="S",
                        help="receive for S s, then close with SO_LINGER 0 (an abort)")

    def sending(sp: argparse.ArgumentParser) -> None:
        g = sp.add_mutually_exclusive_group()
        g.add_argument("--send-bytes", type=int, help="send N bytes of the payload stream")
        g.add_argument("--send", help="send the contents of FILE")
        sp.add_argument("--pause-after", type=int, metavar="N",
                        help="after N bytes sent, pause (--pause), then 1000 bytes alone")
        sp.add_argument("--pause", type=float, default=1.0, metavar="S",
                        help="the pause of --pause-after, s (default 1)")
        sp.add_argument("--join-pause", type=float, metavar="S",
                        help="send 100 bytes, sleep S s, then the rest (the kernel "
                             "selftests' mptcp_connect -j: 0.2 s for the joins)")

    sp = sub.add_parser("server", help="listen, receive (and send/echo), report")
    common(sp)
    sending(sp)
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--echo", action="store_true")
    sp.add_argument("--once", action="store_true", help="serve one connection, then exit")

    sp = sub.add_parser("client", help="connect, send, receive until EOF, report")
    common(sp)
    sending(sp)
    sp.add_argument("host")
    sp.add_argument("port", type=int)
    sp.add_argument("--echo-check", action="store_true")

    sp = sub.add_parser("crr", help="connection rate: N connections one after another, "
                                    "each sends --size bytes, reads until EOF, closes")
    common(sp)
    sp.add_argument("host")
    sp.add_argument("port", type=int)
    sp.add_argument("--count", type=int, default=1000)
    sp.add_argument("--size", type=int, default=1000)

    sp = sub.add_parser("hold", help="open N idle connections, report, keep them until "
                                     "SIGINT/SIGTERM")
    common(sp)
    sp.add_argument("host")
    sp.add_argument("port", type=int)
    sp.add_argument("--count", type=int, default=1000)

    for name in ("sink", "source"):
        sp = sub.add_parser(name, help=f"benchmark {name}: --port P listens, HOST PORT connects")
        common(sp)
        sp.add_argument("host", nargs="?")
        sp.add_argument("pos_port", nargs="?", type=int, metavar="PORT")
        sp.add_argument("--port", type=int, help="listen on this port")
        sp.add_argument("--once", action="store_true")
        if name == "source":
            g = sp.add_mutually_exclusive_group()
            g.add_argument("--bytes", type=int)
            g.add_argument("--seconds", type=float)

    o = p.parse_args(argv)
    if o.cmd == "crr":
        return do_crr(o)
    if o.cmd == "hold":
        return do_hold(o)
    if o.cmd == "server":
        return do_listen(o, "server")
    if o.cmd == "client":
        return do_connect(o, "client")
    if o.cmd == "source" and o.bytes is None and o.seconds is None:
        o.seconds = 10.0
    if o.port is not None and o.host is None:
        return do_listen(o, o.cmd)
    if o.host is not None and o.pos_port is not None and o.port is None:
        o.port = o.pos_port
        return do_connect(o, o.cmd)
    p.error(f"{o.cmd}: give either --port P (listen) or HOST PORT (connect)")
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
