"""The MPTCP subflow context: what one TCP connection of an MPTCP connection knows
beyond TCP (Linux `struct mptcp_subflow_context`), and the ULP hooks through which the
TCP engine asks it for options and shows it what arrives.

Mappings are kept per subflow in relative subflow sequence numbers (first payload byte
= 1, RFC 8684 3.3.1): `tx_maps` for what we sent (a retransmission reuses the mapping
its bytes were first sent with, as the kernel's per-skb mapping does), `rx_maps` for
what the peer announced (a mapping may span segments, and may arrive out of order with
the segment carrying its first byte).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stack.mptcp import options as mo
from stack.tcp.engine import TcpEngine
from stack.wire import mptcp as wm
from stack.wire.tcp import TcpHeader, TcpOption

if TYPE_CHECKING:
    from stack.mptcp.connection import MptcpConnection

NO_LIMIT = 1 << 30


@dataclass(slots=True)
class TxMap:
    """A mapping we sent: subflow bytes [ssn, ssn+length) carry data [data_off, +length)."""
    ssn: int
    length: int
    data_off: int
    csum: int = 0  # the DSS checksum over the whole mapping (when checksums are on)


@dataclass(slots=True)
class RxMap:
    """A mapping the peer announced. `length` counts data bytes only (a DATA_FIN in the
    mapping is kept apart in `data_fin`); with checksums, `buf` gathers the bytes
    until the mapping is complete and can be verified."""
    ssn: int
    length: int
    data_off: int
    csum: int | None
    data_fin: bool
    wire_len: int  # data-level length as sent (incl. the DATA_FIN), for the checksum
    wire_dsn: int
    buf: bytearray | None = None


class Subflow:
    """One subflow of an MPTCP connection; the TCP engine's `Ulp`."""

    def __init__(self, msk: MptcpConnection, *, local_id: int = 0, remote_id: int = 0,
                 backup: bool = False, join: bool = False, local_nonce: int = 0,
                 initiator: bool = True) -> None:
        self.msk = msk
        self.engine: TcpEngine | None = None
        self.local_id = local_id
        self.remote_id = remote_id
        self.backup = backup          # we asked the peer to use it only as a backup
        self.remote_backup = False    # the peer asked us (its MP_JOIN B flag or MP_PRIO)
        self.send_mp_prio = False     # our `backup` changed: MP_PRIO on the next pure ACK
        self.closing: str | None = None  # removed (why): no new data, FIN or RST under way
        # MP_JOIN (RFC 8684 3.2): a subflow added to an established connection
        self.join = join
        self.initiator = initiator       # we sent this subflow's SYN
        self.local_nonce = local_nonce   # R_A (joiner) or R_B (responder), 32 bits
        self.remote_nonce = 0
        self.fully_established = not join  # a join carries data only after the 4th ACK
        self.join_failed: str | None = None  # why the join was refused (for traces)
        self.stale = False  # repeated RTOs: not scheduled, its data reinjected
        self.reinjected = False  # its un-data-acked data went to the reinject queue
        self._tx_starts: list[int] = []
        self._tx_maps: list[TxMap] = []
        self.tx_next = 1              # relative ssn of the next byte handed to the engine
        self.rx_maps: dict[int, RxMap] = {}
        self.rx_cur: RxMap | None = None
        self.rx_last_dss: tuple[int, int, int, int, bool, bool] | None = None  # msk._rx_dss
        self.rx_next = 1              # relative ssn of the next in-order byte we pull
        self.send_mp_fail: int | None = None  # DSN to report in an MP_FAIL, once
        self.send_infinite_map = False  # after MP_FAIL: one infinite mapping, then TCP
        self.reset_reason = 0         # MP_TCPRST reason on an RST we send
        self.reset_why: str | None = None  # the MP_TCPRST reason on an RST we received
        self.resetting = False        # the engine is about to send an RST
        # established_options' memo: the last data segment's (mapping, state), its
        # options, and its DSS when that was all they held
        self._memo: tuple[object, object, list[TcpOption], wm.Dss | None] = (None, None, [],
                                                                              None)

    @property
    def is_backup(self) -> bool:
        """Backup in either direction's view (Linux `subflow->backup ||
        subflow->request_bkup`): scheduled only when no other subflow works."""
        return self.backup or self.remote_backup

    # ---- the Ulp hooks (stack.tcp.engine.Ulp) ------------------------------------------
    def syn_options(self, remaining: int) -> list[TcpOption]:
        o = mo.syn_options(self, remaining)
        return mo.write_options(o) if o else []

    def synack_options(self, remaining: int) -> list[TcpOption]:
        o = mo.synack_options(self, remaining)
        return mo.write_options(o) if o else []

    def established_options(self, seq: int, payload_len: int, fin: bool,
                            remaining: int) -> list[TcpOption]:
        msk = self.msk
        memo_key: tuple[object, ...] | None = None
        if (payload_len and not self.resetting and not msk.fallback
                and self.send_mp_fail is None and not self.send_mp_prio
                and not msk.rm_addr_queue
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
                    dss = wm.Dss(memo_dss.data_ack, memo_dss.data_ack64, msk.wire_dsn(m.data_off), True,
                                 m.ssn & 0xFFFFFFFF, m.length,
                                 m.csum if memo_dss.checksum is not None else None)
                    opts = mo.write_options(mo.OutOptions(dss=dss))
                    self._memo = (m, state, opts, dss)
                    return opts
            memo_key = (m, state)
        if self.resetting:
            o = mo.rst_options(self, remaining)
        else:
            o = mo.established_options(self, seq, payload_len, fin, remaining)
        opts = mo.write_options(o) if o else []
        if memo_key is not None:
            only = o.dss if o is not None and o.suboptions() == [o.dss] else None
            plain = only is not None and only.dsn is not None and not only.data_fin
            self._memo = (memo_key[0], memo_key[1], opts, only if plain else None)
        return opts

    def on_options(self, hdr: TcpHeader, payload_len: int) -> bool:
        return self.msk.rx_options(self, hdr, payload_len)

    def option_reserve(self) -> int:
        if self.msk.fallback:
            return 0
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

    def prune_tx_maps(self, acked_rel: int) -> None:
        """Forget mappings the subflow has delivered (TCP-acked below `acked_rel`)."""
        n = 0
        for m in self._tx_maps:
            if m.ssn + m.length > acked_rel:
                break
            n += 1
        if n:
            del self._tx_maps[:n]
            del self._tx_starts[:n]

    # ---- receive-side mappings ------------------------------------------------------
    def add_rx_map(self, m: RxMap) -> bool:
        """Record a mapping. An identical repeat (GSO pieces, retransmissions) is fine;
        a different mapping for bytes a current one covers is invalid (the kernel's
        `DSSNoMatch`): False."""
        old = self.rx_maps.get(m.ssn)
        if old is not None:
            return (old.length, old.data_off) == (m.length, m.data_off)
        cur = self.rx_cur
        if cur is not None and cur.ssn < m.ssn < cur.ssn + cur.length:
            return False
        if m.ssn + max(m.length, 1) <= self.rx_next:
            return True  # all of it already pulled: a stale retransmission
        self.rx_maps[m.ssn] = m
        return True

    def rx_map_at(self, rel: int) -> RxMap | None:
        cur = self.rx_cur
        if cur is not None and cur.ssn <= rel < cur.ssn + cur.length:
            return cur
        m = self.rx_maps.get(rel)
        if m is None:
            for cand in self.rx_maps.values():
                if cand.ssn <= rel < cand.ssn + cand.length:
                    m = cand
                    break
        if m is not None:
            self.rx_cur = m
        return m

    def forget_rx_map(self, m: RxMap) -> None:
        self.rx_maps.pop(m.ssn, None)
        if self.rx_cur is m:
            self.rx_cur = None

    @property
    def tx_maps(self) -> list[TxMap]:
        return self._tx_maps
