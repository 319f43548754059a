"""Where `--output` puts what we receive, without ever blocking the event loop.

The whole stack runs on one asyncio loop: a `write()` that blocks (a pipe nobody
reads, a slow terminal) stops every timer and every ACK, and the peer sees RTO
backoff. So a pipe, FIFO, terminal or socket is written non-blocking: when it is full,
`Sink.write` waits (`loop.add_writer`) and the caller, which awaits it before reading
more from the connection, simply stops reading. The bytes stay in the stack's receive
buffer, our advertised window closes, the peer probes it, and nothing is lost; once
the reader drains the pipe, writing and reading resume. At most the one chunk being
written is held here. A pipe is enlarged to 1 MB (F_SETPIPE_SZ, best effort): with
64 KB, a 256 KB chunk took several waits even for a fast reader (`| sha256sum`: 780
against 950 Mbit/s with blocking writes; with 1 MB, about the same as blocking).

A regular file (or block device) is written as before, synchronously: such writes
never wait for another process, and O_NONBLOCK means nothing to them.

The non-blocking mode is set on a private open file description where Linux allows
one (a pipe, FIFO or terminal reopened through /proc/self/fd), so the caller's stdout,
which may share its description with stderr or a parent shell, keeps its flags;
otherwise (a socket) on the descriptor itself, and restored by `close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
from typing import BinaryIO

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20


class Sink:
    """An asyncio-friendly writer for received data (`await sink.write(data)`)."""

    def __init__(self, f: BinaryIO) -> None:
        self.file = f
        fd = f.fileno()
        mode = os.fstat(fd).st_mode
        self.blocking = stat.S_ISREG(mode) or stat.S_ISBLK(mode)
        self._fd = fd
        self._own = False                 # _fd is our private reopened description
        self._restore: int | None = None  # file status flags to put back on close
        if self.blocking:
            return
        f.flush()  # whatever the buffered file holds goes first
        if stat.S_ISFIFO(mode):
            # a pipe's 64 KB took several waits per chunk: 1 MB (pipe-max-size's
            # default) takes a chunk in one write while the reader keeps up
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        try:
            self._fd = os.open(f"/proc/self/fd/{fd}",
                               os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
            self._own = True
        except OSError:
            # not reopenable (a socket; no /proc): O_NONBLOCK on the shared description
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            if not flags & os.O_NONBLOCK:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
                self._restore = flags

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of `data`; while the reader does not keep up, wait (the event
        loop runs on) instead of blocking."""
        if self.blocking:
            self.file.write(data)
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                await self._writable()
                continue
            view = view[n:]

    async def _writable(self) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_writer(self._fd, ready)
        try:
            await fut
        finally:
            loop.remove_writer(self._fd)

    def close(self) -> None:
        """Give the descriptor back as it was (the file itself is the caller's)."""
        if self.blocking:
            return
        if self._own:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._own = False
        elif self._restore is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._fd, fcntl.F_SETFL, self._restore)
            self._restore = None
