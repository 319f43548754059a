"""The sans-I/O host: IPv4 in and out, demux by 4-tuple, listeners with a bounded SYN
backlog, RST for closed ports, ICMP echo and errors, ISNs (RFC 6528), ephemeral ports.

`Stack` takes packets and `now` in (`feed`) and gives packets, events and the next
deadline out (`poll_transmit`, `poll_event`, `poll_timeout` / `handle_timeout`). It never
reads a clock or global randomness: `now` comes with every call, randomness from the
`rng` given at construction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import logging
import random
import struct
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from stack.addr import Addr as Addr
from stack.addr import family_name
from stack.addr import fmt as fmt
from stack.addr import ip as ip
from stack.addr import ntoa as ntoa
from stack.diag import Code, Diagnosis, Finding, FrameClock, PacketRef, Severity
from stack.mib import DropReason, Mib, format_counters
from stack.mptcp import crypto
from stack.mptcp import options as mo
from stack.mptcp.connection import STALL_MIN, MptcpConfig, MptcpConnection
from stack.mptcp.events import MptcpEvent
from stack.mptcp.pm import EndpointFlags, EndpointTable, JoinRequest
from stack.mptcp.subflow import Subflow, check_join_req
from stack.mptcp.token import TokenTable
from stack.ratelimit import IcmpRateLimit, Verdict
from stack.syncookies import VALID_FOR as COOKIES_VALID_FOR
from stack.syncookies import (
    JoinCookie,
    JoinCookieTable,
    SynCookies,
    cookie_tsval,
    ts_decode,
    ts_encode,
)
from stack.tcp.engine import Closed, Connected, Event, OutSegment, TcpConfig, TcpEngine
from stack.tcp.seq import seq_between
from stack.wire import MalformedPacket, icmp, icmp6, ipv4, ipv6, tcp
from stack.wire import mptcp as wm
from stack.wire.checksum import internet_checksum
from stack.wire.tcp import (
    ACK,
    FIN,
    RST,
    SYN,
    Mss,
    SackPermitted,
    TcpHeader,
    Timestamps,
    WindowScale,
)

log = logging.getLogger(__name__)

Key = tuple[bytes, int, bytes, int]  # (local addr, local port, remote addr, remote port)

EPHEMERAL_PORTS = (32768, 60999)  # Linux's net.ipv4.ip_local_port_range
# The per-packet counters, bound once: an Enum class attribute costs ~75 ns on 3.11
# (EnumType's __getattr__ takes attribute lookup off CPython's fast path).
_IN_RECEIVES, _IN_DELIVERS, _OUT_REQUESTS = Mib.InReceives, Mib.InDelivers, Mib.OutRequests


_FAST4 = struct.Struct("!2xH2xH1xB2x4s4s")  # IPv4: total length, flags+offset, proto, src, dst
_FAST6 = struct.Struct("!H")                 # IPv6: payload length (at offset 4)
_TCP_ACK = struct.Struct("!8xIB")            # TCP: ack, data offset (the byte)
_TS_PREFIX = b"\x01\x01\x08\x0a"          # NOP NOP kind 8 length 10: Linux's timestamps
_U32, _U64 = struct.Struct("!I"), struct.Struct("!Q")


def _pure_ack(packet: bytes | bytearray | memoryview) -> tuple[bytes, int, int, int] | None:
    """For a pure ACK that a later one may supersede: (flow key, ack, data ACK width in
    bits or 0, data ACK); else None. Pure: IPv4 without options or IPv6 without
    extension headers, TCP with ACK (PSH allowed) and nothing else, no payload, options
    only Linux's timestamps and an MPTCP DSS carrying a data ACK and nothing else."""
    n = len(packet)
    if not n:
        return None
    first = packet[0]
    if n > 100:  # IP + TCP headers, options included, never take more: it has data
        return None
    if first == 0x45 and n >= 40:
        total, ff, proto, _, _ = _FAST4.unpack_from(packet)
        if proto != 6 or ff & 0x3FFF or total > n:
            return None
        off, end, addrs = 20, total, bytes(packet[12:20])
    elif first >> 4 == 6 and n >= 60 and packet[6] == 6:
        off, end, addrs = 40, 40 + _FAST6.unpack_from(packet, 4)[0], bytes(packet[8:40])
        if end > n:
            return None
    else:
        return None
    if packet[off + 13] & ~0x18 or not packet[off + 13] & 0x10:  # flags: ACK, maybe PSH
        return None
    ack, doff = _TCP_ACK.unpack_from(packet, off)
    doff = (doff >> 4) * 4
    if off + doff != end or doff < 20:
        return None  # a payload (or a malformed header: the full path says)
    o = off + 20
    if end - o >= 12 and bytes(packet[o:o + 4]) == _TS_PREFIX:
        o += 12
    key = addrs + bytes(packet[off:off + 4])
    if o == end:
        return key, ack, 0, 0
    # an MPTCP DSS (kind 30, subtype 2) with the A flag, and a (the 8-byte) data ACK only
    if packet[o] != 30 or packet[o + 2] >> 4 != 2:
        return None
    length, flags = packet[o + 1], packet[o + 3]
    if flags == 0x01 and length == 8 and o + 8 == end:
        return key, ack, 32, _U32.unpack_from(packet, o + 4)[0]
    if flags == 0x03 and length == 12 and o + 12 == end:
        return key, ack, 64, _U64.unpack_from(packet, o + 4)[0]
    return None


def _superseded_acks(packets: Sequence[tuple[bytes | bytearray | memoryview, bool]]) -> set[int]:
    """The indexes of the pure ACKs (`_pure_ack`) that a later pure ACK of the same flow
    supersedes, with nothing else of that flow between them: it acknowledges strictly
    more (so the earlier one is no duplicate ACK) and, if they carry data ACKs, the same
    or more at the data level. Only packets whose checksum the device vouched for."""
    skip: set[int] = set()
    later: dict[bytes, tuple[int, int, int] | None] = {}  # the next packet of each flow
    for i in range(len(packets) - 1, -1, -1):
        pkt, ok = packets[i]
        a = _pure_ack(pkt) if ok else None
        if a is None:
            if later:  # (no later ACK waiting: nothing to break, no key to build)
                k = _flow_of(pkt)
                if k is not None:
                    later[k] = None  # anything else of the flow: no coalescing across it
            continue
        key, ack, width, dack = a
        nxt = later.get(key)
        if nxt is not None:
            n_ack, n_width, n_dack = nxt
            if (0 < (n_ack - ack) & 0xFFFFFFFF < 0x80000000 and n_width == width
                    and (not width or (n_dack - dack) % (1 << width) < (1 << (width - 1)))):
                skip.add(i)
        later[key] = (ack, width, dack)
    return skip


def _flow_of(packet: bytes | bytearray | memoryview) -> bytes | None:
    """The flow key `_pure_ack` gives, for any TCP packet of the fast-path shapes."""
    n = len(packet)
    if n >= 40 and packet[0] == 0x45 and packet[9] == 6:
        return bytes(packet[12:20]) + bytes(packet[20:24])
    if n >= 60 and packet[0] >> 4 == 6 and packet[6] == 6:
        return bytes(packet[8:40]) + bytes(packet[40:44])
    return None


@dataclass(frozen=True, slots=True)
class Datagram:
    """One IP packet to write to the device: `data`, then `payload` if there is one
    (the headers and the TCP payload apart, so that the payload reaches `os.writev`
    without a copy: `StackConfig.split_payload`). With `csum_partial` the TCP checksum
    field holds only the pseudo-header sum (the device completes it: virtio-net
    NEEDS_CSUM); with `gso_size` the device cuts the TCP payload into segments of that
    size."""
    data: bytes | bytearray
    gso_size: int = 0
    csum_partial: bool = False
    l4_offset: int = ipv4.HEADER_LEN
    l4_header_len: int = tcp.HEADER_LEN
    payload: bytes | memoryview = b""

    @property
    def packet(self) -> bytes:
        """The whole packet in one `bytes` (a copy when the payload is apart)."""
        return bytes(self.data) + self.payload if self.payload else bytes(self.data)


@dataclass
class StackConfig:
    tcp: TcpConfig = field(default_factory=TcpConfig)
    syn_backlog: int = 128       # half-open connections per listener (Linux: tcp_max_syn_backlog)
    # SYN cookies (Linux net.ipv4.tcp_syncookies): 0 never (a SYN over the backlog is
    # dropped), 1 when the backlog is full, 2 for every SYN
    syncookies: int = 1
    tx_csum_offload: bool = False  # leave TCP checksums to the device (virtio-net NEEDS_CSUM)
    split_payload: bool = False    # Datagram.payload apart from the headers (for writev)
    ttl: int = 64
    mptcp: MptcpConfig | None = None  # None: plain TCP; else MPTCP for connect and listen


class Connection:
    """A connection as the host sees it: its 4-tuple and TCP engine (for MPTCP, the
    master subflow's) and, for MPTCP, the connection-level control block `msk`.
    `sock` is what the layer above talks to: the msk, or the engine for plain TCP.
    `app` is free for the layer above (the asyncio API keeps its stream state there)."""

    __slots__ = ("app", "diag_t0", "engine", "engines", "final_counters", "findings", "key",
                 "listener", "msk", "timer_at")

    def __init__(self, key: Key, engine: TcpEngine, listener: Listener | None,
                 msk: MptcpConnection | None = None, now: float = 0.0) -> None:
        self.key = key
        self.diag_t0 = now  # the connection's clock starts at its first packet
        self.engine = engine
        self.engines: dict[Key, TcpEngine] = {key: engine}  # every subflow, by 4-tuple
        self.msk = msk
        self.listener = listener
        self.app: object = None
        self.findings: list[Finding] = []  # a plain TCP connection's (MPTCP: msk.diag)
        self.final_counters: Counter[str] | None = None  # `counters()` once forgotten
        self.timer_at: float | None = None  # its deadline as the host's timer heap has it

    def counters(self) -> Counter[str]:
        """This connection's own counters: its subflows' TCP ones and its MPTCP ones,
        as they stand, or as they stood when the host forgot it (the host's totals
        then take them over, `Stack.closed_counters`)."""
        if self.final_counters is not None:
            return self.final_counters
        c: Counter[str] = Counter()
        for eng in self.engines.values():
            c.update(eng.counters)
        if self.msk is not None:
            c.update(self.msk.counters)
        return c

    @property
    def sock(self) -> TcpEngine | MptcpConnection:
        return self.msk if self.msk is not None else self.engine

    @property
    def local(self) -> tuple[str, int]:
        return ntoa(self.key[0]), self.key[1]

    @property
    def remote(self) -> tuple[str, int]:
        return ntoa(self.key[2]), self.key[3]

    def __repr__(self) -> str:
        (la, lp), (ra, rp) = self.local, self.remote
        return f"<Connection {la}:{lp} -> {ra}:{rp} {self.engine.state.name}>"


class Listener:
    __slots__ = ("addr", "announce", "backlog", "closed", "half_open", "mptcp", "port")

    def __init__(self, port: int, addr: Addr | None, backlog: int,
                 mptcp: MptcpConfig | None = None) -> None:
        self.port = port
        self.addr = addr  # None: every local address
        self.backlog = backlog
        self.half_open = 0  # connections in SYN-RECEIVED (the SYN backlog)
        self.closed = False
        self.mptcp = mptcp  # None: plain TCP only; else MPTCP when the SYN asks for it
        self.announce: list[Addr] = []  # like kernel `signal` endpoints: ADD_ADDR these


# Host-level events, from poll_event(): (connection, engine event) or a new connection.
@dataclass(frozen=True, slots=True)
class ConnEvent:
    conn: Connection
    event: Event | MptcpEvent


@dataclass(frozen=True, slots=True)
class Accepted:
    """A passive connection reached ESTABLISHED: hand it to the listener's owner."""
    listener: Listener
    conn: Connection


HostEvent = ConnEvent | Accepted
Tap = Callable[[str, bytes, float], None]  # (direction "in" | "out", IP packet, now)


@dataclass
class MpcBlackhole:
    """The host's memory of MP_CAPABLE SYN blackholes (the kernel's per-namespace
    `active_disable_times` / `active_disable_stamp`, net/mptcp/ctrl.c), on the stack's
    clock. A blackhole is a path that drops our SYNs with MP_CAPABLE but answers a
    plain one: MPTCP active opens are then disabled for `blackhole_timeout`, doubled
    for each blackhole found since MPTCP last worked (at most 64 times); an MP_CAPABLE
    SYN/ACK starts the count again. A timeout of 0 turns detection off."""

    times: int = 0      # blackholes since an MP_CAPABLE SYN was last answered
    stamp: float = 0.0  # when the last one was found

    def period(self, timeout: float) -> float:
        """How long MPTCP active opens stay disabled after the last blackhole."""
        return timeout * (1 << min(max(self.times, 1) - 1, 6))

    def disabled_for(self, now: float, timeout: float) -> float:
        """`mptcp_active_should_disable`: seconds of the disable period left at `now`
        (0: MPTCP active opens are allowed)."""
        if timeout <= 0 or not self.times:
            return 0.0
        return max(0.0, self.stamp + self.period(timeout) - now)

    def disable(self, now: float, timeout: float) -> float:
        """`mptcp_active_disable`: a blackhole was found at `now`; the disable period
        it starts (0: detection off, nothing remembered)."""
        if timeout <= 0:
            return 0.0
        self.stamp = now
        self.times += 1
        return self.period(timeout)

    def enable(self) -> None:
        """`mptcp_active_enable`: an MP_CAPABLE SYN/ACK arrived (MPTCP works on a real
        interface): the next blackhole disables for `blackhole_timeout` again."""
        self.times = 0


class Stack:
    def __init__(self, addrs: list[Addr], *, rng: random.Random | None = None,
                 config: StackConfig | None = None,
                 randbytes: Callable[[int], bytes] | None = None) -> None:
        if not addrs:
            raise ValueError("a Stack needs at least one local address")
        self.addrs: list[Addr] = list(addrs)
        self._addrset = set(addrs)
        self.config = config or StackConfig()
        self.rng = rng or random.Random()
        # MPTCP keys: a CSPRNG in the shell (os.urandom), the seeded rng in tests
        self.randbytes = randbytes or self.rng.randbytes
        self.tokens: TokenTable[Connection] = TokenTable()
        # our addresses as MPTCP endpoints (ids, flags: `ip mptcp endpoint`)
        self.endpoints = EndpointTable(self.addrs)
        self._endpoint_ports: set[tuple[Addr, int]] = set()  # join-only listeners
        self._isn_secret = self.rng.randbytes(16)
        self.cookies = SynCookies(self.rng.randbytes(32))
        self._join_cookies = JoinCookieTable(self.cookies)  # joins answered with a cookie
        self._cookie_sent_at = float("-inf")  # ACKs are tried as cookies for a while after
        self._ident = self.rng.randrange(1 << 16)
        self.conns: dict[Key, Connection] = {}
        self.listeners: dict[tuple[Addr | None, int], Listener] = {}
        self.counters: Counter[str] = Counter()  # host-level (IP, demux, ICMP) only
        self.closed_counters: Counter[str] = Counter()  # engines of forgotten connections
        self._events: deque[HostEvent] = deque()
        self._out: list[Datagram] = []  # host-generated packets (RST, ICMP replies)
        self._dirty: set[Connection] = set()  # engines that may have something to send
        # every connection's next deadline, in a heap: (deadline, tie, connection). An
        # entry whose deadline is no longer the connection's `timer_at` (or whose
        # connection is forgotten) is stale and skipped, so a timer costs O(log n)
        # whatever the number of connections (10,000 idle ones cost nothing per packet)
        self._timers: list[tuple[float, int, Connection]] = []
        self._timer_tie = itertools.count()
        self.tap: Tap | None = None
        # every packet in and out counted, as the tap sees them: frame numbers for the
        # diagnosis (stack.diag), equal to those of a --pcap written from the tap
        self._v6_configs: dict[int, tuple[TcpConfig, TcpConfig]] = {}  # _for_family
        self.frames = FrameClock()
        self._icmp_limit = IcmpRateLimit()  # ICMP errors we answer with (Linux's limits)
        self.diag = Diagnosis(self.frames, 0.0)  # what no connection owns (unknown tokens)
        # MP_CAPABLE SYN blackholes seen from this host (the kernel's per-namespace memory)
        self.blackhole = MpcBlackhole()

    # ---------------------------------------------------------------- user calls
    def listen(self, port: int, addr: Addr | None = None, backlog: int | None = None,
               mptcp: MptcpConfig | bool | None = True,
               announce: list[Addr] | None = None) -> Listener:
        """Listen on `port`, at `addr` only or (None) at every address of ours. An MP_JOIN
        SYN too reaches us only through a listener on its address and port, as Linux's
        (mptcp_join.sh "bind main address ..., no join"). `mptcp`: True = the stack's
        MPTCP config (if any), False = plain TCP only, or an explicit MptcpConfig."""
        if addr is not None and addr not in self._addrset:
            raise OSError(f"{ntoa(addr)} is not one of this stack's addresses")
        if (addr, port) in self.listeners:
            raise OSError(f"port {port} is already listening")
        cfg = self.config.mptcp if mptcp is True else (mptcp or None)
        lst = Listener(port, addr, backlog or self.config.syn_backlog, cfg)
        lst.announce = list(announce or [])
        self.listeners[(addr, port)] = lst
        return lst

    def unlisten(self, listener: Listener) -> None:
        listener.closed = True
        self.listeners.pop((listener.addr, listener.port), None)

    def connect(self, remote: Addr, remote_port: int, now: float, *,
                local: Addr | None = None, local_port: int | None = None,
                config: TcpConfig | None = None,
                mptcp: MptcpConfig | bool | None = True,
                join_from: list[tuple[Addr, bool]] | None = None,
                ipv6_socket: bool | None = None) -> Connection:
        """Active open. The local address defaults to the one on the remote's /24
        (the topology gives each path its own subnet), else the first. `ipv6_socket`:
        whether the connection is as an AF_INET6 socket's, that may add subflows of
        both families (default: if `remote` is IPv6; a v4-mapped address written
        ::ffff:A.B.C.D asks for it over IPv4)."""
        local = local or self.source_for(remote)
        if local not in self._addrset:
            raise OSError(f"{ntoa(local)} is not one of this stack's addresses")
        if local_port is None:
            local_port = self._ephemeral_port(local, remote, remote_port)
        key = (local, local_port, remote, remote_port)
        if key in self.conns:
            raise OSError(f"{ntoa(local)}:{local_port} -> {ntoa(remote)}:{remote_port} is in use")
        cfg = self.config.mptcp if mptcp is True else (mptcp or None)

        def make_engine(ulp: Subflow | None) -> TcpEngine:
            return TcpEngine(local, local_port, remote, remote_port, iss=self._isn(key, now),
                             now=now, config=self._for_family(config or self.config.tcp, local),
                             ts_offset=self.rng.getrandbits(32), ulp=ulp)

        msk = None
        if cfg is None:
            eng = make_engine(None)
        else:
            msk = self._new_msk(True, cfg, now)
            eng = msk.add_subflow(make_engine).engine
            msk.pm.subflow_addrs = list(join_from or [])
            msk.pm.ipv6_socket = len(remote) == 16 if ipv6_socket is None else ipv6_socket
            # our SYNs consult it (MPTCP active opens disabled?) and teach it (blackhole)
            msk.pm.blackhole = self.blackhole
        conn = Connection(key, eng, None, msk, now)
        if msk is not None:
            self.tokens.add(msk.local_token, conn)
        self.conns[key] = conn
        eng.connect(now)
        self._dirty.add(conn)
        return conn

    def _new_msk(self, client: bool, cfg: MptcpConfig, now: float,
                 local_key: int | None = None) -> MptcpConnection:
        return MptcpConnection(client=client, config=cfg, randbytes=self.randbytes,
                               token_in_use=self.tokens.__contains__, now=now,
                               endpoints=self.endpoints, frames=self.frames,
                               local_key=local_key)

    def source_for(self, remote: Addr) -> Addr:
        return self.endpoints.source_for(remote)

    def touch(self, conn: Connection) -> None:
        """The layer above called send/recv/close on `conn`: poll it at the next transmit."""
        self._dirty.add(conn)

    # ---------------------------------------------------------------- input
    def feed_batch(self, packets: Sequence[tuple[bytes | bytearray | memoryview, bool]],
                   now: float) -> None:
        """Packets read together (one readiness batch): `feed` each, in order, with its
        `csum_ok`, except a pure ACK that a later pure ACK of the same subflow in the
        batch supersedes (it acknowledges more, at the data level too, with nothing
        else between them on that subflow): that one is counted (`TCPAckCoalesced`)
        and not processed. A sender reads dozens of ACKs per batch (two kernel
        subflows each ACK their own data); all but the last of each run say nothing the
        last does not. Never a segment with data, SYN, FIN, RST, SACK blocks or an MPTCP
        signal, nor a duplicate ACK (loss detection counts those), nor a packet whose
        checksum the device did not vouch for."""
        if len(packets) < 2:
            for pkt, ok in packets:
                self.feed(pkt, now, ok)
            return
        skip = _superseded_acks(packets)
        for i, (pkt, ok) in enumerate(packets):
            if i in skip:
                self.counters[_IN_RECEIVES] += 1
                self.frames.n += 1
                if self.tap is not None:
                    self.tap("in", bytes(pkt), now)
                self.counters[Mib.TCPAckCoalesced] += 1
                self.counters[_IN_DELIVERS] += 1  # (taken: what it says, the last says)
                continue
            self.feed(pkt, now, ok)

    def feed(self, packet: bytes | bytearray | memoryview, now: float,
             csum_ok: bool = False) -> None:
        """One IP packet from the device. `csum_ok`: the device vouched for the L4
        checksum (virtio-net DATA_VALID / NEEDS_CSUM), so it is not verified again.
        Never raises for anything in the packet: every packet is either delivered
        (`InDelivers`) or dropped and counted under `Drop:<reason>`."""
        self.counters[_IN_RECEIVES] += 1
        self.frames.n += 1
        if self.tap is not None:
            self.tap("in", bytes(packet), now)
        try:
            n = len(packet)
            first = packet[0] if n else 0
            # the fast path (nearly every packet): an IPv4 header without options or an
            # IPv6 one without extension headers, carrying TCP to one of our addresses,
            # not a fragment: one unpack, no header object. Anything else, or anything
            # the fast path doubts, goes the full way below, which counts and explains.
            if first == 0x45 and n >= 20:
                total, ff, proto, src, dst = _FAST4.unpack_from(packet)
                if (proto == ipv4.PROTO_TCP and not ff & 0x3FFF and 20 <= total <= n
                        and dst in self._addrset and internet_checksum(packet[:20]) == 0):
                    self._tcp_input(src, dst, memoryview(packet)[20:total], now, csum_ok)
                    return
            elif first >> 4 == 6 and n >= 40 and packet[6] == ipv6.NH_TCP:
                plen = _FAST6.unpack_from(packet, 4)[0]
                dst = bytes(packet[24:40])
                if 0 < plen <= n - 40 and dst in self._addrset:
                    self._tcp_input(bytes(packet[8:24]), dst, memoryview(packet)[40:40 + plen],
                                    now, csum_ok)
                    return
            version = ipv4.version_of(packet)
            if version == 6:
                self._feed6(packet, now, csum_ok)
                return
            if version != 4:
                self._drop(DropReason.IP_BAD_VERSION)
                return
            iph, end = ipv4.parse(packet)
            if iph.dst not in self._addrset:
                self._drop(DropReason.NOT_OUR_ADDRESS)
                return
            if iph.is_fragment:
                self.counters[Mib.ReasmFails] += 1
                self._drop(DropReason.IPV4_FRAGMENT)
                return
            body = memoryview(packet)[iph.header_len:end]
            if iph.proto == ipv4.PROTO_TCP:
                self._tcp_input(iph.src, iph.dst, body, now, csum_ok)
            elif iph.proto == ipv4.PROTO_ICMP:
                self._icmp_input(iph, body, now)
            else:
                self.counters[Mib.InUnknownProtos] += 1
                self._drop(DropReason.UNKNOWN_PROTOCOL)
                self._answer_error(packet, iph.src, iph.dst, icmp.DEST_UNREACH,
                                   icmp.UNREACH_PROTO, 0, now)
        except ipv6.ParameterProblem as e:
            self.counters[Mib.Ip6InHdrErrors] += 1
            self._drop(e.reason)
            src, dst = bytes(packet[8:24]), bytes(packet[24:40])
            if dst in self._addrset:  # RFC 8200 4: the node that processes it answers
                self._answer_error(packet, src, dst, icmp6.PARAM_PROBLEM, e.code, e.pointer,
                                   now)
        except MalformedPacket as e:
            if e.reason.endswith("checksum"):
                self.counters[Mib.InCsumErrors] += 1
            self.counters[Mib.InHdrErrors] += 1
            self._drop(e.reason)

    def _feed6(self, packet: bytes | bytearray | memoryview, now: float, csum_ok: bool) -> None:
        """An IPv6 packet (RFC 8200): its extension headers walked by the codec, ours
        or dropped; fragments dropped and counted (no reassembly)."""
        iph, end = ipv6.parse(packet)
        if iph.dst not in self._addrset:
            self._drop(DropReason.NOT_OUR_ADDRESS)
            return
        if iph.fragment is not None:
            self.counters[Mib.Ip6ReasmFails] += 1
            self._drop(DropReason.IPV6_FRAGMENT)
            return
        body = memoryview(packet)[iph.header_len:end]
        if iph.proto == ipv6.NH_TCP:
            self._tcp_input(iph.src, iph.dst, body, now, csum_ok)
        elif iph.proto == ipv6.NH_ICMPV6:
            self._icmp6_input(iph, body, now)
        elif iph.proto == ipv6.NH_NONE:
            self._drop(DropReason.IPV6_NO_NEXT_HEADER)
        else:
            self.counters[Mib.Ip6InUnknownProtos] += 1
            self._drop(DropReason.UNKNOWN_PROTOCOL)
            self._answer_error(packet, iph.src, iph.dst, icmp6.PARAM_PROBLEM,
                               icmp6.PARAM_NEXT_HEADER, iph.proto_offset, now)

    def _answer_error(self, packet: bytes | bytearray | memoryview, src: Addr, dst: Addr,
                      type_: int, code: int, rest: int, now: float) -> None:
        """Answer a packet to our address `dst` that we cannot take with an ICMP error
        quoting it, as Linux's icmp_send / icmp6_send do: protocol unreachable (IPv4),
        parameter problem (IPv6: an unknown next header, a bad extension header). Not
        about a packet from an address that is not one host's (RFC 1122 3.2.2, RFC 4443
        2.4 (e)); rate-limited per destination and overall (`stack.ratelimit`)."""
        v6 = len(src) == 16
        if v6:
            if not icmp6.may_send_error(packet, type_, code):
                return
        elif src[0] == 0 or src[0] >= 224 or src[0] == 127:  # this-network, loopback,
            return                                           # multicast, broadcast
        verdict = self._icmp_limit.allow(src, now)
        if verdict is not Verdict.SEND:
            self.counters[(Mib.Icmp6OutRateLimitHost if v6 else Mib.IcmpOutRateLimitHost)
                          if verdict is Verdict.HOST else Mib.IcmpOutRateLimitGlobal] += 1
            return
        if v6:
            self.counters[Mib.Icmp6OutParmProblems] += 1
            msg = icmp6.error(type_, code, rest, packet)
            self._out.append(Datagram(icmp6.emit_packet(dst, src, msg,
                                                        hop_limit=self.config.ttl)))
            return
        self.counters[Mib.IcmpOutDestUnreachs] += 1
        body = icmp.emit(icmp.IcmpMessage(type_, code, rest, bytes(packet[:icmp.MAX_QUOTE])))
        self._ident = (self._ident + 1) & 0xFFFF
        h = ipv4.IPv4Header(dst, src, ipv4.PROTO_ICMP, ttl=self.config.ttl, ident=self._ident)
        self._out.append(Datagram(ipv4.emit(h, len(body)) + body))

    def _drop(self, reason: str) -> None:
        self.counters["Drop:" + reason] += 1

    def _tcp_input(self, src: Addr, dst: Addr, seg: memoryview, now: float,
                   csum_ok: bool) -> None:
        hdr, doff = tcp.parse(seg)
        if not csum_ok and not (tcp.verify_checksum_v4(src, dst, seg) if len(src) == 4
                                else tcp.verify_checksum_v6(src, dst, seg)):
            raise MalformedPacket("tcp-bad-checksum")
        payload = seg[doff:]
        key = (dst, hdr.dst_port, src, hdr.src_port)
        conn = self.conns.get(key)
        if conn is not None:
            self.counters[_IN_DELIVERS] += 1
            if conn.msk is not None:
                conn.msk.feed(conn.engines[key], hdr, payload, now)
            else:
                conn.engine.on_segment(hdr, payload, now)
            self._dirty.add(conn)
            return
        lst = (self.listeners.get((dst, hdr.dst_port))
               or self.listeners.get((None, hdr.dst_port)))
        if lst is not None and hdr.flags & (SYN | ACK | RST) == SYN:
            if lst.mptcp is not None:
                ro, _ = mo.parse_received(hdr.options, hdr.flags, False)
                if ro.suboptions & mo.OPTION_MPTCP_MPJ_SYN:
                    self._passive_join(key, hdr, ro, now, lst)
                    return
            self._passive_open(lst, key, hdr, now)
            return
        if hdr.flags & (SYN | ACK | RST) == SYN and (dst, hdr.dst_port) in self._endpoint_ports:
            self._endpoint_port_syn(key, hdr, now)
            return
        if (hdr.flags & (SYN | ACK | RST) == ACK and self.config.syncookies
                and (lst is not None or (dst, hdr.dst_port) in self._endpoint_ports)
                and (self.config.syncookies == 2
                     or now - self._cookie_sent_at < COOKIES_VALID_FOR)
                and self._cookie_ack(lst, key, hdr, payload, now)):
            return
        if hdr.flags & (SYN | ACK | RST) == SYN and hdr.options:
            self._join_without_listener(key, hdr, now)
        self._reply_rst(key, hdr, len(payload), DropReason.NO_SOCKET)

    def _endpoint_port_syn(self, key: Key, hdr: TcpHeader, now: float) -> None:
        """A SYN to a port-based endpoint of ours (announced as A:PORT): it takes
        MP_JOIN only, as the kernel's endpoint listener (`subflow_check_req`: an
        MP_CAPABLE SYN there counts MPCapableEndpAttempt and gets an RST with MP_TCPRST
        reason 3; so does a plain one here)."""
        ro, _ = mo.parse_received(hdr.options, hdr.flags, False)
        if ro.suboptions & mo.OPTION_MPTCP_MPJ_SYN:
            self._passive_join(key, hdr, ro, now)
            return
        if ro.suboptions & mo.OPTION_MPTCP_MPC_SYN:
            self.counters[Mib.MPCapableEndpAttempt] += 1
        self._reply_rst(key, hdr, 0, DropReason.ENDPOINT_PORT_NOT_JOIN,
                        wm.MpTcpRst(wm.MPTCP_RST_EPROHIBIT, 0))

    def set_endpoint_port(self, addr: Addr, port: int | None) -> None:
        """`ip mptcp endpoint add A signal port P`: our announcements of `addr` carry
        `port`, and joins to A:P are taken there (never a new connection); None: no port."""
        self._check_ours(addr)
        self.endpoints.set_port(addr, port)
        self._endpoint_ports = self.endpoints.ports()

    def _join_without_listener(self, key: Key, hdr: TcpHeader, now: float) -> None:
        """An MP_JOIN SYN of one of our connections, to an address and port we do not
        listen on (`listen --bind`): refused with a plain RST as Linux refuses it; the
        connection's diagnosis says why its ADD_ADDR found no subflow."""
        ro, _ = mo.parse_received(hdr.options, hdr.flags, False)
        if not ro.suboptions & mo.OPTION_MPTCP_MPJ_SYN:
            return
        conn = self.tokens.get(ro.token)
        if conn is not None and conn.msk is not None:
            conn.msk.pm.join_without_listener(key[0], self.diag.packet_in(now, key))

    def _passive_join(self, key: Key, hdr: TcpHeader, ro: mo.ReceivedOptions, now: float,
                      lst: Listener | None = None) -> None:
        """A SYN with MP_JOIN: the MPTCP layer decides (`check_join_req`, the token
        table names the connection); the host answers a refusal with its RST, or
        builds the subflow's engine, or answers with a SYN cookie (`lst`: the listener
        it came to, None for a port-based endpoint)."""
        conn = self.tokens.get(ro.token)
        msk = conn.msk if conn is not None else None
        no = check_join_req(msk)
        if no is not None:
            (self.counters if msk is None else msk.counters)[no.counter] += 1
            if no.counter is Mib.MPJoinNoTokenFound:
                self._unknown_token(ro.token, key, msk, now)
            self._reply_rst(key, hdr, 0, no.drop, wm.MpTcpRst(no.rst_reason, 0))
            return
        assert conn is not None and msk is not None
        if key[1] != conn.key[1]:  # not the connection's port (`subflow_use_different_sport`)
            if not msk.pm.join_port_ok(key[0], key[1]):
                log.info("join to %s refused: that port was not announced to its "
                         "connection", fmt(key[0], key[1]))
                msk.counters[Mib.MismatchPortSynRx] += 1
                self._reply_rst(key, hdr, 0, DropReason.JOIN_PORT_MISMATCH,
                                wm.MpTcpRst(wm.MPTCP_RST_EPROHIBIT, 0))
                return
            msk.counters[Mib.MPJoinPortSynRx] += 1
        nonce = int.from_bytes(self.randbytes(4), "big")
        if self._want_cookie(lst):
            self._cookie_join_synack(msk, key, hdr, ro, nonce, now)
            return
        sf = self._join_subflow(msk, key, self._accepting(hdr, key, now), nonce)
        conn.engines[key] = sf.engine
        self.conns[key] = conn
        self.counters[Mib.InDelivers] += 1
        self._dirty.add(conn)

    def _join_subflow(self, msk: MptcpConnection, key: Key,
                      make_engine: Callable[[Subflow | None], TcpEngine],
                      nonce: int, *, register: bool = True) -> Subflow:
        """The responder's subflow of a join on `key` (`register`: one of the
        connection's; else a SYN cookie's, there only to write its SYN/ACK)."""
        flags = self.endpoints.flags_of(key[0])
        kw = dict(join=True, initiator=False, backup=bool(flags & EndpointFlags.BACKUP),
                  local_id=msk.pm.local_id_of(key[0]), local_nonce=nonce)
        if register:
            return msk.add_subflow(make_engine, **kw)
        return Subflow(msk, make_engine, **kw)  # type: ignore[arg-type]

    def _unknown_token(self, token: int, key: Key, msk: MptcpConnection | None,
                       now: float) -> None:
        ours = ", ".join(f"{t:08x}" for t in self.tokens.tokens()) or "none"
        if msk is None:
            text = (f"an MP_JOIN SYN names token {token:08x}, which is none of our "
                    f"connections' (ours: {ours}): refused with RST, MP_TCPRST reason 1")
        else:
            text = (f"an MP_JOIN SYN names token {token:08x}, a connection that "
                    + ("has fallen back to TCP" if msk.fallback else
                       "is not fully established yet") + ": refused with RST")
        self.diag.add(Code.JOIN_UNKNOWN_TOKEN, Severity.ERROR, text,
                      self.diag.packet_in(now, key),
                      hint="the joiner has the wrong token: from another connection or "
                           "another run, or computed from the wrong key (token = "
                           "SHA-256(key)[0:4])", key=(token, key))

    def _open_joins(self, conn: Connection, now: float) -> None:
        """Build the engines for the joins the path manager asked for."""
        assert conn.msk is not None
        for req in conn.msk.pm.take_joins():
            try:
                self._open_join(conn, req, now)
            except OSError as e:
                self.counters[Mib.JoinNotOpened] += 1
                log.info("no join from %s: %s", ntoa(req.local), e)
                remote = req.remote or conn.key[2]
                hint = ("Linux sends no MP_JOIN SYN either (mptcp_join.sh 'no JOIN with "
                        "diff families'): a join needs a local and a remote address of "
                        "one family") if len(remote) != len(req.local) else \
                    "the subflow limit: raise it with --limits"
                conn.msk.finding(Code.JOIN_NOT_OPENED, Severity.WARNING,
                                 f"no join from {ntoa(req.local)} to "
                                 f"{fmt(remote, req.rport or conn.key[3])}: {e}",
                                 packet=None, hint=hint, key=(req.local, remote))

    def _open_join(self, conn: Connection, req: JoinRequest, now: float) -> TcpEngine:
        """Open a join (MP_JOIN, RFC 8684 3.2) from `req.local` to `req.remote`:
        `req.rport` (default: the connection's remote address and port)."""
        msk = conn.msk
        assert msk is not None
        if not msk.pm.can_add_subflow():
            raise OSError(f"subflow limit ({msk.config.subflows_max}) reached")
        remote = req.remote or conn.key[2]
        rport = req.rport or conn.key[3]
        if len(remote) != len(req.local):
            raise OSError(f"not the same address family ({family_name(req.local)} to "
                          f"{family_name(remote)})")
        lport = self._ephemeral_port(req.local, remote, rport)
        key = (req.local, lport, remote, rport)

        def make_engine(ulp: Subflow) -> TcpEngine:
            return TcpEngine(req.local, lport, remote, rport, iss=self._isn(key, now), now=now,
                             config=self._for_family(conn.engine.config, req.local),
                             ts_offset=self.rng.getrandbits(32),
                             ulp=ulp)

        sf = msk.add_subflow(make_engine, join=True, initiator=True, backup=req.backup,
                             local_id=msk.pm.local_id_of(req.local),
                             local_nonce=int.from_bytes(self.randbytes(4), "big"))
        conn.engines[key] = sf.engine
        self.conns[key] = conn
        msk.counters[Mib.MPJoinSynTxAttempts] += 1
        sf.engine.connect(now)
        self._dirty.add(conn)
        return sf.engine

    # ---- the runtime path manager: thin calls into the connection's (the kernel's
    # ---- userspace PM commands; `mptcp-tun ctl` uses them)
    def add_subflow(self, conn: Connection, local: Addr, now: float, backup: bool = False,
                    remote: Addr | None = None, rport: int | None = None) -> TcpEngine:
        """`ip mptcp subflow add`: open a join from `local` to `remote`:`rport`
        (default: the connection's remote address and port)."""
        req = self._msk_of(conn).pm.subflow_create(local, backup, remote, rport)
        return self._open_join(conn, req, now)

    def add_fullmesh(self, conn: Connection, local: Addr, now: float) -> list[TcpEngine]:
        """`ip mptcp endpoint add A subflow fullmesh` while `conn` runs: `local` is a
        fullmesh endpoint from now on (it joins what the peer announces later), and it
        joins at once every remote address and port of the connection's subflows of its
        family that it has no subflow to (the kernel's `fill_remote_addresses_fullmesh`).
        Returns the joins opened."""
        msk = self._msk_of(conn)
        self._check_ours(local)
        self._set_endpoint_flag(local, EndpointFlags.FULLMESH, True)
        return self._fullmesh_joins(conn, msk, local, now)

    def _fullmesh_joins(self, conn: Connection, msk: MptcpConnection, local: Addr,
                        now: float) -> list[TcpEngine]:
        remotes = dict.fromkeys((sf.engine.remote_addr, sf.engine.remote_port)
                                for sf in msk.subflows if sf.is_open)
        have = {(sf.engine.remote_addr, sf.engine.remote_port) for sf in msk.subflows
                if sf.is_open and sf.engine.local_addr == local}
        opened = []
        for remote, rport in remotes:  # (the endpoint's backup flag: the joins' B flag)
            if len(remote) == len(local) and (remote, rport) not in have:
                req = msk.pm.subflow_create(local, False, remote, rport)
                opened.append(self._open_join(conn, req, now))
        return opened

    def _set_endpoint_flag(self, addr: Addr, flag: EndpointFlags, on: bool) -> None:
        have = [a for a in self.endpoints.with_flag(flag) if a != addr]
        self.endpoints.set_flag([*have, addr] if on else have, flag)

    def change_endpoint(self, conn: Connection, local: Addr, now: float, *,
                        backup: bool | None = None,
                        fullmesh: bool | None = None) -> dict[str, object]:
        """`ip mptcp endpoint change A [no]backup [no]fullmesh` while `conn` runs (the
        kernel's `mptcp_nl_set_flags`): a backup change is an MP_PRIO on each of our
        subflows from `local`; a fullmesh change closes the joins from `local`
        (RmSubflow) and opens them again under the new flag (`mptcp_pm_nl_fullmesh`):
        to every remote address and port the connection uses (fullmesh), or one to its
        remote address. The MP_PRIO goes first, on the subflow about to close, as the
        kernel sends it. Returns what changed."""
        msk = self._msk_of(conn)
        self._check_ours(local)
        out: dict[str, object] = {}
        if backup is not None:
            self._set_endpoint_flag(local, EndpointFlags.BACKUP, backup)
            out["mp_prio"] = msk.pm.set_backup(local, backup)
        was = bool(self.endpoints.flags_of(local) & EndpointFlags.FULLMESH)
        if fullmesh is not None and fullmesh != was:
            self._set_endpoint_flag(local, EndpointFlags.FULLMESH, fullmesh)
            out["closed"] = msk.remove_subflows(
                lambda sf: sf.join and sf.engine.local_addr == local,
                f"endpoint {ntoa(local)} changed to {'' if fullmesh else 'no'}fullmesh",
                ours=True)
            if fullmesh:
                engines = self._fullmesh_joins(conn, msk, local, now)
            else:
                req = msk.pm.subflow_create(local, False)
                engines = [self._open_join(conn, req, now)]
            out["opened"] = [f"{fmt(e.local_addr, e.local_port)} -> "
                             f"{fmt(e.remote_addr, e.remote_port)}" for e in engines]
        self._dirty.add(conn)
        return out

    def remove_subflow(self, conn: Connection, local: Addr,
                       remote: Addr | None = None) -> int:
        """`ip mptcp subflow del`: close our subflows from `local` (to `remote`)."""
        n = self._msk_of(conn).pm.subflow_destroy(local, remote)
        self._dirty.add(conn)
        return n

    def announce(self, conn: Connection, addr: Addr) -> None:
        """ADD_ADDR one of our addresses (`ip mptcp endpoint add A signal`)."""
        msk = self._msk_of(conn)
        self._check_ours(addr)
        msk.pm.announce(msk.pm.local_id_of(addr), addr)
        self._dirty.add(conn)

    def remove_addr(self, conn: Connection, addr: Addr) -> int:
        """Withdraw one of our addresses (`ip mptcp endpoint delete`): REMOVE_ADDR,
        and our subflows from it closed. Returns the subflows closed."""
        msk = self._msk_of(conn)
        self._check_ours(addr)
        n = msk.pm.remove_addr(msk.pm.local_id_of(addr))
        self._dirty.add(conn)
        return n

    def set_backup(self, conn: Connection, local: Addr, backup: bool,
                   remote: Addr | None = None) -> int:
        """`ip mptcp endpoint change A backup|nobackup`: MP_PRIO on our subflows from
        `local`. Returns how many subflows changed."""
        n = self._msk_of(conn).pm.set_backup(local, backup, remote)
        self._dirty.add(conn)
        return n

    def _msk_of(self, conn: Connection) -> MptcpConnection:
        if conn.msk is None or conn.msk.fallback:
            raise OSError("not an MPTCP connection (plain TCP or fallen back)")
        return conn.msk

    def _check_ours(self, addr: Addr) -> None:
        if addr not in self._addrset:
            raise OSError(f"{ntoa(addr)} is not one of this stack's addresses")

    def _passive_open(self, lst: Listener, key: Key, hdr: TcpHeader, now: float) -> None:
        if lst.half_open >= lst.backlog and self.config.syncookies != 2:
            if not self.config.syncookies:
                # dropped and counted, as Linux does without cookies; the peer
                # retransmits its SYN
                self.counters[Mib.TCPReqQFullDrop] += 1
                self.counters[Mib.ListenDrops] += 1
                self._drop(DropReason.SYN_BACKLOG_FULL)
                return
            self.counters[Mib.TCPReqQFullDoCookies] += 1
            if now - self._cookie_sent_at >= COOKIES_VALID_FOR:
                log.warning("possible SYN flooding on port %d: sending cookies (the SYN "
                            "backlog of %d is full)", lst.port, lst.backlog)
        if self._want_cookie(lst):
            self._cookie_synack(lst, key, hdr, now)
            return
        conn = self._new_passive(lst, key, hdr, self._accepting(hdr, key, now), now)
        self.counters[Mib.InDelivers] += 1
        lst.half_open += 1
        self.conns[key] = conn
        self._dirty.add(conn)

    def _new_passive(self, lst: Listener, key: Key, hdr: TcpHeader,
                     make_engine: Callable[[Subflow | None], TcpEngine], now: float, *,
                     local_key: int | None = None, register: bool = True) -> Connection:
        """The connection a SYN `hdr` to `lst` opens: MPTCP if it asks and `lst` takes
        MPTCP, else plain TCP (`local_key`: our MPTCP key already chosen; `register`:
        in the token table, else a SYN cookie's connection, there only to write its
        SYN/ACK)."""
        msk = None
        if lst.mptcp is not None and _asks_for_mptcp(hdr, lst.mptcp):
            msk = self._new_msk(False, lst.mptcp, now, local_key)
            eng = msk.add_subflow(make_engine).engine
            msk.pm.signal_addrs = [a for a in lst.announce if a != key[0]]
        else:
            eng = make_engine(None)
        conn = Connection(key, eng, lst, msk, now)
        if msk is not None:
            if register:
                self.tokens.add(msk.local_token, conn)
        elif lst.mptcp is not None and (nops := mo.stripped_nops(hdr)):
            conn.findings.append(Finding(
                Code.MPC_STRIPPED, Severity.WARNING,
                f"the SYN arrived without MP_CAPABLE but with {nops} NOPs where an option "
                "was: a middlebox stripped it; plain TCP", PacketRef(self.frames.n, now, "in", key),
                hint="a firewall or NAT on this path removes TCP option 30 (nft 'reset tcp "
                     "option mptcp' does exactly this)"))
        return conn

    def _accepting(self, hdr: TcpHeader, key: Key, now: float, iss: int | None = None,
                   ts_offset: int | None = None) -> Callable[[Subflow | None], TcpEngine]:
        """What builds the engine that answers the SYN `hdr` (with a ULP or without);
        `iss` and `ts_offset` given for a SYN cookie's."""
        def make_engine(ulp: Subflow | None) -> TcpEngine:
            return TcpEngine.accept_syn(
                hdr, key[0], key[1], key[2], key[3],
                iss=self._isn(key, now) if iss is None else iss, now=now,
                config=self._for_family(self.config.tcp, key[0]),
                ts_offset=self.rng.getrandbits(32) if ts_offset is None else ts_offset,
                ulp=ulp)
        return make_engine

    # ---- SYN cookies (stack.syncookies; Linux tcp_conn_request, cookie_v4_check) -----
    def _want_cookie(self, lst: Listener | None) -> bool:
        mode = self.config.syncookies
        return mode == 2 or (mode == 1 and lst is not None and lst.half_open >= lst.backlog)

    def _cookie_syn(self, key: Key, hdr: TcpHeader, now: float,
                    ) -> tuple[TcpHeader, int, int]:
        """What a cookie SYN/ACK answers: the SYN as the cookie can keep it (the MSS
        from the table; window scale and SACK only with timestamps, which carry them),
        the cookie ISN, and the timestamp offset that puts the options in the TSval."""
        mss_opt = hdr.option(Mss)
        peer_mss = mss_opt.value if mss_opt is not None else 536  # type: ignore[union-attr]
        iss = self.cookies.make(key, hdr.seq, peer_mss, now)
        ts = hdr.option(Timestamps) if self.config.tcp.timestamps else None
        ts_off = self.cookies.ts_offset(key)
        opts: list[object] = [Mss(self.cookies.table_mss(peer_mss, len(key[0]) == 16))]
        if ts is not None:
            ws = hdr.option(WindowScale)
            sack = hdr.option(SackPermitted) is not None
            if ws is not None:
                opts.append(ws)
            if sack:
                opts.append(SackPermitted())
            opts.append(ts)
            now_ts = (int(now * 1000) + ts_off) & 0xFFFFFFFF
            # (a shift over 14 is taken as 14, RFC 7323 2.3: keep what the engine uses)
            shift = min(ws.shift, 14) if ws is not None else None  # type: ignore[union-attr]
            bits = ts_encode(shift, sack)
            ts_off = (ts_off - ((now_ts - cookie_tsval(now_ts, bits)) & 0xFFFFFFFF)) \
                & 0xFFFFFFFF
        opts += [o for o in hdr.options if type(o) not in (Mss, WindowScale, SackPermitted,
                                                               Timestamps)]
        syn = TcpHeader(hdr.src_port, hdr.dst_port, hdr.seq, 0, SYN, hdr.window,
                        opts)  # type: ignore[arg-type]
        return syn, iss, ts_off

    def _send_cookie_synack(self, key: Key, segs: list[OutSegment],
                            counters: Counter[str], now: float) -> None:
        """Out with a cookie SYN/ACK; what building it counted goes to the host (Linux
        counts the SYN and the SYN/ACK; PassiveOpens waits for the ACK). The SYN is
        delivered: answered, though nothing of it is kept."""
        self.counters.update(counters)
        self.counters[Mib.InDelivers] += 1
        self.counters[Mib.SyncookiesSent] += 1
        self._cookie_sent_at = now
        for seg in segs:
            self._out.append(self._serialise(key[0], key[2], seg))

    def _cookie_synack(self, lst: Listener, key: Key, hdr: TcpHeader, now: float) -> None:
        """Answer a SYN to `lst` with a cookie and keep nothing: the SYN/ACK is written
        by a connection built as for any SYN, then dropped (an MPTCP one's key is new
        and its token unique, as `subflow_check_req` makes it under cookies)."""
        syn, iss, ts_off = self._cookie_syn(key, hdr, now)
        conn = self._new_passive(lst, key, syn, self._accepting(syn, key, now, iss, ts_off),
                                 now, register=False)
        if conn.msk is not None:
            segs = [seg for _, seg in conn.msk.poll_transmit(now)]
        else:
            segs = conn.engine.poll_transmit(now)
        self._send_cookie_synack(key, segs, conn.counters(), now)

    def _cookie_join_synack(self, msk: MptcpConnection, key: Key, hdr: TcpHeader,
                            ro: mo.ReceivedOptions, nonce: int, now: float) -> None:
        """Answer an MP_JOIN SYN with a cookie: its token, nonces and ids go in the
        join table for the third ACK (`subflow_init_req_cookie_join_save`). With no
        request to reject at the third ACK, a join over the subflow limit is refused
        here (`mptcp_can_accept_new_subflow`: RST, MP_TCPRST reason 3)."""
        if sum(1 for sf in msk.subflows if sf.counts_against_limit) >= msk.config.subflows_max:
            msk.counters[Mib.MPJoinSynRx] += 1
            if ro.backup:
                msk.counters[Mib.MPJoinSynBackupRx] += 1
            msk.counters[Mib.MPJoinRejected] += 1
            log.info("join from %s refused with its SYN (SYN cookies: the subflow limit "
                     "%d is reached)", fmt(key[2], key[3]), msk.config.subflows_max)
            self._reply_rst(key, hdr, 0, DropReason.JOIN_OVER_LIMIT,
                            wm.MpTcpRst(wm.MPTCP_RST_EPROHIBIT, 0))
            return
        syn, iss, ts_off = self._cookie_syn(key, hdr, now)
        sf = self._join_subflow(msk, key, self._accepting(syn, key, now, iss, ts_off), nonce,
                                register=False)
        segs = sf.engine.poll_transmit(now)
        self._join_cookies.save(JoinCookie(key, hdr.seq, ro.token, ro.nonce, nonce,
                                           ro.join_id, ro.backup))
        self._send_cookie_synack(key, segs, Counter(sf.engine.counters), now)

    def _cookie_ack(self, lst: Listener | None, key: Key, hdr: TcpHeader,
                    payload: memoryview, now: float) -> bool:
        """An ACK for no connection, to a listener that sent cookies: if it echoes one,
        the connection its SYN would have made, built now and given the ACK (Linux
        `cookie_v4_check`, `mptcp_subflow_init_cookie_req`). False: not a cookie of
        ours (the caller answers with RST)."""
        peer_isn = (hdr.seq - 1) & 0xFFFFFFFF
        iss = (hdr.ack - 1) & 0xFFFFFFFF
        mss = self.cookies.check(key, peer_isn, iss, now)
        ts = hdr.option(Timestamps) if self.config.tcp.timestamps else None
        tso = ts_decode(ts.tsecr) if ts is not None else None  # type: ignore[union-attr]
        if mss is None:
            self.counters[Mib.SyncookiesFailed] += 1
            self._drop(DropReason.SYNCOOKIE_BAD)
            return False
        opts: list[object] = [Mss(mss)]
        if tso is not None:
            if tso.wscale is not None:
                opts.append(WindowScale(tso.wscale))
            if tso.sack:
                opts.append(SackPermitted())
            opts.append(Timestamps(ts.tsval, 0))  # type: ignore[union-attr]
        ts_off = self.cookies.ts_offset(key)
        ro, _ = mo.parse_received(hdr.options, hdr.flags, bool(payload))
        if ro.suboptions & mo.OPTION_MPTCP_MPJ_ACK:
            return self._cookie_join_ack(key, hdr, payload, opts, iss, ts_off, now)
        if lst is None:
            return False
        if lst.mptcp is not None and ro.suboptions & mo.OPTION_MPTCP_MPC_ACK:
            if not ro.sndr_key or not ro.rcvr_key or ro.version is None:
                return self._cookie_refused(DropReason.SYNCOOKIE_BAD)
            mpc = wm.MpCapable(ro.version, ro.mpc_flags,
                               ro.sndr_key if ro.version == 0 else None)
            opts.append(wm.to_tcp_option(mpc))
        syn = TcpHeader(hdr.src_port, hdr.dst_port, peer_isn, 0, SYN, hdr.window,
                        opts)  # type: ignore[arg-type]
        local_key = None
        if lst.mptcp is not None and _asks_for_mptcp(syn, lst.mptcp):
            local_key = ro.rcvr_key
            token, _ = crypto.key_token_idsn(local_key, lst.mptcp.version)
            if token in self.tokens:
                return self._cookie_refused(DropReason.SYNCOOKIE_TOKEN_IN_USE)
        conn = self._new_passive(lst, key, syn, self._accepting(syn, key, now, iss, ts_off),
                                 now, local_key=local_key)
        lst.half_open += 1  # until the ACK below establishes it
        self.conns[key] = conn
        self._cookie_feed(conn, conn.engine, hdr, payload, None, now)
        return True

    def _cookie_join_ack(self, key: Key, hdr: TcpHeader, payload: memoryview,
                         opts: list[object], iss: int, ts_off: int, now: float) -> bool:
        """The third ACK of a join answered with a cookie: the join table gives back
        its SYN (`mptcp_token_join_cookie_init_state`); its HMAC is then checked as
        any join's."""
        peer_isn = (hdr.seq - 1) & 0xFFFFFFFF
        e = self._join_cookies.take(key, peer_isn)
        conn = self.tokens.get(e.token) if e is not None else None
        msk = conn.msk if conn is not None else None
        if e is None or conn is None or msk is None or check_join_req(msk) is not None:
            return self._cookie_refused(DropReason.SYNCOOKIE_JOIN_LOST)
        opts.append(wm.to_tcp_option(wm.MpJoinSyn(e.remote_backup, e.remote_id, e.token,
                                                  e.remote_nonce)))
        syn = TcpHeader(hdr.src_port, hdr.dst_port, peer_isn, 0, SYN, hdr.window,
                        opts)  # type: ignore[arg-type]
        saved = Counter(msk.counters)  # the SYN was counted when it came
        sf = self._join_subflow(msk, key, self._accepting(syn, key, now, iss, ts_off),
                                e.local_nonce)
        conn.engines[key] = sf.engine
        self.conns[key] = conn
        self._cookie_feed(conn, sf.engine, hdr, payload, saved, now)
        return True

    def _cookie_refused(self, why: DropReason) -> bool:
        self.counters[Mib.SyncookiesFailed] += 1
        self._drop(why)
        return False

    def _cookie_feed(self, conn: Connection, eng: TcpEngine, hdr: TcpHeader,
                     payload: memoryview, msk_counters: Counter[str] | None,
                     now: float) -> None:
        """A connection (or join) rebuilt from a cookie: its SYN/ACK went out long ago
        (written again here and dropped, untimed: Linux takes no RTT sample from a
        cookie's SYN/ACK but the timestamp's), then the ACK that echoed it."""
        msk = conn.msk
        eng.poll_transmit(now)
        eng.synack_untimed()
        eng.counters.clear()  # (PassiveOpens comes with the ACK, as for any SYN)
        if msk is not None:
            msk.counters.clear()
            if msk_counters is not None:
                msk.counters.update(msk_counters)
        self.counters[Mib.SyncookiesRecv] += 1
        self.counters[Mib.InDelivers] += 1
        if msk is not None:
            msk.feed(eng, hdr, payload, now)
        else:
            eng.on_segment(hdr, payload, now)
        self._dirty.add(conn)

    def _reply_rst(self, key: Key, hdr: TcpHeader, payload_len: int, why: str,
                   mptcp_rst: wm.MpTcpRst | None = None) -> None:
        """RFC 9293 3.10.7.1: a segment for no connection gets a RST, never an RST.
        `mptcp_rst`: an MP_TCPRST to carry (a refused join says why)."""
        if hdr.flags & RST:
            self._drop("rst-" + why)
            return
        self._drop(why)
        if hdr.flags & ACK:
            rst = TcpHeader(hdr.dst_port, hdr.src_port, hdr.ack, 0, RST, 0)
        else:
            seg_len = payload_len + (1 if hdr.flags & SYN else 0) + (1 if hdr.flags & FIN else 0)
            rst = TcpHeader(hdr.dst_port, hdr.src_port, 0, (hdr.seq + seg_len) & 0xFFFFFFFF,
                            RST | ACK, 0)
        if mptcp_rst is not None:
            rst.options = [wm.to_tcp_option(mptcp_rst)]
        self.counters[Mib.OutRsts] += 1
        self._out.append(self._serialise(key[0], key[2], OutSegment(rst, b"")))

    def _icmp_input(self, iph: ipv4.IPv4Header, body: memoryview, now: float) -> None:
        msg = icmp.parse(body)
        self.counters[Mib.IcmpInMsgs] += 1
        if msg.type == icmp.ECHO_REQUEST:
            self.counters[Mib.IcmpInEchos] += 1
            self.counters[Mib.InDelivers] += 1
            reply = icmp.emit(icmp.echo_reply(msg))
            self._ident = (self._ident + 1) & 0xFFFF
            h = ipv4.IPv4Header(iph.dst, iph.src, ipv4.PROTO_ICMP, ttl=self.config.ttl,
                                ident=self._ident)
            self.counters[Mib.IcmpOutEchoReps] += 1
            self._out.append(Datagram(ipv4.emit(h, len(reply)) + reply))
        elif msg.type == icmp.DEST_UNREACH:
            self.counters[Mib.IcmpInDestUnreachs] += 1
            # fragmentation needed: the next-hop MTU in the low 16 bits (RFC 1191), not
            # below Linux's ip_rt_min_pmtu (552)
            mtu = max(msg.rest & 0xFFFF, 552) if msg.code == icmp.UNREACH_FRAG_NEEDED else None
            self._icmp_error(msg.data, icmp.UNREACH_REASON.get(msg.code, f"code {msg.code}"),
                             now, mtu=mtu)
        else:
            self._drop(DropReason.ICMP_UNHANDLED_TYPE)

    def _icmp6_input(self, iph: ipv6.IPv6Header, body: memoryview, now: float) -> None:
        """ICMPv6 (RFC 4443): echo answered; destination unreachable to the connection
        it is about. Neighbour discovery has no place on a TUN: dropped."""
        msg = icmp6.parse(body, iph.src, iph.dst)
        self.counters[Mib.Icmp6InMsgs] += 1
        if msg.type == icmp6.ECHO_REQUEST:
            self.counters[Mib.InDelivers] += 1
            self.counters[Mib.Icmp6OutEchoReplies] += 1
            self._out.append(Datagram(icmp6.emit_packet(
                iph.dst, iph.src, icmp6.echo_reply(msg), hop_limit=self.config.ttl),
                l4_offset=ipv6.HEADER_LEN))
        elif msg.type == icmp6.DEST_UNREACH:
            self.counters[Mib.Icmp6InDestUnreachs] += 1
            self._icmp_error(msg.data, icmp6.UNREACH_REASON.get(msg.code, f"code {msg.code}"),
                             now)
        elif msg.type == icmp6.PACKET_TOO_BIG:
            self.counters[Mib.Icmp6InPktTooBigs] += 1
            # RFC 8200 5: no IPv6 link is smaller than 1280
            self._icmp_error(msg.data, "packet too big", now, mtu=max(msg.rest, ipv6.MIN_MTU))
        else:
            self._drop(DropReason.ICMP_UNHANDLED_TYPE)

    def _icmp_error(self, quoted: bytes, reason: str, now: float,
                    mtu: int | None = None) -> None:
        """Find the connection the quoted datagram belongs to (our packet: src is ours)
        and tell its engine; the quoted sequence number must be one we have in flight
        (RFC 5927 section 4.1) so a blind attacker cannot kill connections."""
        if ipv4.version_of(quoted) == 6:
            inner6, _ = ipv6.parse(quoted, quoted=True)
            src, dst, proto, hlen = inner6.src, inner6.dst, inner6.proto, inner6.header_len
            tcp_proto = ipv6.NH_TCP
        else:
            inner, _ = ipv4.parse(quoted, verify_checksum=False, quoted=True)
            src, dst, proto, hlen = inner.src, inner.dst, inner.proto, inner.header_len
            tcp_proto = ipv4.PROTO_TCP
        if proto != tcp_proto or len(quoted) < hlen + 8:
            self._drop(DropReason.ICMP_ERROR_UNUSABLE)
            return
        sport, dport, seq = struct.unpack_from("!HHI", quoted, hlen)
        conn = self.conns.get((src, sport, dst, dport))
        if conn is None:
            self._drop(DropReason.ICMP_ERROR_NO_SOCKET)
            return
        eng = conn.engines.get((src, sport, dst, dport), conn.engine)  # that subflow's
        if not seq_between(seq, eng.snd_una.value, eng.snd_nxt.value):
            self._drop(DropReason.ICMP_ERROR_BAD_SEQ)
            return
        self.counters[Mib.InDelivers] += 1
        if mtu is not None:
            eng.on_pmtu(mtu, ipv6.HEADER_LEN if len(src) == 16 else ipv4.HEADER_LEN)
        else:
            eng.on_icmp_error(reason)
        if conn.msk is not None:
            conn.msk.subflow_io(eng, now)
        self._dirty.add(conn)

    # ---------------------------------------------------------------- output
    def poll_transmit(self, now: float) -> list[Datagram]:
        out, self._out = self._out, []
        dirty, self._dirty = self._dirty, set()
        frames = self.frames
        for conn in dirty:
            if conn.msk is not None:
                if conn.msk.pm.joins:
                    self._open_joins(conn, now)
                frames.out_base = frames.n + len(out)
                for eng, seg in conn.msk.poll_transmit(now):
                    out.append(self._serialise(eng.local_addr, eng.remote_addr, seg))
            else:
                for seg in conn.engine.poll_transmit(now):
                    out.append(self._serialise(conn.key[0], conn.key[2], seg))
            self._collect_events(conn)
            self._rearm(conn)
        if self.tap is not None:
            for d in out:
                self.tap("out", d.packet, now)
        self.counters[_OUT_REQUESTS] += len(out)
        frames.n += len(out)
        return out

    def _serialise(self, src: Addr, dst: Addr, seg: OutSegment) -> Datagram:
        cfg = self.config
        partial = cfg.tx_csum_offload
        payload = seg.payload
        if cfg.split_payload and payload:
            if len(src) == 16:
                head, thl = tcp.emit_ipv6_headers(src, dst, 0, cfg.ttl, seg.hdr, payload,
                                                  partial)
                return Datagram(head, seg.gso_size, partial, ipv6.HEADER_LEN, thl, payload)
            self._ident = (self._ident + 1) & 0xFFFF
            head, thl = tcp.emit_ipv4_headers(src, dst, self._ident, cfg.ttl, seg.hdr,
                                              payload, partial)
            return Datagram(head, seg.gso_size, partial, ipv4.HEADER_LEN, thl, payload)
        if len(src) == 16:
            data, thl = tcp.emit_ipv6_segment(src, dst, 0, cfg.ttl, seg.hdr, payload, partial)
            return Datagram(data, seg.gso_size, partial, ipv6.HEADER_LEN, thl)
        self._ident = (self._ident + 1) & 0xFFFF
        data, thl = tcp.emit_ipv4_segment(src, dst, self._ident, cfg.ttl, seg.hdr,
                                          payload, partial)
        return Datagram(data, seg.gso_size, partial, ipv4.HEADER_LEN, thl)

    # ---------------------------------------------------------------- events and timers
    def _collect_events(self, conn: Connection) -> None:
        eng = conn.sock
        while (ev := eng.poll_event()) is not None:
            if conn.listener is not None and isinstance(ev, Connected):
                conn.listener.half_open -= 1
                lst, conn.listener = conn.listener, None
                if lst.closed:
                    eng.abort()
                else:
                    self._events.append(Accepted(lst, conn))
                continue
            if isinstance(ev, Closed) and conn.listener is not None:
                # Died in SYN-RECEIVED (RST, timeout): free its backlog slot, nobody to tell.
                conn.listener.half_open -= 1
                conn.listener = None
                continue
            self._events.append(ConnEvent(conn, ev))
        if eng.is_closed:
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        if self.conns.get(conn.key) is conn:
            for k in conn.engines:
                if self.conns.get(k) is conn:
                    del self.conns[k]
            conn.final_counters = conn.counters()
            self.closed_counters.update(conn.final_counters)
            for eng in conn.engines.values():
                eng.counters.clear()
            if conn.msk is not None:
                conn.msk.counters.clear()
                self.tokens.remove(conn.msk.local_token, conn)

    def poll_event(self) -> HostEvent | None:
        return self._events.popleft() if self._events else None

    def _rearm(self, conn: Connection) -> None:
        """Put `conn`'s deadline in the timer heap if it moved (the old entry goes
        stale); a forgotten connection has none."""
        t = conn.sock.poll_timeout() if self.conns.get(conn.key) is conn else None
        if t != conn.timer_at:
            conn.timer_at = t
            if t is not None:
                heapq.heappush(self._timers, (t, next(self._timer_tie), conn))

    def _live_top(self, refresh: bool = True) -> tuple[float, int, Connection] | None:
        """The earliest entry that is not stale (stale ones above it dropped);
        `refresh`: first take the deadlines of the connections touched since."""
        if refresh:
            for conn in self._dirty:  # their deadlines may have moved since
                self._rearm(conn)
        heap = self._timers
        if len(heap) > 4096 and len(heap) > 4 * len(self.conns):
            heap[:] = [e for e in heap if e[2].timer_at == e[0]]  # shed the stale
            heapq.heapify(heap)
        while heap:
            t, _, conn = top = heap[0]
            if conn.timer_at == t and self.conns.get(conn.key) is conn:
                if conn.sock.poll_timeout() == t:
                    return top
                # moved with nobody telling us (a connection changed outside the
                # host's calls): take its deadline as it is now
                heapq.heappop(heap)
                conn.timer_at = None
                self._rearm(conn)
                continue
            heapq.heappop(heap)
        return None

    def poll_timeout(self) -> float | None:
        top = self._live_top()
        return None if top is None else top[0]

    def handle_timeout(self, now: float) -> None:
        refresh = True  # once: each connection fired is rearmed as it goes
        while (top := self._live_top(refresh)) is not None and top[0] <= now:
            refresh = False
            conn = top[2]
            heapq.heappop(self._timers)
            conn.timer_at = None
            conn.sock.handle_timeout(now)
            self._dirty.add(conn)
            self._rearm(conn)

    def _for_family(self, cfg: TcpConfig, local: Addr) -> TcpConfig:
        """`cfg` for a connection from `local`: over IPv6 the MSS we advertise is 20
        bytes smaller (a 40-byte IP header: 1440 on a 1500 MTU, as Linux)."""
        if len(local) == 4 or any(cfg is v6 for _, v6 in self._v6_configs.values()):
            return cfg  # IPv4, or already the IPv6 one (a join of an IPv6 connection)
        six = self._v6_configs.get(id(cfg))
        if six is None or six[0] is not cfg:
            six = (cfg, dataclasses.replace(cfg, mss=cfg.mss - (ipv6.HEADER_LEN
                                                                - ipv4.HEADER_LEN)))
            self._v6_configs[id(cfg)] = six
        return six[1]

    # ---------------------------------------------------------------- diagnosis
    def conclude(self, conn: Connection, now: float) -> list[Finding]:
        """Every finding about `conn`: those made as it ran, and those only its end
        shows (an echoed ADD_ADDR nobody joined, a window still shut)."""
        msk = conn.msk
        if msk is not None:
            msk.conclude(now)
            return list(msk.diag.findings)
        found: list[Finding] = list(conn.findings)
        eng = conn.engine
        t0 = conn.diag_t0
        if eng.peer_zero_window_since is not None and eng.send_buffered \
                and now - eng.peer_zero_window_since >= STALL_MIN:
            found.append(Finding(Code.WINDOW_STALL, Severity.ERROR,
                                 f"the peer's receive window has been 0 since "
                                 f"{eng.peer_zero_window_since - t0:.3f} s "
                                 f"({now - eng.peer_zero_window_since:.1f} s), with "
                                 f"{eng.send_buffered} bytes waiting to be sent",
                                 hint="the peer's application is not reading"))
        if eng.recv_buffered >= eng.config.rcv_buf:
            found.append(Finding(Code.WINDOW_STALL, Severity.ERROR,
                                 "our receive buffer is full: our application is not "
                                 "reading, so our window is 0", hint="read faster (or "
                                 "--output to a file, not a pipe nobody reads)"))
        return found

    # ---------------------------------------------------------------- helpers
    def _isn(self, key: Key, now: float) -> int:
        """RFC 6528: ISN = M + F(4-tuple, secret), M a 4-microsecond clock."""
        la, lp, ra, rp = key
        f = hashlib.sha256(self._isn_secret + la + ra + struct.pack("!HH", lp, rp)).digest()
        return (int(now * 250_000) + int.from_bytes(f[:4], "big")) & 0xFFFFFFFF

    def _ephemeral_port(self, local: Addr, remote: Addr, remote_port: int) -> int:
        lo, hi = EPHEMERAL_PORTS
        n = hi - lo + 1
        start = self.rng.randrange(n)
        for i in range(n):
            port = lo + (start + i) % n
            if (local, port, remote, remote_port) not in self.conns and \
                    (local, port) not in self.listeners and (None, port) not in self.listeners:
                return port
        raise OSError("no free ephemeral port")

    def all_counters(self) -> Counter[str]:
        """Host counters plus those of every engine, live or closed."""
        c = self.counters + self.closed_counters
        for conn in self._unique_conns():
            for eng in conn.engines.values():
                c.update(eng.counters)
            if conn.msk is not None:
                c.update(conn.msk.counters)
        return c

    def format_counters(self) -> str:
        return format_counters(self.all_counters())

    def _unique_conns(self) -> list[Connection]:
        """Each connection once (an MPTCP connection is in `conns` once per subflow)."""
        return list({id(c): c for c in self.conns.values()}.values())

    def connections(self) -> Iterator[Connection]:
        return iter(self._unique_conns())


def _sf_matches(sf: Subflow, local: Addr, remote: Addr | None) -> bool:
    eng = sf.engine
    return eng is not None and eng.local_addr == local and (
        remote is None or eng.remote_addr == remote)


def _asks_for_mptcp(hdr: TcpHeader, cfg: MptcpConfig) -> bool:
    """A SYN with a usable MP_CAPABLE of our version (Linux `subflow_check_req`: a v0
    option, bad flags, or MP_CAPABLE together with MP_JOIN make it plain TCP)."""
    ro, _ = mo.parse_received(hdr.options, hdr.flags, False, accept_v0=cfg.version == 0)
    return bool(ro.suboptions & mo.OPTION_MPTCP_MPC_SYN) and (ro.version or 0) >= cfg.version \
        and (cfg.version == 0) == (ro.version == 0)
