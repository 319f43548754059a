"""The thin I/O shell: a TUN device and an asyncio loop around the sans-I/O `Stack`.

Read datagrams into `Stack.feed`, write out `Stack.poll_transmit`, arm one timer from
`Stack.poll_timeout` (re-armed only when the deadline moves, as aioquic's asyncio layer
does). Only this module (and the API above it) imports asyncio or pytun.

Offloads: with `offload=True` the device is opened with IFF_VNET_HDR and TUNSETOFFLOAD
(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6), so the kernel hands us TCP super-packets of up
to 64 KB with checksums it vouches for, and takes super-packets from us (`gso_size`),
completing checksums and cutting segments itself. Without it, every packet is one
MTU-sized datagram and Python computes and verifies every checksum.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import heapq
import os
import random
import time
from collections.abc import Callable
from typing import Self

from stack import host as hostmod
from stack.addr import ip, ntoa
from stack.host import ConnEvent, Datagram, HostEvent, Stack, StackConfig
from stack.impair import Impairer
from stack.mib import Mib
from stack.mptcp.connection import MptcpConfig
from stack.wire import vnet

TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
READ_SIZE = 65536 + vnet.HEADER_LEN
READ_BATCH = 256

current_shell: contextvars.ContextVar[TunShell] = contextvars.ContextVar("current_shell")


class DeviceError(OSError):
    """The TUN device cannot be used (missing, no permission): a setup problem."""


def open_tun(dev: str, vnet_hdr: bool) -> tuple[object, int]:
    """Open the persistent TUN device `dev` (IFF_TUN | IFF_NO_PI [| IFF_VNET_HDR]).
    Refuses to create one: TUNSETIFF on a missing name would make a new, unrouted device."""
    if not os.path.exists(f"/sys/class/net/{dev}"):
        raise DeviceError(f"TUN device {dev} not found: run ./netns-setup.sh up "
                          f"(and run inside its namespace: ip netns exec mptcp-user ...)")
    try:
        import pytun  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as e:  # pragma: no cover - a dependency
        raise DeviceError("python-pytun is not installed (pip install python-pytun)") from e
    flags = pytun.IFF_TUN | pytun.IFF_NO_PI | (pytun.IFF_VNET_HDR if vnet_hdr else 0)
    try:
        tun = pytun.TunTapDevice(name=dev, flags=flags)
    except pytun.Error as e:
        text = str(e)
        if "busy" in text.lower():
            raise DeviceError(f"TUN device {dev} is in use by another process "
                              f"(one mptcp-tun per device)") from e
        if "not permitted" in text.lower() or "permission" in text.lower():
            raise DeviceError(f"cannot open TUN device {dev}: needs root (CAP_NET_ADMIN)") from e
        raise DeviceError(f"cannot open TUN device {dev}: {text}") from e
    fd = tun.fileno()
    # Always set the offloads: they outlive the file descriptor on a persistent device,
    # and a reader without the virtio-net header that inherits TUN_F_CSUM from an
    # earlier one would be handed packets with unfinished checksums.
    fcntl.ioctl(fd, TUNSETOFFLOAD, (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) if vnet_hdr else 0)
    os.set_blocking(fd, False)
    return tun, fd


class TunShell:
    """Owns a `Stack` and a TUN device inside the running asyncio loop.

    `async with TunShell(dev, addrs) as shell:` opens the device, and makes `shell` the
    default for `stack.api.open_connection` / `start_server` within the block.

    MPTCP is on by default, as in the CLI: without `config` the stack gets
    `StackConfig(mptcp=MptcpConfig())` (MP_CAPABLE v1 on our SYNs, accepted by our
    listeners, fallback to TCP when the peer does not answer it). `mptcp=False` asks
    for plain TCP; a `config` is used as given (its `mptcp` field decides) unless
    `mptcp` is True or False.

    `impair`: per-path impairments (`stack.impair`) between the stack and the device;
    packets they delay are held here, on a timer of their own. `--pcap` and `--trace`
    (the stack's tap) show what the stack sent and what reached it after them.
    """

    def __init__(self, dev: str = "mptun0", addrs: list[str] | None = None, *,
                 offload: bool = True, config: StackConfig | None = None,
                 mptcp: bool | None = None,
                 rng: random.Random | None = None,
                 randbytes: Callable[[int], bytes] = os.urandom,
                 impair: Impairer | None = None) -> None:
        self.dev = dev
        self.impair = impair if impair is not None and impair.rules else None
        self.offload = offload
        if config is None:
            config = StackConfig(mptcp=MptcpConfig())
        if mptcp is False:
            config.mptcp = None
        elif mptcp is True and config.mptcp is None:
            config.mptcp = MptcpConfig()
        config.split_payload = True  # payloads reach os.writev as they lie
        if offload:
            config.tx_csum_offload = True
            if config.tcp.gso_segments <= 1:
                config.tcp.gso_segments = 44  # 44 x 1448 fits a 64 KB super-packet
        self.stack = Stack([ip(a) for a in (addrs or default_addrs(dev))],
                           rng=rng, config=config, randbytes=randbytes)
        self.observers: list[Callable[[HostEvent, float], None]] = []
        self.on_accept: dict[hostmod.Listener, Callable[[hostmod.Connection], None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tun: object = None
        self._fd = -1
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False
        self._token: contextvars.Token[TunShell] | None = None
        # packets an impairment holds back: (due, order, inbound?, packet, trusted)
        self._held: list[tuple[float, int, bool, object, bool]] = []
        self._held_n = 0
        self._held_timer: asyncio.TimerHandle | None = None
        self._held_at: float | None = None

    # ---------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tun, self._fd = open_tun(self.dev, self.offload)
        self._loop.add_reader(self._fd, self._on_readable)
        self._token = current_shell.set(self)

    def close(self) -> None:
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held.clear()
        if self._tun is not None:
            self._tun.close()  # type: ignore[attr-defined]
            self._tun, self._fd = None, -1
        if self._token is not None:
            with contextlib.suppress(ValueError):  # reset from another context: harmless
                current_shell.reset(self._token)
            self._token = None

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # ---------------------------------------------------------------- I/O
    def _on_readable(self) -> None:
        """Read what the device holds (up to READ_BATCH packets), feed it to the stack
        as one batch (`Stack.feed_batch`), then write what is due."""
        read, fd, now = os.read, self._fd, self.now()
        vnet_len = vnet.HEADER_LEN if self.offload else 0
        batch: list[tuple[bytes | memoryview, bool]] = []
        gso_sizes: list[int] = []  # with impairments: each packet's, to cut it to the wire's
        for _ in range(READ_BATCH):
            try:
                pkt = read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                self.stack.counters[Mib.TunReadErrors] += 1
                break
            if vnet_len:
                trusted = bool(pkt[0] & (vnet.F_NEEDS_CSUM | vnet.F_DATA_VALID))
                batch.append((memoryview(pkt)[vnet_len:], trusted))
                if self.impair is not None:
                    gso_sizes.append(int.from_bytes(pkt[4:6], "little")
                                     if pkt[1] != vnet.GSO_NONE else 0)
            else:
                batch.append((pkt, False))
                if self.impair is not None:
                    gso_sizes.append(0)
        if self.impair is not None:
            batch = self._impair_in(batch, gso_sizes, now)
        self.stack.feed_batch(batch, now)
        self.flush()

    def _impair_in(self, batch: list[tuple[bytes | memoryview, bool]], gso_sizes: list[int],
                   now: float) -> list[tuple[bytes | memoryview, bool]]:
        """A read batch through the impairments: what is due now, in order; the rest
        is held."""
        assert self.impair is not None
        out: list[tuple[bytes | memoryview, bool]] = []
        for (pkt, trusted), gso_size in zip(batch, gso_sizes, strict=True):
            for due, p, t in self.impair.inbound(pkt, trusted, gso_size, now):
                if due <= now:
                    out.append((p, t))
                else:
                    self._hold(due, True, p, t)
        return out

    def _hold(self, due: float, inbound: bool, packet: object, trusted: bool) -> None:
        self._held_n += 1
        heapq.heappush(self._held, (due, self._held_n, inbound, packet, trusted))
        if self._held_at is None or due < self._held_at:
            if self._held_timer is not None:
                self._held_timer.cancel()
            assert self._loop is not None
            self._held_at = due
            self._held_timer = self._loop.call_at(due, self._release)

    def _release(self) -> None:
        """Packets whose impairment delay is over: written, or fed to the stack."""
        self._held_timer, self._held_at = None, None
        if self._fd < 0:
            return
        now = self.now()
        held = self._held
        batch: list[tuple[bytes | memoryview, bool]] = []
        while held and held[0][0] <= now + 1e-4:  # (the loop may wake a hair early)
            _due, _n, inbound, packet, trusted = heapq.heappop(held)
            if inbound:
                batch.append((packet, trusted))  # type: ignore[arg-type]
            else:
                self._emit(packet)  # type: ignore[arg-type]
        if held:
            assert self._loop is not None
            self._held_at = held[0][0]
            self._held_timer = self._loop.call_at(self._held_at, self._release)
        if batch:
            self.stack.feed_batch(batch, now)
            self.flush()

    def _write(self, d: Datagram, now: float) -> None:
        """A packet from the stack: through the impairments, if any, to the device."""
        if self.impair is None:
            self._emit(d)
            return
        for due, d2 in self.impair.outbound(d, now):
            if due <= now:
                self._emit(d2)
            else:
                self._hold(due, False, d2, False)

    def _emit(self, d: Datagram) -> None:
        """One packet to the device in one write: the virtio-net header (with offloads),
        the IP and TCP headers, and the payload where it lies (`os.writev`: no copy)."""
        parts: list[bytes | bytearray | memoryview]
        if self.offload:
            if not d.csum_partial:
                head = vnet.NO_OFFLOAD
            elif d.data[0] >> 4 == 6:
                head = vnet.tcp6_offload(d.l4_offset, d.l4_header_len, d.gso_size)
            else:
                head = vnet.tcp4_offload(d.l4_offset, d.l4_header_len, d.gso_size)
            parts = [head, d.data, d.payload] if d.payload else [head, d.data]
        else:
            parts = [d.data, d.payload] if d.payload else [d.data]
        try:
            os.writev(self._fd, parts)
        except OSError:
            # The device queue is full or gone: the segment is lost like on a wire, and
            # TCP's retransmission recovers it. Count it so a bench can see it.
            self.stack.counters[Mib.TunWriteErrors] += 1

    def flush(self) -> None:
        """Write everything due, deliver events, re-arm the timer."""
        self._flush_scheduled = False
        if self._fd < 0:
            return
        stack, now = self.stack, self.now()
        for _ in range(4):  # events may make the app send more; a few rounds settle it
            out = stack.poll_transmit(now)
            for d in out:
                self._write(d, now)
            had_events = self._dispatch(now)
            if not out and not had_events:
                break
        self._arm_timer()

    def kick(self, conn: hostmod.Connection | None = None) -> None:
        """The app did something to `conn`: transmit soon (coalesced into one flush)."""
        if conn is not None:
            self.stack.touch(conn)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def _dispatch(self, now: float) -> bool:
        any_event = False
        while (ev := self.stack.poll_event()) is not None:
            any_event = True
            for obs in self.observers:
                obs(ev, now)
            if isinstance(ev, ConnEvent):
                handler = ev.conn.app
                if handler is not None:
                    handler.on_event(ev.event)  # type: ignore[attr-defined]
            else:
                cb = self.on_accept.get(ev.listener)
                if cb is not None:
                    cb(ev.conn)
                else:
                    ev.conn.sock.abort()
                    self.stack.touch(ev.conn)
        return any_event

    def _arm_timer(self) -> None:
        deadline = self.stack.poll_timeout()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        now = self.now()
        self.stack.handle_timeout(now)
        self.flush()


def default_addrs(dev: str = "mptun0") -> list[str]:
    """Our stack's addresses as the topology routes them: the host routes onto `dev`
    in this namespace (netns-setup.sh adds 10.0.i.2/32 and fd00:i::2/128 dev mptun0
    per path), IPv4 first. Falls back to 10.0.1.2 when none is found."""
    v4: list[str] = []
    v6: list[str] = []
    try:
        with open("/proc/net/route") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[0] == dev and parts[7] == "FFFFFFFF":
                    v4.append(ntoa(int(parts[1], 16).to_bytes(4, "little")))
    except (OSError, StopIteration, IndexError, ValueError):
        pass
    try:
        with open("/proc/net/ipv6_route") as f:
            for line in f:
                parts = line.split()
                # destination, prefix length, ..., device (fields 0, 1, 9)
                if parts[-1] == dev and parts[1] == "80" and not parts[0].startswith("ff"):
                    v6.append(ntoa(bytes.fromhex(parts[0])))
    except (OSError, IndexError, ValueError):
        pass
    return (sorted(v4, key=ip) + sorted(v6, key=ip)) or ["10.0.1.2"]


def wall_clock_offset(shell: TunShell) -> float:
    """Add to a loop time (`shell.now()`, the `now` a `Stack.tap` gets) to get a UNIX
    timestamp (for pcap records)."""
    return time.time() - shell.now()
