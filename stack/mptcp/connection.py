"""The MPTCP connection: the per-connection control block (Linux `struct mptcp_sock`,
"msk"; RFC 8684's connection level; the kernel's `protocol.c`).

It owns the keys and tokens, the 64-bit data sequence spaces (DSN, data ACK), the
data-level send buffer (kept until data-acked, so a dead subflow's bytes can be sent
again) and send path, the connection-level timers, the subflows (the master first;
joins later) and the lifecycle of both. To the layer above it looks like one TCP
socket: `send`, `recv`, `close`, `abort`, events, timers. Around it, one module per
concern, each naming the kernel file it mirrors: `options` (options.c: what arrives,
what the writer puts on a segment), `subflow` (subflow.c: the subflow state and
handshakes), `recv` (the data-level receive path), `pm` (the path manager), `sched`
(the schedulers), `token` (the token table), `crypto`.

Data offsets: inside, data sequence numbers are unbounded offsets from the first data
byte (offset 0 = IDSN + 1); `wire_dsn` / `rx_off` convert at the wire, the one place
64-bit modular arithmetic happens. Receive-side 32-bit values are widened against the
current state (Linux `expand_seq`).

Fallback (RFC 8684 3.7): when the peer does not speak MPTCP (no MP_CAPABLE on the
SYN/ACK or third ACK) or options vanish mid-connection on the only subflow, the
connection becomes the master subflow's plain TCP byte stream, reported as FALLBACK.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from stack.addr import family_name, ntoa
from stack.buffers import RecvQueue, SendQueue
from stack.diag import (
    RST_REASONS,
    Code,
    Diagnosis,
    Finding,
    FrameClock,
    PacketRef,
    Severity,
    fmt_key,
)
from stack.mib import Mib
from stack.mptcp import crypto, recv
from stack.mptcp import options as mo
from stack.mptcp.events import MptcpEvent, MptcpEventType
from stack.mptcp.pm import EndpointTable, PathManager
from stack.mptcp.sched import Scheduler, make_scheduler
from stack.mptcp.subflow import Subflow, SubflowState, TxMap
from stack.tcp.assembler import Assembler
from stack.tcp.engine import (
    Closed,
    CloseError,
    Connected,
    DataReadable,
    Event,
    OutSegment,
    PeerFinished,
    State,
    StateChanged,
    TcpEngine,
    TcpError,
    WritableSpace,
)
from stack.tcp.seq import near32, unwrap64
from stack.wire import mptcp as wm
from stack.wire.tcp import TcpHeader

log = logging.getLogger(__name__)

M64 = (1 << 64) - 1
MAX_MAP = wm.MAX_DATA_LEN
# polls of one subflow per transmit: a pure ACK that carried a path-manager signal may
# ask for one more (each carries a signal, so they end; the bound is a backstop)
_POLL_ROUNDS = 4
STALE_RTOS = 2  # consecutive RTOs that make a subflow stale (Linux stale_loss_cnt: 4)
MIN_RTX_TIMEOUT = 0.2  # the data-level RTO's floor (Linux TCP_RTO_MIN) ...
MAX_RTX_TIMEOUT = 60.0  # ... and its ceiling (TCP_RTO_MAX is 120 s)
# head-of-line reinjection: the subflow holding the oldest unacked data has heard
# nothing for this many of its smoothed RTTs (TCP's tail loss probe waits 2) ...
HOL_SILENT_RTTS = 2
HOL_SILENT_MIN = 0.01  # ... and at least this long (TLP's floor), in seconds
_SF = SubflowState
# bound once for the per-segment tests (an Enum class attribute costs ~75 ns on 3.11)
_STALE, _FAILED = SubflowState.STALE, SubflowState.FAILED
_CONNECTING = (State.SYN_SENT, State.SYN_RECEIVED)


def _has_room(sf: Subflow) -> bool:
    """Whether a subflow takes another chunk: about two cwnds queued, enough to keep it
    busy, little enough that a subflow joining later (or a faster one) gets its share."""
    eng = sf.engine
    return eng.send_buffered < min(eng.config.snd_buf, max(2 * eng.cwnd, 4 * MAX_MAP))


def _fastest(sf: Subflow, ready: list[Subflow]) -> bool:
    """Whether `sf` has the lowest smoothed RTT of the subflows that may send (ties
    included; no sample yet counts as slowest; one in retransmission timeouts, whose
    path may be dead, is never the fastest and is no measure for the others)."""
    inf = float("inf")
    if sf.engine.rto_retries:
        return False  # timing out: its RTT says nothing about its path now
    mine = sf.engine.srtt or inf
    return all(mine <= (o.engine.srtt or inf) for o in ready if not o.engine.rto_retries)


def _window_room(sf: Subflow) -> int:
    """What the subflow's congestion window would send now beyond what it holds."""
    eng = sf.engine
    return eng.cwnd - eng.send_buffered


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
    # the most an unechoed ADD_ADDR waits before it goes again (net.mptcp.add_addr_timeout,
    # 120 s); the wait is the largest subflow RTO below that, doubling (pm.py)
    add_addr_timeout: float = 120.0
    scheduler: str = "default"      # default | roundrobin | redundant (stack.mptcp.sched)
    # deliberate protocol faults, to watch a peer refuse them (see FAULTS)
    faults: frozenset[str] = frozenset()
    # connection-level send buffer, kept until data-acked: it holds what the subflows
    # hold plus what they delivered but the peer has not data-acked yet, so it must be
    # well above a subflow's 4 MB (at 4 MB, data-ACK lag halved our goodput)
    snd_buf: int = 16 << 20
    # the MP_CAPABLE C flag (RFC 8684 3.1): ask peers not to join our initial address
    # and port (the kernel's net.mptcp.allow_join_initial_addr_port=0)
    deny_join_id0: bool = False
    # MP_CAPABLE SYN blackholes (the kernel's ctrl.c): retransmissions of our SYN that
    # still carry MP_CAPABLE (net.mptcp.syn_retrans_before_tcp_fallback) before a plain
    # SYN; a blackhole found that way disables MPTCP active opens for this long, doubling
    # on repeats (net.mptcp.blackhole_timeout, s; 0: detection off)
    syn_retrans_before_tcp_fallback: int = 2
    blackhole_timeout: float = 3600.0


FAULTS = {
    "join-token": "our MP_JOIN SYNs carry a token that is not the peer's (expect an RST, "
                  "MP_TCPRST reason 1; the kernel counts MPJoinNoTokenFound)",
    "join-hmac": "our MP_JOIN third ACKs carry a wrong HMAC (expect an RST; the kernel "
                 "counts MPJoinAckHMacFailure)",
}


class MskState(Enum):
    """The connection's lifecycle (RFC 8684 3.1, 3.7; the kernel keeps it in the msk's
    `sk_state` and its `fully_established` / fallback flags). The data-level close
    (DATA_FIN both ways) is sequence state beside it: `data_fin_queued`,
    `data_fin_acked`, `peer_fin`."""
    CONNECTING = "connecting"              # the initial subflow's handshake
    CONNECTED = "connected"                # it is up; the peer has not yet confirmed our keys
    FULLY_ESTABLISHED = "fully-established"  # joins and path-manager signals may go
    FALLBACK = "fallback"                  # plain TCP on the initial subflow
    CLOSED = "closed"                      # CLOSED reported (subflows may still finish)


_OPENING = (MskState.CONNECTING, MskState.CONNECTED)
_CONNECTED = (MskState.CONNECTED, MskState.FULLY_ESTABLISHED)
_MSK_TRANSITIONS: dict[MskState, frozenset[MskState]] = {
    # the client: CONNECTING -> CONNECTED (SYN/ACK with MP_CAPABLE) -> FULLY_ESTABLISHED
    # (the server's first data ACK); the server: CONNECTING -> FULLY_ESTABLISHED (the
    # third ACK carries both keys); either falls back when MPTCP options go missing
    MskState.CONNECTING: frozenset({MskState.CONNECTED, MskState.FULLY_ESTABLISHED,
                                    MskState.FALLBACK, MskState.CLOSED}),
    MskState.CONNECTED: frozenset({MskState.FULLY_ESTABLISHED, MskState.FALLBACK,
                                   MskState.CLOSED}),
    MskState.FULLY_ESTABLISHED: frozenset({MskState.FALLBACK, MskState.CLOSED}),
    MskState.FALLBACK: frozenset({MskState.CLOSED}),
    MskState.CLOSED: frozenset(),
}


STALL_MIN = 1.0  # a window shut this long at the end is a stall (diagnosis)


class MptcpConnection:
    """One MPTCP connection (msk)."""

    def __init__(self, *, client: bool, config: MptcpConfig, randbytes: Callable[[int], bytes],
                 token_in_use: Callable[[int], bool], now: float,
                 endpoints: EndpointTable, frames: FrameClock | None = None,
                 local_key: int | None = None) -> None:
        """`local_key`: ours already chosen (a listener rebuilding the connection from a
        SYN cookie takes the key the third ACK echoes); else a fresh one whose token is
        unique."""
        self.client = client
        self.config = config
        self.version = config.version
        self.now = now
        key = local_key or crypto.generate_unique_key(randbytes, token_in_use, self.version)
        self.counters: Counter[str] = Counter()
        if key is None:
            # five colliding keys in a row: the kernel falls back (MPFallbackTokenInit)
            key = crypto.generate_key(randbytes)
            self.counters[Mib.MPFallbackTokenInit] += 1
        self.local_key = key
        self.local_token, self.local_idsn = crypto.key_token_idsn(key, self.version)
        self.remote_key: int | None = None
        self.remote_token: int | None = None
        self.remote_idsn = 0
        self.csum_enabled = config.checksum
        # lifecycle (RFC 8684 3.1, 3.7): one state, changed only by `_set_state`, and
        # the facts it leaves behind (readable after the connection closed)
        self.lifecycle = MskState.CONNECTING
        self.fully_established_at: float | None = None
        self.fallback_reason: str | None = None
        # one-sided fallback (RFC 8684 3.7): the peer's options do not reach us but ours
        # reach it; it may not have fallen back, so our data ACKs go on
        self.ack_after_fallback = False
        self.fastclosing = False  # we abort: our RSTs carry MP_FASTCLOSE
        self.reset_error: str | None = None
        self.closed_as: Closed | None = None  # how it closed, once it has
        self.subflows: list[Subflow] = []
        self.pm = PathManager(self, endpoints)
        self.scheduler: Scheduler = make_scheduler(config.scheduler)
        self.events: deque[Event | MptcpEvent] = deque()
        # what went wrong, with the packet that shows it (stack.diag); `tx_index`
        # counts the segments written in the current transmit poll
        self.diag = Diagnosis(frames or FrameClock(), now, on_finding=self._finding_event)
        self.tx_index = 0
        self.readable_pending = False
        self._want_writable = False
        # data level, send side (offsets; see the module docstring)
        # bytes from snd_una (kept until data-acked), and the last byte acked before it
        # once there is one (a zero-window probe carries it: `_probe_window`)
        self.sndbuf = SendQueue()
        self.snd_una = 0
        self.snd_nxt = 0             # next offset to map onto a subflow
        self.write_off = 0           # end of what the application gave us
        self.snd_wnd_end = 0         # the peer's data-level window right edge (offset)
        # when the data-level window stopped leaving room for the data we have to send
        # (the `now` of the data ACK, or of the write, that made it so); None: not stalled
        self.data_window_zero_since: float | None = None
        self.data_window_zero_ref: PacketRef | None = None  # the packet that shut it
        self._zw_probes = 0          # window probes mapped in the current stall
        self._zw_probe_at: float | None = None  # the next may be mapped from then on
        self.reinject: list[tuple[int, int]] = []  # data ranges to send again
        self._fallback_tx: deque[memoryview] = deque()  # after a fallback: for TCP, in order
        self._fallback_tx_len = 0
        self._t_rtx: float | None = None  # data-level retransmission timer (Linux msk's)
        self._rtx_backoff = 0
        self._close_todo: list[Subflow] = []  # removed subflows whose FIN/RST is due
        self.data_fin_queued = False  # the application closed: DATA_FIN after write_off
        self.data_fin_acked = False
        self._t_data_fin: float | None = None
        self._data_fin_signalled = False
        self.data_fin_on_wire = False  # a segment carried our DATA_FIN
        self._data_fin_backoff = 0
        # data level, receive side (stack.mptcp.recv)
        self.rcvbuf = RecvQueue()     # in-order data not yet read
        self.ack_off = 0             # next data offset expected (the data ACK)
        self.ooo = Assembler(config.rcv_buf)
        self.rcv_data_fin_off: int | None = None
        self.peer_fin = False

    # ---- identity --------------------------------------------------------------------------
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

    def set_remote_key(self, key: int) -> None:
        self.remote_key = key
        self.remote_token, self.remote_idsn = crypto.key_token_idsn(key, self.version)

    def wire_dsn(self, off: int) -> int:
        return (self.local_idsn + 1 + off) & M64

    def wire_data_ack(self) -> int:
        return (self.remote_idsn + 1 + self.ack_off + (1 if self.peer_fin else 0)) & M64

    def rx_off(self, dsn: int, dsn64: bool) -> int:
        """A received DSN as a data offset; a 32-bit one is the offset nearest the
        data ACK with those low bits (Linux `expand_seq`)."""
        if not dsn64:
            return near32(self.ack_off, (self.remote_idsn + 1 + self.ack_off) & M64, dsn)
        return unwrap64(self.ack_off, (dsn - self.remote_idsn - 1) & M64)

    def _ack_off(self, ack: int, ack64: bool) -> int:
        """A received data ACK as a send offset (32-bit: nearest to snd_una)."""
        if not ack64:
            return near32(self.snd_una, self.wire_dsn(self.snd_una), ack)
        return unwrap64(self.snd_una, (ack - self.local_idsn - 1) & M64)

    # ---- diagnosis -----------------------------------------------------------------------
    def finding(self, code: Code, severity: Severity, text: str, *,
                sf: Subflow | None = None, packet: str | None = "in", hint: str = "",
                key: object = None) -> Finding | None:
        """Record a diagnosis finding. `packet`: "in" for the segment being processed
        (on `sf`, else the master subflow), "out" for the one being written, None for
        none."""
        ref: PacketRef | None = None
        if packet is not None:
            sf = sf or self.master
            ref = (self.diag.packet_in(self.now, sf.key) if packet == "in"
                   else self.diag.packet_out(self.now, sf.key, self.tx_index))
        return self.diag.add(code, severity, text, ref, hint, key)

    def conclude(self, now: float) -> None:
        """The findings only the end shows: an echoed ADD_ADDR nobody joined, a window
        still shut (the peer's, or ours because our application does not read)."""
        t0 = self.diag.t0
        self.pm.conclude()
        for addr_id, (addr, ref) in self.pm.add_addr_echo_seen.items():
            if not any(sf.engine.local_addr == addr for sf in self.subflows):
                hint = ("the peer's add_addr_accepted limit (Linux's default is 0: 'ip "
                        "mptcp limits set add_addr_accepted 1') or its PM does not join "
                        "announced addresses")
                first = self.subflows[0].key[0] if self.subflows else addr
                unheard = self.pm.joins_unheard.get(addr)
                if unheard is not None:
                    hint = (f"the peer did try to join it ({unheard.describe(t0)}), but "
                            "nothing of ours listens at that address and port (listen "
                            "--bind): refused with an RST, as Linux refuses it")
                elif len(first) == 4 and len(addr) == 16:
                    hint = ("an IPv6 address announced on a connection begun over IPv4: a "
                            "Linux peer whose socket is AF_INET does not join it ('IPv4 "
                            "sockets do not use IPv6 addresses'); AF_INET6 sockets do")
                self.diag.add(Code.ADD_ADDR_IGNORED, Severity.WARNING,
                              f"our ADD_ADDR for {ntoa(addr)} (id {addr_id}) was "
                              "echoed but the peer never joined it", ref,
                              hint=hint, key=addr_id)
        for addr_id, sent in self.pm.add_addr_sent.items():
            if sent.tries >= 2:  # re-sent: the peer had a whole timeout to echo it
                self.diag.add(Code.ADD_ADDR_NOT_ECHOED, Severity.ERROR,
                              f"our ADD_ADDR for {ntoa(sent.addr)} (id {addr_id}) "
                              f"was sent {sent.tries} times and not echoed before the "
                              "connection ended", self.pm.add_addr_last.get(addr_id),
                              hint="the peer does not take ADD_ADDR (its PM, or a middlebox "
                                   "stripping the option, or an HMAC it finds wrong: "
                                   "AddAddrHMacFailure on its side)", key=addr_id)
        since = self.data_window_zero_since
        if since is not None and now - since < STALL_MIN:
            since = None  # a window the transfer is simply filling, not a stall
        if since is not None and self.lifecycle is not MskState.CLOSED:
            self.diag.add(Code.WINDOW_STALL, Severity.ERROR,
                          f"the peer's data-level window has been 0 since {since - t0:.3f} s "
                          f"({now - since:.1f} s), with {self.write_off - self.snd_nxt} bytes "
                          "waiting to be sent", self.data_window_zero_ref,
                          hint="the peer's application is not reading", key="peer")
        for sf in self.subflows:
            z = sf.engine.peer_zero_window_since
            # (a subflow closing, its data sent again on the others, is no stall)
            if since is None and z is not None and sf.engine.send_buffered \
                    and sf.is_open and now - z >= STALL_MIN:
                self.diag.add(Code.WINDOW_STALL, Severity.ERROR,
                              f"the peer's window on {fmt_key(sf.key)} has been 0 since "
                              f"{z - t0:.3f} s ({now - z:.1f} s)", None,
                              hint="the peer's application is not reading", key=sf.key)
        # closed as the peer sees it: less room than a segment is a window of 0 (the
        # receiver's SWS avoidance, RFC 9293 3.8.6.2.2; seen: 16 bytes left of 16 MiB)
        if self.rcv_space() < self.master.engine.mss and self.lifecycle is not MskState.CLOSED:
            self.diag.add(Code.WINDOW_STALL, Severity.ERROR,
                          "our receive buffer is full: our application is not reading, so "
                          "our window is 0", None, hint="read faster (or --output to a "
                          "file, not a pipe nobody reads)", key="ours")

    def _finding_event(self, f: Finding) -> None:
        self.event(MptcpEventType.DIAGNOSIS, f.text, finding=f)

    # ---- events and lifecycle ------------------------------------------------------------
    def event(self, name: MptcpEventType, detail: str | None = None, **fields: object) -> None:
        self.events.append(MptcpEvent(name, self.local_token, self.remote_token, detail,
                                      **fields))  # type: ignore[arg-type]

    def sf_event(self, name: MptcpEventType, sf: Subflow, detail: str | None = None) -> None:
        """An SF_* event with the subflow's addresses and ids (`ip mptcp monitor`)."""
        eng = sf.engine
        self.event(name, detail, saddr=eng.local_addr, sport=eng.local_port,
                   daddr=eng.remote_addr, dport=eng.remote_port, locid=sf.local_id,
                   remid=sf.remote_id, backup=sf.is_backup)

    def _set_state(self, new: MskState, detail: str | None = None) -> None:
        """The one place the connection's state changes: checked against
        `_MSK_TRANSITIONS`, logged, and reported as `ip mptcp monitor` would (CREATED,
        ESTABLISHED, CLOSED; FALLBACK is ours)."""
        old = self.lifecycle
        if new not in _MSK_TRANSITIONS[old]:
            raise AssertionError(f"msk {self.local_token:08x}: {old.name} -> {new.name}")
        log.debug("msk %08x: %s -> %s", self.local_token, old.name, new.name)
        self.lifecycle = new
        if new is MskState.CONNECTED or (new is MskState.FULLY_ESTABLISHED
                                         and old is MskState.CONNECTING):
            self.event(MptcpEventType.CREATED)
        if new is MskState.FULLY_ESTABLISHED:
            self.fully_established_at = self.now
            self.event(MptcpEventType.ESTABLISHED)
        elif new is MskState.FALLBACK:
            self.event(MptcpEventType.FALLBACK, detail)

    @property
    def fully_established(self) -> bool:
        """RFC 8684 3.1: both keys known and confirmed (stays true after a fallback)."""
        return self.fully_established_at is not None

    @property
    def fallback(self) -> bool:
        """Plain TCP on the initial subflow now (RFC 8684 3.7)."""
        return self.fallback_reason is not None

    @property
    def connected(self) -> bool:
        """The initial subflow's handshake is done: data may be mapped."""
        return self.lifecycle in _CONNECTED

    def set_fully_established(self) -> None:
        """Both keys known and the peer's use of them confirmed
        (`mptcp_pm_fully_established`): ESTABLISHED, and the path manager's turn."""
        if self.lifecycle in _OPENING and self.remote_key is not None:
            self._set_state(MskState.FULLY_ESTABLISHED)
            self.pm.fully_established()

    def _emit_closed(self, error: CloseError | None, detail: str | None = None) -> None:
        if self.lifecycle is not MskState.CLOSED:
            closed = self.closed_as = Closed(error, detail)
            self._set_state(MskState.CLOSED)
            self.event(MptcpEventType.CLOSED, closed.tag)
            self.events.append(closed)

    def fall_back(self, reason: str, infinite: bool = False, one_sided: bool = False) -> None:
        """Become plain TCP on the master subflow (RFC 8684 3.7), reported as FALLBACK.
        `one_sided`: the peer's options are stripped on their way to us, so it may go
        on as MPTCP: data ACKs keep going out, or it would resend at the data level
        what we have taken in (and we, having fallen back, would take it in again)."""
        if self.lifecycle is MskState.FALLBACK or self.lifecycle is MskState.CLOSED:
            return
        self.ack_after_fallback = one_sided
        for sf in self.subflows:
            sf.mp_fail_deadline = None
            for m in sf.rx_maps.values():
                if m.buf:
                    # a checksummed mapping gathered in part: TCP semantics from here,
                    # so its bytes count as they are (else they would be lost)
                    recv.deliver(self, m.data_off, m.buf)
            sf.rx_maps.clear()
            sf.rx_cur = None
        self.fallback_reason = reason
        self._set_state(MskState.FALLBACK, reason)
        self.counters[Mib.InfiniteFallback if infinite else Mib.Fallback] += 1
        log.info("MPTCP fallback: %s", reason)
        # bytes not yet mapped go to TCP as its send buffer takes them (all of them:
        # what does not fit waits in `_fallback_tx`); acked-at-TCP is acked from now on
        self._fallback_tx = deque(memoryview(p) for p in
                                  self.sndbuf.pieces(self.snd_nxt, self.write_off - self.snd_nxt))
        self._fallback_tx_len = self.write_off - self.snd_nxt
        self.snd_nxt = self.write_off
        self._drain_fallback()

    def _drain_fallback(self) -> None:
        """After a fallback: hand the master's TCP the bytes still waiting, as its send
        buffer takes them; then its FIN if the application closed."""
        eng = self.master.engine
        q = self._fallback_tx
        if q and not eng.can_send:
            return  # its subflow closed under the fallback: the close will say so
        while q:
            head = q[0]
            n = eng.send(head)
            self._fallback_tx_len -= n
            if n < len(head):
                q[0] = head[n:]
                return
            q.popleft()
        if self.data_fin_queued and eng.state is not State.SYN_SENT:
            eng.close()  # (a no-op once its FIN is queued)

    # ---- subflows ------------------------------------------------------------------------
    @property
    def master(self) -> Subflow:
        return self.subflows[0]

    def add_subflow(self, make_engine: Callable[[Subflow], TcpEngine], **kw: object) -> Subflow:
        """A new subflow whose engine `make_engine` builds (the host owns ports and
        ISNs); `kw` are `Subflow`'s (ids, nonce, join, backup, initiator)."""
        sf = Subflow(self, make_engine, **kw)  # type: ignore[arg-type]
        self.subflows.append(sf)
        return sf

    def subflow_of(self, engine: TcpEngine) -> Subflow:
        sf = engine.ulp
        if not isinstance(sf, Subflow) or sf.msk is not self:
            raise KeyError("not a subflow of this connection")
        return sf

    def signal_engine(self) -> TcpEngine:
        """The engine to carry connection-level signals (DATA_FIN, data ACKs, path
        manager options): the first subflow that can send, else the master."""
        for sf in self.subflows:
            if sf.can_send:
                return sf.engine
        return self.master.engine

    def signal_soon(self, now: bool = False) -> None:
        """A pure ACK on the signal subflow for a path-manager option (`now`: at the
        next poll even without other news, as a timer expiry needs)."""
        eng = self.signal_engine()
        if now:
            eng.ack_now()
        else:
            eng.send_pure_ack()

    def _ack_on_every_subflow(self) -> None:
        """A DATA_FIN rides on a pure ACK of each subflow (any path may be the one
        that works; the duplicates are harmless at the data level)."""
        for sf in self.subflows:
            if sf.can_signal:
                sf.engine.send_pure_ack()

    def remove_subflows(self, which: Callable[[Subflow], bool], why: str,
                        ours: bool = False) -> int:
        """Close the subflows `which` selects (the path manager's `subflow destroy`):
        no longer scheduled, then a FIN after what they hold (it still delivers that:
        sending it again elsewhere would only be duplicate data for the peer), or an
        RST if the path looks dead or the subflow never got going, its data then sent
        again on the others. (Linux reinjects the whole unacked queue on any subflow
        close.) The FIN or RST itself waits until no engine is in the middle of a
        segment: a REMOVE_ADDR may arrive on the very subflow it removes."""
        n = 0
        for sf in self.subflows:
            if not sf.is_open or not which(sf):
                continue
            n += 1
            if ours:  # Linux counts RmSubflow for the removals its own PM decides
                self.counters[Mib.RmSubflow] += 1  # (not for a received RM_ADDR's)
            log.info("closing subflow: %s", why)
            if sf.state is not _SF.ACTIVE:  # stale (path dead) or not established: RST
                sf.reset_reason = wm.MPTCP_RST_EUNSPEC
            sf.set_state(_SF.CLOSING, why)
            self._close_todo.append(sf)
        return n

    def _finish_closes(self) -> None:
        todo, self._close_todo = self._close_todo, []
        for sf in todo:
            eng = sf.engine
            # what it carried and the peer has not data-acked goes again at once on the
            # others (Linux `__mptcp_close_ssk` -> `__mptcp_retransmit_pending_data`):
            # a peer that removed the address has closed its end, and a subflow's
            # graceful close would otherwise still wait on it
            self._queue_reinject(sf, "removed")
            if sf.reset_reason is not None or eng.state in _CONNECTING:
                sf.reset_reason = wm.MPTCP_RST_EUNSPEC
                eng.abort()
            else:
                eng.close()  # (a no-op once our FIN is out)

    def reset_subflow(self, sf: Subflow, reason: int, why: str) -> None:
        log.info("resetting subflow: %s", why)
        sf.reset_reason = reason
        sf.engine.abort()
        if sf is self.master:
            self.reset_error = why

    def _check_stale(self, sf: Subflow) -> None:
        """A subflow whose RTO fired STALE_RTOS times in a row with nothing at all
        received since the first (its path is probably down) stops being scheduled and
        its unacked data is reinjected elsewhere; an ACK revives it. (Linux
        `mptcp_pm_subflow_chk_stale`: retransmission periods in which the subflow's
        rcv_tstamp did not move, net.mptcp.stale_loss_cnt of them. A peer that shut
        its window on our data in flight still answers each retransmission with an
        ACK: not stale, and the engine's RTO does not count those anyway.)"""
        eng = sf.engine
        since = eng.rto_streak_since
        if sf.state is _SF.ACTIVE and eng.rto_retries >= STALE_RTOS \
                and since is not None and eng.rcv_tstamp < since \
                and len(self.subflows) > 1:
            sf.set_state(_SF.STALE)
            self._path_failed(sf)
            self._queue_reinject(sf, "stale")
            if self.data_fin_acked and self.peer_fin:
                self.maybe_close_subflows()  # resets it: the data is all through

    def _join_refused(self, sf: Subflow, closed: Closed) -> None:
        """Our join ended in its handshake: say how, and the likely cause."""
        rst = f" with MP_TCPRST reason {sf.reset_code} " \
              f"({RST_REASONS.get(sf.reset_code, 'unknown')})" if sf.reset_code is not None \
            else " with a plain RST"
        if closed.error is CloseError.TIMEOUT:
            text, hint, packet = ("the peer never answered our MP_JOIN SYN", "a firewall drops "
                                  "it, or the address is not the peer's", None)
        elif sf.third_ack_sent:
            text = "the peer reset our join after our third ACK" + rst
            hint = ("the peer's subflow limit (Linux checks it when the third ACK arrives: "
                    "'ip mptcp limits' subflows, MPJoinRejected on its side)")
            if sf.reset_code == wm.MPTCP_RST_EMPTCP:  # Linux 6.18: its limit is reason 3
                hint = ("the peer found our third ACK's HMAC wrong (Linux: reason 1, "
                        "MPJoinAckHMacFailure on its side)")
            elif self.data_fin_out:
                hint = ("we had closed our side (our DATA_FIN was out): Linux takes a "
                        "join only while its connection is ESTABLISHED and refuses it "
                        "with reason 3 (MPJoinRejected), as for its subflow limit; open "
                        "the join before closing")
            packet = "in"
        else:
            text = "the peer answered our MP_JOIN SYN" + rst
            hint = ("reason 1: it does not know the token (the connection is gone there) "
                    "or does not accept joins to this address; reason 2: its limits")
            if sf.reset_code is None:
                hint = ("no MPTCP stack answered (Linux resets a join with MP_TCPRST): a "
                        "firewall's reject, or nothing listens at that address and port")
                if len(sf.key[0]) != len(self.subflows[0].key[0]):
                    hint = (f"a join over {family_name(sf.key[0])} to a connection begun "
                            f"over {family_name(self.subflows[0].key[0])}: a Linux peer "
                            "whose socket is AF_INET has no IPv6 listener ('IPv4 sockets "
                            "do not use IPv6 addresses'); mixed families need its socket "
                            "to be AF_INET6 (dual-stack)")
            packet = "in"
        self.finding(Code.JOIN_REFUSED, Severity.ERROR,
                     f"join {fmt_key(sf.key)} refused: {text}", sf=sf, packet=packet,
                     hint=hint, key=sf.key)

    def _path_failed(self, sf: Subflow) -> None:
        others = [o for o in self.subflows if o is not sf and o.can_send]
        if others:
            took = ", ".join(fmt_key(o.key) + (" (a backup)" if o.is_backup else "")
                             for o in others)
            then = f"its data goes on {took}"
        else:
            then = "no other subflow can take over"
        since = self.now - sf.last_tx[1] if sf.last_tx is not None else 0.0
        ref = (PacketRef(sf.last_tx[0], sf.last_tx[1], "out", sf.key)
               if sf.last_tx is not None else None)
        self.diag.add(Code.PATH_FAILED, Severity.WARNING,
                      f"subflow {fmt_key(sf.key)} went stale: {sf.engine.rto_retries} "
                      f"retransmission timeouts without an ACK (the last packet {since:.1f} s "
                      f"before); {then}", ref,
                      hint="its path is down or blackholed (a link down, a firewall); it "
                           "comes back if an ACK arrives", key=sf.key)

    # ---- incoming signals (the options dispatch calls these) ------------------------------
    def data_ack_received(self, sf: Subflow, ack: int, ack64: bool, window: int) -> None:
        """A data ACK (`ack_update_msk`): what it acknowledges, and the peer's window,
        which is shared and relative to the data ACK (RFC 8684 3.3.1): its right edge
        bounds what we may map, on any subflow (Linux msk->wnd_end; beyond it the
        kernel drops: NoDSSInWindow)."""
        off = self._ack_off(ack, ack64)
        if off > self.snd_una + self.data_fin_acked:  # news (after a DATA_FIN: its +1)
            self._on_data_ack(off)
        self.snd_wnd_end = max(self.snd_wnd_end, off + (window << sf.engine.snd_wscale))
        if self.snd_nxt >= self.snd_wnd_end or self.data_window_zero_since is not None:
            self._window_stall()  # (the test first: this runs for every data ACK)
        if not self.fully_established:
            self.set_fully_established()

    def mp_fail_received(self, sf: Subflow, fail_seq: int) -> None:
        """MP_FAIL (RFC 8684 3.7; Linux `mptcp_pm_mp_fail_received`). The answer to
        ours: nothing more to wait for (the peer's infinite mapping makes us fall back).
        Else the peer found a bad checksum in our data: on the only subflow we answer
        with MP_FAIL at once and one infinite mapping on our next data segment, and
        are plain TCP from here on; with several subflows the subflow is reset."""
        self.counters[Mib.MPFailRx] += 1
        if sf.mp_fail_deadline is not None or self.fallback:
            sf.mp_fail_deadline = None
            self.event(MptcpEventType.MP_FAIL,
                       f"the peer answered our MP_FAIL (DSN 0x{fail_seq:x})")
            return
        self.event(MptcpEventType.MP_FAIL, f"peer reported a failed mapping at DSN 0x{fail_seq:x}")
        text = (f"the peer's MP_FAIL: a DSS checksum of our data failed at DSN 0x{fail_seq:x} "
                "(a middlebox changed the payload on this path)")
        if len(self.subflows) == 1:
            cur = sf.rx_cur
            sf.send_mp_fail = cur.wire_dsn if cur is not None else self.wire_data_ack()
            sf.send_infinite_map = True
            sf.engine.ack_now()
            self.fall_back("the peer sent MP_FAIL (a DSS checksum failed)", infinite=True)
            self.finding(Code.DSS_CHECKSUM_FAILED, Severity.WARNING,
                         text + "; answered with MP_FAIL and an infinite mapping: plain TCP "
                         "from here on", sf=sf,
                         hint="the bytes that arrived are what TCP delivers (RFC 8684 3.7)")
        else:
            self.finding(Code.DSS_CHECKSUM_FAILED, Severity.WARNING,
                         text + "; that subflow is reset (several subflows: no fallback)",
                         sf=sf)
            self.reset_subflow(sf, wm.MPTCP_RST_EMIDDLEBOX, "MP_FAIL on one of several subflows")

    def tcprst_received(self, sf: Subflow, reason: int, fastclose: bool = False) -> None:
        """An RST with MP_TCPRST: remember why, for the subflow's and maybe the
        connection's close."""
        self.counters[Mib.MPRstRx] += 1
        name = wm.MptcpResetReason(reason).name \
            if reason in wm.MptcpResetReason._value2member_map_ else None
        why = f"MP_TCPRST reason {reason}" + (f" ({name})" if name else "")
        sf.reset_why = why
        sf.reset_code = reason
        if sf is self.master:
            self.reset_error = why
        self.event(MptcpEventType.MP_TCPRST, why, **_sf_fields(sf))
        if not fastclose and sf.state in (_SF.ACTIVE, _SF.STALE) and not (
                self.peer_fin and self.data_fin_acked):
            # (a join reset in its handshake is join-refused; the end of a fast close
            # or of a finished connection is no news)
            self.finding(Code.SUBFLOW_RESET, Severity.WARNING,
                         f"the peer reset subflow {fmt_key(sf.key)} with MP_TCPRST reason "
                         f"{reason}: {RST_REASONS.get(reason, 'unknown reason')}", sf=sf,
                         key=sf.key, hint=_RESET_HINTS.get(reason, ""))

    def fastclose_received(self, on_rst: Subflow | None) -> None:
        """MP_FASTCLOSE with our key (RFC 8684 3.5): the peer aborted the connection.
        Every other subflow is reset; the one whose RST carried it is already gone
        (an RST is never answered with an RST)."""
        self.counters[Mib.MPFastcloseRx] += 1
        self.reset_error = "the peer fast-closed the connection (MP_FASTCLOSE)"
        self.event(MptcpEventType.MP_FASTCLOSE, self.reset_error)
        self.finding(Code.FASTCLOSE, Severity.INFO,
                     f"the peer fast-closed the connection: MP_FASTCLOSE with our key "
                     f"0x{self.local_key:016x} (verified)"
                     + (f" on {'an RST' if on_rst is not None else 'an ACK'}"),
                     sf=on_rst, hint="the peer's application aborted (e.g. close() with "
                                     "SO_LINGER 0): an abort, not a network failure")
        # whichever subflow's close comes last
        self._emit_closed(CloseError.RESET, self.reset_error)
        for sf in self.subflows:
            if sf is not on_rst and not sf.engine.is_closed:
                sf.engine.abort()

    # ---- what our options used (the writer decides, this applies) -------------------------
    def options_written(self, sf: Subflow, o: mo.OutOptions, syn: bool = False) -> None:
        """The bookkeeping for options that go out on `sf` (`syn`: on our SYN; the
        kernel does it while writing, in `mptcp_write_options` and the
        `mptcp_established_options_*` helpers): queue entries taken, one-shot flags
        cleared, counters."""
        if syn and not sf.engine.syn_retransmits:  # once per connection, as Linux counts
            self.counters[Mib.MPJoinSynTx if o.mpj is not None else Mib.MPCapableSYNTX] += 1
        dss = o.dss
        if dss is not None:
            if dss.data_fin:
                self.data_fin_on_wire = True
            if dss.data_len == 0 and dss.dsn is not None:
                sf.send_infinite_map = False
                self.counters[Mib.InfiniteMapTx] += 1
        if o.add_addr is not None:
            self.pm.add_addr_written(o.add_addr, self.now, sf.key)
        if o.rm_addr is not None:
            self.pm.rm_addr_written(len(o.rm_addr.addr_ids))
        if o.prio is not None:
            sf.send_mp_prio = False
            self.counters[Mib.MPPrioTx] += 1
        if o.fail is not None:
            sf.send_mp_fail = None
            self.counters[Mib.MPFailTx] += 1
        if o.fastclose is not None:
            self.counters[Mib.MPFastcloseTx] += 1
        if o.rst is not None:
            self.counters[Mib.MPRstTx] += 1
        if o.pure_ack or ((o.add_addr or o.rm_addr or o.prio)
                          and (self.pm.signal_due() or sf.send_mp_prio
                               or sf.send_mp_fail is not None)):
            # a DATA_FIN gave way, or a path-manager signal displaced another (an
            # ADD_ADDR goes alone: it displaces REMOVE_ADDR, MP_PRIO and MP_FAIL too):
            # each gets its own pure ACK (Linux sends one per signal), right after this
            sf.engine.send_pure_ack()

    # ---- the socket-like surface (what stack.api and the host use) ---------------------
    @property
    def state(self) -> State:
        return self.master.engine.state if self.subflows else State.CLOSED

    @property
    def recv_buffered(self) -> int:
        return len(self.rcvbuf)

    @property
    def send_buffered(self) -> int:
        return self.write_off - self.snd_una

    @property
    def is_closed(self) -> bool:
        return self.lifecycle is MskState.CLOSED and all(
            sf.engine.is_closed for sf in self.subflows)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if self.data_fin_queued or self.lifecycle is MskState.CLOSED:
            raise TcpError("send() after close()")
        if self.fallback:
            if self._fallback_tx:  # bytes from before the fallback go first
                self._drain_fallback()
            eng = self.master.engine
            # (its subflow may be closing under us: the peer closed it before the
            # fallback; nothing more goes, and the Closed event says how it ended)
            n = eng.send(data) if not self._fallback_tx and eng.can_send else 0
            if n < len(data):
                self._want_writable = True
            self.write_off += n
            self.snd_nxt = self.write_off
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
            sf.engine.check_window_update()
        return out

    def close(self) -> None:
        """Close our direction: DATA_FIN after the data (RFC 8684 3.3.3); in fallback,
        the master's TCP FIN."""
        if self.data_fin_queued:
            return
        self.data_fin_queued = True
        if self.fallback:
            self._drain_fallback()  # the FIN once every byte is in TCP's buffer
            for sf in self.subflows[1:]:
                sf.engine.close()
        elif self.connected:
            self.maybe_close_subflows()
        # else: the DATA_FIN follows the data once the connection is up

    def abort(self) -> None:
        """Abort the connection: MP_FASTCLOSE (with MP_TCPRST) on an RST on every
        subflow (RFC 8684 3.5), then Closed(ABORTED)."""
        self.fastclosing = not self.fallback and self.remote_key is not None
        if self.fastclosing and self.lifecycle is not MskState.CLOSED:
            self.finding(Code.FASTCLOSE, Severity.INFO,
                         "we fast-closed the connection: MP_FASTCLOSE with the peer's key "
                         f"0x{self.remote_key:016x} on an RST on every subflow", packet=None)
        for sf in self.subflows:
            if not sf.engine.is_closed:
                if sf.reset_reason is None:
                    sf.reset_reason = wm.MPTCP_RST_EUNSPEC
                sf.engine.abort()
        self._emit_closed(CloseError.ABORTED)

    def poll_event(self) -> Event | MptcpEvent | None:
        if not self.events:
            return None
        ev = self.events.popleft()
        if type(ev) is DataReadable:
            self.readable_pending = False
        return ev

    @property
    def data_fin_out(self) -> bool:
        """Our DATA_FIN is on the wire: the application closed and every byte before
        it is mapped (a Linux peer takes no join once it has it)."""
        return self.data_fin_queued and self.snd_nxt >= self.write_off

    def rcv_space(self) -> int:
        return self.config.rcv_buf - len(self.rcvbuf) - self.ooo.buffered

    # ---- input ---------------------------------------------------------------------------
    def feed(self, engine: TcpEngine, hdr: TcpHeader, payload: bytes | memoryview,
             now: float) -> None:
        """A segment for one of our subflows: TCP first (the engine calls `rx_options`
        through the ULP hook), then move what became in-order up to the data level."""
        self.now = now
        engine.on_segment(hdr, payload, now)
        # Pull at once (measured: deferring the pull to the end of a read batch halved
        # kernel->ours goodput with offloads, 5-6 -> 2.7 Gbit/s, for ~5% without)
        self._after_subflow_io(self.subflow_of(engine), now)

    def rx_options(self, sf: Subflow, hdr: TcpHeader, payload_len: int) -> bool:
        """The ULP `on_options` hook (`mptcp_incoming_options`): see
        `stack.mptcp.options.incoming_options`. False drops the segment."""
        return mo.incoming_options(self, sf, hdr, payload_len)

    def subflow_io(self, engine: TcpEngine, now: float) -> None:
        """Something happened to a subflow's engine outside `feed` (an ICMP error)."""
        self._after_subflow_io(self.subflow_of(engine), now)

    def _after_subflow_io(self, sf: Subflow, now: float) -> None:
        if self._close_todo:
            self._finish_closes()
        if self.pm.work_pending:
            self.pm.work()
        eng = sf.engine
        state = sf.state
        if sf.hol_una is not None and sf.hol_una != eng.snd_una_rel:
            sf.hol_una = None  # it delivers again
        if state is _STALE and eng.rto_retries == 0:
            sf.set_state(_SF.ACTIVE)  # it got an ACK: its path works again
        elif state is _FAILED and sf.reset_reason is None and eng.state in (
                State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT):
            self.reset_subflow(sf, sf.fail_rst_reason, sf.reason or "join refused")
        if eng.recv_buffered:
            for chunk in eng.take_received():
                recv.pull(self, sf, chunk)
        self._take_engine_events(sf)
        maps = sf.tx_maps
        if maps and maps[0].ssn + maps[0].length <= eng.snd_una_rel and \
                maps[0].data_off + maps[0].length <= self.snd_una:
            sf.prune_tx_maps(eng.snd_una_rel, self.snd_una)
        if self.fallback:
            if self._fallback_tx:
                self._drain_fallback()
            self.snd_una = self.write_off - eng.send_buffered - self._fallback_tx_len
            if self._want_writable and not self._fallback_tx \
                    and eng.send_buffered < eng.config.snd_buf:
                self._want_writable = False
                self.events.append(WritableSpace())

    def _take_engine_events(self, sf: Subflow) -> None:
        eng = sf.engine
        while (ev := eng.poll_event()) is not None:
            t = type(ev)
            if t is Connected:
                if sf is self.master:
                    if self.lifecycle is MskState.CONNECTING:
                        self._set_state(MskState.CONNECTED)
                    self.events.append(Connected())
                    if self.fallback:
                        self._drain_fallback()
            elif t is PeerFinished:
                if self.fallback:
                    self.peer_fin = True
                    self.events.append(PeerFinished())
                elif not self.peer_fin and sf.state is not _SF.CLOSING:
                    # (after the peer's DATA_FIN, a subflow FIN is its half-close: we
                    # may still send on that subflow)
                    # the peer closed this subflow alone (it removed it): stop using
                    # it, send its unacknowledged data elsewhere, close our side too
                    self.remove_subflows(lambda x: x is sf, "the peer closed the subflow")
            elif t is WritableSpace or t is DataReadable:
                pass  # the data level decides (and we pull after every input)
            elif t is Closed:
                self._subflow_closed(sf, ev)  # type: ignore[arg-type]
            else:
                if isinstance(ev, StateChanged) and ev.new is State.ESTABLISHED:
                    sf.third_ack_sent = sf.join and sf.initiator
                self.events.append(ev)  # StateChanged: for traces and observers

    def _subflow_closed(self, sf: Subflow, closed: Closed) -> None:
        """A subflow's engine closed: its data goes elsewhere unless it was removed
        cleanly, and the connection closes with its last subflow."""
        error = closed.error
        if sf.join and sf.initiator and sf.state is _SF.JOINING and error is not None:
            self._join_refused(sf, closed)
        if sf.state is not _SF.CLOSING or error is not None:
            self._queue_reinject(sf, "closed")
        sf.engine_closed(closed.tag)
        if any(s.in_service for s in self.subflows if s is not sf):
            return
        if self.peer_fin and self.data_fin_acked:
            # the data-level close is complete: every byte is through both ways, however
            # the subflows ended (a stale one is reset on purpose)
            self._emit_closed(None)
        elif error is not None:
            # an RST: the peer's MP_TCPRST reason says more, if it gave one
            why = (sf.reset_why or self.reset_error) if error is CloseError.RESET else None
            self._emit_closed(error, why or closed.detail)
        elif self.fallback and self._fallback_tx_len:
            self._emit_closed(CloseError.INCOMPLETE,
                              f"{self._fallback_tx_len} bytes never sent: the subflow "
                              "closed under the fallback")
        elif self.fallback:
            self._emit_closed(None)
        else:
            self._emit_closed(CloseError.INCOMPLETE,
                              "subflow closed before the data-level close (DATA_FIN)")

    # ---- output ----------------------------------------------------------------------------
    def poll_transmit(self, now: float) -> list[tuple[TcpEngine, OutSegment]]:
        self.now = now
        out: list[tuple[TcpEngine, OutSegment]] = []
        if self._close_todo:
            self._finish_closes()
        if self.connected:
            self._push()
        for sf in self.subflows:
            eng = sf.engine
            for _ in range(_POLL_ROUNDS):
                self.tx_index = n = len(out)
                out.extend((eng, seg) for seg in eng.poll_transmit(now))
                if len(out) > n:
                    sf.last_tx = (self.diag.frames.out_base + len(out), now)
                if not eng.pure_ack_pending:
                    break  # else: a pure ACK asked for while a segment was built
            self._after_subflow_io(sf, now)
        if self.data_fin_to_signal():
            eng = self.signal_engine()
            if not self.data_fin_on_wire:
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
        if len(ready) > 1 and self.snd_una < self.snd_nxt:
            self._head_of_line(ready)
        get_send = self.scheduler.get_send
        while self.reinject or (self.snd_nxt < self.write_off
                                and self.snd_nxt < self._wnd_end()):
            # a slower subflow takes no more than its window sends now, and is left
            # out while its window is full: a mapping's tail left waiting a round trip
            # there is a hole the peer's buffer fills with the faster subflows' data
            # behind it (a Linux receiver early in a connection can run out of memory
            # with in-order data on that subflow it no longer takes in: a stall for
            # good); the fastest subflow queues as usual
            usable = ready if len(ready) == 1 else \
                [sf for sf in ready if _fastest(sf, ready) or _window_room(sf) >= sf.engine.mss]
            open_ = [sf for sf in usable if _has_room(sf)]
            if self.reinject:  # not back onto the subflow it is reinjected from
                open_ = [sf for sf in open_ if sf.hol_una is None] or open_
            chosen = get_send(open_, usable) if open_ else ()
            if not chosen:
                break
            if self.reinject:
                self._reinject_chunk(chosen[0])
                continue
            start = self.snd_nxt
            chunk_max = _chunk_max(chosen[0].engine)
            if len(ready) > 1 and not _fastest(chosen[0], ready):
                room = _window_room(chosen[0])
                chunk_max = min(chunk_max, room - room % chosen[0].engine.mss)
            edge = self._wnd_end()
            n = self._map(chosen[0], start, min(self.write_off, edge) - start, chunk_max)
            self.snd_nxt += n
            for sf in chosen[1:]:  # the redundant scheduler: the same data on each
                if self._map(sf, start, n, n):
                    self.counters[Mib.RedundantTx] += 1
        if self._window_stall():
            self._probe_window(ready)
        self.maybe_close_subflows()

    def _window_stall(self) -> bool:
        """Whether the peer's data-level window (data ACK + window) leaves no room for
        data we have to send; keeps `data_window_zero_since`, and forgets the window
        probes' backoff once it does leave room."""
        stalled = (self.snd_nxt < self.write_off and self.snd_nxt >= self._wnd_end()
                   and not self.fallback)
        if not stalled:
            self.data_window_zero_since = self._zw_probe_at = None
            self._zw_probes = 0
        elif self.data_window_zero_since is None:
            self.data_window_zero_since = self.now
            self.data_window_zero_ref = self.diag.packet_in(self.now, self.master.key)
        return stalled

    def _probe_window(self, ready: list[Subflow]) -> None:
        """Zero window and all data acked? Probe (Linux `mptcp_sendmsg_frag`). With no
        data on any subflow, no subflow's persist timer runs, and nothing would ever
        ask the peer whether its window opened (a lost window update: a stall for
        good). So one byte goes on an idle subflow as a mapping of its own at DSN
        snd_una - 1, the last byte the peer acknowledged (kept for this: the DSS
        checksum covers the real byte): TCP then probes that subflow's zero window
        with its persist timer and backoff (TCPWinProbe), or sends the byte if that
        subflow's window is open; the peer drops it as old data and its ACKs carry
        the window (Linux counts MPTcpExtWinProbe). Should the window stay closed, the
        next byte waits for an idle subflow (this one may still sit in a zero window,
        its persist timer probing) and the subflow's RTO, doubled per probe (as
        `tcp_probe0_when()` backs off): not one probe per round trip."""
        if self.reinject or self.snd_una != self.snd_nxt or not self.snd_una:
            return
        if self._zw_probe_at is not None and self.now < self._zw_probe_at:
            return
        sf = self.scheduler.get_retrans(ready)  # one with nothing queued (write queue empty)
        if sf is None:
            return
        eng = sf.engine
        if self._zw_probe_at is None and eng.peer_zero_window_since is None:
            # that subflow's window is open, so the byte would leave at once: wait one
            # RTO first, as TCP's persist timer does (a window update usually comes
            # first: the peer's application reads; each probe costs it a DuplicateData)
            self._zw_probe_at = self.now + eng.rtt.backed_off(0)
            return
        if self._map_chunk(sf, self.snd_una - 1, self.sndbuf.pieces(self.snd_una - 1, 1)[0]):
            self._zw_probe_at = self.now + eng.rtt.backed_off(self._zw_probes)
            self._zw_probes += 1
            self.counters[Mib.WinProbe] += 1
            log.info("data-level window closed: a 1-byte probe at data offset %d on "
                     "subflow %d", self.snd_una - 1, sf.local_id)

    def _sendable(self) -> list[Subflow]:
        """The subflows new data may go to (`can_send`): the non-backup ones, or the
        backups when no other one works."""
        ready = [sf for sf in self.subflows if sf.can_send]
        return [sf for sf in ready if not sf.is_backup] or ready

    def _map(self, sf: Subflow, start: int, n: int, chunk_max: int) -> int:
        """Hand data [start, start+n) (at most `chunk_max` and what the subflow's send
        buffer takes) to `sf` as one mapping; the bytes mapped. A chunk is a whole
        number of the subflow's segments, so a GSO super-packet is exactly one mapping
        (the engine never cuts across one)."""
        eng = sf.engine
        n = min(n, chunk_max, eng.config.snd_buf - eng.send_buffered)
        if n <= 0:
            return 0
        pieces = self.sndbuf.pieces(start, n)
        return self._map_chunk(sf, start, pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def _map_chunk(self, sf: Subflow, start: int, chunk: bytes | memoryview) -> int:
        """Give `sf` the data `chunk` at data offset `start` as one mapping (its DSS
        checksum over these bytes when checksums are on); the bytes it took."""
        eng = sf.engine
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
        sent = self._map(sf, start, end - start, _chunk_max(sf.engine))
        self.counters[Mib.Reinjected] += sent
        if start + sent >= end:
            self.reinject.pop(0)
        else:
            self.reinject[0] = (start + sent, end)

    def _head_of_line(self, ready: list[Subflow]) -> None:
        """Opportunistic reinjection (Raiciu et al., "How hard can it be?", NSDI 2012;
        the out-of-tree kernel's `mptcp_rcv_buf_optimization`): half the peer's
        data-level window is out beyond the oldest unacked byte, and the subflow that
        carried that byte has heard nothing for two of its RTTs. Its path may be dead:
        what it has not delivered goes on the others now, not after the RTOs that make
        it stale. Waiting is what a Linux receiver cannot afford: it keeps the data
        behind the hole, charged at the memory the skbs take (with small segments about
        twice their bytes), and once that passes its receive buffer it stops taking
        anything from its subflows, the retransmission that fills the hole included: a
        stall for good (measured: path 1 cut mid-transfer, 1 run in 3). Once per
        silence: the subflow's next ACK makes it eligible again."""
        una = self.snd_una
        if 2 * (self.snd_nxt - una) < self._wnd_end() - una:
            return
        for sf in ready:
            eng = sf.engine
            acked = eng.snd_una_rel
            # a subflow hearing ACKs holds nothing up for long: its mappings are not
            # searched (this runs on every push while the window is half out)
            if sf.hol_una == acked or eng.srtt is None or \
                    self.now - eng.una_moved_at < max(HOL_SILENT_RTTS * eng.srtt, HOL_SILENT_MIN):
                continue
            # its mapping with the byte, not delivered (what the peer has of this
            # subflow's may be data-acked through another while its TCP ACKs are lost)
            if not any(m.data_off <= una < m.data_off + m.length and m.ssn + m.length > acked
                       for m in sf.tx_maps):
                continue
            todo = self._undelivered(sf, acked)
            sf.hol_una = acked
            self.reinject.extend(todo)
            self.reinject.sort()
            self.counters[Mib.HolReinjections] += 1
            log.info("head-of-line: subflow %d silent for %.0f ms holding data offset %d; "
                     "its %d unacked ranges go on the others", sf.local_id,
                     (self.now - eng.una_moved_at) * 1000, una, len(todo))
            return

    def _undelivered(self, sf: Subflow, tcp_acked: int) -> list[tuple[int, int]]:
        """The data ranges of `sf`'s mappings not data-acked, leaving out those its TCP
        acked up to relative ssn `tcp_acked` (its peer end delivers those)."""
        una = self.snd_una
        return [(m.data_off, m.data_off + m.length) for m in sf.tx_maps
                if m.data_off + m.length > una and m.ssn + m.length > tcp_acked]

    def _queue_reinject(self, sf: Subflow, why: str) -> None:
        """Everything `sf` carried that is not data-acked goes to the reinject queue
        (once, until the subflow works again)."""
        if sf.reinjected:
            return
        sf.reinjected = True
        if why == "stale" and sf.hol_una == sf.engine.snd_una_rel:
            return  # the head-of-line reinjection took it already, and nothing changed
        # a stale subflow's peer end still delivers what it TCP-acked: only what it
        # has not goes again; a closed or removed one's peer drops what its connection
        # had not taken yet, so that goes again too
        todo = self._undelivered(sf, sf.engine.snd_una_rel if why == "stale" else 0)
        if todo and len(self.subflows) > 1:
            log.info("reinjecting %d ranges of a %s subflow", len(todo), why)
            self.reinject.extend(todo)
            self.reinject.sort()

    def _wnd_end(self) -> int:
        """How far we may map: the peer's data-level window edge once a data ACK
        told it; before that (the first data), what the master's TCP window allows."""
        if self.snd_wnd_end:
            return self.snd_wnd_end
        return self.snd_una + self.master.engine.snd_wnd + 1

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
                self.counters[Mib.DataAckBeyondSent] += 1
            return
        if self.data_fin_queued and self.snd_nxt == self.write_off and off == self.write_off + 1:
            self.data_fin_acked = True
            self._t_data_fin = None
            off = self.write_off
            self.maybe_close_subflows()
        n = off - self.snd_una
        if n > 0:
            self.sndbuf.release(off - 1)  # the last byte acked stays: a window probe
            self.snd_una = off
            self._t_rtx = None  # progress: poll_transmit re-arms it for what is left
            self._rtx_backoff = 0
            if self._want_writable and len(self.sndbuf) < self.config.snd_buf:
                self._want_writable = False
                self.events.append(WritableSpace())

    def maybe_close_subflows(self) -> None:
        """Both DATA_FINs done: close the subflows with TCP FINs (RFC 8684 3.3.3)."""
        if self.data_fin_acked and self.peer_fin:
            for sf in self.subflows:
                eng = sf.engine
                if eng.is_closed:
                    continue
                if sf.state is _SF.STALE and len(self.subflows) > 1 \
                        and eng.state is not State.CLOSED:
                    # its path is down: a FIN would wait out every retransmission
                    sf.reset_reason = wm.MPTCP_RST_EUNSPEC
                    eng.abort()
                elif eng.state is State.ESTABLISHED or eng.state is State.CLOSE_WAIT:
                    eng.close()
        elif self.data_fin_to_signal() and not self._data_fin_signalled:
            # once: an ACK carries it now; the DATA_FIN timer repeats it if unacked
            # (an ACK per poll would be a storm of duplicate ACKs)
            self._data_fin_signalled = True
            self._ack_on_every_subflow()

    # ---- timers ------------------------------------------------------------------------------
    def _rto(self) -> float:
        return self.signal_engine().rto * (1 << self._data_fin_backoff)

    def _rtx_timeout(self) -> float:
        """The data-level RTO: the largest RTO of the subflows data may be on (Linux
        `mptcp_set_timeout`), at least TCP's minimum, doubled per fruitless expiry."""
        rto = max((sf.engine.rto for sf in self.subflows if not sf.engine.is_closed),
                  default=1.0)
        return min(max(rto, MIN_RTX_TIMEOUT) * (1 << self._rtx_backoff), MAX_RTX_TIMEOUT)

    def _retransmit_head(self) -> None:
        """The data ACK has not moved for a data-level RTO while data is out (Linux
        `mptcp_retransmit_timer` -> `__mptcp_retrans`). Every subflow may have
        delivered its part, yet the peer still lacks some: the kernel drops bytes
        its subflow already TCP-acked when the msk is short of memory
        (`__mptcp_move_skb`), and no subflow will ever send those again. So the first
        not data-acked chunk goes out again, as a new mapping, on the subflow the
        scheduler's `get_retrans` picks; none: the next expiry tries again."""
        if self.snd_una >= self.snd_nxt:
            return
        sf = self.scheduler.get_retrans(self._sendable())
        if sf is None:
            return
        sent = self._map(sf, self.snd_una, self.snd_nxt - self.snd_una, _chunk_max(sf.engine))
        if sent:
            self.counters[Mib.MPTCPRetrans] += 1
            self.counters[Mib.MPTCPRetransBytes] += sent
            log.info("data-level RTO: %d bytes at data offset %d sent again on subflow %d",
                     sent, self.snd_una, sf.local_id)

    def poll_timeout(self) -> float | None:
        deadlines = [t for t in (self._t_data_fin, self._t_rtx, self.pm.poll_timeout())
                     if t is not None]
        zw = self._zw_probe_at
        if zw is not None and zw > self.now and self.data_window_zero_since is not None:
            deadlines.append(zw)  # the next window probe may be mapped then
        for sf in self.subflows:
            t = sf.engine.poll_timeout()
            if t is not None:
                deadlines.append(t)
            if sf.mp_fail_deadline is not None:
                deadlines.append(sf.mp_fail_deadline)
        return min(deadlines, default=None)

    def handle_timeout(self, now: float) -> None:
        self.now = now
        self.pm.handle_timeout(now)
        if self.pm.work_pending:
            self.pm.work()
        t = self._t_rtx
        if t is not None and now >= t:
            self._rtx_backoff = min(self._rtx_backoff + 1, 7)
            self._t_rtx = now + self._rtx_timeout()
            self._retransmit_head()
        for sf in self.subflows:
            t = sf.mp_fail_deadline
            if t is not None and now >= t:
                # Linux `mptcp_mp_fail_no_response`: no answer to our MP_FAIL
                sf.mp_fail_deadline = None
                self.reset_subflow(sf, wm.MPTCP_RST_EMIDDLEBOX, "no answer to our MP_FAIL")
        t = self._t_data_fin
        if t is not None and now >= t:
            # our DATA_FIN was not data-acked: signal it again (on a pure ACK)
            self._data_fin_backoff = min(self._data_fin_backoff + 1, 6)
            self._t_data_fin = now + self._rto()
            self._ack_on_every_subflow()
        for sf in self.subflows:
            eng = sf.engine
            dl = eng.poll_timeout()
            if dl is not None and dl <= now:
                eng.handle_timeout(now)
                self._check_stale(sf)
            self._after_subflow_io(sf, now)


def _sf_fields(sf: Subflow) -> dict[str, object]:
    """An event's subflow fields (addresses, ports, ids), as `ip mptcp monitor` gives them."""
    e = sf.engine
    return {"saddr": e.local_addr, "daddr": e.remote_addr, "sport": e.local_port,
            "dport": e.remote_port, "locid": sf.local_id, "remid": sf.remote_id}


_RESET_HINTS = {
    1: "look at the peer's MPTCP counters (nstat MPTcpExt*) for the rule it applied",
    2: "the peer's 'ip mptcp limits' or memory",
    3: "the peer's path-manager policy (endpoints, limits) refused it",
    5: "the peer's scheduler dropped a path it found too slow",
    6: "a middlebox on this path changes or strips MPTCP options or payload",
}
