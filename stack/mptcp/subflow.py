"""The MPTCP subflow: what one TCP connection of an MPTCP connection knows beyond TCP
(Linux `struct mptcp_subflow_context`), its state machine, the ULP hooks through which
the TCP engine asks it for options and shows it what arrives, and the subflow
handshakes (the kernel's `subflow.c`: MP_CAPABLE's SYN/ACK and third ACK, MP_JOIN's
four segments, `subflow_check_req` for a join SYN).

Send-side mappings are kept here in relative subflow sequence numbers (first payload
byte = 1, RFC 8684 3.3.1): `tx_maps` for what we sent (a retransmission reuses the
mapping its bytes were first sent with, as the kernel's per-skb mapping does). The
peer's mappings (`rx_maps`) belong to the receive path, `stack.mptcp.recv`.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from stack.diag import Code, Severity
from stack.mib import DropReason, Mib
from stack.mptcp import crypto
from stack.mptcp import options as mo
from stack.mptcp.events import MptcpEventType
from stack.tcp.engine import State, TcpEngine
from stack.wire import mptcp as wm
from stack.wire.tcp import ACK, SYN, TcpHeader, TcpOption

if TYPE_CHECKING:
    from stack.mptcp.connection import MptcpConnection
    from stack.mptcp.recv import RxMap

log = logging.getLogger(__name__)

NO_LIMIT = 1 << 30
_SENDING = (State.ESTABLISHED, State.CLOSE_WAIT)


@dataclass(slots=True)
class TxMap:
    """A mapping we sent: subflow bytes [ssn, ssn+length) carry data [data_off, +length)."""
    ssn: int
    length: int
    data_off: int
    csum: int = 0  # the DSS checksum over the whole mapping (when checksums are on)


class SubflowState(Enum):
    """What a subflow is to its connection (the TCP state is the engine's). Linux keeps
    the same facts as flags on `struct mptcp_subflow_context` (`fully_established`,
    `stale`, `closing`/`request_...`, a reset pending): one value here, changed only
    through `Subflow.set_state`.

    - JOINING -> ACTIVE: the 4th ACK (joiner) or a valid third ACK (responder)
    - JOINING -> FAILED: a bad HMAC or a missing MP_JOIN; the subflow is reset
    - ACTIVE -> STALE: STALE_RTOS RTOs in a row; STALE -> ACTIVE: an ACK again
    - JOINING | ACTIVE | STALE -> CLOSING: removed by the path manager
    - JOINING | ACTIVE | STALE -> CLOSED: its TCP connection ended on its own
    FAILED and CLOSING keep their label once the engine has closed too (why a
    subflow ended stays readable); CLOSED is a subflow TCP ended on its own."""

    JOINING = "joining"  # MP_JOIN handshake under way: no data before it completes
    ACTIVE = "active"    # fully established and working: may carry data and signals
    STALE = "stale"      # repeated RTOs: not scheduled, its data sent elsewhere
    CLOSING = "closing"  # removed by the path manager: no new data, FIN or RST under way
    FAILED = "failed"    # the join was refused (HMAC, missing MP_JOIN): reset pending
    CLOSED = "closed"    # TCP closed it (FIN exchange, RST, timeout)


S = SubflowState
_TRANSITIONS: dict[SubflowState, frozenset[SubflowState]] = {
    S.JOINING: frozenset({S.ACTIVE, S.FAILED, S.CLOSING, S.CLOSED}),
    S.ACTIVE: frozenset({S.STALE, S.CLOSING, S.CLOSED}),
    S.STALE: frozenset({S.ACTIVE, S.CLOSING, S.CLOSED}),
    S.CLOSING: frozenset(),
    S.FAILED: frozenset(),
    S.CLOSED: frozenset(),
}
_LIVE = (S.JOINING, S.ACTIVE, S.STALE)
# bound once for the per-segment tests (an Enum class attribute costs ~75 ns on 3.11)
_ACTIVE, _STALE = S.ACTIVE, S.STALE


class Subflow:
    """One subflow of an MPTCP connection; the TCP engine's `Ulp`. `make_engine` builds
    its engine with this context as the ULP (the engine exists from the start)."""

    def __init__(self, msk: MptcpConnection, make_engine: Callable[[Subflow], TcpEngine], *,
                 local_id: int = 0, remote_id: int = 0, backup: bool = False,
                 join: bool = False, local_nonce: int = 0, initiator: bool = True) -> None:
        self.msk = msk
        self.local_id = local_id
        self.remote_id = remote_id
        self.backup = backup          # we asked the peer to use it only as a backup
        self.remote_backup = False    # the peer asked us (its MP_JOIN B flag or MP_PRIO)
        self.send_mp_prio = False     # our `backup` changed: MP_PRIO on the next pure ACK
        # MP_JOIN (RFC 8684 3.2): a subflow added to an established connection
        self.join = join
        self.initiator = initiator       # we sent this subflow's SYN
        self.local_nonce = local_nonce   # R_A (joiner) or R_B (responder), 32 bits
        self.remote_nonce = 0
        # a join carries data only once fully established (after the 4th ACK)
        self.state = SubflowState.JOINING if join else SubflowState.ACTIVE
        self.established_at: float | None = None if join else msk.now
        self.reason: str | None = None  # why it FAILED or is CLOSING (traces, events)
        self.reinjected = False  # its un-data-acked data went to the reinject queue
        # its TCP snd_una when its in-flight data was reinjected for holding up the
        # data level (None: not since its last ACK); it takes no reinjection meanwhile
        self.hol_una: int | None = None
        self._tx_starts: list[int] = []
        self._tx_maps: list[TxMap] = []
        self.tx_next = 1              # relative ssn of the next byte handed to the engine
        self.rx_maps: dict[int, RxMap] = {}  # the peer's mappings (stack.mptcp.recv)
        self.rx_cur: RxMap | None = None
        self.rx_last_dss: tuple[int, int, int, int, bool, bool] | None = None  # msk._rx_dss
        self.rx_next = 1              # relative ssn of the next in-order byte we pull
        self.send_mp_fail: int | None = None  # DSN to report in an MP_FAIL, once
        self.send_infinite_map = False  # after MP_FAIL: one infinite mapping, then TCP
        self.valid_csum_seen = False  # a mapping's DSS checksum checked out (Linux's flag)
        self.mp_fail_deadline: float | None = None  # we sent MP_FAIL: the answer is due
        self.reset_reason: int | None = None  # an RST is going out, with this MP_TCPRST reason
        self.fail_rst_reason: int = wm.MPTCP_RST_EMPTCP  # the reason a refused join gets
        self.reset_why: str | None = None  # the MP_TCPRST reason on an RST we received
        self.reset_code: int | None = None  # ... its code
        self.third_ack_sent = False  # a join we opened reached ESTABLISHED (diagnosis)
        self.last_tx: tuple[int, float] | None = None  # (frame, time) of our last packet
        # established_options' memo: the last data segment's (mapping, state), its
        # options, and its DSS when that was all they held
        self._memo: tuple[object, object, list[TcpOption], wm.Dss | None] = (None, None, [],
                                                                              None)
        self.engine: TcpEngine = make_engine(self)

    @property
    def key(self) -> tuple[bytes, int, bytes, int]:
        e = self.engine
        return (e.local_addr, e.local_port, e.remote_addr, e.remote_port)

    # ---- the state ---------------------------------------------------------------------
    def set_state(self, new: SubflowState, reason: str | None = None) -> None:
        """The one place a subflow's state changes: checked against the diagram in
        `SubflowState`, logged, and reported as `ip mptcp monitor` would
        (SF_ESTABLISHED, SF_STALE; JOIN_FAILED is ours)."""
        old = self.state
        if new is old:
            return
        if new not in _TRANSITIONS[old]:
            raise AssertionError(f"subflow {self.local_id}: {old.name} -> {new.name}")
        log.debug("subflow %d: %s -> %s%s", self.local_id, old.name, new.name,
                  f" ({reason})" if reason else "")
        self.state = new
        msk = self.msk
        if new is S.ACTIVE:
            if old is S.JOINING:
                self.established_at = msk.now
                msk.sf_event(MptcpEventType.SF_ESTABLISHED, self)
            else:
                msk.counters[Mib.SubflowRecover] += 1
                self.reinjected = False
        elif new is S.STALE:
            msk.counters[Mib.SubflowStale] += 1
            msk.sf_event(MptcpEventType.SF_STALE, self)
        elif new is S.FAILED:
            self.reason = reason
            msk.event(MptcpEventType.JOIN_FAILED, reason)
        elif new is S.CLOSING:
            self.reason = reason

    def engine_closed(self, error: str | None) -> None:
        """The engine reached CLOSED: a subflow still in service is CLOSED now; SF_CLOSED
        for a join or a subflow the path manager removed (the initial subflow's end is
        the connection's CLOSED)."""
        if self.state in (S.JOINING, S.ACTIVE, S.STALE):
            self.set_state(S.CLOSED, error)
        if self.join or self.state is S.CLOSING:
            self.msk.sf_event(MptcpEventType.SF_CLOSED, self,
                              self.join_failed or self.reset_why or error or self.reason)

    # Named predicates, each written once (the kernel's helpers in brackets).
    @property
    def can_send(self) -> bool:
        """New data and connection-level signals may go out on it: fully established,
        working, TCP-established [`__mptcp_subflow_active`]."""
        return self.state is _ACTIVE and self.engine.state in _SENDING

    @property
    def can_signal(self) -> bool:
        """It takes a pure ACK carrying a DATA_FIN or data ACK: fully established and
        neither failed nor removed, stale ones too (any path may be the one that
        works) [`mptcp_subflow_send_ack` over every subflow]."""
        return self.state is _ACTIVE or self.state is _STALE

    @property
    def is_open(self) -> bool:
        """Neither failed, removed nor closed: it may still be removed or fail."""
        return self.state in _LIVE and not self.engine.is_closed

    @property
    def counts_against_limit(self) -> bool:
        """An additional subflow open or opening: what `subflows_max` limits
        [`msk->pm.subflows`]. The initial subflow never counts."""
        return self.join and self.is_open

    @property
    def in_service(self) -> bool:
        """Open and its TCP connection still up: the connection is not over while one
        such subflow remains."""
        return self.is_open and self.engine.state not in (State.CLOSED, State.TIME_WAIT)

    # Read-only views of the state, for traces, tools and tests.
    @property
    def fully_established(self) -> bool:
        return self.established_at is not None

    @property
    def stale(self) -> bool:
        return self.state is S.STALE

    @property
    def join_failed(self) -> str | None:
        return self.reason if self.state is S.FAILED else None

    @property
    def closing(self) -> str | None:
        return self.reason if self.state is S.CLOSING else None

    @property
    def is_backup(self) -> bool:
        """Backup in either direction's view (Linux `subflow->backup ||
        subflow->request_bkup`): scheduled only when no other subflow works."""
        return self.backup or self.remote_backup

    # ---- the Ulp hooks (stack.tcp.engine.Ulp) ------------------------------------------
    # The writer decides (stack.mptcp.options, changing nothing); the connection does
    # the bookkeeping for what went out (`options_written`); then the bytes.
    def syn_options(self, remaining: int) -> list[TcpOption]:
        self.msk.tx_index += 1  # one call per segment: the diagnosis' frame numbers
        o = mo.syn_options(self, remaining)
        return self._written(o, syn=True)

    def synack_options(self, remaining: int) -> list[TcpOption]:
        self.msk.tx_index += 1
        o = mo.synack_options(self, remaining)
        return self._written(o)

    def _written(self, o: mo.OutOptions | None, syn: bool = False) -> list[TcpOption]:
        if o is None:
            return []
        self.msk.options_written(self, o, syn)
        return mo.write_options(o)

    def established_options(self, seq: int, payload_len: int, fin: bool,
                            remaining: int) -> list[TcpOption]:
        msk = self.msk
        msk.tx_index += 1
        memo_key: tuple[object, ...] | None = None
        if (payload_len and not msk.fallback
                and self.send_mp_fail is None and not self.send_mp_prio
                and not msk.pm.rm_addr_queue
                and (msk.fully_established or not msk.client or seq != 1)):
            # A data segment in the steady state: the writer would give a DSS whose
            # every field follows from the mapping, the data ACK and the room, so the
            # options of the last such segment serve while those three are unchanged
            # (the segments of one chunk, or a GSO super-packet, share them).
            m = self.tx_map_at(seq)
            state = (msk.ack_off, msk.peer_fin, remaining)
            memo_m, memo_state, memo_opts, memo_dss = self._memo
            if state == memo_state and m is not None:
                if m is memo_m:
                    return memo_opts
                if memo_dss is not None:
                    # a new chunk, all else as before (a GSO super-packet per
                    # mapping: every one): the same DSS with this mapping in it
                    dss = wm.Dss(memo_dss.data_ack, memo_dss.data_ack64,
                                 msk.wire_dsn(m.data_off), True,
                                 m.ssn & 0xFFFFFFFF, m.length,
                                 m.csum if memo_dss.checksum is not None else None)
                    opts = mo.write_options(mo.OutOptions(dss=dss))
                    self._memo = (m, state, opts, dss)
                    return opts
            memo_key = (m, state)
        o = mo.established_options(self, seq, payload_len, remaining, fin)
        opts = self._written(o)
        if memo_key is not None:
            only = o.dss if o is not None and o.suboptions() == [o.dss] else None
            plain = only is not None and only.dsn is not None and not only.data_fin
            self._memo = (memo_key[0], memo_key[1], opts, only if plain else None)
        return opts

    def rst_options(self, remaining: int) -> list[TcpOption]:
        self.msk.tx_index += 1
        return self._written(mo.rst_options(self, remaining))

    def on_options(self, hdr: TcpHeader, payload_len: int) -> bool:
        return self.msk.rx_options(self, hdr, payload_len)

    def option_reserve(self) -> int:
        if self.msk.fallback:
            return mo.DSS_ACK64 if self.msk.ack_after_fallback else 0
        return mo.aligned(mo.DSS_FULL_CSUM if self.msk.csum_enabled else mo.DSS_FULL)

    def segment_limit(self, seq: int) -> int:
        m = self.tx_map_at(seq)
        return m.ssn + m.length - seq if m is not None else NO_LIMIT

    def rcv_space(self) -> int | None:
        return self.msk.rcv_space()

    # ---- send-side mappings ---------------------------------------------------------
    def add_tx_map(self, m: TxMap) -> None:
        self._tx_starts.append(m.ssn)
        self._tx_maps.append(m)
        self.tx_next = m.ssn + m.length

    def tx_map_at(self, seq: int) -> TxMap | None:
        """The mapping covering relative ssn `seq` (None: not mapped, e.g. fallback)."""
        i = bisect.bisect_right(self._tx_starts, seq) - 1
        if i >= 0:
            m = self._tx_maps[i]
            if seq < m.ssn + m.length:
                return m
        return None

    def prune_tx_maps(self, acked_rel: int, data_acked: int) -> None:
        """Forget mappings the subflow has delivered (TCP-acked below `acked_rel`) and
        the peer has taken (data-acked below offset `data_acked`): until then a mapping
        is what goes again should this subflow close (a peer's subflow TCP-acks bytes
        its connection has not taken yet, and drops them with the subflow)."""
        n = 0
        for m in self._tx_maps:
            if m.ssn + m.length > acked_rel or m.data_off + m.length > data_acked:
                break
            n += 1
        if n:
            del self._tx_maps[:n]
            del self._tx_starts[:n]

    @property
    def tx_maps(self) -> list[TxMap]:
        return self._tx_maps


# ---- subflow handshakes (the kernel's subflow.c) ---------------------------------------
@dataclass(frozen=True, slots=True)
class JoinRefusal:
    """Why a join SYN is refused: the counter, the drop reason and the MP_TCPRST
    reason of the RST that answers it."""
    counter: Mib
    drop: DropReason
    rst_reason: int


# join SYNs of one connection we answer while their third ACKs are due, beyond its
# subflow limit (Linux's request sockets are bounded by the listener's backlog): more
# are refused at once, so that SYNs alone cannot make us allocate without bound
JOIN_SYN_SLACK = 8


def check_join_req(msk: MptcpConnection | None) -> JoinRefusal | None:
    """`subflow_check_req` for an MP_JOIN SYN whose token named `msk` (None: no such
    token): a join needs a fully established MPTCP connection. A join never falls back
    to TCP: refused, it gets an RST with MP_TCPRST (reason 1 for a token we do not
    know). The subflow limit is Linux's to check at the third ACK (`join_rx`), so a
    join over it is answered (MPJoinSynRx, a SYN/ACK) and then refused there; only a
    pile of half-open joins far over it is refused here (reason 2)."""
    if msk is None or not msk.fully_established or msk.fallback:
        return JoinRefusal(Mib.MPJoinNoTokenFound, DropReason.JOIN_UNKNOWN_TOKEN,
                           wm.MPTCP_RST_EMPTCP)
    live = sum(1 for sf in msk.subflows if sf.counts_against_limit)
    if live >= msk.config.subflows_max + JOIN_SYN_SLACK:
        return JoinRefusal(Mib.MPJoinRejected, DropReason.JOIN_OVER_LIMIT,
                           wm.MPTCP_RST_ERESOURCE)
    return None


def join_rx(sf: Subflow, ro: mo.ReceivedOptions, s: int, flags: int) -> bool:
    """A join subflow's handshake (RFC 8684 3.2): the SYN (we respond), the SYN/ACK
    (`subflow_finish_connect`: its truncated HMAC checked), the third ACK
    (`subflow_syn_recv_sock`: its HMAC checked), the fourth ACK (any segment after the
    SYN/ACK: fully established). A failure resets the subflow, never falls back.
    False drops the segment."""
    msk = sf.msk
    if flags & SYN and flags & ACK:  # we are the joiner: the SYN/ACK
        if not s & _MPJ_SYNACK:
            _join_failed(sf, "the SYN/ACK carried no MP_JOIN", Mib.MPJoinSynAckMissing)
            return True  # accept it so that the reset can be sent
        msk.counters[Mib.MPJoinSynAckRx] += 1
        if sf.engine.remote_port != msk.master.engine.remote_port:
            msk.counters[Mib.MPJoinPortSynAckRx] += 1  # (`subflow_use_different_dport`)
        if ro.backup:
            msk.counters[Mib.MPJoinSynAckBackupRx] += 1
        sf.remote_nonce, sf.remote_id, sf.remote_backup = ro.nonce, ro.join_id, ro.backup
        assert msk.remote_key is not None
        want = crypto.join_synack_hmac(msk.remote_key, msk.local_key, ro.nonce,
                                       sf.local_nonce, msk.version)
        if ro.thmac != want:
            _join_failed(sf, f"bad SYN/ACK HMAC 0x{ro.thmac:016x}, expected 0x{want:016x}",
                         Mib.MPJoinSynAckHMacFailure)
            msk.finding(Code.JOIN_BAD_HMAC, Severity.ERROR,
                        f"the peer's MP_JOIN SYN/ACK truncated HMAC is 0x{ro.thmac:016x}, "
                        f"expected 0x{want:016x} = HMAC(key peer || key us, R_B || R_A)"
                        "[0:8]: join refused, subflow reset", sf=sf, key=sf.key,
                        hint="the peer computed it with other keys or nonces (a different "
                             "connection, or a middlebox rewriting MP_JOIN)")
        return True
    if flags & SYN:  # we are the responder: the SYN (its token was checked)
        msk.counters[Mib.MPJoinSynRx] += 1
        if ro.backup:
            msk.counters[Mib.MPJoinSynBackupRx] += 1
        sf.remote_nonce, sf.remote_id, sf.remote_backup = ro.nonce, ro.join_id, ro.backup
        return True
    if sf.state is not S.JOINING:
        return True
    if sf.initiator:
        sf.set_state(S.ACTIVE)  # the responder's fourth ACK
        return True
    if not s & _MPJ_ACK:
        _join_failed(sf, "the third ACK carried no MP_JOIN", Mib.MPJoinAckMissing)
        return False
    want_hmac = crypto.join_ack_hmac(msk.remote_key or 0, msk.local_key, sf.remote_nonce,
                                     sf.local_nonce, msk.version)
    if ro.hmac != want_hmac:
        _join_failed(sf, "bad third-ACK HMAC", Mib.MPJoinAckHMacFailure)
        msk.finding(Code.JOIN_BAD_HMAC, Severity.ERROR,
                    f"the joiner's third-ACK HMAC is 0x{ro.hmac.hex()}, expected "
                    f"0x{want_hmac.hex()} = HMAC(key peer || key us, R_A || R_B)[0:20]: "
                    "join refused, subflow reset (MP_TCPRST reason 1)", sf=sf, key=sf.key,
                    hint="the peer computed it with other keys or nonces")
        return False
    others = sum(1 for o in msk.subflows if o is not sf and o.counts_against_limit
                 and o.state is not S.JOINING)
    if others >= msk.config.subflows_max:
        # `mptcp_finish_join` -> `mptcp_pm_allow_new_subflow`: over the limit, the new
        # subflow is reset (MP_TCPRST reason 3, as `subflow_syn_recv_sock` sends it)
        _join_failed(sf, f"over our subflow limit ({msk.config.subflows_max} additional)",
                     Mib.MPJoinRejected, wm.MPTCP_RST_EPROHIBIT)
        return False
    msk.counters[Mib.MPJoinAckRx] += 1
    if sf.engine.local_port != msk.master.engine.local_port:
        msk.counters[Mib.MPJoinPortAckRx] += 1  # (the host checked the port at the SYN)
    sf.set_state(S.ACTIVE)
    sf.engine.ack_now()  # the fourth ACK: the joiner may send data after it
    return True


def _join_failed(sf: Subflow, why: str, counter: Mib,
                 rst_reason: int = wm.MPTCP_RST_EMPTCP) -> None:
    """Refuse the join: the subflow is reset (MP_TCPRST `rst_reason`, 1 unless said)
    once the engine has finished with the segment at hand (never from inside its
    handling)."""
    sf.msk.counters[counter] += 1
    sf.fail_rst_reason = rst_reason
    sf.set_state(S.FAILED, why)


def mpc_synack_rx(msk: MptcpConnection, ro: mo.ReceivedOptions) -> None:
    """The client's SYN/ACK (`subflow_finish_connect`): MP_CAPABLE of our version
    with the server's key, else fall back (`MPCapableFallbackSYNACK`). Its C flag
    forbids joins to the server's initial address and port (`remote_deny_join_id0`);
    an MP_CAPABLE answer re-enables MPTCP active opens for good (`mptcp_active_enable`:
    a later blackhole starts from `blackhole_timeout` again)."""
    s = int(ro.suboptions)
    if s & _MPC_SYNACK and ro.version == msk.version:
        msk.counters[Mib.MPCapableSYNACKRX] += 1
        msk.set_remote_key(ro.sndr_key)
        if ro.csum_reqd:
            msk.csum_enabled = True
        if ro.deny_join_id0:
            msk.pm.deny_join_id0_received("SYN/ACK")
        if msk.pm.blackhole is not None:
            msk.pm.blackhole.enable()
        return
    msk.counters[Mib.MPCapableFallbackSYNACK] += 1
    msk.fall_back("the SYN/ACK carried no MP_CAPABLE" if not s & _MPTCPS_MPC
                  else f"the SYN/ACK answered MP_CAPABLE version {ro.version}")


def mpc_third_ack_rx(msk: MptcpConnection, ro: mo.ReceivedOptions) -> bool:
    """The server's first established-state segment (`subflow_syn_recv_sock`) must
    carry MP_CAPABLE with both keys (or, if that ACK was lost, MP_CAPABLE with data);
    otherwise fall back (RFC 8684 3.1; `MPCapableFallbackACK`). False: fell back."""
    if not ro.suboptions & _MPC_ACK:
        msk.counters[Mib.MPCapableFallbackACK] += 1
        msk.fall_back("the third ACK carried no MP_CAPABLE")
        return False
    if ro.version != msk.version:
        msk.counters[Mib.MPCapableFallbackACK] += 1
        msk.fall_back(f"the third ACK carried MP_CAPABLE version {ro.version}")
        return False
    if ro.rcvr_key != msk.local_key:
        msk.counters[Mib.MPCapableKeyMismatch] += 1
        msk.fall_back("the third ACK echoed a key that is not ours")
        return False
    msk.counters[Mib.MPCapableACKRX] += 1
    msk.set_remote_key(ro.sndr_key)
    if ro.csum_reqd:
        msk.csum_enabled = True
    # the server holds both keys now: CREATED and fully established at once (Linux
    # `subflow_syn_recv_sock` -> `mptcp_subflow_fully_established`), so the client may
    # join at once
    msk.set_fully_established()
    return True


_MPJ_SYNACK = int(mo.MptcpSuboption.MPJ_SYNACK)
_MPJ_ACK = int(mo.MptcpSuboption.MPJ_ACK)
_MPC_SYNACK = int(mo.MptcpSuboption.MPC_SYNACK)
_MPC_ACK = int(mo.MptcpSuboption.MPC_ACK)
_MPTCPS_MPC = int(mo.MptcpSuboption.MPC_SYN | mo.MptcpSuboption.MPC_SYNACK
                  | mo.MptcpSuboption.MPC_ACK)
