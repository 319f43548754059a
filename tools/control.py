"""`--control SOCKET`: steer a running `mptcp-tun` from outside, the way `ip mptcp`
steers the kernel's path manager. One command per line on a Unix socket, one JSON
object back per command; `mptcp-tun ctl SOCKET COMMAND...` is the client.

Commands act on every open MPTCP connection, or on one with `token T` in front
(our token, 8 hex digits, as `status` and the events print it):
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any, Protocol

from stack.addr import fmt, parse_addr_port
from stack.host import Addr, Connection, Stack, ip

COMMANDS = """\
  status                               connections, subflows, bytes per subflow
  subflow add LOCAL [REMOTE[:PORT]] [backup]
                                       open a join from LOCAL (default: to the
                                       connection's peer address and port)
  subflow del LOCAL [REMOTE]           close our subflows from LOCAL; their unacked
                                       data goes on the others (no REMOVE_ADDR)
  fullmesh ADDR                        ADDR becomes a fullmesh endpoint: it joins every
                                       remote address of the subflows (its family) now,
                                       and what the peer announces later
  announce ADDR[:PORT]                 ADD_ADDR our address ADDR (with PORT: joins go
                                       there, a port that takes joins only)
  remove ADDR                          REMOVE_ADDR ADDR, closing its subflows
  backup ADDR on|off                   MP_PRIO: subflows from ADDR are backups, or not
  flags ADDR [no]backup,[no]fullmesh   `ip mptcp endpoint change`: backup as above; a
                                       fullmesh change closes ADDR's joins and opens
                                       them again under the new flag (as Linux)
  fastclose                            abort the connection: MP_FASTCLOSE on an RST
  help                                 this list
"""
__doc__ = (__doc__ or "") + "\n" + COMMANDS


class Shell(Protocol):
    """What the controller needs of a TunShell (a simulation can provide it too)."""
    stack: Stack

    def now(self) -> float: ...

    def kick(self, conn: Connection | None = None) -> None: ...


class CommandError(Exception):
    pass


def _addr(text: str) -> Addr:
    try:
        return ip(text)
    except OSError:
        raise CommandError(f"not an IPv4 address: {text!r}") from None


def _host_port(text: str) -> tuple[Addr, int | None]:
    host, _, port = text.partition(":")
    if port and not port.isdigit():
        raise CommandError(f"bad port in {text!r}")
    return _addr(host), int(port) if port else None


class Controller:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def execute(self, line: str) -> dict[str, object]:
        """Run one command line; {"ok": true, ...} or {"ok": false, "error": why}."""
        try:
            return {"ok": True, **self._run(line.split())}
        except CommandError as e:
            return {"ok": False, "error": str(e)}
        except OSError as e:
            return {"ok": False, "error": str(e) or type(e).__name__}

    def _conns(self, token: int | None) -> list[Connection]:
        conns = [c for c in self.shell.stack.connections()
                 if c.msk is not None and not c.msk.is_closed]
        if token is not None:
            conns = [c for c in conns if c.msk is not None and c.msk.local_token == token]
            if not conns:
                raise CommandError(f"no MPTCP connection with token {token:08x}")
        return conns

    def _run(self, words: list[str]) -> dict[str, object]:
        token = None
        if len(words) >= 2 and words[0] == "token":
            try:
                token = int(words[1], 16)
            except ValueError:
                raise CommandError(f"bad token {words[1]!r} (8 hex digits)") from None
            words = words[2:]
        if not words or words[0] == "help":
            return {"help": COMMANDS}
        cmd, args = words[0], words[1:]
        if cmd == "status":
            return {"connections": [status(c) for c in self._conns(token)]}
        conns = self._conns(token)
        if not conns:
            raise CommandError("no open MPTCP connection")
        stack, now = self.shell.stack, self.shell.now()
        done: Callable[[Connection], object]
        match cmd, args:
            case "subflow", ["add", local, *rest] if len(rest) <= 2:
                backup = "backup" in rest
                rest = [r for r in rest if r != "backup"]
                remote, rport = _host_port(rest[0]) if rest else (None, None)
                src = _addr(local)

                def done(c: Connection) -> object:
                    eng = stack.add_subflow(c, src, now, backup, remote, rport)
                    return f"{fmt(eng.local_addr, eng.local_port)} -> " \
                           f"{fmt(eng.remote_addr, eng.remote_port)}"
            case "subflow", ["del", local, *rest] if len(rest) <= 1:
                src, dst = _addr(local), _addr(rest[0]) if rest else None

                def done(c: Connection) -> object:
                    return stack.remove_subflow(c, src, dst)
            case "fullmesh", [addr]:
                a = _addr(addr)

                def done(c: Connection) -> object:
                    return [f"{fmt(e.local_addr, e.local_port)} -> "
                            f"{fmt(e.remote_addr, e.remote_port)}"
                            for e in stack.add_fullmesh(c, a, now)]
            case "announce", [addr]:
                a, aport = parse_addr_port(addr)
                stack.set_endpoint_port(a, aport)

                def done(c: Connection) -> object:
                    stack.announce(c, a)
                    return True
            case "remove", [addr]:
                a = _addr(addr)

                def done(c: Connection) -> object:
                    return stack.remove_addr(c, a)
            case "flags", [addr, flags]:
                a, words_ = _addr(addr), flags.split(",")
                unknown = set(words_) - {"backup", "nobackup", "fullmesh", "nofullmesh"}
                if unknown or ("backup" in words_ and "nobackup" in words_) or (
                        "fullmesh" in words_ and "nofullmesh" in words_):
                    raise CommandError(f"flags: {flags!r} is not a set of backup|nobackup, "
                                       "fullmesh|nofullmesh")

                def pick(on: str) -> bool | None:
                    return True if on in words_ else False if f"no{on}" in words_ else None

                def done(c: Connection) -> object:
                    return stack.change_endpoint(c, a, now, backup=pick("backup"),
                                                 fullmesh=pick("fullmesh"))
            case "backup", [addr, ("on" | "off") as flag]:
                a = _addr(addr)

                def done(c: Connection) -> object:
                    return stack.set_backup(c, a, flag == "on")
            case "fastclose", []:
                def done(c: Connection) -> object:
                    c.sock.abort()
                    return True
            case _:
                raise CommandError(f"unknown command {' '.join(words)!r}; try 'help'")
        results = {}
        for c in conns:
            assert c.msk is not None
            results[f"{c.msk.local_token:08x}"] = done(c)
            self.shell.kick(c)
        return {"done": results}


def status(conn: Connection) -> dict[str, object]:
    msk = conn.msk
    assert msk is not None
    sfs = []
    for sf in msk.subflows:
        eng = sf.engine
        if eng is None:
            continue
        sfs.append({"local": fmt(eng.local_addr, eng.local_port),
                    "remote": fmt(eng.remote_addr, eng.remote_port),
                    "locid": sf.local_id, "remid": sf.remote_id, "backup": sf.backup,
                    "remote_backup": sf.remote_backup, "state": eng.state.name,
                    "established": sf.fully_established and sf.join_failed is None,
                    "stale": sf.stale, "closing": sf.closing,
                    "tx_bytes": sf.tx_next - 1, "rx_bytes": sf.rx_next - 1,
                    "cwnd": eng.cwnd, "ssthresh": min(eng.ssthresh, 0x7FFFFFFF),
                    "srtt_ms": None if eng.srtt is None else round(eng.srtt * 1000, 3),
                    "queued": eng.send_buffered})
    return {"token": f"{msk.local_token:08x}",
            "remote_token": None if msk.remote_token is None else f"{msk.remote_token:08x}",
            "local": fmt(conn.key[0], conn.key[1]), "remote": fmt(conn.key[2], conn.key[3]),
            "fallback": msk.fallback, "fully_established": msk.fully_established,
            "sent": msk.snd_una, "received": msk.ack_off,
            "mapped": msk.snd_nxt, "written": msk.write_off, "window_end": msk.snd_wnd_end,
            "subflows": sfs}


async def serve(shell: Shell, path: str) -> asyncio.AbstractServer:
    """Listen on the Unix socket `path` (replacing a stale one)."""
    ctl = Controller(shell)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                text = line.decode(errors="replace").strip()
                if text:
                    writer.write((json.dumps(ctl.execute(text)) + "\n").encode())
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(handle, path)


EXIT_OK, EXIT_REFUSED, EXIT_NO_SOCKET = 0, 1, 3  # 2: bad usage (argparse)
CTL_EPILOG = """\
commands (each acts on every open MPTCP connection, or on one with `token T` in front:
our token, 8 hex digits, as `status` and the events print it):
""" + COMMANDS + """
examples:
  mptcp-tun ctl /tmp/ctl                                # status
  mptcp-tun ctl /tmp/ctl backup 10.0.2.2 on             # MP_PRIO on its subflows
  mptcp-tun ctl /tmp/ctl token 0a1b2c3d subflow add 10.0.3.2

The answer is one JSON object on stdout: {"ok": true, ...} or {"ok": false, "error": ...}.

exit status: 0 done; 1 the command was refused (the answer says why); 2 bad usage;
3 nothing answers on SOCKET (is mptcp-tun running with --control SOCKET?).
"""


def configure(p: argparse.ArgumentParser) -> None:
    """Make `p` the `mptcp-tun ctl` command (tools/cli.py hands it its subparser)."""
    p.description = ("Steer a running `mptcp-tun connect|listen ... --control SOCKET`: send "
                     "one path-manager command, print its JSON answer.")
    p.epilog = CTL_EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("socket", metavar="SOCKET", help="the --control socket of a running mptcp-tun")
    p.add_argument("words", nargs="*", default=[], metavar="COMMAND",
                   help="the command and its arguments (default: status)")


def run(args: argparse.Namespace) -> int:
    """`mptcp-tun ctl SOCKET COMMAND...`: send one command, print the JSON answer."""
    path, words = args.socket, args.words or ["status"]
    try:
        answer = request(path, " ".join(words))
    except OSError as e:
        print(f"mptcp-tun ctl: {path}: {e.strerror or e} (is mptcp-tun running with "
              f"--control {path}?)", file=sys.stderr)
        return EXIT_NO_SOCKET
    except ValueError:
        print(f"mptcp-tun ctl: {path}: not an mptcp-tun control socket", file=sys.stderr)
        return EXIT_NO_SOCKET
    print(json.dumps(answer))
    return EXIT_OK if answer.get("ok") else EXIT_REFUSED


def request(path: str, command: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to a `--control` socket; its JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    answer = json.loads(buf)
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    return answer
