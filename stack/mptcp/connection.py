"""The MPTCP connection: the per-connection control block (Linux `struct mptcp_sock`,
"msk"; RFC 8684's connection level).

It owns the keys and tokens, the 64-bit data sequence spaces (DSN, data ACK), the
data-level send buffer (kept until data-acked, so a dead subflow's bytes can be sent
again), data-level reassembly, the connection-level receive window, DATA_FIN, and its
subflows (the master first; joins later). To the layer above it looks like one TCP
socket: `send`, `recv`, `close`, `abort`, events, timers.

Data offsets: inside, data sequence numbers are unbounded offsets from the first data
byte (offset 0 = IDSN + 1); `wire_dsn` / `_rx_off` convert at the wire, the one place
64-bit modular arithmetic happens. Receive-side 32-bit values are widened against the
current state (Linux `expand_seq`).

Fallback (RFC 8684 3.7): when the peer does not speak MPTCP (no MP_CAPABLE on the
SYN/ACK or third ACK) or options vanish mid-connection on the only subflow, the
connection becomes the master subflow's plain TCP byte stream, reported as FALLBACK.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from stack.buffers import RecvQueue
from stack.mptcp import crypto
from stack.mptcp import options as mo
from stack.mptcp.sched import Scheduler, make_scheduler
from stack.mptcp.sendqueue import SendQueue
from stack.mptcp.subflow import RxMap, Subflow, TxMap
from stack.tcp.assembler import Assembler
from stack.tcp.engine import (
    Closed,
    Connected,
    DataReadable,
    Event,
    OutSegment,
    PeerFinished,
    State,
    TcpEngine,
    TcpError,
    WritableSpace,
)
from stack.wire import mptcp as wm
from stack.wire.tcp import ACK, RST, SYN, TcpHeader

log = logging.getLogger(__name__)

M64 = (1 << 64) - 1
H63 = 1 << 63
MAX_MAP = 65535  # the data-level length field is 16 bits


# The suboption bits as plain ints (the per-segment tests avoid IntFlag arithmetic).
_RST = int(mo.OPTION_MPTCP_RST)
_FASTCLOSE = int(mo.OPTION_MPTCP_FASTCLOSE)
_MPC_SYN = int(mo.OPTION_MPTCP_MPC_SYN)
_MPC_SYNACK = int(mo.OPTION_MPTCP_MPC_SYNACK)
_MPC_ACK = int(mo.OPTION_MPTCP_MPC_ACK)
_MPTCPS_MPC = int(mo.OPTIONS_MPTCP_MPC)
_DSS = int(mo.OPTION_MPTCP_DSS)
_ADD_ADDR = int(mo.OPTION_MPTCP_ADD_ADDR)
_RM_ADDR = int(mo.OPTION_MPTCP_RM_ADDR)
_PRIO = int(mo.OPTION_MPTCP_PRIO)
_FAIL = int(mo.OPTION_MPTCP_FAIL)
_CSUMREQD = int(mo.OPTION_MPTCP_CSUMREQD)
_MPJ_SYNACK = int(mo.OPTION_MPTCP_MPJ_SYNACK)
_MPJ_ACK = int(mo.OPTION_MPTCP_MPJ_ACK)
_SENDING = (State.ESTABLISHED, State.CLOSE_WAIT)
STALE_RTOS = 2  # consecutive RTOs that make a subflow stale (Linux stale_loss_cnt: 4)
MIN_RTX_TIMEOUT = 0.2  # the data-level RTO's floor (Linux TCP_RTO_MIN) ...
MAX_RTX_TIMEOUT = 60.0  # ... and its ceiling (TCP_RTO_MAX is 120 s)


def _near32(ref_off: int, ref_wire: int, low: int) -> int:
    """The offset nearest `ref_off` (whose 64-bit wire value is `ref_wire`) whose wire
    value has the low 32 bits `low`: `Seq64.expand32` without objects, per segment."""
    d = (low - ref_wire) & 0xFFFFFFFF
    return ref_off + (d - (1 << 32) if d >= 1 << 31 else d)


def _has_room(sf: Subflow) -> bool:
    """Whether a subflow takes another chunk: about two cwnds queued, enough to keep it
    busy, little enough that a subflow joining later (or a faster one) gets its share."""
    eng = sf.engine
    assert eng is not None
    return eng.send_buffered < min(eng.config.snd_buf, max(2 * eng.cwnd, 4 * MAX_MAP))


def _chunk_max(eng: TcpEngine) -> int:
    """The most data one mapping carries on this subflow: whole segments, at most one
    GSO super-packet (measured: 46-segment mappings under 44-segment super-packets
    sent every mapping as a full super-packet plus a 2-segment one, twice the writes)
    and at most the 16-bit data-level length."""
    mss = max(eng.mss, 1)
    segs = MAX_MAP // mss
    if eng.config.gso_segments > 1:
        segs = min(segs, eng.config.gso_segments)
    return max(1, segs) * mss


def unwrap64(ref: int, raw: int) -> int:
    """The offset nearest `ref` whose value modulo 2**64 is `raw`."""
    return ref + ((raw - ref + H63) & M64) - H63


@dataclass
class MptcpConfig:
    version: int = 1            # 1: RFC 8684; 0: RFC 6824, the seed's out-of-tree dialect
    checksum: bool = False      # ask for DSS checksums (the A flag); Linux default off
    # connection-level receive buffer (the shared window, relative to the data ACK). At
    # 4 MB a kernel MPTCP sender sat window-limited (ss: snd_wnd 1.3 MB) and we idled
    # 57% of the time; 16 MB took kernel->ours from ~4.8 to ~6.0 Gbit/s.
    rcv_buf: int = 16 << 20
    subflows_max: int = 8           # additional subflows (joins) accepted or opened
    add_addr_accepted_max: int = 8  # announced addresses we join (kernel default: 0)
    add_addr_timeout: float = 2.0   # re-send an unechoed ADD_ADDR after this (doubling)
    scheduler: str = "default"      # default | roundrobin | redundant (stack.mptcp.sched)
    # deliberate protocol faults, to watch a peer refuse them (see FAULTS)
    faults: frozenset[str] = frozenset()
    # connection-level send buffer, kept until data-acked: it holds what the subflows
    # hold plus what they delivered but the peer has not data-acked yet, so it must be
    # well above a subflow's 4 MB (at 4 MB, data-ACK lag halved our goodput)
    snd_buf: int = 16 << 20


FAULTS = {
    "join-token": "our MP_JOIN SYNs carry a token that is not the peer's (expect an RST, "
                  "MP_TCPRST reason 1; the kernel counts MPJoinNoTokenFound)",
    "join-hmac": "our MP_JOIN third ACKs carry a wrong HMAC (expect an RST; the kernel "
                 "counts MPJoinAckHMacFailure)",
}


@dataclass(frozen=True, slots=True)
class MptcpEvent:
    """A connection-level event, named as `ip mptcp monitor` names them (CREATED,
    ESTABLISHED, ANNOUNCED, REMOVED, SF_ESTABLISHED, SF_PRIORITY, SF_CLOSED, CLOSED)
    plus ours (FALLBACK, MP_FAIL, MP_FASTCLOSE, MP_TCPRST, JOIN_FAILED, SF_STALE)."""
    name: str
    token: int
    remote_token: int | None = None
    detail: str | None = None
    # SF_* events: the subflow's own addresses and ids, as `ip mptcp monitor` prints them
    subflow: tuple[tuple[str, object], ...] = ()


class MptcpConnection:
    """One MPTCP connection (msk)."""

    def __init__(self, *, client: bool, config: MptcpConfig, randbytes: Callable[[int], bytes],
                 token_in_use: Callable[[int], bool], now: float) -> None:
        self.client = client
        self.config = config
        self.version = config.version
        key = crypto.generate_unique_key(randbytes, token_in_use, self.version)
        self.counters: Counter[str] = Counter()
        if key is None:
            # five colliding keys in a row: the kernel falls back (MPFallbackTokenInit)
            key = crypto.generate_key(randbytes)
            self.counters["MPFallbackTokenInit"] += 1
        self.local_key = key
        self.local_token, self.local_idsn = crypto.key_token_idsn(key, self.version)
        self.remote_key: int | None = None
        self.remote_token: int | None = None
        self.remote_idsn = 0
        self.csum_enabled = config.checksum
        self.fully_established = False
        self.fallback = False
        self.fallback_reason: str | None = None
        self.fastclosing = False
        self.subflows: list[Subflow] = []
        self.scheduler: Scheduler = make_scheduler(config.scheduler)
        self.events: deque[Event | MptcpEvent] = deque()
        self._connected = False
        self._created_emitted = False
        self._closed_emitted = False
        self._readable_pending = False
        self._want_writable = False
        self.reset_error: str | None = None
        # data level, send side (offsets; see the module docstring)
        self.sndbuf = SendQueue()    # bytes from snd_una (kept until data-acked)
        self.snd_una = 0
        self.snd_nxt = 0             # next offset to map onto a subflow
        self.write_off = 0           # end of what the application gave us
        self.snd_wnd_end = 0         # the peer's data-level window right edge (offset)
        self.reinject: list[tuple[int, int]] = []  # data ranges to send again
        self._t_rtx: float | None = None  # data-level retransmission timer (Linux msk's)
        self._rtx_backoff = 0
        # ADD_ADDR (RFC 8684 3.4.1): ours to send, ours sent and not yet echoed
        # (id -> (addr, deadline, tries)), the peer's to echo, the peer's accepted
        self.add_addr_queue: list[tuple[int, bytes]] = []
        self.add_addr_sent: dict[int, tuple[bytes, float, int]] = {}
        self.echo_queue: list[wm.AddAddr] = []
        self._close_todo: list[Subflow] = []  # removed subflows whose FIN/RST is due
        self.rm_addr_queue: list[int] = []  # our address ids to REMOVE_ADDR (RFC 8684 3.4.2)
        self.accepted_ids: set[int] = set()  # the peer's announced ids we joined
        self.add_addr_accepted = 0
        self.remote_addrs: dict[int, tuple[bytes, int | None]] = {}  # the peer's, by id
        self.now = 0.0
        self.data_fin_queued = False  # the application closed: DATA_FIN after write_off
        self.data_fin_acked = False
        self._t_data_fin: float | None = None
        self._data_fin_signalled = False
        self.data_fin_on_wire = False  # the writer has put our DATA_FIN on a segment
        self._data_fin_backoff = 0
        # data level, receive side
        self.rcvbuf = RecvQueue()     # in-order data not yet read
        self.ack_off = 0             # next data offset expected (the data ACK)
        self.ooo = Assembler(config.rcv_buf)
        self.rcv_data_fin_off: int | None = None
        self.peer_fin = False

    # ---- identity helpers ---------------------------------------------------------------
    def mpc_flags(self) -> int:
        return wm.MPC_FLAG_H | (wm.MPC_FLAG_A if self.csum_enabled else 0)

    def join_synack_thmac(self, sf: Subflow) -> int:
        """The responder's truncated HMAC (RFC 8684 3.2): leftmost 64 bits of
        HMAC(Key_B || Key_A, R_B || R_A), we being B."""
        assert self.remote_key is not None
        return crypto.join_synack_hmac(self.local_key, self.remote_key, sf.local_nonce,
                                       sf.remote_nonce, self.version)

    def join_ack_hmac(self, sf: Subflow) -> bytes:
        """The joiner's HMAC: leftmost 160 bits of HMAC(Key_A || Key_B, R_A || R_B)."""
        assert self.remote_key is not None
        hmac = crypto.join_ack_hmac(self.local_key, self.remote_key, sf.local_nonce,
                                    sf.remote_nonce, self.version)
        if "join-hmac" in self.config.faults:
            hmac = bytes([hmac[0] ^ 0xFF]) + hmac[1:]
        return hmac

    def join_token(self) -> int:
        """The token our MP_JOIN SYN names: the peer's (RFC 8684 3.2)."""
        assert self.remote_token is not None
        return self.remote_token ^ (1 if "join-token" in self.config.faults else 0)

    def sf_event(self, name: str, sf: Subflow, detail: str | None = None) -> None:
        eng = sf.engine
        assert eng is not None
        self.events.append(MptcpEvent(name, self.local_token, self.remote_token, detail, (
            ("saddr4", socket.inet_ntoa(eng.local_addr)), ("sport", eng.local_port),
            ("daddr4", socket.inet_ntoa(eng.remote_addr)), ("dport", eng.remote_port),
            ("locid", sf.local_id), ("remid", sf.remote_id), ("backup", int(sf.is_backup)))))

    def set_remote_key(self, key: int) -> None:
        self.remote_key = key
        self.remote_token, self.remote_idsn = crypto.key_token_idsn(key, self.version)

    def wire_dsn(self, off: int) -> int:
        return (self.local_idsn + 1 + off) & M64

    def wire_data_ack(self) -> int:
        return (self.remote_idsn + 1 + self.ack_off + (1 if self.peer_fin else 0)) & M64

    def _rx_off(self, dsn: int, dsn64: bool) -> int:
        """A received DSN as a data offset; a 32-bit one is the offset nearest the
        data ACK with those low bits (Linux `expand_seq`)."""
        if not dsn64:
            return _near32(self.ack_off, (self.remote_idsn + 1 + self.ack_off) & M64, dsn)
        return unwrap64(self.ack_off, (dsn - self.remote_idsn - 1) & M64)

    def _ack_off(self, ack: int, ack64: bool) -> int:
        """A received data ACK as a send offset (32-bit: nearest to snd_una)."""
        if not ack64:
            return _near32(self.snd_una, self.wire_dsn(self.snd_una), ack)
        return unwrap64(self.snd_una, (ack - self.local_idsn - 1) & M64)

    def _signal_engine(self) -> TcpEngine | None:
        """The engine to carry connection-level signals (DATA_FIN, data ACKs): the
        master while it works, else any working subflow."""
        for sf in self.subflows:
            eng = sf.engine
            if eng is not None and not sf.stale and sf.join_failed is None and \
                    sf.closing is None and sf.fully_established and eng.state in _SENDING:
                return eng
        return self.master.engine

    def announce(self, addr_id: int, addr: bytes) -> None:
        """Announce one of our addresses to the peer (ADD_ADDR with its HMAC, sent
        on a pure ACK once fully established, repeated until echoed), like a kernel
        `signal` endpoint."""
        self.add_addr_queue.append((addr_id, addr))
        eng = self._signal_engine()
        if eng is not None:
            eng.send_pure_ack()

    def remove_addr(self, addr_id: int, now: float) -> int:
        """Withdraw one of our addresses (Linux `mptcp_pm_remove_addr` and
        `mptcp_pm_remove_subflow`): a REMOVE_ADDR with its id on a pure ACK (the peer
        closes its subflows to it), any pending ADD_ADDR of it cancelled, and our
        subflows from it closed. Returns how many subflows were closed."""
        self.add_addr_queue = [(i, a) for i, a in self.add_addr_queue if i != addr_id]
        self.add_addr_sent.pop(addr_id, None)
        closed = self.remove_subflows(lambda sf: sf.local_id == addr_id, now,
                                      f"our address id {addr_id} was removed")
        if addr_id not in self.rm_addr_queue:
            self.rm_addr_queue.append(addr_id)
        eng = self._signal_engine()
        if eng is not None:
            eng.send_pure_ack()
        return closed

    def remove_subflows(self, which: Callable[[Subflow], bool], now: float, why: str) -> int:
        """Close the subflows `which` selects (the userspace PM's `subflow destroy`):
        no longer scheduled, what they carried and the peer has not data-acked is sent
        again on the others, then a FIN (an RST if the path looks dead)."""
        n = 0
        for sf in self.subflows:
            eng = sf.engine
            if eng is None or eng.is_closed or sf.closing is not None or not which(sf):
                continue
            n += 1
            self.counters["RmSubflow"] += 1
            self._close_subflow(sf, why, now)
        return n

    def _close_subflow(self, sf: Subflow, why: str, now: float) -> None:
        """A FIN after what the subflow holds (it still delivers that: sending it again
        elsewhere would only be duplicate data for the peer); an RST if its path looks
        dead, its data then sent again on the others. Either way it takes no new data.
        (Linux reinjects the whole unacked queue on any subflow close.)"""
        log.info("closing subflow: %s", why)
        sf.closing = why  # no new data from now on
        # the FIN or RST itself waits until no engine is in the middle of a segment
        # (a REMOVE_ADDR may arrive on the very subflow it removes)
        self._close_todo.append(sf)

    def _finish_closes(self, now: float) -> None:
        todo, self._close_todo = self._close_todo, []
        for sf in todo:
            eng = sf.engine
            assert eng is not None
            if sf.stale or eng.state in (State.SYN_SENT, State.SYN_RECEIVED):
                self._queue_reinject(sf, "removed")
                sf.reset_reason = wm.MPTCP_RST_EUNSPEC
                sf.resetting = True
                eng.abort(now)
            else:
                eng.close(now)  # (a no-op once our FIN is out)

    def set_backup(self, sf: Subflow, backup: bool) -> bool:
        """Ask the peer to treat `sf` as a backup subflow, or no longer (MP_PRIO on
        that subflow, RFC 8684 3.3.8; the kernel's `ip mptcp endpoint change ...
        backup`). Our scheduler honours our own request too. False if nothing changed."""
        eng = sf.engine
        if eng is None or eng.is_closed or sf.backup == backup:
            return False
        sf.backup = backup
        sf.send_mp_prio = True
        eng.send_pure_ack()
        self.sf_event("SF_PRIORITY", sf, "sent MP_PRIO")
        return True

    def add_addr_to_send(self) -> wm.AddAddr | None:
        """For the writer: the next ADD_ADDR (an echo first), taken off its queue."""
        if self.echo_queue:
            return self.echo_queue.pop(0)
        if self.add_addr_queue and self.fully_established and self.remote_key is not None:
            addr_id, addr = self.add_addr_queue.pop(0)
            hmac = crypto.add_addr_hmac(self.local_key, self.remote_key, addr_id, addr, None)
            tries = self.add_addr_sent.get(addr_id, (addr, 0.0, 0))[2] + 1
            self.add_addr_sent[addr_id] = (addr, self.now + self.config.add_addr_timeout
                                           * (1 << (tries - 1)), tries)
            self.counters["AddAddrTx"] += 1
            return wm.AddAddr(addr_id, addr, None, hmac, False, 1)
        return None

    def _rx_add_addr(self, ro: mo.ReceivedOptions) -> None:
        a = ro.addr
        if a is None:
            return
        if ro.echo:
            if self.add_addr_sent.pop(a.addr_id, None) is not None:
                self.counters["EchoAdd"] += 1
            return
        assert self.remote_key is not None
        want = crypto.add_addr_hmac(self.remote_key, self.local_key, a.addr_id, a.addr, a.port)
        if a.version != 0 and ro.ahmac != want:
            self.counters["AddAddrHMacFailure"] += 1  # silently ignored (RFC 8684 3.4.1)
            return
        self.counters["AddAddr"] += 1
        # any further ack, an ADD_ADDR included, makes the connection fully established
        # (Linux check_fully_established), so the join it invites may go at once
        self._set_fully_established()
        self.echo_queue.append(wm.AddAddr(a.addr_id, a.addr, a.port, None, True, a.version))
        eng = self._signal_engine()
        if eng is not None:
            eng.send_pure_ack()
        if self.remote_addrs.get(a.addr_id) == (a.addr, a.port):
            self.counters["AddAddrRepeated"] += 1  # our echo was late: echo again, no more
            return
        self.remote_addrs[a.addr_id] = (a.addr, a.port)
        detail = f"{socket.inet_ntoa(a.addr) if len(a.addr) == 4 else a.addr.hex()}" \
            f":{a.port or 0} id {a.addr_id}"
        self.events.append(MptcpEvent("ANNOUNCED", self.local_token, self.remote_token, detail,
                                      (("remid", a.addr_id), ("addr", a.addr),
                                       ("port", a.port or 0))))

    def _rx_rm_addr(self, ro: mo.ReceivedOptions) -> None:
        """REMOVE_ADDR (RFC 8684 3.4.2; Linux `mptcp_pm_nl_rm_addr_received`): the
        peer withdrew addresses: close every subflow to them, forget them (an accepted
        ADD_ADDR frees its slot), one REMOVED event each."""
        for addr_id in ro.rm_list:
            self.counters["RmAddr"] += 1
            self.remote_addrs.pop(addr_id, None)
            if addr_id in self.accepted_ids:
                self.accepted_ids.discard(addr_id)
                self.add_addr_accepted -= 1
            gone = {sf for sf in self.subflows if sf.remote_id == addr_id}
            self.remove_subflows(gone.__contains__, self.now,
                                 f"the peer removed its address id {addr_id}")
            self.events.append(MptcpEvent("REMOVED", self.local_token, self.remote_token,
                                          f"id {addr_id}", (("remid", addr_id),)))

    def _rx_prio(self, sf: Subflow, ro: mo.ReceivedOptions) -> None:
        """MP_PRIO (RFC 8684 3.3.8; Linux `mptcp_pm_mp_prio_received`): the peer
        wants the subflow it arrived on used as a backup (or no longer)."""
        self.counters["MPPrioRx"] += 1
        if ro.prio_addr_id is not None:
            return  # v0 names an address id; we only speak v0's handshake
        sf.remote_backup = ro.backup
        self.sf_event("SF_PRIORITY", sf, "received MP_PRIO")

    def live_joins(self) -> int:
        """Additional subflows open or opening (what the subflow limit counts)."""
        return sum(1 for sf in self.subflows[1:] if sf.engine is not None
                   and not sf.engine.is_closed and sf.join_failed is None
                   and sf.closing is None)

    def _ack_on_every_subflow(self) -> None:
        """A DATA_FIN rides on a pure ACK of each subflow (any path may be the one
        that works; the duplicates are harmless at the data level)."""
        for sf in self.subflows:
            eng = sf.engine
            if eng is not None and sf.join_failed is None and sf.fully_established \
                    and sf.closing is None:
                eng.send_pure_ack()

    @property
    def master(self) -> Subflow:
        return self.subflows[0]

    def add_subflow(self, sf: Subflow, engine: TcpEngine) -> None:
        sf.engine = engine
        self.subflows.append(sf)

    def subflow_of(self, engine: TcpEngine) -> Subflow:
        for sf in self.subflows:
            if sf.engine is engine:
                return sf
        raise KeyError("not a subflow of this connection")

    # ---- the socket-like surface (what stack.api and the host use) ---------------------
    @property
    def state(self) -> State:
        return self.master.engine.state if self.subflows and self.master.engine else State.CLOSED

    @property
    def recv_buffered(self) -> int:
        return len(self.rcvbuf)

    @property
    def send_buffered(self) -> int:
        return self.write_off - self.snd_una

    @property
    def is_closed(self) -> bool:
        return self._closed_emitted and all(
            sf.engine is None or sf.engine.is_closed for sf in self.subflows)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if self.data_fin_queued or self._closed_emitted:
            raise TcpError("send() after close()")
        if self.fallback:
            eng = self.master.engine
            assert eng is not None
            n = eng.send(data)
            if n < len(data):
                self._want_writable = True
            self.write_off += n
            self.snd_nxt = self.snd_una = self.write_off
            return n
        room = self.config.snd_buf - len(self.sndbuf)
        n = min(len(data), max(room, 0))
        if n < len(data):
            self._want_writable = True
        if n:
            self.sndbuf.append(memoryview(data)[:n])
            self.write_off += n
        return n

    def recv(self, max_bytes: int = -1) -> bytes:
        out = self.rcvbuf.take(max_bytes)
        if not out:
            return out
        for sf in self.subflows:
            if sf.engine is not None:
                sf.engine.check_window_update()
        return out

    def close(self, now: float) -> None:
        """Close our direction: DATA_FIN after the data (RFC 8684 3.3.3); in fallback,
        the master's TCP FIN."""
        if self.data_fin_queued:
            return
        self.data_fin_queued = True
        if self.fallback:
            for sf in self.subflows:
                if sf.engine is not None:
                    sf.engine.close(now)
        elif self._connected:
            self._maybe_close_subflows(now)
        # else: the DATA_FIN follows the data once the connection is up

    def abort(self, now: float) -> None:
        """Abort the connection: MP_FASTCLOSE (with MP_TCPRST) on an RST on every
        subflow (RFC 8684 3.5), then Closed("aborted")."""
        self.fastclosing = not self.fallback and self.remote_key is not None
        for sf in self.subflows:
            if sf.engine is not None and not sf.engine.is_closed:
                sf.resetting = True
                sf.engine.abort(now)
        self._emit_closed("aborted")

    def poll_event(self) -> Event | MptcpEvent | None:
        if not self.events:
            return None
        ev = self.events.popleft()
        if type(ev) is DataReadable:
            self._readable_pending = False
        return ev

    def rcv_space(self) -> int:
        return self.config.rcv_buf - len(self.rcvbuf) - self.ooo.buffered

    # ---- input ---------------------------------------------------------------------------
    def feed(self, engine: TcpEngine, hdr: TcpHeader, payload: bytes | memoryview,
             now: float) -> None:
        """A segment for one of our subflows: TCP first (the engine calls `rx_options`
        through the ULP hook), then move what became in-order up to the data level."""
        engine.on_segment(hdr, payload, now)
        # Pull at once (measured: deferring the pull to the end of a read batch halved
        # kernel->ours goodput with offloads, 5-6 -> 2.7 Gbit/s, for ~5% without)
        self._after_subflow_io(self.subflow_of(engine), now)

    def rx_options(self, sf: Subflow, hdr: TcpHeader, payload_len: int) -> bool:
        """The ULP `on_options` hook: read the segment's MPTCP options (Linux
        `mptcp_incoming_options` and the subflow handshake checks). False drops it."""
        ro, reasons = mo.parse_received(hdr.options, hdr.flags, payload_len > 0,
                                        accept_v0=self.version == 0)
        for r in reasons:
            self.counters["OptionIgnored:" + r] += 1
        flags = hdr.flags
        s = int(ro.suboptions)  # plain int: IntFlag arithmetic costs a class call
        if flags & RST:
            if s & _RST:
                self.counters["MPRstRx"] += 1
                why = f"MP_TCPRST reason {ro.reset_reason} " \
                      f"({wm.MptcpResetReason(ro.reset_reason).name})" \
                    if ro.reset_reason in wm.MptcpResetReason._value2member_map_ \
                    else f"MP_TCPRST reason {ro.reset_reason}"
                sf.reset_why = why
                if sf is self.master:
                    self.reset_error = why
                self.events.append(MptcpEvent("MP_TCPRST", self.local_token, self.remote_token,
                                              why))
            if s & _FASTCLOSE and ro.rcvr_key == self.local_key:
                self._fastclose_rx(sf)
            return True
        if self.fallback:
            return True
        if sf.join:
            return self._rx_join(sf, ro, s, flags, payload_len, hdr.window)
        if flags & SYN:
            if flags & ACK and self.client:
                self._rx_synack(ro)
            elif s & _MPC_SYN:
                self.counters["MPCapableSYNRX"] += 1
                if ro.csum_reqd:
                    self.csum_enabled = True
            return True
        if s & _FASTCLOSE:
            if ro.rcvr_key == self.local_key:
                self._fastclose_rx(None)
                return False
            self.counters["MPFastcloseBadKey"] += 1
        if not self.client and self.remote_key is None and not self._rx_third_ack(ro):
            return True  # fell back
        if (not self.fully_established and self.remote_key is not None
                and not s & _MPTCPS_MPC
                and not (s & _DSS and ro.use_ack)
                and not s & _ADD_ADDR):
            # Linux `check_fully_established`: the peer's first segment after the
            # handshake must carry a data ACK (or MP_CAPABLE); if it does not, a
            # middlebox strips our options: fall back to TCP.
            self.counters["MPCapableDataFallback"] += 1
            self._fall_back("the peer's first segment after the handshake had no DSS "
                            "(options stripped?)")
            return True
        if s & _ADD_ADDR and self.remote_key is not None:
            self._rx_add_addr(ro)
        if s & (_RM_ADDR | _PRIO):
            self._rx_pm(sf, ro, s)
        if s & _DSS:
            return self._rx_dss(sf, ro, s, payload_len, hdr.window)
        if s & _FAIL:
            self._rx_mp_fail(sf, ro)
        return True

    def _rx_join(self, sf: Subflow, ro: mo.ReceivedOptions, s: int, flags: int,
                 payload_len: int, window: int) -> bool:
        """A join subflow's handshake (RFC 8684 3.2; Linux subflow.c): HMACs checked
        both ways; a failure resets the subflow, never falls back."""
        if flags & SYN and flags & ACK:  # we are the joiner: the SYN/ACK
            if not s & _MPJ_SYNACK:
                self._join_failed(sf, "the SYN/ACK carried no MP_JOIN", "MPJoinSynAckMissing")
                return True  # accept it so that the reset can be sent
            self.counters["MPJoinSynAckRx"] += 1
            sf.remote_nonce, sf.remote_id, sf.remote_backup = ro.nonce, ro.join_id, ro.backup
            assert self.remote_key is not None
            want = crypto.join_synack_hmac(self.remote_key, self.local_key, ro.nonce,
                                           sf.local_nonce, self.version)
            if ro.thmac != want:
                self._join_failed(sf, f"bad SYN/ACK HMAC 0x{ro.thmac:016x}, "
                                      f"expected 0x{want:016x}", "MPJoinSynAckHMacFailure")
            return True
        if flags & SYN:  # we are the responder: the SYN (the host checked the token)
            self.counters["MPJoinSynRx"] += 1
            sf.remote_nonce, sf.remote_id, sf.remote_backup = ro.nonce, ro.join_id, ro.backup
            return True
        if sf.initiator:
            if not sf.fully_established and sf.join_failed is None:
                # the responder's fourth ACK (any segment after the SYN/ACK)
                sf.fully_established = True
                self.sf_event("SF_ESTABLISHED", sf)
        elif not sf.fully_established:
            if not s & _MPJ_ACK:
                self._join_failed(sf, "the third ACK carried no MP_JOIN", "MPJoinAckMissing")
                return False
            want_hmac = crypto.join_ack_hmac(self.remote_key or 0, self.local_key,
                                             sf.remote_nonce, sf.local_nonce, self.version)
            if ro.hmac != want_hmac:
                self._join_failed(sf, "bad third-ACK HMAC", "MPJoinAckHMacFailure")
                return False
            self.counters["MPJoinAckRx"] += 1
            sf.fully_established = True
            eng = sf.engine
            assert eng is not None
            eng.ack_now()  # the fourth ACK: the joiner may send data after it
            self.sf_event("SF_ESTABLISHED", sf)
        if s & _ADD_ADDR and sf.join_failed is None:
            self._rx_add_addr(ro)
        if s & (_RM_ADDR | _PRIO) and sf.join_failed is None:
            self._rx_pm(sf, ro, s)
        if s & _DSS and sf.join_failed is None:
            return self._rx_dss(sf, ro, s, payload_len, window)
        return True

    def _rx_pm(self, sf: Subflow, ro: mo.ReceivedOptions, s: int) -> None:
        if s & _RM_ADDR:
            self._rx_rm_addr(ro)
        if s & _PRIO:
            self._rx_prio(sf, ro)

    def _join_failed(self, sf: Subflow, why: str, counter: str) -> None:
        """Refuse the join: the subflow is reset (MP_TCPRST reason 1) once the engine
        has finished with the segment at hand (never from inside its handling)."""
        self.counters[counter] += 1
        sf.join_failed = why
        self.events.append(MptcpEvent("JOIN_FAILED", self.local_token, self.remote_token, why))

    def _rx_synack(self, ro: mo.ReceivedOptions) -> None:
        s = int(ro.suboptions)
        if s & _MPC_SYNACK and ro.version == self.version:
            self.counters["MPCapableSYNACKRX"] += 1
            self.set_remote_key(ro.sndr_key)
            if ro.csum_reqd:
                self.csum_enabled = True
            return
        self.counters["MPCapableFallbackSYNACK"] += 1
        self._fall_back("the SYN/ACK carried no MP_CAPABLE" if not s & _MPTCPS_MPC
                        else f"the SYN/ACK answered MP_CAPABLE version {ro.version}")

    def _rx_third_ack(self, ro: mo.ReceivedOptions) -> bool:
        """The server's first established-state segment must carry MP_CAPABLE with both
        keys (or, if that ACK was lost, MP_CAPABLE with data); otherwise fall back
        (RFC 8684 3.1; Linux `MPCapableFallbackACK`)."""
        if ro.suboptions & _MPC_ACK:
            if ro.version != self.version:
                self.counters["MPCapableFallbackACK"] += 1
                self._fall_back(f"the third ACK carried MP_CAPABLE version {ro.version}")
                return False
            if ro.rcvr_key != self.local_key:
                self.counters["MPCapableKeyMismatch"] += 1
                self._fall_back("the third ACK echoed a key that is not ours")
                return False
            self.counters["MPCapableACKRX"] += 1
            self.set_remote_key(ro.sndr_key)
            if ro.csum_reqd:
                self.csum_enabled = True
            self._emit_created()
            # the server holds both keys now: fully established (Linux
            # `subflow_syn_recv_sock` -> `mptcp_subflow_fully_established`), so the
            # client may join at once
            self._set_fully_established()
            return True
        self.counters["MPCapableFallbackACK"] += 1
        self._fall_back("the third ACK carried no MP_CAPABLE")
        return False

    def _rx_dss(self, sf: Subflow, ro: mo.ReceivedOptions, s: int, payload_len: int,
                window: int) -> bool:
        if ro.use_ack:
            ack = self._ack_off(ro.data_ack, ro.ack64)
            if ack > self.snd_una + self.data_fin_acked:  # news (after a DATA_FIN: its +1)
                self._on_data_ack(ack)
            # The peer's receive window is shared and relative to the data ACK (RFC
            # 8684 3.3.1): its right edge bounds what we may map, on any subflow
            # (Linux msk->wnd_end; beyond it the kernel drops: NoDSSInWindow).
            eng = sf.engine
            if eng is not None:
                self.snd_wnd_end = max(self.snd_wnd_end, ack + (window << eng.snd_wscale))
            if not self.fully_established:
                self._set_fully_established()
        if not ro.use_map:
            return True
        # a DSS as the subflow's last one: the mapping repeated on the next segment
        # of its chunk (the per-segment case, no mapping work); MP_CAPABLE's implicit
        # mapping never counts
        key = None if ro.mpc_map else (ro.data_seq, ro.subflow_seq, ro.data_len,
                                       s & _CSUMREQD, ro.data_fin, ro.dsn64)
        if key is not None and key == sf.rx_last_dss:
            return True
        if ro.mpc_map:
            # MP_CAPABLE with data: the implicit first mapping (RFC 8684 3.1)
            self._set_fully_established()
            ssn, dsn, dsn64 = 1, (self.remote_idsn + 1) & M64, True
        else:
            ssn = sf.rx_next + ((ro.subflow_seq - sf.rx_next) & 0xFFFFFFFF) \
                if ro.subflow_seq else 0
            if ssn and ssn - sf.rx_next >= 1 << 31:
                ssn -= 1 << 32
            dsn, dsn64 = ro.data_seq, ro.dsn64
        has_csum = bool(s & _CSUMREQD)
        if has_csum != self.csum_enabled:
            # RFC 8684 3.3: a checksum where none was negotiated, or none where one
            # was, is a protocol error: reset the subflow.
            self.counters["DSSChecksumMismatch"] += 1
            self._reset_subflow(sf, wm.MPTCP_RST_EMPTCP, "DSS checksum presence mismatch")
            return False
        off = self._rx_off(dsn, dsn64)
        if ro.data_len == 0 and not ro.data_fin:
            # an infinite mapping (RFC 8684 3.7): the peer falls back after MP_FAIL
            self.counters["InfiniteMapRx"] += 1
            self._fall_back("the peer sent an infinite mapping", infinite=True)
            return True
        if ro.data_fin and (ssn == 0 or ro.data_len == 1 and payload_len == 0):
            self._rx_data_fin(off)
            return True
        length = ro.data_len - (1 if ro.data_fin else 0)
        cur = sf.rx_maps.get(ssn)
        if cur is not None and cur.length == length and cur.data_off == off:
            sf.rx_last_dss = key
            return True  # a mapping seen before (a retransmission)
        m = RxMap(ssn, length, off, ro.csum if has_csum else None, ro.data_fin,
                  ro.data_len, (self.remote_idsn + 1 + off) & M64)
        if not sf.add_rx_map(m):
            self.counters["DSSNotMatching"] += 1
            self._reset_subflow(sf, wm.MPTCP_RST_EMPTCP, "a mapping overlapping the current one")
            return False
        sf.rx_last_dss = key
        return True

    def _rx_data_fin(self, off: int) -> None:
        if self.rcv_data_fin_off is None:
            self.rcv_data_fin_off = off
        self._check_data_fin()

    def _rx_mp_fail(self, sf: Subflow, ro: mo.ReceivedOptions) -> None:
        """MP_FAIL (RFC 8684 3.7): the peer found a bad checksum. On the only subflow we
        fall back to an infinite mapping: plain TCP from here on."""
        self.counters["MPFailRx"] += 1
        self.events.append(MptcpEvent("MP_FAIL", self.local_token, self.remote_token,
                                      f"peer reported a failed mapping at DSN 0x{ro.fail_seq:x}"))
        if len(self.subflows) == 1:
            # Linux `mptcp_pm_mp_fail_received`: one infinite mapping on our next data
            # segment, then plain TCP
            sf.send_infinite_map = True
            self._fall_back("the peer sent MP_FAIL (bad DSS checksum)", infinite=True)
        else:
            self._reset_subflow(sf, wm.MPTCP_RST_EMIDDLEBOX, "MP_FAIL on one of several subflows")

    def _fastclose_rx(self, on_rst: Subflow | None) -> None:
        """MP_FASTCLOSE with our key (RFC 8684 3.5): the peer aborted the connection.
        Every other subflow is reset; the one whose RST carried it is already gone
        (an RST is never answered with an RST)."""
        self.counters["MPFastcloseRx"] += 1
        self.reset_error = "the peer fast-closed the connection (MP_FASTCLOSE)"
        self.events.append(MptcpEvent("MP_FASTCLOSE", self.local_token, self.remote_token,
                                      self.reset_error))
        self._emit_closed(self.reset_error)  # whichever subflow's close comes last
        for sf in self.subflows:
            if sf is not on_rst and sf.engine is not None and not sf.engine.is_closed:
                sf.engine.abort(0.0)

    # ---- pulling subflow data up to the data level -------------------------------------
    def subflow_io(self, engine: TcpEngine, now: float) -> None:
        """Something happened to a subflow's engine outside `feed` (an ICMP error)."""
        self._after_subflow_io(self.subflow_of(engine), now)

    def _after_subflow_io(self, sf: Subflow, now: float) -> None:
        if self._close_todo:
            self._finish_closes(now)
        eng = sf.engine
        assert eng is not None
        if sf.stale and eng.rto_retries == 0:
            sf.stale = sf.reinjected = False  # it got an ACK: its path works again
            self.counters["SubflowRecover"] += 1
        if sf.join_failed is not None and not sf.resetting and eng.state in (
                State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT):
            self._reset_subflow(sf, wm.MPTCP_RST_EMPTCP, sf.join_failed)
        if eng.recv_buffered:
            self._pull(sf, eng.take_received())
        self._take_engine_events(sf, now)
        maps = sf.tx_maps
        if maps and maps[0].ssn + maps[0].length <= eng.snd_una_rel:
            sf.prune_tx_maps(eng.snd_una_rel)
        if self.fallback:
            self.snd_una = self.write_off - eng.send_buffered
            if self._want_writable and eng.send_buffered < eng.config.snd_buf:
                self._want_writable = False
                self.events.append(WritableSpace())

    def _pull(self, sf: Subflow, data: bytearray) -> None:
        """Map in-order subflow bytes to data offsets through the peer's mappings
        (checksummed mappings are verified whole before delivery)."""
        rel = sf.rx_next
        n = len(data)
        m = sf.rx_map_at(rel) if not self.fallback else None
        if m is not None and m.csum is None and rel + n <= m.ssn + m.length:
            # the usual case, all of it inside one mapping: `data` itself moves up
            self._deliver(m.data_off + (rel - m.ssn), data)
            rel += n
            sf.rx_next = rel
            if rel >= m.ssn + m.length:
                self._map_done(sf, m)
            return
        view = memoryview(data)
        while view:
            if self.fallback:
                self._deliver(self.ack_off, view)
                rel += len(view)
                break
            m = sf.rx_map_at(rel)
            if m is None:
                if self._data_without_mapping(sf):
                    continue  # fell back: deliver as plain TCP
                rel += len(view)  # reset: the bytes are dropped with the subflow
                break
            n = min(len(view), m.ssn + m.length - rel)
            chunk = view[:n]
            if m.csum is not None:
                if m.buf is None:
                    m.buf = bytearray()
                m.buf += chunk
                if len(m.buf) == m.length:
                    if crypto.dss_checksum_ok(m.wire_dsn, m.ssn, m.wire_len, m.buf, m.csum) \
                            or self._bad_checksum(sf, m):
                        self._deliver(m.data_off, m.buf)
                    else:
                        return
            else:
                self._deliver(m.data_off + (rel - m.ssn), chunk)
            rel += n
            view = view[n:]
            if rel >= m.ssn + m.length:
                self._map_done(sf, m)
        sf.rx_next = rel

    def _map_done(self, sf: Subflow, m: RxMap) -> None:
        """Every byte of mapping `m` has moved up: its DATA_FIN (if any) counts now."""
        if m.data_fin:
            self._rx_data_fin(m.data_off + m.length)
        sf.forget_rx_map(m)

    def _data_without_mapping(self, sf: Subflow) -> bool:
        """Subflow data no mapping covers (options stripped by a middlebox, RFC 8684
        3.7): on the only subflow, fall back to TCP (Linux `DSSFallback` /
        `MPCapableDataFallback`); else reset the subflow. True if we fell back."""
        if len(self.subflows) == 1:
            self.counters["MPCapableDataFallback" if not self.fully_established
                          else "DSSFallback"] += 1
            self._fall_back("data arrived without a DSS mapping (options stripped?)",
                            infinite=True)
            return True
        self.counters["DSSNoMatchTCP"] += 1
        self._reset_subflow(sf, wm.MPTCP_RST_EMIDDLEBOX, "data without a mapping")
        return False

    def _bad_checksum(self, sf: Subflow, m: RxMap) -> bool:
        """RFC 8684 3.7: a bad DSS checksum. MP_FAIL with the mapping's DSN goes out;
        on the only subflow we fall back (as Linux `subflow_check_data_avail` does, the
        subflow's bytes from here on, these included, are the data stream: a
        middlebox rewrote them and TCP semantics win); with several subflows the
        subflow is reset (reason 6). True if the bytes are to be delivered."""
        self.counters["DataCsumErr"] += 1
        self.events.append(MptcpEvent("MP_FAIL", self.local_token, self.remote_token,
                                      f"bad DSS checksum in the mapping at DSN 0x{m.wire_dsn:x}"))
        sf.send_mp_fail = m.wire_dsn
        eng = sf.engine
        assert eng is not None
        eng.ack_now()
        if len(self.subflows) == 1:
            self._fall_back("a DSS checksum failed: MP_FAIL sent", infinite=True)
            return True
        self._reset_subflow(sf, wm.MPTCP_RST_EMIDDLEBOX, "bad DSS checksum")
        return False

    def _deliver(self, off: int, data: bytes | bytearray | memoryview) -> None:
        """Data-level reassembly: in order -> the receive buffer; ahead -> held."""
        n = len(data)
        end = off + n
        if end <= self.ack_off:
            self.counters["DuplicateData"] += 1
            return
        if off < self.ack_off:
            data = memoryview(data)[self.ack_off - off:]
            off = self.ack_off
        if off == self.ack_off:
            self.rcvbuf.append(data)  # kept as it is: nobody changes it any more
            self.ack_off = end
            while (more := self.ooo.pop(self.ack_off)) is not None:
                self.rcvbuf.append(more)
                self.ack_off += len(more)
            if not self._readable_pending:
                self._readable_pending = True
                self.events.append(DataReadable())
            self._check_data_fin()
        else:
            self.counters["OFOQueue"] += 1
            if not self.ooo.add(off, data):
                self.counters["OFODrop"] += 1

    def _check_data_fin(self) -> None:
        if (self.rcv_data_fin_off is not None and not self.peer_fin
                and self.ack_off == self.rcv_data_fin_off):
            self.peer_fin = True  # the data ACK now covers the DATA_FIN (wire_data_ack)
            self.events.append(PeerFinished())
            for sf in self.subflows:
                if sf.engine is not None:
                    sf.engine.ack_now()
            self._maybe_close_subflows(None)

    def _take_engine_events(self, sf: Subflow, now: float) -> None:
        eng = sf.engine
        assert eng is not None
        while (ev := eng.poll_event()) is not None:
            t = type(ev)
            if t is Connected:
                if sf is self.master:
                    self._connected = True
                    if not self.fallback:
                        self._emit_created()
                    self.events.append(Connected())
                    if self.data_fin_queued and self.fallback:
                        eng.close(now)
            elif t is PeerFinished:
                if self.fallback:
                    self.peer_fin = True
                    self.events.append(PeerFinished())
                elif not (self.peer_fin and self.data_fin_acked) and sf.closing is None:
                    # the peer closed this subflow alone (it removed it): stop using
                    # it, send its unacknowledged data elsewhere, close our side too
                    self.remove_subflows(lambda x: x is sf, now, "the peer closed the subflow")
            elif t is WritableSpace or t is DataReadable:
                pass  # the data level decides (and we pull after every input)
            elif t is Closed:
                self._subflow_closed(sf, ev.error)  # type: ignore[union-attr]
            else:
                self.events.append(ev)  # StateChanged: for traces and observers

    def _subflow_closed(self, sf: Subflow, error: str | None) -> None:
        if sf.closing is None or error is not None:
            self._queue_reinject(sf, "closed")
        if sf.join or sf.closing is not None:
            self.sf_event("SF_CLOSED", sf, sf.join_failed or sf.reset_why or error or sf.closing)
        live = [s for s in self.subflows if s is not sf and s.engine is not None
                and not s.engine.is_closed and s.closing is None
                and s.engine.state not in (State.CLOSED, State.TIME_WAIT)]
        if live:
            return
        if self.peer_fin and self.data_fin_acked:
            # the data-level close is complete: every byte is through both ways, however
            # the subflows ended (a stale one is reset on purpose)
            self._emit_closed(None)
        elif error is not None:
            why = sf.reset_why or self.reset_error
            self._emit_closed(why if error == "reset" and why else error)
        elif self.fallback or (self.peer_fin and self.data_fin_acked):
            self._emit_closed(None)
        else:
            self._emit_closed("subflow closed before the data-level close (DATA_FIN)")

    # ---- output ----------------------------------------------------------------------------
    def poll_transmit(self, now: float) -> list[tuple[TcpEngine, OutSegment]]:
        self.now = now
        out: list[tuple[TcpEngine, OutSegment]] = []
        if self._close_todo:
            self._finish_closes(now)
        if not self.fallback and self._connected:
            self._push()
        for sf in self.subflows:
            eng = sf.engine
            if eng is None:
                continue
            for seg in eng.poll_transmit(now):
                out.append((eng, seg))
            self._after_subflow_io(sf, now)
        if self.data_fin_to_signal():
            eng = self._signal_engine()
            if not self.data_fin_on_wire and eng is not None:
                # the ACK asked for it went out as data segments (they carry their
                # mappings, not the DATA_FIN): a pure ACK with it, now
                eng.ack_now()
                out.extend((eng, seg) for seg in eng.poll_transmit(now))
            if self._t_data_fin is None and self.data_fin_on_wire:
                self._t_data_fin = now + self._rto()
        if self.snd_una < self.snd_nxt and not self.fallback:
            if self._t_rtx is None:
                self._t_rtx = now + self._rtx_timeout()
        else:
            self._t_rtx = None
        return out

    def _push(self) -> None:
        """Map data onto subflows, one chunk (one mapping, ~64 KB) at a time, to the
        subflows the scheduler picks (stack.mptcp.sched; the default is Linux's:
        among those with room, the lowest expected time to deliver). Backup subflows
        are offered only when no other can send. Each subflow holds about two cwnds, so
        the choice is made again as they drain. Data to reinject goes first."""
        ready = self._sendable()
        if not ready:
            return
        pick = self.scheduler.pick
        while self.reinject or (self.snd_nxt < self.write_off
                                and self.snd_nxt < self._wnd_end()):
            open_ = [sf for sf in ready if _has_room(sf)]
            chosen = pick(open_, ready) if open_ else ()
            if not chosen:
                break
            if self.reinject:
                self._reinject_chunk(chosen[0])
                continue
            start = self.snd_nxt
            eng = chosen[0].engine
            assert eng is not None
            chunk_max = _chunk_max(eng)
            edge = self._wnd_end()
            n = self._map(chosen[0], start, min(self.write_off, edge) - start, chunk_max)
            self.snd_nxt += n
            for sf in chosen[1:]:  # the redundant scheduler: the same data on each
                if self._map(sf, start, n, n):
                    self.counters["RedundantTx"] += 1
        self._maybe_close_subflows(None)

    def _sendable(self) -> list[Subflow]:
        """The subflows new data may go to: established, not closing, stale or failed;
        the non-backup ones, or the backups when no other one works."""
        ready = [sf for sf in self.subflows if sf.engine is not None and sf.fully_established
                 and sf.join_failed is None and sf.closing is None and not sf.stale
                 and sf.engine.state in _SENDING]
        return [sf for sf in ready if not sf.is_backup] or ready

    def _map(self, sf: Subflow, start: int, n: int, chunk_max: int) -> int:
        """Hand data [start, start+n) (at most `chunk_max` and what the subflow's send
        buffer takes) to `sf` as one mapping; the bytes mapped. A chunk is a whole
        number of the subflow's segments, so a GSO super-packet is exactly one mapping
        (the engine never cuts across one)."""
        eng = sf.engine
        assert eng is not None
        n = min(n, chunk_max, eng.config.snd_buf - eng.send_buffered)
        if n <= 0:
            return 0
        pieces = self.sndbuf.pieces(start, n)
        chunk = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        ssn = sf.tx_next
        sent = eng.send(chunk)  # the room was checked: all of it
        if sent <= 0:
            return 0
        csum = crypto.dss_checksum(self.wire_dsn(start), ssn, sent, memoryview(chunk)[:sent]) \
            if self.csum_enabled else 0
        sf.add_tx_map(TxMap(ssn, sent, start, csum))
        return sent

    def _reinject_chunk(self, sf: Subflow) -> None:
        """Send again, on `sf`, data a dead, stale or removed subflow carried and the
        peer has not data-acked (RFC 8684 3.3.6; Linux `__mptcp_retrans`): a new
        mapping with the old data sequence numbers; the receiver drops what it has."""
        start, end = self.reinject[0]
        start = max(start, self.snd_una)
        if start >= end:
            self.reinject.pop(0)
            return
        eng = sf.engine
        assert eng is not None
        sent = self._map(sf, start, end - start, _chunk_max(eng))
        self.counters["Reinjected"] += sent
        if start + sent >= end:
            self.reinject.pop(0)
        else:
            self.reinject[0] = (start + sent, end)

    def _queue_reinject(self, sf: Subflow, why: str) -> None:
        """Everything `sf` carried that is not data-acked goes to the reinject queue
        (once, until the subflow works again)."""
        if sf.reinjected:
            return
        sf.reinjected = True
        todo = [(m.data_off, m.data_off + m.length) for m in sf.tx_maps
                if m.data_off + m.length > self.snd_una]
        if todo and len(self.subflows) > 1:
            log.info("reinjecting %d ranges of a %s subflow", len(todo), why)
            self.reinject.extend(todo)
            self.reinject.sort()

    def _wnd_end(self) -> int:
        """How far we may map: the peer's data-level window edge once a data ACK
        told it; before that (the first data), what the master's TCP window allows."""
        if self.snd_wnd_end:
            return self.snd_wnd_end
        eng = self.master.engine
        return self.snd_una + (eng.snd_wnd if eng is not None else 0) + 1

    def data_fin_to_signal(self) -> bool:
        """A DATA_FIN is due on our next segment without payload: the application
        closed, every byte is mapped, and the peer has not acknowledged it yet."""
        return self.data_fin_queued and not self.data_fin_acked and \
            self.snd_nxt == self.write_off and not self.fallback

    def data_fin_csum(self) -> int:
        return crypto.dss_checksum(self.wire_dsn(self.write_off), 0, 1, b"")

    def _on_data_ack(self, off: int) -> None:
        top = self.snd_nxt + (1 if self.data_fin_to_signal() or self.data_fin_acked else 0)
        if off <= self.snd_una or off > top:
            if off > top:
                self.counters["DataAckBeyondSent"] += 1
            return
        if self.data_fin_queued and self.snd_nxt == self.write_off and off == self.write_off + 1:
            self.data_fin_acked = True
            self._t_data_fin = None
            off = self.write_off
            self._maybe_close_subflows(None)
        n = off - self.snd_una
        if n > 0:
            self.sndbuf.release(off)
            self.snd_una = off
            self._t_rtx = None  # progress: poll_transmit re-arms it for what is left
            self._rtx_backoff = 0
            if self._want_writable and len(self.sndbuf) < self.config.snd_buf:
                self._want_writable = False
                self.events.append(WritableSpace())

    def _maybe_close_subflows(self, now: float | None) -> None:
        """Both DATA_FINs done: close the subflows with TCP FINs (RFC 8684 3.3.3)."""
        if self.data_fin_acked and self.peer_fin:
            for sf in self.subflows:
                eng = sf.engine
                if eng is None or eng.is_closed:
                    continue
                if sf.stale and len(self.subflows) > 1 and eng.state is not State.CLOSED:
                    # its path is down: a FIN would wait out every retransmission
                    sf.reset_reason = wm.MPTCP_RST_EUNSPEC
                    sf.resetting = True
                    eng.abort(now or 0.0)
                elif eng.state in _SENDING:
                    eng.close(now or 0.0)
        elif self.data_fin_to_signal() and not self._data_fin_signalled:
            # once: an ACK carries it now; the DATA_FIN timer repeats it if unacked
            # (an ACK per poll would be a storm of duplicate ACKs)
            self._data_fin_signalled = True
            self._ack_on_every_subflow()

    def _set_fully_established(self) -> None:
        if not self.fully_established and self.remote_key is not None:
            self.fully_established = True
            self.events.append(MptcpEvent("ESTABLISHED", self.local_token, self.remote_token))

    def _emit_created(self) -> None:
        if not self._created_emitted:
            self._created_emitted = True
            self.events.append(MptcpEvent("CREATED", self.local_token, self.remote_token))

    def _emit_closed(self, error: str | None) -> None:
        if not self._closed_emitted:
            self._closed_emitted = True
            self.events.append(MptcpEvent("CLOSED", self.local_token, self.remote_token, error))
            self.events.append(Closed(error))

    def _fall_back(self, reason: str, infinite: bool = False) -> None:
        """Become plain TCP on the master subflow (RFC 8684 3.7), reported as FALLBACK."""
        if self.fallback:
            return
        self.fallback = True
        self.fallback_reason = reason
        self.counters["InfiniteFallback" if infinite else "Fallback"] += 1
        self.events.append(MptcpEvent("FALLBACK", self.local_token, self.remote_token, reason))
        log.info("MPTCP fallback: %s", reason)
        eng = self.master.engine
        if eng is not None:
            # bytes not yet mapped go straight to TCP; acked-at-TCP is acked from now on
            rest = b"".join(self.sndbuf.pieces(self.snd_nxt, self.write_off - self.snd_nxt))
            if rest:
                eng.send(rest)
            self.snd_nxt = self.write_off
            if self.data_fin_queued:
                eng.close(0.0)

    def _reset_subflow(self, sf: Subflow, reason: int, why: str) -> None:
        log.info("resetting subflow: %s", why)
        sf.reset_reason = reason
        sf.resetting = True
        if sf.engine is not None:
            sf.engine.abort(0.0)
        if sf is self.master:
            self.reset_error = why

    # ---- timers ------------------------------------------------------------------------------
    def _rto(self) -> float:
        eng = self._signal_engine()
        return (eng.rto if eng is not None else 1.0) * (1 << self._data_fin_backoff)

    def _rtx_timeout(self) -> float:
        """The data-level RTO: the largest RTO of the subflows data may be on (Linux
        `mptcp_set_timeout`), at least TCP's minimum, doubled per fruitless expiry."""
        rto = max((sf.engine.rto for sf in self.subflows
                   if sf.engine is not None and not sf.engine.is_closed), default=1.0)
        return min(max(rto, MIN_RTX_TIMEOUT) * (1 << self._rtx_backoff), MAX_RTX_TIMEOUT)

    def _retransmit_head(self) -> None:
        """The data ACK has not moved for a data-level RTO while data is out (Linux
        `mptcp_retransmit_timer` -> `__mptcp_retrans`). Every subflow may have
        delivered its part, yet the peer still lacks some: the kernel drops bytes
        its subflow already TCP-acked when the msk is short of memory
        (`__mptcp_move_skb`), and no subflow will ever send those again. So the first
        not data-acked chunk goes out again, as a new mapping, on a subflow with
        nothing queued (`mptcp_subflow_get_retrans`: a busy one would only queue it
        behind its own data, and its own retransmissions may still fill the gap);
        none idle: the next expiry tries again."""
        idle = [sf for sf in self._sendable()
                if sf.engine is not None and sf.engine.send_buffered == 0]
        if not idle or self.snd_una >= self.snd_nxt:
            return
        sf = min(idle, key=lambda x: x.engine.srtt or 1.0)  # type: ignore[union-attr]
        eng = sf.engine
        assert eng is not None
        sent = self._map(sf, self.snd_una, self.snd_nxt - self.snd_una, _chunk_max(eng))
        if sent:
            self.counters["MPTCPRetrans"] += 1
            self.counters["MPTCPRetransBytes"] += sent
            log.info("data-level RTO: %d bytes at data offset %d sent again on subflow %d",
                     sent, self.snd_una, sf.local_id)

    def poll_timeout(self) -> float | None:
        best = self._t_data_fin
        if self._t_rtx is not None and (best is None or self._t_rtx < best):
            best = self._t_rtx
        for _addr, deadline, _tries in self.add_addr_sent.values():
            if best is None or deadline < best:
                best = deadline
        for sf in self.subflows:
            if sf.engine is not None:
                t = sf.engine.poll_timeout()
                if t is not None and (best is None or t < best):
                    best = t
        return best

    def handle_timeout(self, now: float) -> None:
        self.now = now
        for addr_id, (addr, deadline, tries) in list(self.add_addr_sent.items()):
            if deadline <= now:
                # not echoed: announce again (a few times, backing off), then give up
                if tries < 5:
                    self.add_addr_queue.append((addr_id, addr))
                    self.add_addr_sent[addr_id] = (addr, float("inf"), tries)
                    eng = self._signal_engine()
                    if eng is not None:
                        eng.ack_now()
                else:
                    del self.add_addr_sent[addr_id]
                    self.counters["AddAddrTxDrop"] += 1
        t = self._t_rtx
        if t is not None and now >= t:
            self._rtx_backoff = min(self._rtx_backoff + 1, 7)
            self._t_rtx = now + self._rtx_timeout()
            self._retransmit_head()
        t = self._t_data_fin
        if t is not None and now >= t:
            # our DATA_FIN was not data-acked: signal it again (on a pure ACK)
            self._data_fin_backoff = min(self._data_fin_backoff + 1, 6)
            self._t_data_fin = now + self._rto()
            self._ack_on_every_subflow()
        for sf in self.subflows:
            eng = sf.engine
            if eng is not None:
                dl = eng.poll_timeout()
                if dl is not None and dl <= now:
                    eng.handle_timeout(now)
                    self._check_stale(sf)
                self._after_subflow_io(sf, now)

    def _check_stale(self, sf: Subflow) -> None:
        """A subflow whose RTO fired STALE_RTOS times in a row (its path is probably
        down) stops being scheduled and its unacked data is reinjected elsewhere
        (Linux marks it stale after net.mptcp.stale_loss_cnt); an ACK revives it."""
        eng = sf.engine
        assert eng is not None
        if not sf.stale and eng.rto_retries >= STALE_RTOS and len(self.subflows) > 1:
            sf.stale = True
            self.counters["SubflowStale"] += 1
            self.sf_event("SF_STALE", sf)
            self._queue_reinject(sf, "stale")
            if self.data_fin_acked and self.peer_fin:
                self._maybe_close_subflows(None)  # resets it: the data is all through
