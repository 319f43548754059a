"""asyncio-streams API over our stack, mirroring `asyncio.open_connection` and
`asyncio.start_server`: `(reader, writer)` pairs with read/readexactly/readline and
write/drain/close/wait_closed.

Flow control is real TCP flow control: bytes stay in the engine's receive buffer until
the application reads them, so a slow reader closes the advertised window.

    async with TunShell("mptun0") as shell:
        reader, writer = await open_connection("10.0.1.1", 5000)
        writer.write(b"hello"); await writer.drain()
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Self

from stack import host as hostmod
from stack.addr import ip, parse_addr_port
from stack.buffers import frozen
from stack.shell import TunShell, current_shell
from stack.tcp.engine import (
    Closed,
    CloseError,
    Connected,
    DataReadable,
    Event,
    PeerFinished,
    State,
    StateChanged,
    TcpError,
    WritableSpace,
)

_READ_CHUNK = 1 << 20


def _error_for(closed: Closed, remote: tuple[str, int]) -> OSError:
    """A clear exception for an unclean `Closed`: its type from `closed.error`, its
    text naming the peer and, where there is one, the detail."""
    peer = f"{remote[0]}:{remote[1]}"
    detail = closed.detail
    match closed.error:
        case CloseError.REFUSED:
            return ConnectionRefusedError(f"peer {peer} refused the connection (RST)")
        case CloseError.RESET:
            return ConnectionResetError(f"peer {peer} reset the connection: {detail}" if detail
                                        else f"peer {peer} reset the connection (RST)")
        case CloseError.TIMEOUT:
            return TimeoutError(
                f"connection to {peer} timed out (no answer after retransmissions)")
        case CloseError.UNREACHABLE:
            return OSError(f"{peer} is unreachable: {detail or 'unreachable'} (ICMP)")
        case CloseError.ABORTED:
            return ConnectionAbortedError(f"connection to {peer} aborted locally")
        case _:
            return ConnectionError(f"connection to {peer} ended early: {detail or closed.error}")


class _Stream:
    """Per-connection glue between engine events and the reader/writer pair."""

    def __init__(self, shell: TunShell, conn: hostmod.Connection) -> None:
        self.shell = shell
        self.conn = conn
        # written by the app, not yet taken by the engine: chunks by reference (`frozen`)
        self.pending: deque[memoryview] = deque()
        self.eof = False                # peer's FIN seen
        self.done = False               # connection finished (closed, or in TIME-WAIT)
        self.error: OSError | None = None
        self.connected = asyncio.Event()
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()
        self.closed = asyncio.Event()
        self.writable.set()
        self.closing = False
        self.close_sent = False
        self.bytes_in = 0
        self.bytes_out = 0
        conn.app = self

    def on_event(self, ev: Event) -> None:
        if isinstance(ev, Connected):
            self.connected.set()
        elif isinstance(ev, DataReadable):
            self.readable.set()
        elif isinstance(ev, PeerFinished):
            self.eof = True
            self.readable.set()
        elif isinstance(ev, WritableSpace):
            self.push()
        elif isinstance(ev, StateChanged) and self.conn.msk is None:
            if ev.new in (State.TIME_WAIT, State.CLOSED):
                self._finish(None)
        elif isinstance(ev, Closed):
            self._finish(ev)

    def _finish(self, closed: Closed | None) -> None:
        if closed is not None and closed.error is not None and self.error is None:
            self.error = _error_for(closed, self.conn.remote)
        self.done = True
        for e in (self.connected, self.readable, self.writable, self.closed):
            e.set()

    def push(self) -> None:
        """Move pending app bytes into the engine's send buffer as space allows."""
        pending = self.pending
        if pending and not self.done:
            sock = self.conn.sock
            if sock.closed_as is not None:
                # closed under us (an RST, MP_FASTCLOSE) before its Closed event is
                # polled: the same error now, not a send() on a closed socket
                self._finish(sock.closed_as)
                return
            moved = 0
            try:
                while pending:
                    head = pending[0]
                    n = sock.send(head)
                    moved += n
                    if n < len(head):
                        if n:
                            pending[0] = head[n:]
                        break
                    pending.popleft()
            except TcpError:  # its engine closed, its Closed event not yet taken
                self._finish(sock.closed_as or Closed(CloseError.RESET,
                                                      "the connection closed while sending"))
                return
            if moved:
                self.bytes_out += moved
                self.shell.kick(self.conn)
        if not self.pending:
            self.writable.set()
            if self.closing and not self.done and not self.close_sent:
                self.close_sent = True
                self.conn.sock.close()
                self.shell.kick(self.conn)
        else:
            self.writable.clear()


class StreamReader:
    def __init__(self, stream: _Stream) -> None:
        self._s = stream

    def _take(self, n: int) -> bytes:
        data = self._s.conn.sock.recv(n)
        if data:
            self._s.bytes_in += len(data)
            self._s.shell.kick(self._s.conn)  # the window may have opened
        return data

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes (at least one unless at EOF); n = -1 reads until EOF."""
        if n == 0:
            return b""
        if n < 0:
            chunks = []
            while chunk := await self.read(_READ_CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        s = self._s
        while True:
            data = self._take(n)
            if data:
                return data
            if s.eof or (s.done and s.error is None):
                return b""
            if s.error is not None:
                raise s.error
            s.readable.clear()
            await s.readable.wait()

    async def readexactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = await self.read(n - len(buf))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buf), n)
            buf += chunk
        return bytes(buf)

    async def readline(self) -> bytes:
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = await self.read(1)
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    def at_eof(self) -> bool:
        return self._s.eof and self._s.conn.sock.recv_buffered == 0

    def __aiter__(self) -> StreamReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line


class StreamWriter:
    def __init__(self, stream: _Stream) -> None:
        self._s = stream

    def write(self, data: bytes | bytearray | memoryview) -> None:
        s = self._s
        if s.error is not None:
            raise s.error
        if s.closing or s.done:
            raise ConnectionError("write after close")
        if len(data):
            s.pending.append(frozen(data))  # (a copy only of what the caller may change)
        s.push()

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.write(line)

    async def drain(self) -> None:
        """Wait until everything written has been taken into the send buffer."""
        s = self._s
        while s.pending:
            if s.error is not None:
                raise s.error
            if s.done:
                raise ConnectionResetError("connection closed with data unsent")
            s.writable.clear()
            s.push()
            if s.pending:
                await s.writable.wait()
        if s.error is not None:
            raise s.error

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: our FIN goes after the data; reading goes on."""
        self.close()

    def close(self) -> None:
        s = self._s
        if not s.closing:
            s.closing = True
            s.push()

    def is_closing(self) -> bool:
        return self._s.closing or self._s.done

    async def wait_closed(self) -> None:
        await self._s.closed.wait()
        if self._s.error is not None:
            raise self._s.error

    def abort(self) -> None:
        s = self._s
        if not s.done:
            s.conn.sock.abort()
            s.shell.kick(s.conn)

    @property
    def transport(self) -> StreamWriter:
        return self

    @property
    def connection(self) -> hostmod.Connection:
        return self._s.conn

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": self._s.conn.remote, "sockname": self._s.conn.local,
                "connection": self._s.conn}.get(name, default)

    @property
    def bytes_sent(self) -> int:
        return self._s.bytes_out

    @property
    def bytes_received(self) -> int:
        return self._s.bytes_in


def _shell(shell: TunShell | None) -> TunShell:
    if shell is not None:
        return shell
    try:
        return current_shell.get()
    except LookupError:
        raise RuntimeError("no TunShell: use `async with TunShell(...)` or pass shell=") from None


async def open_connection(host: str, port: int, *, shell: TunShell | None = None,
                          local_addr: str | None = None, local_port: int | None = None,
                          subflows: list[str] | None = None, backup: list[str] | None = None,
                          ) -> tuple[StreamReader, StreamWriter]:
    """Active open to host:port through our stack; returns once ESTABLISHED.
    `subflows`: local addresses to open MPTCP joins from once the connection is fully
    established (those also in `backup` as backup subflows).
    Raises ConnectionRefusedError / TimeoutError / OSError with a one-line reason."""
    sh = _shell(shell)
    backups = set(backup or [])
    conn = sh.stack.connect(ip(host), port, sh.now(),
                            local=ip(local_addr) if local_addr else None,
                            local_port=local_port,
                            join_from=[(ip(a), a in backups) for a in subflows or []],
                            ipv6_socket=":" in host)  # as mptcp_connect: the text decides
    stream = _Stream(sh, conn)
    sh.kick(conn)
    await stream.connected.wait()
    if stream.error is not None:
        raise stream.error
    return StreamReader(stream), StreamWriter(stream)


ClientCallback = Callable[[StreamReader, StreamWriter], Awaitable[None] | None]


class Server:
    def __init__(self, shell: TunShell, listener: hostmod.Listener, cb: ClientCallback) -> None:
        self._shell = shell
        self.listener = listener
        self._cb = cb
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        shell.on_accept[listener] = self._accept

    def _accept(self, conn: hostmod.Connection) -> None:
        stream = _Stream(self._shell, conn)
        stream.connected.set()
        res = self._cb(StreamReader(stream), StreamWriter(stream))
        if asyncio.iscoroutine(res):
            task = asyncio.ensure_future(res)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        self._shell.stack.unlisten(self.listener)
        self._shell.on_accept.pop(self.listener, None)
        self._closed.set()

    def is_serving(self) -> bool:
        return not self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def serve_forever(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def start_server(client_connected_cb: ClientCallback, port: int, *, host: str | None = None,
                       shell: TunShell | None = None, backlog: int | None = None,
                       announce: list[str] | None = None) -> Server:
    """Listen on `port` (on `host`, or every local address); for each established
    connection call `client_connected_cb(reader, writer)` (a coroutine becomes a task).
    `announce`: our addresses to ADD_ADDR to each MPTCP client, each 'A' or 'A:PORT'
    ('[A]:PORT' for IPv6): with a port, joins go to that port, which takes nothing else."""
    sh = _shell(shell)
    addrs = []
    for text in announce or []:
        a, aport = parse_addr_port(text)
        sh.stack.set_endpoint_port(a, aport)
        addrs.append(a)
    lst = sh.stack.listen(port, ip(host) if host else None, backlog, announce=addrs)
    return Server(sh, lst, client_connected_cb)
