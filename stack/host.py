"""The sans-I/O host: IPv4 in and out, demux by 4-tuple, listeners with a bounded SYN
backlog, RST for closed ports, ICMP echo and errors, ISNs (RFC 6528), ephemeral ports.

`Stack` takes packets and `now` in (`feed`) and gives packets, events and the next
deadline out (`poll_transmit`, `poll_event`, `poll_timeout` / `handle_timeout`). It never
reads a clock or global randomness: `now` comes with every call, randomness from the
`rng` given at construction.
"""

from __future__ import annotations

import hashlib
import logging
import random
import socket
import struct
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from stack.counters import format_counters
from stack.mptcp import options as mo
from stack.mptcp.connection import MptcpConfig, MptcpConnection, MptcpEvent
from stack.mptcp.subflow import Subflow
from stack.tcp.engine import Closed, Connected, Event, OutSegment, TcpConfig, TcpEngine
from stack.wire import MalformedPacket, icmp, ipv4, tcp
from stack.wire import mptcp as wm
from stack.wire.checksum import ones_sum, pseudo_header_sum_v4
from stack.wire.tcp import ACK, FIN, RST, SYN, TcpHeader

log = logging.getLogger(__name__)

Addr = bytes  # 4-byte IPv4 address
Key = tuple[bytes, int, bytes, int]  # (local addr, local port, remote addr, remote port)

EPHEMERAL_PORTS = (32768, 60999)  # Linux's net.ipv4.ip_local_port_range


def ip(text: str) -> Addr:
    """'10.0.1.2' -> b'\\n\\x00\\x01\\x02' (raises OSError on a bad address)."""
    return socket.inet_aton(text)


def ntoa(addr: Addr) -> str:
    return socket.inet_ntoa(addr)


@dataclass(frozen=True, slots=True)
class Datagram:
    """One IP packet to write to the device. With `csum_partial` the TCP checksum field
    holds only the pseudo-header sum (the device completes it: virtio-net NEEDS_CSUM);
    with `gso_size` the device cuts the TCP payload into segments of that size."""
    data: bytes
    gso_size: int = 0
    csum_partial: bool = False
    l4_offset: int = ipv4.HEADER_LEN
    l4_header_len: int = tcp.HEADER_LEN


@dataclass
class StackConfig:
    tcp: TcpConfig = field(default_factory=TcpConfig)
    syn_backlog: int = 128       # half-open connections per listener (Linux: tcp_max_syn_backlog)
    tx_csum_offload: bool = False  # leave TCP checksums to the device (virtio-net NEEDS_CSUM)
    ttl: int = 64
    mptcp: MptcpConfig | None = None  # None: plain TCP; else MPTCP for connect and listen


class Connection:
    """A connection as the host sees it: its 4-tuple and TCP engine (for MPTCP, the
    master subflow's) and, for MPTCP, the connection-level control block `msk`.
    `sock` is what the layer above talks to: the msk, or the engine for plain TCP.
    `app` is free for the layer above (the asyncio API keeps its stream state there)."""

    __slots__ = ("announce", "app", "engine", "engines", "join_from", "key", "listener", "msk")

    def __init__(self, key: Key, engine: TcpEngine, listener: Listener | None,
                 msk: MptcpConnection | None = None) -> None:
        self.key = key
        self.engine = engine
        self.engines: dict[Key, TcpEngine] = {key: engine}  # every subflow, by 4-tuple
        self.msk = msk
        self.listener = listener
        self.app: object = None
        # local addresses to open joins from once fully established (like the kernel's
        # `subflow` endpoints), with their backup flag
        self.join_from: list[tuple[Addr, bool]] = []
        self.announce: list[Addr] = []  # our addresses to ADD_ADDR once fully established

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
Tap = Callable[[str, bytes], None]  # (direction "in" | "out", IP packet)


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
        self.tokens: dict[int, Connection] = {}  # the token table (Linux token.c)
        self._isn_secret = self.rng.randbytes(16)
        self._ident = self.rng.randrange(1 << 16)
        self.conns: dict[Key, Connection] = {}
        self.listeners: dict[tuple[Addr | None, int], Listener] = {}
        self.counters: Counter[str] = Counter()  # host-level (IP, demux, ICMP) only
        self.closed_counters: Counter[str] = Counter()  # engines of forgotten connections
        self._events: deque[HostEvent] = deque()
        self._out: list[Datagram] = []  # host-generated packets (RST, ICMP replies)
        self._dirty: set[Connection] = set()  # engines that may have something to send
        self.tap: Tap | None = None
        # our addresses whose subflows are backups (a kernel endpoint's `backup` flag):
        # joins from them, and joins to them that we accept, carry the B flag
        self.backup_addrs: set[Addr] = set()
        # our addresses flagged `fullmesh` (a kernel `subflow fullmesh` endpoint): an
        # address the peer announces is joined from each of them, not just from the
        # one routed towards it
        self.fullmesh_addrs: list[Addr] = []

    # ---------------------------------------------------------------- user calls
    def listen(self, port: int, addr: Addr | None = None, backlog: int | None = None,
               mptcp: MptcpConfig | None | bool = True,
               announce: list[Addr] | None = None) -> Listener:
        """Listen on `port`. `mptcp`: True = the stack's MPTCP config (if any), False =
        plain TCP only, or an explicit MptcpConfig."""
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
                mptcp: MptcpConfig | None | bool = True,
                join_from: list[tuple[Addr, bool]] | None = None) -> Connection:
        """Active open. The local address defaults to the one on the remote's /24
        (the topology gives each path its own subnet), else the first."""
        local = local or self.source_for(remote)
        if local not in self._addrset:
            raise OSError(f"{ntoa(local)} is not one of this stack's addresses")
        if local_port is None:
            local_port = self._ephemeral_port(local, remote, remote_port)
        key = (local, local_port, remote, remote_port)
        if key in self.conns:
            raise OSError(f"{ntoa(local)}:{local_port} -> {ntoa(remote)}:{remote_port} is in use")
        cfg = self.config.mptcp if mptcp is True else (mptcp or None)
        msk = sf = None
        if cfg is not None:
            msk = self._new_msk(True, cfg, now)
            sf = Subflow(msk)
        eng = TcpEngine(local, local_port, remote, remote_port, iss=self._isn(key, now), now=now,
                        config=config or self.config.tcp, ts_offset=self.rng.getrandbits(32),
                        ulp=sf)
        if msk is not None and sf is not None:
            msk.add_subflow(sf, eng)
        conn = Connection(key, eng, None, msk)
        if msk is not None:
            self.tokens[msk.local_token] = conn
            conn.join_from = list(join_from or [])
        self.conns[key] = conn
        eng.connect(now)
        self._dirty.add(conn)
        return conn

    def _new_msk(self, client: bool, cfg: MptcpConfig, now: float) -> MptcpConnection:
        msk = MptcpConnection(client=client, config=cfg, randbytes=self.randbytes,
                              token_in_use=self.tokens.__contains__, now=now)
        return msk

    def source_for(self, remote: Addr) -> Addr:
        for a in self.addrs:
            if a[:3] == remote[:3]:
                return a
        return self.addrs[0]

    def touch(self, conn: Connection) -> None:
        """The layer above called send/recv/close on `conn`: poll it at the next transmit."""
        self._dirty.add(conn)

    # ---------------------------------------------------------------- input
    def feed(self, packet: bytes | bytearray | memoryview, now: float, csum_ok: bool = False) -> None:
        """One IP packet from the device. `csum_ok`: the device vouched for the L4
        checksum (virtio-net DATA_VALID / NEEDS_CSUM), so it is not verified again.
        Never raises for anything in the packet: every packet is either delivered
        (`InDelivers`) or dropped and counted under `Drop:<reason>`."""
        self.counters["InReceives"] += 1
        if self.tap is not None:
            self.tap("in", bytes(packet))
        try:
            version = ipv4.version_of(packet)
            if version != 4:
                self._drop("ipv6-unsupported" if version == 6 else "ip-bad-version")
                return
            iph, end = ipv4.parse(packet)
            if iph.dst not in self._addrset:
                self._drop("not-our-address")
                return
            if iph.is_fragment:
                self.counters["ReasmFails"] += 1
                self._drop("ipv4-fragment")
                return
            body = memoryview(packet)[iph.header_len:end]
            if iph.proto == ipv4.PROTO_TCP:
                self._tcp_input(iph, body, now, csum_ok)
            elif iph.proto == ipv4.PROTO_ICMP:
                self._icmp_input(iph, body, now)
            else:
                self.counters["InUnknownProtos"] += 1
                self._drop("unknown-protocol")
        except MalformedPacket as e:
            if e.reason.endswith("checksum"):
                self.counters["InCsumErrors"] += 1
            self.counters["InHdrErrors"] += 1
            self._drop(e.reason)

    def _drop(self, reason: str) -> None:
        self.counters["Drop:" + reason] += 1

    def _tcp_input(self, iph: ipv4.IPv4Header, seg: memoryview, now: float, csum_ok: bool) -> None:
        hdr, doff = tcp.parse(seg)
        if not csum_ok and not tcp.verify_checksum_v4(iph.src, iph.dst, seg):
            raise MalformedPacket("tcp-bad-checksum")
        payload = seg[doff:]
        key = (iph.dst, hdr.dst_port, iph.src, hdr.src_port)
        conn = self.conns.get(key)
        if conn is not None:
            self.counters["InDelivers"] += 1
            if conn.msk is not None:
                conn.msk.feed(conn.engines[key], hdr, payload, now)
            else:
                conn.engine.on_segment(hdr, payload, now)
            self._dirty.add(conn)
            return
        lst = self.listeners.get((iph.dst, hdr.dst_port)) or self.listeners.get((None, hdr.dst_port))
        if lst is not None and hdr.flags & (SYN | ACK | RST) == SYN:
            if lst.mptcp is not None:
                ro, _ = mo.parse_received(hdr.options, hdr.flags, False)
                if ro.suboptions & mo.OPTION_MPTCP_MPJ_SYN:
                    self._passive_join(iph, key, hdr, ro, now)
                    return
            self._passive_open(lst, key, hdr, now)
            return
        self._reply_rst(iph, hdr, len(payload), "no-socket")

    def _passive_join(self, iph: ipv4.IPv4Header, key: Key, hdr: TcpHeader,
                      ro: mo.ReceivedOptions, now: float) -> None:
        """A SYN with MP_JOIN (RFC 8684 3.2; Linux subflow_check_req): find the
        connection by token; unknown token -> RST with MP_TCPRST reason 1, over the
        subflow limit -> RST. A join never falls back to TCP."""
        conn = self.tokens.get(ro.token)
        msk = conn.msk if conn is not None else None
        if conn is None or msk is None or not msk.fully_established or msk.fallback:
            self.counters["MPJoinNoTokenFound"] += 1
            self._reply_rst(iph, hdr, 0, "join-unknown-token",
                            wm.MpTcpRst(wm.MPTCP_RST_EMPTCP, 0))
            return
        if msk.live_joins() >= msk.config.subflows_max:
            msk.counters["MPJoinRejected"] += 1
            self._reply_rst(iph, hdr, 0, "join-over-limit",
                            wm.MpTcpRst(wm.MPTCP_RST_ERESOURCE, 0))
            return
        sf = Subflow(msk, join=True, initiator=False, backup=key[0] in self.backup_addrs,
                     local_id=self._addr_id(key[0]),
                     local_nonce=int.from_bytes(self.randbytes(4), "big"))
        eng = TcpEngine.accept_syn(hdr, key[0], key[1], key[2], key[3], iss=self._isn(key, now),
                                   now=now, config=self.config.tcp,
                                   ts_offset=self.rng.getrandbits(32), ulp=sf)
        msk.add_subflow(sf, eng)
        conn.engines[key] = eng
        self.conns[key] = conn
        self.counters["InDelivers"] += 1
        self._dirty.add(conn)

    def _path_manager(self, conn: Connection, ev: MptcpEvent, now: float) -> None:
        """The in-stack path manager (Linux pm_netlink's decisions): once fully
        established, open the joins asked for and announce our extra addresses; join
        an address the peer announces while the accepted limit allows (from every
        fullmesh address of ours, else from the one on its subnet)."""
        msk = conn.msk
        assert msk is not None
        if ev.name == "ESTABLISHED":
            joins, conn.join_from = conn.join_from, []
            for addr, backup in joins:
                if addr != conn.key[0]:  # the initial subflow already runs from there
                    self._try_join(conn, addr, now, backup)
            for addr in conn.announce:
                msk.announce(self._addr_id(addr), addr)
            conn.announce = []
        elif ev.name == "ANNOUNCED" and msk.client:
            info = dict(ev.subflow)
            peer_addr, port = info["addr"], info["port"]
            assert isinstance(peer_addr, bytes) and isinstance(port, int)
            if msk.add_addr_accepted >= msk.config.add_addr_accepted_max:
                msk.counters["AddAddrNotAccepted"] += 1
                return
            msk.add_addr_accepted += 1
            msk.accepted_ids.add(int(info["remid"]))  # type: ignore[call-overload]
            for local in self.fullmesh_addrs or [self.source_for(peer_addr)]:
                self._try_join(conn, local, now, local in self.backup_addrs, peer_addr,
                               port or conn.key[3])

    def _try_join(self, conn: Connection, local: Addr, now: float, backup: bool,
                  remote: Addr | None = None, rport: int | None = None) -> None:
        try:
            self.add_subflow(conn, local, now, backup, remote, rport)
        except OSError as e:
            self.counters["JoinNotOpened"] += 1
            log.info("no join from %s: %s", ntoa(local), e)

    def add_subflow(self, conn: Connection, local: Addr, now: float, backup: bool = False,
                    remote: Addr | None = None, rport: int | None = None) -> TcpEngine:
        """Open a join (MP_JOIN) from `local` to `remote`:`rport` (default: the
        connection's remote address and port), as a kernel `subflow` endpoint or an
        accepted ADD_ADDR does (RFC 8684 3.2)."""
        msk = conn.msk
        if msk is None or not msk.fully_established or msk.fallback:
            raise OSError("joins need an MPTCP connection that is fully established")
        if local not in self._addrset:
            raise OSError(f"{ntoa(local)} is not one of this stack's addresses")
        if msk.live_joins() >= msk.config.subflows_max:
            raise OSError(f"subflow limit ({msk.config.subflows_max}) reached")
        remote = remote or conn.key[2]
        rport = rport or conn.key[3]
        lport = self._ephemeral_port(local, remote, rport)
        key = (local, lport, remote, rport)
        sf = Subflow(msk, join=True, initiator=True,
                     backup=backup or local in self.backup_addrs,
                     local_id=self._addr_id(local),
                     local_nonce=int.from_bytes(self.randbytes(4), "big"))
        eng = TcpEngine(local, lport, remote, rport, iss=self._isn(key, now), now=now,
                        config=conn.engine.config, ts_offset=self.rng.getrandbits(32), ulp=sf)
        msk.add_subflow(sf, eng)
        conn.engines[key] = eng
        self.conns[key] = conn
        msk.counters["MPJoinSynTxAttempts"] += 1
        eng.connect(now)
        self._dirty.add(conn)
        return eng

    # ---- the runtime path manager (what the kernel's userspace PM offers) -----------
    def remove_subflow(self, conn: Connection, local: Addr, now: float,
                       remote: Addr | None = None) -> int:
        """Close our subflows from `local` (to `remote`, if given) without withdrawing
        the address (`ip mptcp subflow destroy`); their unacknowledged data is sent
        again on the others. Returns how many were closed."""
        msk = self._msk_of(conn)
        n = msk.remove_subflows(lambda sf: _sf_matches(sf, local, remote), now,
                                f"subflow from {ntoa(local)} removed")
        self._dirty.add(conn)
        return n

    def announce(self, conn: Connection, addr: Addr) -> None:
        """ADD_ADDR one of our addresses (`ip mptcp endpoint add A signal`, or the
        userspace PM's `announce`)."""
        msk = self._msk_of(conn)
        if addr not in self._addrset:
            raise OSError(f"{ntoa(addr)} is not one of this stack's addresses")
        if not msk.fully_established:
            conn.announce.append(addr)  # the path manager sends it once established
        else:
            msk.announce(self._addr_id(addr), addr)
        self._dirty.add(conn)

    def remove_addr(self, conn: Connection, addr: Addr, now: float) -> int:
        """Withdraw one of our addresses: REMOVE_ADDR with its id, and our subflows
        from it closed (`ip mptcp endpoint delete`). Returns the subflows closed."""
        msk = self._msk_of(conn)
        if addr not in self._addrset:
            raise OSError(f"{ntoa(addr)} is not one of this stack's addresses")
        n = msk.remove_addr(self._addr_id(addr), now)
        self._dirty.add(conn)
        return n

    def set_backup(self, conn: Connection, local: Addr, backup: bool,
                   remote: Addr | None = None) -> int:
        """Mark our subflows from `local` as backup or not, telling the peer with
        MP_PRIO (`ip mptcp endpoint change A backup|nobackup`). Returns how many
        subflows changed."""
        msk = self._msk_of(conn)
        n = sum(msk.set_backup(sf, backup) for sf in list(msk.subflows)
                if _sf_matches(sf, local, remote))
        self._dirty.add(conn)
        return n

    def _msk_of(self, conn: Connection) -> MptcpConnection:
        if conn.msk is None or conn.msk.fallback:
            raise OSError("not an MPTCP connection (plain TCP or fallen back)")
        return conn.msk

    def _addr_id(self, addr: Addr) -> int:
        """Our address id for `addr`: its index among our addresses (the first is 0,
        the initial subflow's, as the kernel numbers them)."""
        return self.addrs.index(addr) if addr in self._addrset else 0

    def _passive_open(self, lst: Listener, key: Key, hdr: TcpHeader, now: float) -> None:
        if lst.half_open >= lst.backlog:
            # RFC 4987 would answer with a SYN cookie; we drop and count, as Linux does
            # without cookies, and the peer retransmits its SYN.
            self.counters["ListenOverflows"] += 1
            self._drop("syn-backlog-full")
            return
        msk = sf = None
        if lst.mptcp is not None and _asks_for_mptcp(hdr, lst.mptcp):
            msk = self._new_msk(False, lst.mptcp, now)
            sf = Subflow(msk)
        eng = TcpEngine.accept_syn(hdr, key[0], key[1], key[2], key[3], iss=self._isn(key, now),
                                   now=now, config=self.config.tcp,
                                   ts_offset=self.rng.getrandbits(32), ulp=sf)
        if msk is not None and sf is not None:
            msk.add_subflow(sf, eng)
        conn = Connection(key, eng, lst, msk)
        if msk is not None:
            self.tokens[msk.local_token] = conn
            conn.announce = [a for a in lst.announce if a != key[0]]
        self.counters["InDelivers"] += 1
        lst.half_open += 1
        self.conns[key] = conn
        self._dirty.add(conn)

    def _reply_rst(self, iph: ipv4.IPv4Header, hdr: TcpHeader, payload_len: int, why: str,
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
        self.counters["OutRsts"] += 1
        self._out.append(self._serialise(iph.dst, iph.src, OutSegment(rst, b"")))

    def _icmp_input(self, iph: ipv4.IPv4Header, body: memoryview, now: float) -> None:
        msg = icmp.parse(body)
        self.counters["IcmpInMsgs"] += 1
        if msg.type == icmp.ECHO_REQUEST:
            self.counters["IcmpInEchos"] += 1
            self.counters["InDelivers"] += 1
            reply = icmp.emit(icmp.echo_reply(msg))
            self._ident = (self._ident + 1) & 0xFFFF
            h = ipv4.IPv4Header(iph.dst, iph.src, ipv4.PROTO_ICMP, ttl=self.config.ttl,
                                ident=self._ident)
            self.counters["IcmpOutEchoReps"] += 1
            self._out.append(Datagram(ipv4.emit(h, len(reply)) + reply))
        elif msg.type == icmp.DEST_UNREACH:
            self.counters["IcmpInDestUnreachs"] += 1
            self._icmp_error(msg, now)
        else:
            self._drop("icmp-unhandled-type")

    def _icmp_error(self, msg: icmp.IcmpMessage, now: float) -> None:
        """Find the connection the quoted datagram belongs to (our packet: src is ours)
        and tell its engine; the quoted sequence number must be one we have in flight
        (RFC 5927 section 4.1) so a blind attacker cannot kill connections."""
        inner, _ = ipv4.parse(msg.data, verify_checksum=False, quoted=True)
        if inner.proto != ipv4.PROTO_TCP or len(msg.data) < inner.header_len + 8:
            self._drop("icmp-error-unusable")
            return
        sport, dport, seq = struct.unpack_from("!HHI", msg.data, inner.header_len)
        conn = self.conns.get((inner.src, sport, inner.dst, dport))
        if conn is None:
            self._drop("icmp-error-no-socket")
            return
        eng = conn.engine
        if not _seq_between(seq, eng.snd_una.value, eng.snd_nxt.value):
            self._drop("icmp-error-bad-seq")
            return
        self.counters["InDelivers"] += 1
        eng.on_icmp_error(icmp.UNREACH_REASON.get(msg.code, f"code {msg.code}"), now)
        if conn.msk is not None:
            conn.msk.subflow_io(eng, now)
        self._dirty.add(conn)

    # ---------------------------------------------------------------- output
    def poll_transmit(self, now: float) -> list[Datagram]:
        out, self._out = self._out, []
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            if conn.msk is not None:
                for eng, seg in conn.msk.poll_transmit(now):
                    out.append(self._serialise(eng.local_addr, eng.remote_addr, seg))
            else:
                for seg in conn.engine.poll_transmit(now):
                    out.append(self._serialise(conn.key[0], conn.key[2], seg))
            self._collect_events(conn, now)
        if self.tap is not None:
            for d in out:
                self.tap("out", d.data)
        self.counters["OutRequests"] += len(out)
        return out

    def _serialise(self, src: Addr, dst: Addr, seg: OutSegment) -> Datagram:
        hdr = seg.hdr
        self._ident = (self._ident + 1) & 0xFFFF
        opts = tcp.emit_options(hdr.options) if hdr.options else b""
        thl = tcp.HEADER_LEN + len(opts)
        plen = len(seg.payload)
        total = ipv4.HEADER_LEN + thl + plen
        buf = bytearray(total)
        _IP_TCP.pack_into(buf, 0, 0x45, 0, total, self._ident, ipv4.FLAG_DF, self.config.ttl,
                          ipv4.PROTO_TCP, 0, src, dst,
                          hdr.src_port, hdr.dst_port, hdr.seq, hdr.ack,
                          (thl // 4) << 12 | hdr.flags, hdr.window, 0, hdr.urgent)
        buf[40:40 + len(opts)] = opts
        buf[20 + thl:] = seg.payload
        struct.pack_into("!H", buf, 10, _ipv4_header_checksum(buf))
        partial = self.config.tx_csum_offload
        pseudo = pseudo_header_sum_v4(src, dst, ipv4.PROTO_TCP, thl + plen)
        if partial:
            # virtio-net NEEDS_CSUM: the field holds the folded pseudo-header sum.
            struct.pack_into("!H", buf, 36, pseudo)
        else:
            struct.pack_into("!H", buf, 36, ~ones_sum(memoryview(buf)[20:], pseudo) & 0xFFFF)
        return Datagram(bytes(buf), seg.gso_size, partial, ipv4.HEADER_LEN, thl)

    # ---------------------------------------------------------------- events and timers
    def _collect_events(self, conn: Connection, now: float) -> None:
        eng = conn.sock
        while (ev := eng.poll_event()) is not None:
            if type(ev) is MptcpEvent:
                self._path_manager(conn, ev, now)
            if conn.listener is not None and isinstance(ev, Connected):
                conn.listener.half_open -= 1
                lst, conn.listener = conn.listener, None
                if lst.closed:
                    eng.abort(0.0)
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
            for eng in conn.engines.values():
                self.closed_counters.update(eng.counters)
                eng.counters.clear()
            if conn.msk is not None:
                self.closed_counters.update(conn.msk.counters)
                conn.msk.counters.clear()
                if self.tokens.get(conn.msk.local_token) is conn:
                    del self.tokens[conn.msk.local_token]

    def poll_event(self) -> HostEvent | None:
        return self._events.popleft() if self._events else None

    def poll_timeout(self) -> float | None:
        deadline: float | None = None
        for conn in self._unique_conns():
            t = conn.sock.poll_timeout()
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        return deadline

    def handle_timeout(self, now: float) -> None:
        for conn in self._unique_conns():
            t = conn.sock.poll_timeout()
            if t is not None and t <= now:
                conn.sock.handle_timeout(now)
                self._dirty.add(conn)

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


def _seq_between(seq: int, lo: int, hi: int) -> bool:
    """lo <= seq <= hi modulo 2**32 (raw values from an ICMP quote)."""
    return (seq - lo) & 0xFFFFFFFF <= (hi - lo) & 0xFFFFFFFF


_IP_TCP = struct.Struct("!BBHHHBBH4s4sHHIIHHHH")


def _ipv4_header_checksum(buf: bytearray) -> int:
    return ~ones_sum(memoryview(buf)[:20]) & 0xFFFF
