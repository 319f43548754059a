"""A tiny application on the public asyncio API, used as the README shows it: a
`TunShell` on `mptun0` with no configuration (so MPTCP, the default) and
`open_connection` or `start_server`. tests/interop/test_api_interop.py runs it in the
user namespace against a kernel MPTCP socket in the peer namespace:

    ip netns exec mptcp-user .venv/bin/python -m tests.interop.api_app client 10.0.1.1 5000 \\
        --send-bytes 5000000
    ip netns exec mptcp-user .venv/bin/python -m tests.interop.api_app server 5000

client: connect, send N bytes of the payload stream (tests/interop/payload.py), close
  our side (the API's close is a half-close), read until the peer's EOF.
server: serve one connection: send back what arrives, close at EOF, then exit; says
  `listening on port P` on stderr once it listens.
`--no-mptcp` builds the shell with `TunShell("mptun0", mptcp=False)`: plain TCP.
Prints one JSON line: tx_bytes, tx_sha256, rx_bytes, rx_sha256.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys

from stack.api import StreamReader, StreamWriter, open_connection, start_server
from stack.shell import TunShell
from tests.interop import payload

CHUNK = 65536


def tun_shell(mptcp: bool) -> TunShell:
    """The README's shell (MPTCP by default), or the plain-TCP one."""
    return TunShell("mptun0") if mptcp else TunShell("mptun0", mptcp=False)


class Tally:
    def __init__(self) -> None:
        self.tx, self.rx = hashlib.sha256(), hashlib.sha256()
        self.tx_bytes = self.rx_bytes = 0

    def sent(self, data: bytes) -> None:
        self.tx.update(data)
        self.tx_bytes += len(data)

    def received(self, data: bytes) -> None:
        self.rx.update(data)
        self.rx_bytes += len(data)

    def report(self, shell: TunShell) -> None:
        # what the stack sent again on purpose (harness.nstat_errors allows the kernel's
        # DuplicateData for it): data-level resends and zero-window probe bytes
        c = shell.stack.all_counters()
        print(json.dumps({"tx_bytes": self.tx_bytes, "tx_sha256": self.tx.hexdigest(),
                          "rx_bytes": self.rx_bytes, "rx_sha256": self.rx.hexdigest(),
                          "resent_bytes": c["Reinjected"] + c["MPTCPRetransBytes"],
                          "window_probes": c["WinProbe"]}),
              flush=True)


async def client(host: str, port: int, n: int, mptcp: bool) -> None:
    tally = Tally()
    async with tun_shell(mptcp) as shell:
        reader, writer = await open_connection(host, port)

        async def send() -> None:
            for piece in payload.chunks(n):
                writer.write(piece)
                tally.sent(piece)
                await writer.drain()
            writer.close()

        async def receive() -> None:
            while data := await reader.read(CHUNK):
                tally.received(data)

        await asyncio.gather(send(), receive())
        await writer.wait_closed()
    tally.report(shell)


async def server(port: int, mptcp: bool) -> None:
    tally = Tally()
    served = asyncio.Event()

    async def echo(reader: StreamReader, writer: StreamWriter) -> None:
        while data := await reader.read(CHUNK):
            tally.received(data)
            writer.write(data)
            tally.sent(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
        served.set()

    async with tun_shell(mptcp) as shell, await start_server(echo, port):
        print(f"listening on port {port}", file=sys.stderr, flush=True)
        await served.wait()
    tally.report(shell)


def main() -> None:
    p = argparse.ArgumentParser(prog="api_app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-mptcp", action="store_true", help="TunShell(..., mptcp=False)")
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("client")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--send-bytes", type=int, default=1_000_000)
    s = sub.add_parser("server")
    s.add_argument("port", type=int)
    args = p.parse_args()
    if args.mode == "client":
        asyncio.run(client(args.host, args.port, args.send_bytes, not args.no_mptcp))
    else:
        asyncio.run(server(args.port, not args.no_mptcp))


if __name__ == "__main__":
    main()
