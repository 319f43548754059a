"""The data-level receive path: the peer's mappings, subflow bytes moved up to data
sequence numbers, checksums, data-level reassembly and DATA_FIN (RFC 8684 3.3).

Mirrors the kernel's `subflow.c` receive side (`get_mapping_status` ->
`MappingStatus`, `subflow_check_data_avail`, `validate_data_csum`) and the msk's
`__mptcp_move_skbs` / out-of-order queue in `protocol.c`.

Mappings are kept per subflow in relative subflow sequence numbers (first payload
byte = 1): a mapping may span segments, and may arrive out of order with the segment
carrying its first byte. The receive state itself (`ack_off`, `rcvbuf`, `ooo`,
`rcv_data_fin_off`, `peer_fin`) is the msk's, as in the kernel's `struct mptcp_sock`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from stack.diag import Code, Severity
from stack.mib import Mib
from stack.mptcp import crypto
from stack.mptcp import options as mo
from stack.mptcp.events import MptcpEventType
from stack.tcp.engine import DataReadable, PeerFinished
from stack.wire import mptcp as wm

if TYPE_CHECKING:
    from stack.mptcp.connection import MptcpConnection
    from stack.mptcp.subflow import Subflow

log = logging.getLogger(__name__)

M64 = (1 << 64) - 1
MP_FAIL_TIMEOUT = 120.0  # an MP_FAIL's answer is due within TCP_RTO_MAX, as in Linux
_CSUMREQD = int(mo.MptcpSuboption.CSUMREQD)


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


class MappingStatus(Enum):
    """What a received DSS mapping is (the kernel's `enum mapping_status`)."""
    OK = "ok"                        # a new mapping, recorded (MAPPING_OK)
    REPEATED = "repeated"            # one we have (the next segment of its chunk, or a
                                     # retransmission): nothing to do
    DATA_FIN = "data-fin"            # a DATA_FIN alone (MAPPING_DATA_FIN)
    INFINITE = "infinite"            # data-level length 0: the peer fell back (RFC 8684 3.7)
    INVALID = "invalid"              # overlaps the current mapping (MAPPING_INVALID)
    CSUM_MISMATCH = "csum-mismatch"  # a checksum where none was negotiated, or none
                                     # where one was (MAPPING_BAD_CSUM's cousin)


_OK, _REPEATED = MappingStatus.OK, MappingStatus.REPEATED  # bound once: per segment


def get_mapping_status(msk: MptcpConnection, sf: Subflow, ro: mo.ReceivedOptions, s: int,
                       payload_len: int) -> tuple[MappingStatus, int]:
    """Read the mapping of a DSS (or of an MP_CAPABLE with data, the implicit first
    one) against what `sf` knows, and record it if it is new. Returns the status and
    the mapping's data offset (-1 where the status needs none)."""
    # a DSS as the subflow's last one: the mapping repeated on the next segment of its
    # chunk (the per-segment case, no mapping work); MP_CAPABLE's never counts
    key = None if ro.mpc_map else (ro.data_seq, ro.subflow_seq, ro.data_len,
                                   s & _CSUMREQD, ro.data_fin, ro.dsn64)
    if key is not None and key == sf.rx_last_dss:
        return MappingStatus.REPEATED, -1
    if ro.mpc_map:
        ssn, dsn, dsn64 = 1, (msk.remote_idsn + 1) & M64, True
    else:
        ssn = sf.rx_next + ((ro.subflow_seq - sf.rx_next) & 0xFFFFFFFF) if ro.subflow_seq else 0
        if ssn and ssn - sf.rx_next >= 1 << 31:
            ssn -= 1 << 32
        dsn, dsn64 = ro.data_seq, ro.dsn64
    has_csum = bool(s & _CSUMREQD)
    if has_csum != msk.csum_enabled:
        return MappingStatus.CSUM_MISMATCH, -1
    off = msk.rx_off(dsn, dsn64)
    if ro.data_len == 0 and not ro.data_fin:
        return MappingStatus.INFINITE, off
    if ro.data_fin and (ssn == 0 or (ro.data_len == 1 and payload_len == 0)):
        return MappingStatus.DATA_FIN, off
    length = ro.data_len - (1 if ro.data_fin else 0)
    cur = sf.rx_maps.get(ssn)
    if cur is not None and cur.length == length and cur.data_off == off:
        sf.rx_last_dss = key
        return MappingStatus.REPEATED, off  # a mapping seen before (a retransmission)
    m = RxMap(ssn, length, off, ro.csum if has_csum else None, ro.data_fin,
              ro.data_len, (msk.remote_idsn + 1 + off) & M64)
    if not _add_rx_map(sf, m):
        return MappingStatus.INVALID, off
    sf.rx_last_dss = key
    return MappingStatus.OK, off


def mapping_received(msk: MptcpConnection, sf: Subflow, ro: mo.ReceivedOptions, s: int,
                     payload_len: int) -> bool:
    """Act on a received mapping's status (`subflow_check_data_avail`). False drops
    the segment (its subflow is being reset)."""
    if ro.mpc_map:
        msk.set_fully_established()  # MP_CAPABLE with data (RFC 8684 3.1)
    elif sf.rx_last_dss == (ro.data_seq, ro.subflow_seq, ro.data_len, s & _CSUMREQD,
                            ro.data_fin, ro.dsn64):
        return True  # the per-segment case: REPEATED, decided without a call
    status, off = get_mapping_status(msk, sf, ro, s, payload_len)
    if status is _OK or status is _REPEATED:
        return True
    if status is MappingStatus.DATA_FIN:
        rx_data_fin(msk, off)
        return True
    if status is MappingStatus.INFINITE:
        msk.counters[Mib.InfiniteMapRx] += 1
        if sf.mp_fail_deadline is not None or sf.send_mp_fail is not None \
                or msk.counters[Mib.MPFailTx]:  # (its MP_FAIL answer may have come first)
            why = "a DSS checksum failed: MP_FAIL sent, the peer answered with an infinite mapping"
        else:
            why = "the peer sent an infinite mapping"
            msk.finding(Code.FALLBACK, Severity.WARNING,
                        "the peer sent an infinite mapping (data-level length 0): it fell "
                        "back to TCP (RFC 8684 3.7)", sf=sf)
        msk.fall_back(why, infinite=True)
        return True
    if status is MappingStatus.CSUM_MISMATCH:
        # RFC 8684 3.3: a checksum where none was negotiated, or none where one was,
        # is a protocol error: reset the subflow
        msk.counters[Mib.DSSChecksumMismatch] += 1
        msk.reset_subflow(sf, wm.MPTCP_RST_EMPTCP, "DSS checksum presence mismatch")
        return False
    assert status is MappingStatus.INVALID, status
    msk.counters[Mib.DSSNotMatching] += 1
    msk.reset_subflow(sf, wm.MPTCP_RST_EMPTCP, "a mapping overlapping the current one")
    return False


def _add_rx_map(sf: Subflow, m: RxMap) -> bool:
    """Record a mapping. An identical repeat (GSO pieces, retransmissions) is fine; a
    different mapping for bytes a current one covers is invalid (the kernel's
    `DSSNotMatching`): False."""
    old = sf.rx_maps.get(m.ssn)
    if old is not None:
        return (old.length, old.data_off) == (m.length, m.data_off)
    cur = sf.rx_cur
    if cur is not None and cur.ssn < m.ssn < cur.ssn + cur.length:
        return False
    if m.ssn + max(m.length, 1) <= sf.rx_next:
        return True  # all of it already pulled: a stale retransmission
    sf.rx_maps[m.ssn] = m
    return True


def _rx_map_at(sf: Subflow, rel: int) -> RxMap | None:
    cur = sf.rx_cur
    if cur is not None and cur.ssn <= rel < cur.ssn + cur.length:
        return cur
    m = sf.rx_maps.get(rel)
    if m is None:
        for cand in sf.rx_maps.values():
            if cand.ssn <= rel < cand.ssn + cand.length:
                m = cand
                break
    if m is not None:
        sf.rx_cur = m
    return m


def _forget_rx_map(sf: Subflow, m: RxMap) -> None:
    sf.rx_maps.pop(m.ssn, None)
    if sf.rx_cur is m:
        sf.rx_cur = None


# ---- moving subflow bytes up ---------------------------------------------------------------
def pull(msk: MptcpConnection, sf: Subflow, data: bytes | bytearray | memoryview) -> None:
    """Map in-order subflow bytes to data offsets through the peer's mappings
    (checksummed mappings are verified whole before delivery)."""
    rel = sf.rx_next
    n = len(data)
    m = _rx_map_at(sf, rel) if not msk.fallback else None
    if m is not None and m.csum is None and rel + n <= m.ssn + m.length:
        # the usual case, all of it inside one mapping: `data` itself moves up
        deliver(msk, m.data_off + (rel - m.ssn), data)
        rel += n
        sf.rx_next = rel
        if rel >= m.ssn + m.length:
            _map_done(msk, sf, m)
        return
    view = memoryview(data)
    while view:
        if msk.fallback:
            deliver(msk, msk.ack_off, view)
            rel += len(view)
            break
        m = _rx_map_at(sf, rel)
        if m is None:
            if _data_without_mapping(msk, sf):
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
                if crypto.dss_checksum_ok(m.wire_dsn, m.ssn, m.wire_len, m.buf, m.csum):
                    sf.valid_csum_seen = True
                    deliver(msk, m.data_off, m.buf)
                elif _bad_checksum(msk, sf, m):
                    deliver(msk, m.data_off, m.buf)
                else:
                    return
        else:
            deliver(msk, m.data_off + (rel - m.ssn), chunk)
        rel += n
        view = view[n:]
        if rel >= m.ssn + m.length:
            _map_done(msk, sf, m)
    sf.rx_next = rel


def _map_done(msk: MptcpConnection, sf: Subflow, m: RxMap) -> None:
    """Every byte of mapping `m` has moved up: its DATA_FIN (if any) counts now."""
    if m.data_fin:
        rx_data_fin(msk, m.data_off + m.length)
    _forget_rx_map(sf, m)


def _data_without_mapping(msk: MptcpConnection, sf: Subflow) -> bool:
    """Subflow data no mapping covers (options stripped by a middlebox, RFC 8684 3.7):
    on the only subflow, fall back to TCP (Linux `DSSFallback` /
    `MPCapableDataFallback`), one-sided: the peer still gets our options and may not
    know, so our data ACKs go on (`ack_after_fallback`); else reset the subflow. True
    if we fell back."""
    if len(msk.subflows) == 1 and msk.counters[Mib.MPFailTx]:
        # after our MP_FAIL: the peer fell back (its infinite mapping lost, or behind
        # data it had mapped before), nothing stripped: Linux takes it so (DSSFallback)
        msk.counters[Mib.DSSFallback] += 1
        msk.fall_back("a DSS checksum failed: MP_FAIL sent, then the peer's data came "
                      "without a mapping (it fell back)", infinite=True)
        return True
    if len(msk.subflows) == 1:
        msk.counters[Mib.MPCapableDataFallback if not msk.fully_established
                     else Mib.DSSFallback] += 1
        msk.finding(Code.DSS_STRIPPED, Severity.WARNING,
                    f"data arrived without a DSS mapping at data offset {msk.ack_off}: the "
                    "peer's MPTCP options are stripped on their way to us; we fell back to "
                    "TCP, the peer (whose options we cannot see) may not have: our data ACKs "
                    "go on so that it does not send the same bytes again", sf=sf,
                    hint="a middlebox on this path removes TCP option 30 (look for NOPs "
                         "where the DSS was)")
        msk.fall_back("data arrived without a DSS mapping (the peer's options are stripped; "
                      "one-sided)", infinite=True, one_sided=True)
        return True
    msk.counters[Mib.DSSNoMatchTCP] += 1
    msk.finding(Code.DSS_STRIPPED, Severity.WARNING,
                "data arrived without a DSS mapping on one of several subflows: that "
                "subflow is reset (MP_TCPRST reason 6, middlebox)", sf=sf, key=sf.key)
    msk.reset_subflow(sf, wm.MPTCP_RST_EMIDDLEBOX, "data without a mapping")
    return False


def _bad_checksum(msk: MptcpConnection, sf: Subflow, m: RxMap) -> bool:
    """RFC 8684 3.7: a bad DSS checksum, as Linux `subflow_check_data_avail` takes it.
    On the first mapping of the first subflow (no good checksum seen yet: a peer that
    computes them wrong, or a middlebox from the start) we fall back without MP_FAIL.
    Later, MP_FAIL with the mapping's DSN goes out; on the only subflow the bytes are
    delivered (a middlebox rewrote them; TCP semantics win) and we wait for the peer's
    answer, its infinite mapping, to fall back (or reset the subflow if none comes in
    `MP_FAIL_TIMEOUT`); with several subflows the subflow is reset (reason 6). True
    if the bytes are to be delivered."""
    msk.counters[Mib.DataCsumErr] += 1
    where = f"the DSS checksum of the mapping at DSN 0x{m.wire_dsn:x} ({m.length} bytes) failed"
    if not sf.join and not sf.valid_csum_seen and len(msk.subflows) == 1:
        msk.finding(Code.DSS_CHECKSUM_FAILED, Severity.WARNING,
                    where + ", the first one: fell back to TCP without MP_FAIL (as Linux)",
                    sf=sf, hint="the peer computes DSS checksums wrong, or a middlebox "
                                "changes the payload on this path")
        msk.fall_back("the first mapping's DSS checksum failed", infinite=True, one_sided=True)
        return True
    msk.event(MptcpEventType.MP_FAIL, f"bad DSS checksum in the mapping at DSN 0x{m.wire_dsn:x}")
    sf.send_mp_fail = m.wire_dsn
    sf.engine.ack_now()
    if len(msk.subflows) == 1:
        sf.mp_fail_deadline = msk.now + MP_FAIL_TIMEOUT
        msk.finding(Code.DSS_CHECKSUM_FAILED, Severity.WARNING,
                    where + ": MP_FAIL sent; the peer is to answer with an infinite "
                    "mapping (fallback to TCP)", sf=sf,
                    hint="a middlebox changes the payload on this path; the changed bytes "
                         "are delivered, as TCP would")
        return True
    msk.finding(Code.DSS_CHECKSUM_FAILED, Severity.WARNING,
                where + ": MP_FAIL sent and the subflow reset (several subflows: no fallback)",
                sf=sf, key=sf.key)
    msk.reset_subflow(sf, wm.MPTCP_RST_EMIDDLEBOX, "bad DSS checksum")
    return False


# ---- data-level reassembly -----------------------------------------------------------------
def deliver(msk: MptcpConnection, off: int, data: bytes | bytearray | memoryview) -> None:
    """Data-level reassembly: in order -> the receive buffer; ahead -> held."""
    n = len(data)
    end = off + n
    if end <= msk.ack_off:
        msk.counters[Mib.DuplicateData] += 1
        return
    if end > msk.ack_off + msk.config.rcv_buf:
        # beyond any window we can have advertised: a peer (or a forger) mapping data
        # far ahead would hold our buffer with it (Linux `mptcp_data_queue_ofo`)
        msk.counters[Mib.NoDSSInWindow] += 1
        return
    if off < msk.ack_off:
        data = memoryview(data)[msk.ack_off - off:]
        off = msk.ack_off
    if off == msk.ack_off:
        msk.rcvbuf.append(data)  # kept as it is: nobody changes it any more
        msk.ack_off = end
        while (more := msk.ooo.pop_chunks(msk.ack_off)) is not None:
            for c in more:
                msk.rcvbuf.append(c)
                msk.ack_off += len(c)
        if not msk.readable_pending:
            msk.readable_pending = True
            msk.events.append(DataReadable())
        check_data_fin(msk)
    else:
        msk.counters[Mib.OFOQueue] += 1
        if not msk.ooo.add(off, data):
            msk.counters[Mib.OFODrop] += 1


def rx_data_fin(msk: MptcpConnection, off: int) -> None:
    if msk.rcv_data_fin_off is None:
        msk.rcv_data_fin_off = off
    check_data_fin(msk)


def check_data_fin(msk: MptcpConnection) -> None:
    """The peer's DATA_FIN counts once every byte before it is in: the data ACK
    covers it from now on (`wire_data_ack`), and the data-level close may finish."""
    if (msk.rcv_data_fin_off is not None and not msk.peer_fin
            and msk.ack_off == msk.rcv_data_fin_off):
        msk.peer_fin = True
        msk.events.append(PeerFinished())
        for sf in msk.subflows:
            sf.engine.ack_now()
        msk.maybe_close_subflows()
