"""The TCP engine: one connection's TCB (RFC 9293), sans-I/O.

Segments, application calls and `now` go in; `OutSegment`s, events and the next
deadline come out. The engine never reads a clock, never draws random numbers, and
never raises for anything the peer sends: such segments are dropped and counted as
``Drop:<reason>`` (plus a kernel-MIB-like counter where Linux has one).

Rules this file keeps:
- Every state change goes through `_set_state()` (it emits `StateChanged`).
- Sequence numbers become *stream offsets* at the boundary: `unwrap32(ref, raw)` turns
  a 32-bit wire number into the unbounded int closest to a reference offset whose
  low 32 bits match (offset & 0xffffffff == wire value). Inside, send and receive
  positions (`_una`, `_nxt`, `_rnxt`, ...) are such offsets and compare as plain ints,
  which is both wrap-safe and fast; the public properties give `Seq` values.
- Loss recovery is one machine for every case (Linux's way): a scoreboard of SACKed
  ranges, a `lost_upto` mark below which un-SACKed bytes are presumed lost, and a
  retransmission pointer `high_rxt` (RFC 6675's HighRxt). Fast recovery with SACK is
  RFC 6675 (pipe, NextSeg); without SACK it is NewReno (RFC 6582), with duplicate
  ACKs standing in for SACKed segments as Linux's `tcp_add_reno_sack()` does; after an
  RTO everything un-SACKed is marked lost and resent cwnd-limited (go-back-N minus
  SACKed data, Linux's `tcp_enter_loss()`).

Contract with the host: after any call that can make something due (`on_segment`,
`handle_timeout`, `send`, `recv`, `close`, `abort`, `connect`), call
`poll_transmit(now)` and re-arm the timer from `poll_timeout()`.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Protocol

from stack.buffers import RecvQueue, SendQueue, frozen
from stack.mib import DropReason, Mib
from stack.tcp.assembler import Assembler
from stack.tcp.congestion import CongestionControl, make_congestion
from stack.tcp.rtt import RttEstimator
from stack.tcp.seq import Seq, unwrap32
from stack.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Mss,
    Nop,
    Sack,
    SackPermitted,
    TcpHeader,
    TcpOption,
    Timestamps,
    WindowScale,
    options_len,
)

log = logging.getLogger(__name__)

MASK = 0xFFFFFFFF
HALF = 1 << 31
DEFAULT_MSS = 536              # RFC 9293 3.7.1: peer sent no MSS option
MAX_WSCALE = 14                # RFC 7323 2.3
MAX_OPTIONS = 40
TS_OPT_LEN = 12                # NOP NOP TS, what Linux subtracts from the MSS
DUPTHRESH = 3
PAWS_IDLE = 24 * 24 * 3600.0   # RFC 7323 5.5: TS.Recent is invalid after 24 days idle
TCP_HEADER_LEN = 20
MIN_PMTU_MSS = 48  # below this a "packet too big" is ignored (Linux TCP_MIN_SND_MSS)
CHALLENGE_ACK_LIMIT = 1000     # per second (Linux net.ipv4.tcp_challenge_ack_limit)
MAX_RTT_SAMPLE = 3600.0        # sanity bound on timestamp-derived samples

# recovery states (Linux icsk_ca_state, reduced)
RECOV_OPEN = 0
RECOV_FAST = 1                 # fast retransmit / fast recovery (SACK or NewReno)
RECOV_LOSS = 2                 # after an RTO


class TcpError(ConnectionError):
    """Local error: the caller used the connection in a state that forbids it."""


class State(enum.Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    # identity hash in C: state-set membership is on the per-segment path, and
    # Enum's own __hash__ is Python code
    __hash__ = object.__hash__


# States in which the peer's sequence space is known and our data/FIN may flow.
# The per-segment counters, bound once: an Enum class attribute costs ~75 ns on 3.11
# (EnumType's __getattr__ takes attribute lookup off CPython's fast path).
_IN_SEGS, _OUT_SEGS, _OUT_ACKS = Mib.InSegs, Mib.OutSegs, Mib.OutAcks
_SYNCHRONIZED = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2,
                           State.CLOSE_WAIT, State.CLOSING, State.LAST_ACK, State.TIME_WAIT})
_CAN_SEND_DATA = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.CLOSE_WAIT,
                            State.CLOSING, State.LAST_ACK})
_RECEIVES_DATA = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})
_SEND_OK = frozenset({State.SYN_SENT, State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT})


@dataclass
class TcpConfig:
    mss: int = 1460               # MSS we advertise (MTU 1500 - 40)
    rcv_buf: int = 4 << 20        # receive buffer; determines window and our window-scale shift
    snd_buf: int = 4 << 20        # send buffer limit for send()
    timestamps: bool = True
    sack: bool = True
    window_scaling: bool = True
    nagle: bool = True
    delayed_ack: float = 0.04     # max ACK delay (Linux's 40 ms)
    congestion: str = "cubic"     # or "reno"
    rto_initial: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 120.0
    syn_retries: int = 6
    syn_linear_timeouts: int = 4  # SYN retransmissions before the RTO backs off (Linux
                                  # 6.18 net.ipv4.tcp_syn_linear_timeouts): 0, 1, 2, 3, 4 s, 8 s...
    data_retries: int = 15        # RTO expiries before the connection is aborted (tcp_retries2)
    time_wait: float = 60.0       # 2*MSL, Linux's TCP_TIMEWAIT_LEN
    keepalive_idle: float | None = None   # seconds; None = off
    keepalive_interval: float = 75.0
    keepalive_probes: int = 9
    gso_segments: int = 1         # max MSS-sized segments per emitted super-packet


@dataclass(slots=True)
class OutSegment:
    """A segment the engine asks the host to send."""
    hdr: TcpHeader
    payload: bytes | memoryview
    gso_size: int = 0  # >0: a super-packet the device cuts into gso_size-byte segments


# --- events ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Connected:
    """The connection reached ESTABLISHED (either role)."""


@dataclass(frozen=True, slots=True)
class DataReadable:
    """New in-order data can be read with recv() (at most one pending)."""


@dataclass(frozen=True, slots=True)
class WritableSpace:
    """Send-buffer space was freed after send() accepted less than asked, or the
    send buffer drained completely (at most one pending)."""


@dataclass(frozen=True, slots=True)
class PeerFinished:
    """The peer's FIN arrived in order: its byte stream is complete."""


class CloseError(enum.StrEnum):
    """Why a connection ended other than cleanly (`Closed.error`)."""
    REFUSED = "refused"          # an RST answered our SYN
    RESET = "reset"              # the peer reset it (RST; MPTCP: MP_TCPRST, MP_FASTCLOSE)
    TIMEOUT = "timeout"          # retransmissions or keepalives went unanswered
    UNREACHABLE = "unreachable"  # ICMP destination unreachable while connecting
    ABORTED = "aborted"          # we aborted it
    INCOMPLETE = "incomplete"    # it ended before both directions had closed (MPTCP:
                                 # the subflows closed before the DATA_FIN exchange)


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is gone (error None: clean close), with `detail` saying more
    where there is more to say (the ICMP kind, the peer's MP_TCPRST reason). Emitted
    once. After a clean active close it comes on entering TIME-WAIT; the engine then
    still answers retransmitted FINs until `is_closed`."""
    error: CloseError | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.error is None and self.detail is not None:
            raise ValueError("a clean close has no detail")

    @property
    def tag(self) -> str | None:
        """One short text: the error, with its detail after a colon (`--events`)."""
        if self.error is None:
            return None
        return f"{self.error}:{self.detail}" if self.detail else str(self.error)


@dataclass(frozen=True, slots=True)
class StateChanged:
    old: State
    new: State


Event = Connected | DataReadable | WritableSpace | PeerFinished | Closed | StateChanged


class Ulp(Protocol):
    """Upper-layer protocol hooks (MPTCP), called like Linux's ULP/`mptcp_*_options`.

    `remaining` = option bytes still free (40 minus those already placed). `seq` is a
    relative subflow sequence number: the first payload byte is 1 (RFC 8684 3.3.1)."""

    def syn_options(self, remaining: int) -> list[TcpOption]: ...

    def synack_options(self, remaining: int) -> list[TcpOption]: ...

    def established_options(self, seq: int, payload_len: int, fin: bool,
                            remaining: int) -> list[TcpOption]: ...

    def rst_options(self, remaining: int) -> list[TcpOption]:
        """Options for an RST this engine sends on a synchronized connection."""
        ...

    def on_options(self, hdr: TcpHeader, payload_len: int) -> bool: ...

    def option_reserve(self) -> int:
        """Option bytes a full data segment must leave free for the ULP (asked when
        the send MSS is fixed at the handshake, like Linux `tcp_current_mss()`)."""
        ...

    def segment_limit(self, seq: int) -> int:
        """How many payload bytes a segment starting at `seq` may carry without
        crossing a ULP boundary (an MPTCP mapping): retransmissions must reuse the
        mapping the data was first sent with."""
        ...

    def rcv_space(self) -> int | None:
        """Free receive space at the connection level (MPTCP: the window is shared
        and relative to the data ACK), or None to use this engine's own buffer."""
        ...


_NOP = Nop()
_SACK_PERM = SackPermitted()


def _wscale_for(rcv_buf: int) -> int:
    """Our window-scale shift: the smallest that lets the window field cover
    rcv_buf (Linux `tcp_select_initial_window()`), at most 14."""
    shift = 0
    while shift < MAX_WSCALE and (rcv_buf >> shift) > 0xFFFF:
        shift += 1
    return shift


class TcpEngine:
    """One TCP connection (RFC 9293 TCB)."""

    def __init__(self, local_addr: bytes, local_port: int, remote_addr: bytes,
                 remote_port: int, *, iss: int, now: float, config: TcpConfig | None = None,
                 ts_offset: int = 0, ulp: Ulp | None = None) -> None:
        c = self.config = config if config is not None else TcpConfig()
        if c.mss <= TS_OPT_LEN + 8 or c.rcv_buf <= 0 or c.snd_buf <= 0:
            raise ValueError("bad TcpConfig")
        self.local_addr = local_addr
        self.local_port = local_port
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        self.counters: Counter[str] = Counter()
        self._ulp = ulp
        self._ts_offset = ts_offset
        self._state = State.CLOSED
        self._events: deque[Event] = deque()
        self.closed_as: Closed | None = None  # how it closed, once it has
        # a ULP moves received bytes on itself after every input (`take_received`):
        # no DataReadable events for it to skip, one per segment
        self._readable_pending = ulp is not None
        self._writable_pending = False
        self._want_writable = False
        self._closed_emitted = False
        self._passive = False
        self._used = False

        # --- send sequence space (stream offsets; iss itself is the SYN) -----------
        self._iss = iss & MASK
        self._una = self._iss
        self._nxt = self._iss            # highest sequence sent + 1 ("snd_max")
        self._buf = SendQueue(self._iss + 1)  # bytes from _buf_start: unacked + unsent
        self._buf_start = self._iss + 1
        self._fin_queued = False         # close() called: FIN after the buffered data
        self._fin_sent = False
        self._syn_pending = False        # a SYN or SYN/ACK is due
        self._snd_wnd = 0
        # when the peer's advertised window became 0 and stayed so (the `now` of the
        # segment that closed it); None while it is open (for the diagnosis)
        self.peer_zero_window_since: float | None = None
        self._snd_wl1 = 0
        self._snd_wl2 = 0
        self._max_snd_wnd = 0
        self._snd_wscale = 0
        self._rcv_wscale = _wscale_for(c.rcv_buf) if c.window_scaling else 0
        self._peer_mss = DEFAULT_MSS
        self._mss = min(c.mss, DEFAULT_MSS)   # effective send MSS, fixed at the handshake
        self._rtt = RttEstimator(c.rto_initial, c.rto_min, c.rto_max)
        self._cc: CongestionControl = make_congestion(c.congestion, c.mss)
        self._rtt_seq: int | None = None  # Karn: end of the one timed segment
        self._rtt_time = 0.0
        self._retries = 0                # consecutive RTO expiries
        # when the current run of RTO expiries began, and when an acceptable segment
        # last came in (Linux tp->rcv_tstamp): MPTCP's stale rule reads both
        self.rto_streak_since: float | None = None
        self.rcv_tstamp = 0.0
        # when SND.UNA last moved (or data left with nothing in flight): how long the
        # peer has been silent about our data (MPTCP's head-of-line reinjection)
        self.una_moved_at = 0.0
        self._cwnd_blocked = False

        # --- loss recovery ----------------------------------------------------------
        self._sacked: list[list[int]] = []   # sorted disjoint [start, end) above _una
        self._sacked_bytes = 0
        self._lost_upto = self._iss      # un-SACKed bytes below this are presumed lost
        self._high_rxt = self._iss       # lost bytes below this were retransmitted
        self._recovery = RECOV_OPEN
        self._recover = self._iss        # RFC 6582 "recover": snd_nxt at entry
        self._dupacks = 0
        self._reno_sacked = 0            # bytes, duplicate ACKs standing in for SACKs
        self._rtx_marks: list[tuple[int, int, int]] = []  # (start, end, snd_nxt then)

        # --- receive sequence space ---------------------------------------------------
        self._irs = 0
        self._rnxt = 0
        self._rbuf = RecvQueue()         # in-order bytes not yet read (by reference)
        self._rcv_adv = 0                # right edge of the window we advertised
        self._ooo = Assembler(c.rcv_buf)
        self._fin_rcvd = False
        self._ooo_fin: int | None = None  # offset of a FIN that arrived out of order
        self._ack_now = False
        self._pure_ack = False           # the ULP needs a segment without data (see send_pure_ack)
        self._ack_first = False          # ... and before any data (see ack_before_data)
        self._unacked_bytes = 0          # received since our last ACK (delayed ACK)
        self._last_ack_sent = 0

        # --- options --------------------------------------------------------------------
        self._ts_ok = False
        self._sack_ok = False
        self._ws_ok = False
        self._ts_recent = 0
        self._ts_recent_stamp = now

        # --- timers (absolute deadlines or None) -------------------------------------
        self._t_rtx: float | None = None
        self._t_dack: float | None = None
        self._t_persist: float | None = None
        self._t_keepalive: float | None = None
        self._t_timewait: float | None = None
        self._persist_n = 0
        self._probe_due = False          # a zero-window or keepalive probe is due
        self._force_send = False         # persist expiry with a small non-zero window
        self._ka_probes = 0
        self._probes_out = 0             # zero-window probes since the peer last answered
        self._chal_sec = -1
        self._chal_count = 0
        self._pending_rst: list[OutSegment] = []
        self._soft_error: str | None = None   # last ICMP soft error (RFC 1122 4.2.3.9)
        self._ack_segs = 0               # ACK-bearing segments built in this poll_transmit
        self._wf = -1                    # their window field (-1: not computed yet)

    # ------------------------------------------------------------------ properties
    @property
    def state(self) -> State:
        return self._state

    @property
    def snd_una(self) -> Seq:
        return Seq(self._una)

    @property
    def snd_nxt(self) -> Seq:
        return Seq(self._nxt)

    @property
    def rcv_nxt(self) -> Seq:
        return Seq(self._rnxt)

    @property
    def iss(self) -> Seq:
        return Seq(self._iss)

    @property
    def irs(self) -> Seq:
        return Seq(self._irs)

    @property
    def send_buffered(self) -> int:
        return len(self._buf)

    @property
    def recv_buffered(self) -> int:
        return len(self._rbuf)

    @property
    def ulp(self) -> Ulp | None:
        """The upper-layer protocol this engine reports to (an MPTCP subflow), if any."""
        return self._ulp

    @property
    def is_closed(self) -> bool:
        return (self._closed_emitted and self._state is State.CLOSED
                and not self._pending_rst)

    @property
    def mss(self) -> int:
        """Effective send MSS (payload bytes per full segment)."""
        return self._mss

    @property
    def cwnd(self) -> int:
        return self._cc.cwnd

    @property
    def ssthresh(self) -> int:
        return self._cc.ssthresh

    @property
    def rto(self) -> float:
        return self._rtt.rto

    @property
    def srtt(self) -> float | None:
        return self._rtt.srtt

    @property
    def snd_wnd(self) -> int:
        return self._snd_wnd

    @property
    def rcv_wnd(self) -> int:
        """The window we last advertised, from rcv_nxt."""
        return max(self._rcv_adv - self._rnxt, 0)

    @property
    def timestamps_enabled(self) -> bool:
        return self._ts_ok

    @property
    def sack_enabled(self) -> bool:
        return self._sack_ok

    @property
    def window_scaling_enabled(self) -> bool:
        return self._ws_ok

    @property
    def snd_wscale(self) -> int:
        return self._snd_wscale

    @property
    def rcv_wscale(self) -> int:
        return self._rcv_wscale if self._ws_ok else 0

    @property
    def congestion(self) -> CongestionControl:
        return self._cc

    @property
    def rtt(self) -> RttEstimator:
        return self._rtt

    # ------------------------------------------------------------------ state, events
    def _set_state(self, new: State) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self._events.append(StateChanged(old, new))
        log.debug("%s:%d -> %d %s -> %s", self.local_addr.hex(), self.local_port,
                  self.remote_port, old.value, new.value)

    def _emit_closed(self, error: CloseError | None, detail: str | None = None) -> None:
        if not self._closed_emitted:
            self._closed_emitted = True
            self.closed_as = Closed(error, detail)
            self._events.append(self.closed_as)

    def _drop(self, reason: str) -> None:
        self.counters["Drop:" + reason] += 1
        log.debug("drop %s:%d<-%d: %s", self.local_addr.hex(), self.local_port,
                  self.remote_port, reason)

    def _terminate(self, error: CloseError | None, detail: str | None = None) -> None:
        """Go to CLOSED now, forget everything queued, emit Closed."""
        self._set_state(State.CLOSED)
        self._t_rtx = self._t_dack = self._t_persist = None
        self._t_keepalive = self._t_timewait = None
        self._probe_due = self._ack_now = self._syn_pending = self._pure_ack = False
        self._buf.clear(self._nxt)
        self._buf_start = self._nxt
        self._ooo.clear()
        self._emit_closed(error, detail)

    def poll_event(self) -> Event | None:
        if not self._events:
            return None
        ev = self._events.popleft()
        t = type(ev)
        if t is DataReadable:
            self._readable_pending = False
        elif t is WritableSpace:
            self._writable_pending = False
        return ev

    # ------------------------------------------------------------------ opening
    def connect(self, now: float) -> None:
        """Active open (RFC 9293 3.10.1): the SYN goes out on the next poll_transmit."""
        if self._state is not State.CLOSED or self._used:
            raise TcpError(f"connect() in state {self._state.value}")
        self._used = True
        self.counters[Mib.ActiveOpens] += 1
        self._syn_pending = True
        self._set_state(State.SYN_SENT)
        self._arm_keepalive(now)

    @classmethod
    def accept_syn(cls, hdr: TcpHeader, local_addr: bytes, local_port: int,
                   remote_addr: bytes, remote_port: int, *, iss: int, now: float,
                   config: TcpConfig | None = None, ts_offset: int = 0,
                   ulp: Ulp | None = None) -> TcpEngine:
        """Passive open: the host got `hdr` (a SYN) for a listener. The new engine is
        in SYN-RECEIVED with its SYN/ACK due. The ULP sees the SYN's options through
        `on_options` (its answer does not refuse the SYN: the host decides that)."""
        if not hdr.flags & SYN or hdr.flags & (ACK | RST | FIN):
            raise ValueError("accept_syn() needs a SYN without ACK/RST/FIN")
        self = cls(local_addr, local_port, remote_addr, remote_port, iss=iss, now=now,
                   config=config, ts_offset=ts_offset, ulp=ulp)
        self._used = True
        self._passive = True
        self._state = State.LISTEN
        self.counters[_IN_SEGS] += 1
        if ulp is not None:
            ulp.on_options(hdr, 0)
        self._take_syn(hdr, now)
        self._snd_wnd = hdr.window  # RFC 7323 2.2: the window in a SYN is never scaled
        self._max_snd_wnd = self._snd_wnd
        self._snd_wl1 = self._irs
        self._snd_wl2 = self._iss
        self._syn_pending = True
        self._set_state(State.SYN_RECEIVED)
        self._arm_keepalive(now)
        return self

    def _take_syn(self, hdr: TcpHeader, now: float) -> None:
        """Record the peer's SYN: IRS and the options (RFC 7323, RFC 2018, MSS)."""
        c = self.config
        self._irs = hdr.seq
        self._rnxt = hdr.seq + 1
        self._last_ack_sent = self._rnxt
        mss = DEFAULT_MSS
        ws = None
        ts = None
        sack_perm = False
        for o in hdr.options:
            t = type(o)
            if t is Mss:
                mss = o.value  # type: ignore[union-attr]
            elif t is WindowScale:
                ws = o.shift  # type: ignore[union-attr]
            elif t is Timestamps:
                ts = o
            elif t is SackPermitted:
                sack_perm = True
        self._peer_mss = mss
        if ws is not None and c.window_scaling:
            self._ws_ok = True
            self._snd_wscale = min(ws, MAX_WSCALE)
        else:
            self._ws_ok = False
            self._snd_wscale = 0
            self._rcv_wscale = 0
        if ts is not None and c.timestamps:
            self._ts_ok = True
            self._ts_recent = ts.tsval  # type: ignore[union-attr]
            self._ts_recent_stamp = now
        else:
            self._ts_ok = False
        self._sack_ok = sack_perm and c.sack
        reserve = self._ulp.option_reserve() if self._ulp is not None else 0
        self._mss = max(min(mss, c.mss) - (TS_OPT_LEN if self._ts_ok else 0) - reserve, 1)
        self._cc.set_mss(self._mss)
        self._ooo.limit = c.rcv_buf

    # ------------------------------------------------------------------ app calls
    @property
    def can_send(self) -> bool:
        """`send` would take data (not closed for sending)."""
        return self._state in _SEND_OK and not self._fin_queued and not self._closed_emitted

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if not self.can_send:
            raise TcpError(f"send() in state {self._state.value}"
                           + (" after close()" if self._fin_queued else ""))
        room = self.config.snd_buf - len(self._buf)
        n = len(data)
        if n > room:
            self._want_writable = True
            n = max(room, 0)
            if n:
                self._buf.append(memoryview(data)[:n])
            return n
        self._buf.append(data)
        return n

    def recv(self, max_bytes: int = -1) -> bytes:
        out = self._rbuf.take(max_bytes)  # the one copy: the chunks joined
        if not out:
            return out
        self.check_window_update()
        return out

    def take_received(self) -> list[bytes | bytearray | memoryview]:
        """Every in-order byte received, as the chunks they arrived in, without a copy
        (the engine starts a new queue): for a ULP that moves them on at once, as MPTCP
        moves subflow bytes up to its data level. The window is the ULP's
        (`rcv_space`), which this move does not change: no window update here."""
        return self._rbuf.take_chunks()

    def ack_now(self) -> None:
        """Send an ACK at the next poll_transmit (the ULP has something to say on it:
        a data ACK, a DATA_FIN, an MP_FAIL). In SYN-RECEIVED it is for the segment being
        read, which completes the handshake: an MP_JOIN responder's fourth ACK (RFC
        8684 3.2) goes once the engine is ESTABLISHED."""
        if self._state in _SYNCHRONIZED or self._state is State.SYN_RECEIVED:
            self._ack_now = True

    def ack_before_data(self) -> None:
        """The ACK this segment calls for goes alone, before any data (an RFC 6824
        client's third ACK: MP_CAPABLE with both keys leaves no room for a mapping).
        Called by the ULP while it reads the SYN/ACK."""
        self._ack_first = True

    def synack_untimed(self) -> None:
        """Our SYN/ACK went out at a time we no longer know (a SYN cookie's, rebuilt
        from the ACK that echoed it): no RTT sample from its timing; one from the
        timestamp echo still counts."""
        self._rtt_seq = None

    def send_pure_ack(self) -> None:
        """Send a segment without data at the next poll_transmit, even if data segments
        go too: some MPTCP signals (ADD_ADDR, REMOVE_ADDR, MP_PRIO, DATA_FIN) only ride
        on a pure ACK (Linux `__mptcp_subflow_send_ack`)."""
        if self._state in _SYNCHRONIZED:
            self._pure_ack = True

    @property
    def pure_ack_pending(self) -> bool:
        """A `send_pure_ack` not yet served (asked for while a segment was built)."""
        return self._pure_ack

    @property
    def rto_retries(self) -> int:
        """Consecutive RTO expiries (0 again once new data is acked)."""
        return self._retries

    @property
    def syn_retransmits(self) -> int:
        """Connecting (SYN-SENT, SYN-RECEIVED): how often our SYN (SYN/ACK) was
        retransmitted; while the ULP's `syn_options` builds one, its number (0: the
        first). 0 in every other state. (Linux `icsk_retransmits`: MPTCP's blackhole
        detection counts its MP_CAPABLE SYNs with it.)"""
        st = self._state
        return self._retries if st is State.SYN_SENT or st is State.SYN_RECEIVED else 0

    @property
    def snd_una_rel(self) -> int:
        """SND.UNA relative to the ISN, unbounded (first payload byte = 1)."""
        return self._una - self._iss

    def _free_space(self) -> int:
        if self._ulp is not None:
            space = self._ulp.rcv_space()
            if space is not None:
                return space
        return self.config.rcv_buf - len(self._rbuf)

    def check_window_update(self) -> bool:
        """Reading opened the receive space: an ACK with the new window is due when it
        grows by >= 2 MSS, or from (nearly) zero by the SWS threshold (Linux
        `tcp_cleanup_rbuf()`). The ULP calls this when its own reader drains."""
        if self._state in _SYNCHRONIZED and not self._fin_rcvd:
            # the most the window field can say: a bigger buffer (an MPTCP connection's
            # shared one) must not make every read look like a window update, or each
            # read sends an ACK the peer counts as a duplicate
            free = min(self._free_space(), 0xFFFF << self._rcv_wscale)
            grow = self._rnxt + free - self._rcv_adv
            cur = self._rcv_adv - self._rnxt
            if grow >= 2 * self._mss or (cur < self._mss and grow >= self._sws_threshold()):
                self._ack_now = True
                return True
        return False

    def close(self) -> None:
        """Half-close: a FIN follows the queued data (RFC 9293 3.10.4). Idempotent."""
        st = self._state
        if self._fin_queued or (st in (State.CLOSED, State.LISTEN) and self._closed_emitted):
            return
        match st:
            case State.CLOSED | State.LISTEN:
                # never opened: nothing to tell anyone
                self._terminate(None)
            case State.SYN_SENT if not self._buf:
                # RFC 9293 3.10.4: nothing queued: delete the TCB, no RST
                self._terminate(None)
            case State.SYN_SENT:
                # data queued: the FIN follows it once established (RFC 9293 3.10.4)
                self._fin_queued = True
            case State.SYN_RECEIVED:
                # the FIN follows once established (RFC 9293: queue it)
                self._fin_queued = True
            case State.ESTABLISHED:
                self._fin_queued = True
                self._set_state(State.FIN_WAIT_1)
            case State.CLOSE_WAIT:
                self._fin_queued = True
                self._set_state(State.LAST_ACK)
            case _:
                # FIN_WAIT_*, CLOSING, LAST_ACK, TIME_WAIT: already closing
                pass

    def abort(self) -> None:
        """RST now if synchronized (RFC 9293 3.10.5), then Closed("aborted")."""
        st = self._state
        if st is State.CLOSED:
            self._emit_closed(CloseError.ABORTED)
            return
        if (st in _SYNCHRONIZED and st is not State.TIME_WAIT) or st is State.SYN_RECEIVED:
            self._queue_rst(self._nxt, self._rnxt, with_ack=True, established=True)
        self._terminate(CloseError.ABORTED)

    def on_pmtu(self, mtu: int, ip_header_len: int) -> bool:
        """ICMP "fragmentation needed" / ICMPv6 "packet too big" for this connection
        (RFC 1191, RFC 8201; Linux `tcp_v4_mtu_reduced` -> `tcp_sync_mss` and
        `tcp_simple_retransmit`): the send MSS shrinks to what an `mtu`-byte packet
        carries, and what is in flight is sent again at the new size, without the
        congestion response of a loss (nothing was lost to congestion). True if the
        MSS changed."""
        self.counters[Mib.InIcmpErrors] += 1
        reserve = self._ulp.option_reserve() if self._ulp is not None else 0
        mss = mtu - ip_header_len - TCP_HEADER_LEN - (TS_OPT_LEN if self._ts_ok else 0) - reserve
        if mss >= self._mss or mss < MIN_PMTU_MSS:
            return False
        self.counters[Mib.TCPPMTUReduced] += 1
        self._mss = mss
        self._cc.set_mss(mss)
        if self._nxt != self._una and self._state in _CAN_SEND_DATA:
            if self._recovery != RECOV_LOSS:
                self._recovery = RECOV_LOSS
                self._recover = self._nxt
            self._rtx_marks.clear()
            self._lost_upto = self._nxt
            self._high_rxt = self._una
            self._rtt_seq = None
        return True

    def on_icmp_error(self, kind: str) -> None:
        """ICMP destination unreachable for this connection: hard error while
        connecting, soft error later (RFC 1122 4.2.3.9, RFC 5927)."""
        self.counters[Mib.InIcmpErrors] += 1
        if self._state is State.SYN_SENT:
            self.counters[Mib.AttemptFails] += 1
            self._terminate(CloseError.UNREACHABLE, kind)
        else:
            self._soft_error = kind

    # ------------------------------------------------------------------ timers
    def poll_timeout(self) -> float | None:
        best: float | None = None
        for t in (self._t_rtx, self._t_dack, self._t_persist, self._t_keepalive,
                  self._t_timewait):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timeout(self, now: float) -> None:
        t = self._t_timewait
        if t is not None and now >= t:
            # RFC 9293 3.10.8: the 2*MSL wait is over
            self._t_timewait = None
            self._terminate(None)
            return
        t = self._t_rtx
        if t is not None and now >= t:
            self._t_rtx = None
            self._on_rto(now)
        t = self._t_dack
        if t is not None and now >= t:
            self._t_dack = None
            if self._unacked_bytes:
                self.counters[Mib.DelayedACKs] += 1
                self._ack_now = True
        t = self._t_persist
        if t is not None and now >= t:
            self._t_persist = None
            self._on_persist(now)
        t = self._t_keepalive
        if t is not None and now >= t:
            self._t_keepalive = None
            self._on_keepalive(now)

    def _on_rto(self, now: float) -> None:
        """Retransmission timer expiry (RFC 6298 5.4-5.7; Linux `tcp_retransmit_timer()`)."""
        st = self._state
        c = self.config
        if st is State.SYN_SENT or st is State.SYN_RECEIVED:
            self._retries += 1
            if self._retries > c.syn_retries:
                self.counters[Mib.TCPAttemptFails if st is State.SYN_SENT else Mib.TCPTimeouts] += 1
                self._terminate(CloseError.TIMEOUT)
                return
            self.counters[Mib.TCPTimeouts] += 1
            if st is State.SYN_RECEIVED or self._retries > c.syn_linear_timeouts:
                self._rtt.on_timeout()  # back off (a SYN's first retries keep the RTO)
            self._rtt_seq = None  # Karn
            self._syn_pending = True
            return
        if self._nxt == self._una or st not in _CAN_SEND_DATA:
            return
        if self._snd_wnd == 0:
            # the peer shut its window on data in flight (Linux: "Receiver dastardly
            # shrinks window"): this retransmission is a zero-window probe, and no
            # count towards giving up unless nothing at all came back for rto_max
            if now - self.rcv_tstamp > c.rto_max:
                self.counters[Mib.TCPAbortOnTimeout] += 1
                self._terminate(CloseError.TIMEOUT)
                return
        else:
            self._retries += 1
            if self._retries == 1:
                self.rto_streak_since = now
            if self._retries > c.data_retries:
                self.counters[Mib.TCPAbortOnTimeout] += 1
                self._terminate(CloseError.TIMEOUT)
                return
            self.counters[Mib.TCPTimeouts] += 1
        flight = self._nxt - self._una
        self._cc.on_rto(flight, now, first=self._recovery != RECOV_LOSS)
        self._rtt.on_timeout()
        self._recovery = RECOV_LOSS
        self._rtx_marks.clear()
        self._recover = self._nxt
        self._lost_upto = self._nxt
        self._high_rxt = self._una
        self._dupacks = 0
        self._reno_sacked = 0
        self._rtt_seq = None
        self._t_rtx = now + self._rtt.rto

    def _on_persist(self, now: float) -> None:
        """Persist timer (RFC 9293 3.8.6.1, RFC 1122 4.2.2.17; Linux `tcp_probe_timer()`)."""
        if self._state not in _CAN_SEND_DATA or self._nxt != self._una:
            self._persist_n = 0
            return
        avail = self._buf_start + len(self._buf) - self._nxt
        if avail <= 0:
            self._persist_n = 0
            return
        if self._snd_wnd > 0:
            # window open but too small for the SWS rule: send what fits. That data is
            # in flight: the RTO covers it (Linux `tcp_send_probe0()` then sees
            # packets_out, cancels the probe timer and clears its backoff)
            self._force_send = True
            self._persist_n = 0
            return
        # zero window: a probe (SEG.SEQ = SND.UNA - 1, see poll_transmit), and the next
        # one after twice the interval (Linux: `icsk_backoff`, `tcp_probe0_when()`). A
        # peer that answers none of `data_retries` probes is gone (Linux
        # `tcp_probe_timer`: icsk_probes_out >= tcp_retries2); one that answers, even
        # with a zero window, is alive and probed for ever
        if self._probes_out >= self.config.data_retries:
            self.counters[Mib.TCPAbortOnTimeout] += 1
            self._terminate(CloseError.TIMEOUT)
            return
        self._probes_out += 1
        self._probe_due = True
        self.counters[Mib.TCPWinProbe] += 1
        self._persist_n += 1
        self._t_persist = now + self._rtt.backed_off(self._persist_n)

    def _on_keepalive(self, now: float) -> None:
        """RFC 1122 4.2.3.6; Linux `tcp_keepalive_timer()`."""
        c = self.config
        if c.keepalive_idle is None or self._state not in (State.ESTABLISHED,
                                                             State.CLOSE_WAIT):
            return
        if self._nxt != self._una or self._buf_start + len(self._buf) != self._nxt:
            # data in flight or queued: the RTO / persist machinery covers liveness
            self._t_keepalive = now + c.keepalive_idle
            return
        if self._ka_probes >= c.keepalive_probes:
            self.counters[Mib.TCPKeepAliveTimeout] += 1
            self._queue_rst(self._nxt, self._rnxt, with_ack=True, established=True)
            self._terminate(CloseError.TIMEOUT)
            return
        self._ka_probes += 1
        self.counters[Mib.TCPKeepAlive] += 1
        self._probe_due = True
        self._t_keepalive = now + c.keepalive_interval

    def _arm_keepalive(self, now: float) -> None:
        idle = self.config.keepalive_idle
        if idle is not None:
            self._t_keepalive = now + idle

    # ------------------------------------------------------------------ input
    def on_segment(self, hdr: TcpHeader, payload: bytes | memoryview, now: float) -> None:
        """Process one incoming segment (or GRO super-packet) for this connection."""
        self.counters[_IN_SEGS] += 1
        st = self._state
        if st in _SYNCHRONIZED or st is State.SYN_RECEIVED:
            self._rcv_synchronized(hdr, payload, now)
        elif st is State.SYN_SENT:
            self._rcv_syn_sent(hdr, payload, now)
        else:
            # CLOSED / LISTEN: the host answers unknown tuples; we hold no TCB
            self._drop(DropReason.CLOSED)

    def _rcv_syn_sent(self, hdr: TcpHeader, payload: bytes | memoryview, now: float) -> None:
        """RFC 9293 3.10.7.3 with RFC 5961 3.2 (RST must ack our SYN)."""
        flags = hdr.flags
        a = 0
        if flags & ACK:
            a = unwrap32(self._una, hdr.ack)
            if a <= self._iss or a > self._nxt:
                if not flags & RST:
                    self._queue_rst(a, 0, with_ack=False)
                self._drop(DropReason.BAD_ACK_SYN_SENT)
                return
        if flags & RST:
            if flags & ACK:
                if self._ulp is not None:
                    self._ulp.on_options(hdr, len(payload))
                self.counters[Mib.AttemptFails] += 1
                self._terminate(CloseError.REFUSED)
            else:
                self._drop(DropReason.RST_WITHOUT_ACK_SYN_SENT)
            return
        if not flags & SYN:
            self._drop(DropReason.NO_SYN_SYN_SENT)
            return
        if self._ulp is not None and not self._ulp.on_options(hdr, len(payload)):
            self._drop(DropReason.ULP)
            return
        self._take_syn(hdr, now)
        self._arm_keepalive(now)
        if flags & ACK:
            # our SYN is acknowledged: RTT sample (Karn: only if not retransmitted)
            self._snd_wnd = hdr.window  # RFC 7323 2.2: unscaled in a SYN
            self._max_snd_wnd = self._snd_wnd
            if not hdr.window:
                self.peer_zero_window_since = now
            self._snd_wl1 = self._irs
            self._snd_wl2 = a
            self._rtt_sample_syn(hdr, now)
            self._una = a
            self._buf_start = a
            self._lost_upto = self._high_rxt = self._recover = a
            self._t_rtx = None
            self._retries = 0
            self.rcv_tstamp = now
            self._rtt.reset_backoff()
            self._establish()
            self._ack_now = True
            self._rcv_adv = self._rnxt + min(self.config.rcv_buf, 0xFFFF)
            if len(payload):
                self._rcv_data(self._rnxt, payload, now)
        else:
            # simultaneous open (RFC 9293 figure 8): answer SYN/ACK with our ISS
            self.counters[Mib.TCPSimultaneousOpen] += 1
            self._rcv_adv = self._rnxt + min(self.config.rcv_buf, 0xFFFF)
            self._snd_wnd = hdr.window
            self._max_snd_wnd = self._snd_wnd
            self._snd_wl1 = self._irs
            self._snd_wl2 = self._una
            self._syn_pending = True
            self._set_state(State.SYN_RECEIVED)

    def _rtt_sample_syn(self, hdr: TcpHeader, now: float) -> None:
        if self._ts_ok:
            ts = hdr.option(Timestamps)
            if ts is not None and ts.tsecr:  # type: ignore[union-attr]
                r = ((int(now * 1000) + self._ts_offset - ts.tsecr) & MASK)  # type: ignore[union-attr]
                if r < MAX_RTT_SAMPLE * 1000:
                    self._rtt.sample(r / 1000.0)
                return
        if self._rtt_seq is not None:
            self._rtt.sample(now - self._rtt_time)
            self._rtt_seq = None

    def _establish(self) -> None:
        if self._passive:
            # at the ACK, as Linux counts it (`tcp_create_openreq_child`): a SYN that
            # never completes (a spoofed one) opens nothing
            self.counters[Mib.PassiveOpens] += 1
        self._set_state(State.ESTABLISHED)
        self._events.append(Connected())
        if self._fin_queued:
            self._set_state(State.FIN_WAIT_1)

    def _challenge_ack(self, now: float, counter: str) -> None:
        """RFC 5961 challenge ACK, rate-limited per second (Linux
        `tcp_send_challenge_ack()`)."""
        sec = int(now)
        if sec != self._chal_sec:
            self._chal_sec = sec
            self._chal_count = 0
        if self._chal_count >= CHALLENGE_ACK_LIMIT:
            self.counters[Mib.TCPChallengeACKLimit] += 1
            return
        self._chal_count += 1
        self.counters[counter] += 1
        self._ack_now = True

    def _rcv_synchronized(self, hdr: TcpHeader, payload: bytes | memoryview,
                          now: float) -> None:
        """RFC 9293 3.10.7.4 ("Otherwise") with RFC 5961 and RFC 7323."""
        flags = hdr.flags
        st = self._state
        rnxt = self._rnxt
        seq = unwrap32(rnxt, hdr.seq)
        plen = len(payload)

        if st is State.SYN_RECEIVED and flags & SYN and seq + 1 == rnxt:
            if not flags & ACK:
                # the peer retransmitted its SYN: our SYN/ACK was lost
                self.counters[Mib.TCPSynRetrans] += 1
                self._syn_pending = True
                return
            if unwrap32(self._una, hdr.ack) == self._nxt and not plen:
                # simultaneous open: the peer's SYN/ACK acks our SYN
                # (Linux `tcp_validate_incoming()`, RFC 5961 4.2 exception)
                flags &= ~SYN
                seq = rnxt

        ts_val = -1
        ts_ecr = 0
        sack: Sack | None = None
        for o in hdr.options:
            t = type(o)
            if t is Timestamps:
                ts_val = o.tsval  # type: ignore[union-attr]
                ts_ecr = o.tsecr  # type: ignore[union-attr]
            elif t is Sack:
                sack = o  # type: ignore[assignment]

        # PAWS (RFC 7323 5.3): a TSval older than TS.Recent marks an old duplicate
        ts_old = False
        if (self._ts_ok and ts_val >= 0 and not flags & RST
                and (ts_val - self._ts_recent) & MASK >= HALF):
            ts_old = True
            if (not plen and not flags & (SYN | FIN) and seq == rnxt
                    and unwrap32(self._una, hdr.ack) <= self._una):
                # a reordered pure duplicate ACK: harmless (Linux
                # `tcp_disordered_ack()`); processed, TS.Recent untouched
                pass
            elif now - self._ts_recent_stamp <= PAWS_IDLE:
                self.counters[Mib.PAWSEstab] += 1
                self._drop(DropReason.PAWS)
                self._ack_now = True
                return
            else:
                # 24 days idle: TS.Recent is stale (RFC 7323 5.5)
                ts_old = False

        # Acceptability test (RFC 9293 3.10.7.4, first check; four cases)
        wnd = self._rcv_adv - rnxt
        wnd = max(wnd, 0)
        seglen = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        if seglen == 0:
            ok = seq == rnxt if wnd == 0 else rnxt <= seq < rnxt + wnd
        elif wnd == 0:
            ok = False
        else:
            ok = (rnxt <= seq < rnxt + wnd) or (rnxt <= seq + seglen - 1 < rnxt + wnd)
        if not ok:
            if flags & RST:
                self._drop(DropReason.RST_OUT_OF_WINDOW)
                return
            if wnd == 0 and seq == rnxt and flags & ACK:
                # zero window: the data is not acceptable but the ACK is (RFC 9293:
                # "special allowance ... valid ACKs"); typically a window probe
                self.counters[Mib.TCPZeroWindowDrop] += 1
                payload = b""
                plen = 0
                flags &= ~FIN
                self._ack_now = True
            else:
                if (st is State.TIME_WAIT and flags & FIN and self._fin_rcvd
                        and seq + plen + 1 == rnxt):
                    # RFC 9293 3.10.7.4: retransmitted FIN in TIME-WAIT: ack, restart 2MSL
                    self._t_timewait = now + self.config.time_wait
                self._drop(DropReason.OUT_OF_WINDOW)
                self._ack_now = True
                return

        # RST (RFC 5961 3.2)
        if flags & RST:
            if seq == rnxt:
                if self._ulp is not None:
                    # the ULP reads what the RST carries (MP_TCPRST, MP_FASTCLOSE), as
                    # Linux's tcp_reset() calls mptcp_incoming_options()
                    self._ulp.on_options(hdr, plen)
                self._on_reset()
            else:
                self._drop(DropReason.RST_IN_WINDOW)
                self._challenge_ack(now, Mib.TCPChallengeACK)
            return

        # SYN in a synchronized state (RFC 5961 4.2): challenge ACK
        if flags & SYN:
            self._drop(DropReason.SYN_IN_WINDOW)
            self._challenge_ack(now, Mib.TCPSYNChallenge)
            return

        if not flags & ACK:
            self._drop(DropReason.NO_ACK)
            return

        a = unwrap32(self._una, hdr.ack)
        if st is not State.SYN_RECEIVED:
            # RFC 5961 5.2: ACK must lie in [SND.UNA - MAX.SND.WND, SND.NXT]; checked
            # before the ULP reads the options, as Linux calls mptcp_incoming_options
            # only once tcp_ack() took the segment (a blind REMOVE_ADDR or MP_PRIO in
            # the window but with a made-up ACK changes nothing)
            if a > self._nxt:
                self._drop(DropReason.ACK_UNSENT)
                self._challenge_ack(now, Mib.TCPChallengeACK)
                return
            if a < self._una - self._max_snd_wnd:
                self._drop(DropReason.ACK_TOO_OLD)
                return

        if self._ulp is not None and not self._ulp.on_options(hdr, plen):
            self._drop(DropReason.ULP)
            return

        # TS.Recent (RFC 7323 4.3): SEG.SEQ <= Last.ACK.sent
        if ts_val >= 0 and self._ts_ok and seq <= self._last_ack_sent and not ts_old:
            self._ts_recent = ts_val
            self._ts_recent_stamp = now

        self._probes_out = 0  # the peer is alive (zero-window probes unanswered: 0)
        self.rcv_tstamp = now
        if self.config.keepalive_idle is not None:
            self._ka_probes = 0
            self._arm_keepalive(now)

        if st is State.SYN_RECEIVED:
            if not self._una < a <= self._nxt:
                # RFC 9293: bad ACK in SYN-RECEIVED -> <SEQ=SEG.ACK><CTL=RST>
                self._queue_rst(a, 0, with_ack=False)
                self._drop(DropReason.BAD_ACK_SYN_RECEIVED)
                return
            self._snd_wnd = hdr.window << self._snd_wscale
            self._max_snd_wnd = max(self._max_snd_wnd, self._snd_wnd)
            self.peer_zero_window_since = None if self._snd_wnd else now
            self._snd_wl1 = seq
            self._snd_wl2 = a
            self._rtt_sample_syn(hdr, now)
            self._una = a
            self._buf_start = a
            self._lost_upto = self._high_rxt = self._recover = a
            self._t_rtx = None
            self._retries = 0
            self._rtt.reset_backoff()
            self._syn_pending = False
            self._establish()
            st = self._state
        else:
            if self._on_ack(a, seq, hdr.window, plen, flags, ts_ecr, sack, now):
                return
            st = self._state

        # Segment text (seventh check)
        if plen:
            if st in _RECEIVES_DATA:
                self._rcv_data(seq, payload, now)
            else:
                self._drop(DropReason.DATA_AFTER_FIN)
                self._ack_now = True
        if flags & FIN:
            self._rcv_fin(seq + plen, now)

    def _on_reset(self) -> None:
        """An acceptable RST (seq == rcv_nxt)."""
        st = self._state
        if st is State.SYN_RECEIVED:
            self._terminate(CloseError.RESET if self._passive else CloseError.REFUSED)
        elif st in (State.CLOSING, State.LAST_ACK, State.TIME_WAIT):
            self._terminate(None if self._fin_rcvd and st is State.TIME_WAIT
                            else CloseError.RESET)
        else:
            self.counters[Mib.EstabResets] += 1
            self._terminate(CloseError.RESET)

    # ---- ACK processing (sender side) -------------------------------------------
    def _on_ack(self, a: int, seq: int, window: int, plen: int, flags: int, ts_ecr: int,
                sack: Sack | None, now: float) -> bool:
        """RFC 9293 fifth check: window update, new data acknowledged, duplicate ACKs,
        SACK scoreboard, loss detection. Returns True if the TCB was closed."""
        una = self._una
        # window update (RFC 9293 3.10.7.4: SND.WL1 < SEG.SEQ or (= and WL2 =< SEG.ACK))
        wnd = window << self._snd_wscale
        wnd_changed = False
        if self._snd_wl1 < seq or (self._snd_wl1 == seq and self._snd_wl2 <= a):
            if wnd != self._snd_wnd:
                wnd_changed = True
                self._max_snd_wnd = max(self._max_snd_wnd, wnd)
                if not wnd:
                    self.peer_zero_window_since = now
                elif not self._snd_wnd:
                    # window reopened: stop probing
                    self._t_persist = None
                    self._persist_n = 0
                    self.peer_zero_window_since = None
                self._snd_wnd = wnd
            self._snd_wl1 = seq
            self._snd_wl2 = a
        sack_ok = self._sack_ok
        if a > una:
            self._ack_new(a, ts_ecr, now)
            if self._state is State.CLOSED:
                return True
            una = a
        elif (a == una and not plen and not flags & (SYN | FIN) and not wnd_changed
              and self._nxt > una):
            # duplicate ACK (RFC 5681 section 2)
            self._dupacks += 1
            self.counters[Mib.TCPDupAcks] += 1
            if not sack_ok:
                rs = self._reno_sacked + self._mss
                out = self._nxt - una
                self._reno_sacked = min(out, rs)
        if sack is not None and sack_ok and self._nxt > una:
            self._take_sack(sack)
            if self._rtx_marks and self._sacked:
                self._lost_retrans()
        if self._recovery != RECOV_LOSS and self._nxt > una:
            self._detect_loss(now)
        return False

    def _ack_new(self, a: int, ts_ecr: int, now: float) -> None:
        """New data acknowledged (Linux `tcp_clean_rtx_queue()` + `tcp_ack()`)."""
        una = self._una
        acked = a - una
        flight = self._nxt - una
        buf_start = self._buf_start
        k = min(a, buf_start + len(self._buf)) - buf_start
        if k > 0:
            self._buf.release(buf_start + k)
            self._buf_start = buf_start + k
        # RTT: timestamps give an unambiguous sample (RFC 7323 4); else Karn's rule
        sample: float | None = None
        if self._ts_ok and ts_ecr:
            r = (int(now * 1000) + self._ts_offset - ts_ecr) & MASK
            if r < MAX_RTT_SAMPLE * 1000:
                sample = r / 1000.0
            self._rtt_seq = None
        elif self._rtt_seq is not None and a >= self._rtt_seq:
            sample = now - self._rtt_time
            self._rtt_seq = None
        if sample is not None:
            self._rtt.sample(sample)
            if self._cc.on_rtt_sample(sample, a, self._nxt, now):
                self.counters[Mib.TCPHystartDelayDetect] += 1
        self._rtt.reset_backoff()
        self._retries = 0
        self._persist_n = 0
        self._una = a
        self.una_moved_at = now
        # scoreboard below the new una is history
        if self._sacked:
            sk = self._sacked
            while sk and sk[0][0] < a:
                s, e = sk[0]
                if e <= a:
                    self._sacked_bytes -= e - s
                    sk.pop(0)
                else:
                    self._sacked_bytes -= a - s
                    sk[0][0] = a
                    break
        self._high_rxt = max(self._high_rxt, a)
        self._lost_upto = max(self._lost_upto, a)
        rec = self._recovery
        if rec != RECOV_OPEN:
            if a >= self._recover:
                # full ACK: recovery over (RFC 6582 3.2 step 3; RFC 6675 5)
                if rec == RECOV_FAST:
                    self._cc.exit_recovery(now)
                self._recovery = RECOV_OPEN
                self._reno_sacked = 0
                self._dupacks = 0
                self._rtx_marks.clear()
            elif rec == RECOV_FAST and not self._sack_ok:
                # NewReno partial ACK (RFC 6582 3.2 step 4): the next hole is lost too
                self._lost_upto = min(a + self._mss, self._nxt)
                self._high_rxt = a
                rs = self._reno_sacked - acked
                self._reno_sacked = max(0, rs)
            if rec == RECOV_LOSS and self._recovery != RECOV_FAST:
                self._cc.on_ack(acked, self._rtt.srtt, now)
        else:
            self._dupacks = 0
            self._reno_sacked = 0
            if self._cwnd_blocked or 2 * flight >= self._cc.cwnd:
                self._cc.on_ack(acked, self._rtt.srtt, now)
        # FIN acknowledged?
        st = self._state
        if self._fin_sent and a == self._buf_start + 1 and not self._buf:
            if st is State.FIN_WAIT_1:
                self._set_state(State.FIN_WAIT_2)
            elif st is State.CLOSING:
                self._enter_time_wait(now)
            elif st is State.LAST_ACK:
                self._terminate(None)
                return
        # RFC 6298 5.2/5.3: restart or stop the timer
        self._t_rtx = now + self._rtt.rto if self._nxt > a else None
        if self._want_writable and len(self._buf) < self.config.snd_buf:
            self._want_writable = False
            self._writable()
        elif not self._buf and k > 0 and not self._fin_queued:
            self._writable()

    def _writable(self) -> None:
        if not self._writable_pending:
            self._writable_pending = True
            self._events.append(WritableSpace())

    def _take_sack(self, sack: Sack) -> None:
        """Merge the peer's SACK blocks into the scoreboard (RFC 2018, RFC 6675 4).
        Blocks outside (snd_una, snd_nxt] (D-SACKs, bogus) are ignored."""
        una = self._una
        nxt = self._nxt
        sk = self._sacked
        for left, right in sack.blocks:
            s = unwrap32(una, left)
            e = unwrap32(una, right)
            if e <= una or e > nxt or s >= e:
                continue
            s = max(s, una)
            # insert [s, e) merging overlaps (few blocks: linear is fine)
            i = 0
            n = len(sk)
            while i < n and sk[i][1] < s:
                i += 1
            j = i
            ns, ne = s, e
            removed = 0
            while j < n and sk[j][0] <= e:
                ns = min(ns, sk[j][0])
                ne = max(ne, sk[j][1])
                removed += sk[j][1] - sk[j][0]
                j += 1
            added = ne - ns - removed
            if added == 0 and j - i == 1:
                continue
            sk[i:j] = [[ns, ne]]
            self._sacked_bytes += added

    def _lost_retrans(self) -> None:
        """A retransmission is lost if data first sent after it has been SACKed (Linux
        `tcp_mark_lost_retrans()`): rewind HighRxt so NextSeg sends it again instead of
        waiting for the RTO."""
        una = self._una
        high = self._sacked[-1][1]
        keep: list[tuple[int, int, int]] = []
        rewind = -1
        for m in self._rtx_marks:
            start, end, nxt_then = m
            if end <= una:
                continue
            if nxt_then < high and not self._is_sacked(start, end):
                if rewind < 0 or start < rewind:
                    rewind = start
                self.counters[Mib.TCPLostRetransmit] += 1
                continue
            keep.append(m)
        self._rtx_marks = keep
        if rewind >= 0 and rewind < self._high_rxt:
            self._high_rxt = max(rewind, una)
            self._lost_upto = max(self._lost_upto, self._high_rxt)

    def _is_sacked(self, start: int, end: int) -> bool:
        for s, e in self._sacked:
            if s <= start and end <= e:
                return True
            if s > start:
                break
        return False

    def _detect_loss(self, now: float) -> None:
        """Mark lost bytes from the scoreboard (RFC 6675 IsLost: more than
        (DupThresh-1)*SMSS bytes SACKed above) and enter fast recovery on loss or on
        DupThresh duplicate ACKs (RFC 5681 3.2, RFC 6675 5)."""
        mss = self._mss
        una = self._una
        if self._sacked:
            need = (DUPTHRESH - 1) * mss + 1
            acc = 0
            for s, e in reversed(self._sacked):
                acc += e - s
                if acc >= need:
                    point = s + (acc - need)
                    self._lost_upto = max(self._lost_upto, point)
                    break
        if self._recovery == RECOV_OPEN and (self._lost_upto > una
                                             or self._dupacks >= DUPTHRESH):
            self._recovery = RECOV_FAST
            self._recover = self._nxt
            self._cc.enter_recovery(self._nxt - una, now)
            self.counters[Mib.TCPSackRecovery if self._sack_ok else Mib.TCPRenoRecovery] += 1
            first = min(una + mss, self._nxt)
            self._lost_upto = max(self._lost_upto, first)
            self._high_rxt = una

    # ---- receive side -----------------------------------------------------------------
    def _rcv_data(self, seq: int, payload: bytes | memoryview, now: float) -> None:
        """Queue segment text (RFC 9293 seventh check), trimmed to the window."""
        rnxt = self._rnxt
        n = len(payload)
        end = seq + n
        if seq < rnxt:
            if end <= rnxt:
                # entirely old: a duplicate; ack at once (RFC 9293, RFC 5681 4.2)
                self.counters[Mib.TCPDupData] += 1
                self._ack_now = True
                return
            payload = memoryview(payload)[rnxt - seq:]
            seq = rnxt
        right = self._rcv_adv
        if end > right:
            if seq >= right:
                self._drop(DropReason.BEYOND_WINDOW)
                self._ack_now = True
                return
            payload = memoryview(payload)[:right - seq]
            end = right
            self.counters[Mib.TCPRcvTrimmed] += 1
        if seq == rnxt:
            self._rbuf.append(frozen(payload))  # kept: a copy only of a mutable buffer
            rnxt = end
            ooo = self._ooo
            if ooo:
                # the gap (or part of it) filled: pull what became contiguous, ACK now
                self._ack_now = True
                while True:
                    d = ooo.pop_chunks(rnxt)
                    if d is None:
                        break
                    for c in d:
                        self._rbuf.append(c)
                        rnxt += len(c)
            self._rnxt = rnxt
            ub = self._unacked_bytes + (end - seq)
            self._unacked_bytes = ub
            if ub >= 2 * self._mss:
                self._ack_now = True
            elif self._t_dack is None:
                self._t_dack = now + self.config.delayed_ack
            if not self._readable_pending:
                self._readable_pending = True
                self._events.append(DataReadable())
            if self._ooo_fin is not None and self._ooo_fin == rnxt:
                self._ooo_fin = None
                self._rcv_fin(rnxt, now)
        else:
            # out of order: hold it, ACK at once with SACK (RFC 5681 4.2, RFC 2018)
            self.counters[Mib.TCPOFOQueue] += 1
            if not self._ooo.add(seq, payload):
                self.counters[Mib.TCPOFODrop] += 1
                self._drop(DropReason.OFO_FULL)
            self._ack_now = True

    def _rcv_fin(self, fin_seq: int, now: float) -> None:
        """The eighth check: FIN (RFC 9293 3.10.7.4)."""
        st = self._state
        if self._fin_rcvd:
            # a retransmitted FIN: ack it again (TIME-WAIT: restart the 2MSL wait)
            self._ack_now = True
            if st is State.TIME_WAIT:
                self._t_timewait = now + self.config.time_wait
            return
        if fin_seq != self._rnxt:
            if fin_seq > self._rnxt and fin_seq <= self._rcv_adv:
                self._ooo_fin = fin_seq  # wait for the data before it
            self._ack_now = True
            return
        if st not in _RECEIVES_DATA:
            return
        self._fin_rcvd = True
        self._rnxt = fin_seq + 1
        self._ack_now = True
        self._events.append(PeerFinished())
        if st is State.ESTABLISHED:
            self._set_state(State.CLOSE_WAIT)
        elif st is State.FIN_WAIT_1:
            # our FIN is not acked yet (else we'd be in FIN-WAIT-2): simultaneous close
            self._set_state(State.CLOSING)
        elif st is State.FIN_WAIT_2:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        self._set_state(State.TIME_WAIT)
        self._t_rtx = self._t_persist = self._t_keepalive = None
        self._t_timewait = now + self.config.time_wait
        self._emit_closed(None)

    def _sws_threshold(self) -> int:
        """Receiver SWS avoidance (RFC 9293 3.8.6.2.2): min(RCV.BUFF/2, Eff.snd.MSS)."""
        return min(self.config.rcv_buf // 2, self._mss)

    def _window_field(self) -> int:
        """The window field for an outgoing (non-SYN) segment. Never moves the right
        edge left (RFC 9293 3.8.6.2.2); grows it only by the SWS threshold; rounds
        up to the scale unit like Linux `tcp_select_window()`."""
        rnxt = self._rnxt
        free = self._free_space()
        right = rnxt + max(0, free)
        adv = self._rcv_adv
        if right <= adv or right - adv < self._sws_threshold():
            right = adv
        wnd = right - rnxt
        if wnd <= 0:
            self._rcv_adv = max(rnxt, adv)
            return 0
        shift = self._rcv_wscale
        field = (wnd + (1 << shift) - 1) >> shift
        field = min(field, 0xFFFF)
        self._rcv_adv = rnxt + (field << shift)
        self._rcv_adv = max(self._rcv_adv, adv)
        return field

    # ------------------------------------------------------------------ output
    def _queue_rst(self, seq: int, ack: int, *, with_ack: bool, established: bool = False) -> None:
        """Queue an RST (never in reply to an RST: callers check)."""
        opts: list[TcpOption] = []
        if established and self._ulp is not None:
            opts = list(self._ulp.rst_options(MAX_OPTIONS))
        hdr = TcpHeader(self.local_port, self.remote_port, seq & MASK,
                        (ack & MASK) if with_ack else 0, RST | ACK if with_ack else RST, 0, opts)
        self._pending_rst.append(OutSegment(hdr, b""))

    def _syn_segment(self, now: float) -> OutSegment:
        """SYN or SYN/ACK, options in Linux's order (`tcp_options_write()`):
        MSS, SACK_PERM, TS, NOP, WS."""
        c = self.config
        st = self._state
        synack = st is State.SYN_RECEIVED
        opts: list[TcpOption] = [Mss(c.mss)]
        tsval = (int(now * 1000) + self._ts_offset) & MASK
        use_ts = self._ts_ok if synack else c.timestamps
        use_sack = self._sack_ok if synack else c.sack
        use_ws = self._ws_ok if synack else c.window_scaling
        if use_ts:
            ts = Timestamps(tsval, self._ts_recent if synack else 0)
            if use_sack:
                opts += [_SACK_PERM, ts]
            else:
                opts += [_NOP, _NOP, ts]
        elif use_sack:
            opts += [_NOP, _NOP, _SACK_PERM]
        if use_ws:
            opts += [_NOP, WindowScale(self._rcv_wscale)]
        if self._ulp is not None:
            used = options_len(opts)
            extra = (self._ulp.synack_options(MAX_OPTIONS - used) if synack
                     else self._ulp.syn_options(MAX_OPTIONS - used))
            opts += extra
        window = min(c.rcv_buf, 0xFFFF)  # never scaled in a SYN (RFC 7323 2.2)
        if synack:
            flags = SYN | ACK
            ack = self._rnxt & MASK
            self._rcv_adv = self._rnxt + window
            self._last_ack_sent = self._rnxt
            self._ack_now = False
        else:
            flags = SYN
            ack = 0
        hdr = TcpHeader(self.local_port, self.remote_port, self._iss, ack, flags, window, opts)
        return OutSegment(hdr, b"")

    def poll_transmit(self, now: float) -> list[OutSegment]:
        out: list[OutSegment] = []
        if self._pending_rst:
            out += self._pending_rst
            self._pending_rst.clear()
            self.counters[Mib.OutRsts] += len(out)
        st = self._state
        if self._syn_pending and (st is State.SYN_SENT or st is State.SYN_RECEIVED):
            self._syn_pending = False
            if self._nxt == self._iss:
                self._nxt = self._iss + 1
                self._rtt_seq = self._nxt
                self._rtt_time = now
            else:
                self.counters[Mib.RetransSegs] += 1
                self.counters[Mib.TCPSynRetrans] += 1
            out.append(self._syn_segment(now))
            if self._t_rtx is None:
                self._t_rtx = now + self._rtt.rto
        elif st in _SYNCHRONIZED:
            self._ack_segs = 0
            self._wf = -1  # window field: computed once, by the first segment built
            if self._ack_first:
                self._ack_first = self._ack_now = False
                out.append(self._segment(self._nxt, ACK, b"", now))
                self.counters[_OUT_ACKS] += 1
            if st in _CAN_SEND_DATA and (
                    self._nxt < self._buf_start + len(self._buf) or self._recovery
                    or (self._fin_queued and not self._fin_sent)):
                self._send_data(out, now)
            if self._probe_due:
                # zero-window or keepalive probe: SEG.SEQ = SND.UNA - 1, no data (Linux
                # `tcp_xmit_probe_skb()`); the peer answers with an ACK
                self._probe_due = False
                out.append(self._segment(self._una - 1, ACK, b"", now))
            if (self._ack_now and not self._ack_segs) or self._pure_ack:
                self._pure_ack = False
                out.append(self._segment(self._nxt, ACK, b"", now,
                                         sack=self._sack_ok and bool(self._ooo)))
                self.counters[_OUT_ACKS] += 1
            if self._ack_segs:
                self._ack_now = False
                self._unacked_bytes = 0
                self._t_dack = None
                self._last_ack_sent = self._rnxt
        if out:
            self.counters[_OUT_SEGS] += len(out)
        return out

    def _segment(self, seq: int, flags: int, payload: bytes | memoryview, now: float,
                 *, sack: bool = False, gso: int = 0) -> OutSegment:
        """Build one ACK-bearing segment (Linux `tcp_established_options()` order:
        timestamps, then the ULP, then SACK blocks in what remains)."""
        if self._ts_ok:
            opts: list[TcpOption] = [_NOP, _NOP, Timestamps(
                (int(now * 1000) + self._ts_offset) & MASK, self._ts_recent)]
            used = TS_OPT_LEN
        else:
            opts = []
            used = 0
        if self._ulp is not None:
            extra = self._ulp.established_options(seq - self._iss, len(payload),
                                                  bool(flags & FIN), MAX_OPTIONS - used)
            if extra:
                opts += extra
                used = options_len(opts)
        if sack:
            room = (MAX_OPTIONS - used - 2) // 8
            if room > 0:
                blocks = self._ooo.sack_blocks(min(room, 4))
                if blocks:
                    opts += [_NOP, _NOP, Sack(tuple((s & MASK, e & MASK) for s, e in blocks))]
        self._ack_segs += 1
        wf = self._wf
        if wf < 0:
            wf = self._wf = self._window_field()
        return OutSegment(TcpHeader(self.local_port, self.remote_port, seq & MASK,
                                    self._rnxt & MASK, flags, wf, opts), payload, gso)

    def _pipe(self) -> int:
        """RFC 6675 SetPipe: bytes presumed in the network (Linux
        `tcp_packets_in_flight()`: out - (sacked + lost) + retrans)."""
        una = self._una
        out = self._nxt - una
        sacked = self._sacked_bytes if self._sack_ok else self._reno_sacked
        lo = max(una, self._high_rxt)
        hi = self._lost_upto
        lost = 0
        if hi > lo:
            lost = hi - lo
            for s, e in self._sacked:
                if e <= lo:
                    continue
                if s >= hi:
                    break
                lost -= (min(hi, e)) - (max(lo, s))
        p = out - sacked - lost
        return max(0, p)

    def _next_hole(self) -> tuple[int, int] | None:
        """RFC 6675 NextSeg rule 1: the first un-SACKed byte at or above HighRxt below
        the lost mark, and where that hole ends."""
        p = max(self._una, self._high_rxt)
        hi = self._lost_upto
        for s, e in self._sacked:
            if e <= p:
                continue
            if s <= p:
                p = e
                continue
            # hole [p, s)
            return (p, s) if p < hi else None
        if p < hi:
            return p, self._nxt
        return None

    def _send_data(self, out: list[OutSegment], now: float) -> None:
        """Retransmissions (recovery), then new data, then FIN, within cwnd (pipe),
        the peer's window, Nagle and sender SWS avoidance; arm the persist timer."""
        c = self.config
        mss = self._mss
        cwnd = self._cc.cwnd
        cwnd = max(cwnd, mss)
        una = self._una
        wnd_edge = una + self._snd_wnd
        buf = self._buf
        buf_start = self._buf_start
        buf_end = buf_start + len(buf)
        fin_q = self._fin_queued
        pipe = self._pipe() if (self._recovery or self._sacked or self._reno_sacked) \
            else self._nxt - una
        ulp = self._ulp
        # 1. retransmit presumed-lost holes (RFC 6675 NextSeg rule 1; after an RTO,
        #    everything un-SACKed)
        if self._recovery:
            while pipe + mss <= cwnd:
                hole = self._next_hole()
                if hole is None:
                    break
                p, hole_end = hole
                if p >= wnd_edge and p != una:
                    break
                n = min(mss, hole_end - p)
                if ulp is not None:
                    n = max(min(n, ulp.segment_limit(p - self._iss)), 1)
                dend = min(p + n, buf_end)
                flags = ACK | PSH if dend == buf_end and dend > p else ACK
                if dend > p:
                    payload: bytes | memoryview = buf.span(p, dend - p)
                else:
                    payload = b""
                if self._fin_sent and p + n > buf_end:
                    flags |= FIN
                    n = dend - p + 1
                else:
                    n = dend - p
                if n <= 0:
                    self._high_rxt = hole_end
                    continue
                out.append(self._segment(p, flags, payload, now))
                self._high_rxt = p + n
                if self._sack_ok:
                    self._rtx_marks.append((p, p + n, self._nxt))
                pipe += n
                self._rtt_seq = None  # Karn
                self.counters[Mib.RetransSegs] += 1
                self.counters[Mib.TCPFastRetrans if self._recovery == RECOV_FAST
                              else Mib.TCPLossRetrans] += 1
                if self._t_rtx is None:
                    self._t_rtx = now + self._rtt.rto
        # 2. new data
        nxt = self._nxt
        if nxt == self._una:
            self.una_moved_at = now  # nothing in flight: silence counts from this send
        gso = c.gso_segments
        blocked_cwnd = False
        blocked_wnd = False
        while True:
            avail = buf_end - nxt
            if avail <= 0:
                break
            win = wnd_edge - nxt
            if win <= 0:
                blocked_wnd = True
                break
            if pipe + mss > cwnd:
                blocked_cwnd = True
                break
            cap = mss
            if ulp is not None:
                # never cross an MPTCP mapping: a boundary is a full segment here
                cap = max(min(mss, ulp.segment_limit(nxt - self._iss)), 1)
            n = min(avail, cap)
            n = min(n, win)
            if n < cap:
                if n < avail:
                    # window-limited with more queued: sender SWS avoidance
                    # (RFC 9293 3.8.6.2.1): only if >= half the max window seen
                    if not self._force_send and n < (self._max_snd_wnd >> 1):
                        blocked_wnd = True
                        break
                elif c.nagle and nxt > self._una and not fin_q and not self._force_send:
                    # Nagle (RFC 896): a small segment waits for the ACK of
                    # outstanding data
                    break
            self._force_send = False
            if gso > 1 and n == mss:
                k = min(gso, (cwnd - pipe) // mss)
                total = min(avail, win, k * mss)
                if ulp is not None:
                    total = min(total, ulp.segment_limit(nxt - self._iss))
                if total % mss and (total < avail or (c.nagle and not fin_q)):
                    total -= total % mss  # the short tail waits (SWS / Nagle)
                if total > mss:
                    payload = buf.span(nxt, total)
                    flags = ACK | PSH if nxt + total == buf_end else ACK
                    out.append(self._segment(nxt, flags, payload, now,
                                             gso=mss))
                    nxt += total
                    pipe += total
                    self._nxt = nxt
                    if self._rtt_seq is None and not self._ts_ok:
                        self._rtt_seq = nxt
                        self._rtt_time = now
                    if self._t_rtx is None:
                        self._t_rtx = now + self._rtt.rto
                    continue
            payload = buf.span(nxt, n)
            flags = ACK
            end = nxt + n
            if end == buf_end:
                flags = ACK | PSH
                if fin_q and not self._fin_sent:
                    flags |= FIN
                    self._fin_sent = True
                    end += 1
            out.append(self._segment(nxt, flags, payload, now))
            pipe += end - nxt
            nxt = end
            self._nxt = nxt
            if self._rtt_seq is None and not self._ts_ok:
                self._rtt_seq = nxt
                self._rtt_time = now
            if self._t_rtx is None:
                self._t_rtx = now + self._rtt.rto
        # 3. a FIN on its own (all data sent; needs no window)
        if fin_q and not self._fin_sent and nxt == buf_end:
            out.append(self._segment(nxt, ACK | FIN, b"", now))
            self._fin_sent = True
            self._nxt = nxt + 1
            if self._t_rtx is None:
                self._t_rtx = now + self._rtt.rto
        self._cwnd_blocked = blocked_cwnd
        # 4. persist timer: data waiting, nothing in flight, window closed. Data in
        #    flight: the RTO runs instead (Linux: one timer, PROBE0 or RETRANS)
        if self._nxt != self._una:
            self._t_persist = None
        elif blocked_wnd and self._t_rtx is None and self._t_persist is None:
            self._t_persist = now + self._rtt.backed_off(self._persist_n)
