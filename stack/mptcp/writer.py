"""Which MPTCP suboptions a segment carries: the kernel's option writer.

Mirrors `net/mptcp/options.c`: `mptcp_syn_options`, `mptcp_synack_options` and
`mptcp_established_options`, the last fanning out to one helper per suboption, each
charged against the `remaining` option bytes; `write_options` serialises the decision
(`mptcp_write_options`). Decisions read the subflow context (`Subflow`) and its
connection (`MptcpConnection`) and change nothing but the bookkeeping the kernel also
does while writing (e.g. marking an MP_FAIL as sent).

Which suboptions may share a segment (as in the kernel): MP_CAPABLE or MP_JOIN on the
handshake segments; otherwise one DSS, plus ADD_ADDR / REMOVE_ADDR / MP_PRIO / MP_FAIL
when room is left; MP_FASTCLOSE and MP_TCPRST only on RST segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stack.mptcp import options as mo
from stack.wire.tcp import Nop, TcpOption

if TYPE_CHECKING:
    from stack.mptcp.subflow import Subflow

# A full DSS as we send it: data ACK 64 + mapping with a 64-bit DSN (+ checksum), the
# space a data segment reserves (Linux reserves the same 28 bytes, "a full DSS").
DSS_FULL = mo.TCPOLEN_MPTCP_DSS_BASE + 8 + 14
DSS_FULL_CSUM = DSS_FULL + mo.TCPOLEN_MPTCP_DSS_CHECKSUM
_NOP = Nop()  # options are frozen values: one padding NOP serves every segment


def aligned(n: int) -> int:
    return (n + 3) & ~3


@dataclass(slots=True)
class OutOptions:
    """The kernel's `struct mptcp_out_options`: what the writer decided."""
    mpc: mo.MpCapable | None = None
    mpj: mo.MpJoinSyn | mo.MpJoinSynAck | mo.MpJoinAck | None = None
    dss: mo.Dss | None = None
    add_addr: mo.AddAddr | None = None
    rm_addr: mo.RemoveAddr | None = None
    prio: mo.MpPrio | None = None
    fail: mo.MpFail | None = None
    fastclose: mo.MpFastclose | None = None
    rst: mo.MpTcpRst | None = None

    def suboptions(self) -> list[mo.MptcpOption]:
        return [o for o in (self.mpc, self.mpj, self.dss, self.add_addr, self.rm_addr,
                            self.prio, self.fail, self.fastclose, self.rst) if o is not None]


def write_options(opts: OutOptions) -> list[TcpOption]:
    """`mptcp_write_options`: the decided suboptions as TCP options, each padded with
    NOPs to a 4-byte boundary as the kernel pads them."""
    out: list[TcpOption] = []
    for o in opts.suboptions():
        raw = mo.to_tcp_option(o)
        out.append(raw)
        pad = aligned(len(raw.data) + 2) - (len(raw.data) + 2)
        if pad:
            out += [_NOP] * pad
    return out


# --- handshake --------------------------------------------------------------------------
def syn_options(sf: Subflow, remaining: int) -> OutOptions | None:
    """`mptcp_syn_options`: MP_CAPABLE on the first subflow's SYN. v1: 4 bytes, no key
    (RFC 8684 3.1); v0 (RFC 6824): 12 bytes with our key, as the out-of-tree kernel."""
    msk = sf.msk
    if sf.join:
        # MP_JOIN on the SYN: the peer's token, our nonce (RFC 8684 3.2)
        if remaining < mo.TCPOLEN_MPTCP_MPJ_SYN or msk.remote_token is None:
            return None
        msk.counters["MPJoinSynTx"] += 1
        return OutOptions(mpj=mo.MpJoinSyn(sf.backup, sf.local_id, msk.join_token(),
                                           sf.local_nonce))
    if msk.fallback or remaining < mo.TCPOLEN_MPTCP_MPC_SYN:
        return None
    msk.counters["MPCapableSYNTX"] += 1
    if msk.version == 0:
        if remaining < mo.TCPOLEN_MPTCP_MPC_SYNACK:
            return None
        return OutOptions(mpc=mo.MpCapable(0, msk.mpc_flags(), sender_key=msk.local_key))
    return OutOptions(mpc=mo.MpCapable(1, msk.mpc_flags()))


def synack_options(sf: Subflow, remaining: int) -> OutOptions | None:
    """`mptcp_synack_options`: MP_CAPABLE with our (the server's) key, 12 bytes."""
    msk = sf.msk
    if sf.join:
        # the truncated HMAC (leftmost 64 bits) proves we hold the keys
        if remaining < mo.TCPOLEN_MPTCP_MPJ_SYNACK or msk.remote_key is None:
            return None
        thmac = msk.join_synack_thmac(sf)
        return OutOptions(mpj=mo.MpJoinSynAck(sf.backup, sf.local_id, thmac, sf.local_nonce))
    if msk.fallback or remaining < mo.TCPOLEN_MPTCP_MPC_SYNACK:
        return None
    return OutOptions(mpc=mo.MpCapable(msk.version, msk.mpc_flags(), sender_key=msk.local_key))


# --- established -------------------------------------------------------------------------
def established_options(sf: Subflow, seq: int, payload_len: int, fin: bool,
                        remaining: int) -> OutOptions | None:
    """`mptcp_established_options`: MP_CAPABLE on the client's third ACK and first data
    (`mptcp_established_options_mp`), else a DSS (`..._dss`); then, in the room left,
    an ADD_ADDR or else a REMOVE_ADDR, an MP_PRIO and an MP_FAIL, each if due."""
    msk = sf.msk
    if msk.fallback:
        # plain TCP now, but an MP_FAIL or the one infinite mapping may still be due
        opts = infinite_mapping(sf, seq, payload_len, remaining) or OutOptions()
        used = sum(aligned(mo.option_len(o)) for o in opts.suboptions())
        established_options_mp_fail(sf, remaining - used, opts)
        return opts if opts.suboptions() else None
    opts = OutOptions()
    if established_options_mpj(sf, seq, payload_len, remaining, opts):
        return opts
    if not established_options_mp(sf, seq, payload_len, remaining, opts):
        established_options_dss(sf, seq, payload_len, remaining, opts,
                                data_fin_ok=payload_len > 0 or not _pm_signal_due(sf))
    used = sum(aligned(mo.option_len(o)) for o in opts.suboptions())
    added = established_options_add_addr(sf, payload_len, remaining - used, opts)
    if not added:
        added = established_options_rm_addr(sf, remaining - used, opts)
    used += added
    used += established_options_mp_prio(sf, remaining - used, opts)
    established_options_mp_fail(sf, remaining - used, opts)
    return opts


def _add_addr_due(sf: Subflow) -> bool:
    """An ADD_ADDR of ours (once fully established) or the echo of the peer's waits."""
    msk = sf.msk
    return bool(msk.echo_queue or (msk.add_addr_queue and msk.fully_established))


def _pm_signal_due(sf: Subflow) -> bool:
    """A path-manager suboption waits for a pure ACK: ADD_ADDR (or its echo),
    REMOVE_ADDR, MP_PRIO."""
    return _add_addr_due(sf) or bool(sf.msk.rm_addr_queue) or sf.send_mp_prio


def established_options_add_addr(sf: Subflow, payload_len: int, remaining: int,
                                 opts: OutOptions) -> int:
    """`mptcp_established_options_add_addr`: an ADD_ADDR (or the echo of the peer's)
    on a pure ACK when it fits beside the DSS; the option bytes it took."""
    if payload_len or opts.mpc is not None:
        return 0
    if not _add_addr_due(sf):
        return 0
    msk = sf.msk
    need = mo.TCPOLEN_MPTCP_ADD_ADDR_BASE if msk.echo_queue else mo.TCPOLEN_MPTCP_ADD_ADDR
    if remaining < need:
        return 0
    a = msk.add_addr_to_send()
    if a is None:
        return 0
    opts.add_addr = a
    return aligned(mo.option_len(a))


def established_options_rm_addr(sf: Subflow, remaining: int, opts: OutOptions) -> int:
    """`mptcp_established_options_rm_addr`: REMOVE_ADDR with as many of the queued
    address ids as fit (up to the kernel's MPTCP_RM_IDS_MAX, 8); the bytes it took."""
    msk = sf.msk
    if not msk.rm_addr_queue or opts.mpc is not None:
        return 0
    fit = min(len(msk.rm_addr_queue), mo.MPTCP_RM_IDS_MAX)
    while fit and aligned(mo.TCPOLEN_MPTCP_RM_ADDR_BASE + fit) > remaining:
        fit -= 1
    if not fit:
        return 0
    ids, msk.rm_addr_queue = msk.rm_addr_queue[:fit], msk.rm_addr_queue[fit:]
    opts.rm_addr = mo.RemoveAddr(tuple(ids))
    msk.counters["RmAddrTx"] += 1
    return aligned(mo.option_len(opts.rm_addr))


def established_options_mp_prio(sf: Subflow, remaining: int, opts: OutOptions) -> int:
    """`mptcp_established_options_mp_prio`: MP_PRIO with our backup wish for this
    subflow, once after it changed (RFC 8684 3.3.8)."""
    if not sf.send_mp_prio or opts.mpc is not None or remaining < aligned(mo.TCPOLEN_MPTCP_PRIO):
        return 0
    sf.send_mp_prio = False
    opts.prio = mo.MpPrio(sf.backup)
    sf.msk.counters["MPPrioTx"] += 1
    return aligned(mo.TCPOLEN_MPTCP_PRIO)


def established_options_mpj(sf: Subflow, seq: int, payload_len: int, remaining: int,
                            opts: OutOptions) -> bool:
    """The joiner's MP_JOIN ACK (160-bit HMAC), on its third ACK and repeated until the
    responder's fourth ACK shows it arrived (Linux: until `fully_established`)."""
    if not sf.join or sf.fully_established or not sf.initiator:
        return False
    if remaining < mo.TCPOLEN_MPTCP_MPJ_ACK:
        return False
    opts.mpj = mo.MpJoinAck(sf.msk.join_ack_hmac(sf))
    return True


def established_options_mp(sf: Subflow, seq: int, payload_len: int, remaining: int,
                           opts: OutOptions) -> bool:
    """MP_CAPABLE with both keys: only the client, only until the connection is fully
    established, only on segments starting at the first byte (the third ACK, the pure
    ACKs before any data, and the first data segment: the kernel's `snd_isn` test).
    With data: + the data-level length of the first mapping (+ its checksum)."""
    msk = sf.msk
    if sf.join or not msk.client or msk.fully_established or seq != 1:
        return False
    if msk.version == 0 and payload_len:
        return False  # RFC 6824: data goes with a DSS mapping; keys only on the ACK
    if payload_len:
        m = sf.tx_map_at(seq)
        if m is None:
            return False
        size = mo.TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM if msk.csum_enabled \
            else mo.TCPOLEN_MPTCP_MPC_ACK_DATA
        if remaining < size:
            return False
        opts.mpc = mo.MpCapable(1, msk.mpc_flags(), msk.local_key, msk.remote_key, m.length,
                                m.csum if msk.csum_enabled else None)
        return True
    if remaining < mo.TCPOLEN_MPTCP_MPC_ACK:
        return False
    opts.mpc = mo.MpCapable(1, msk.mpc_flags(), msk.local_key, msk.remote_key)
    return True


def established_options_dss(sf: Subflow, seq: int, payload_len: int, remaining: int,
                            opts: OutOptions, data_fin_ok: bool = True) -> None:
    """`mptcp_established_options_dss`: the data ACK (64 bits, as Linux once it has
    seen a 64-bit DSN; we always send 64) and, on a data segment, the mapping that
    covers it (the one it was first sent with: retransmissions reuse it). Without
    payload, a pending DATA_FIN is signalled as a one-byte mapping with ssn 0, unless
    a path-manager signal needs the room (`data_fin_ok` false): then the DATA_FIN
    goes on another pure ACK right after."""
    msk = sf.msk
    csum = msk.csum_enabled
    dsn: int | None = None
    ssn = length = 0
    checksum: int | None = None
    data_fin = False
    if payload_len:
        m = sf.tx_map_at(seq)
        if m is not None:
            dsn, ssn, length = msk.wire_dsn(m.data_off), m.ssn, m.length
            checksum = m.csum if csum else None
    elif msk.data_fin_to_signal() and not data_fin_ok:
        eng = sf.engine
        if eng is not None:
            eng.send_pure_ack()
    elif msk.data_fin_to_signal():
        dsn, ssn, length, data_fin = msk.wire_dsn(msk.write_off), 0, 1, True
        msk.data_fin_on_wire = True
        if csum:
            checksum = msk.data_fin_csum()
    size = mo.TCPOLEN_MPTCP_DSS_BASE + 8
    if dsn is not None:
        size += 14 + (2 if checksum is not None else 0)
    if remaining < size:
        if dsn is None or remaining < mo.TCPOLEN_MPTCP_DSS_BASE + 8:
            return
        # no room for the mapping: the data ACK alone (the kernel drops the map too)
        dsn, checksum, data_fin = None, None, False
    ack = msk.wire_data_ack() if msk.remote_key is not None else None
    opts.dss = mo.Dss(data_ack=ack, data_ack64=ack is not None, dsn=dsn, dsn64=dsn is not None,
                      ssn=ssn & 0xFFFFFFFF, data_len=length, checksum=checksum,
                      data_fin=data_fin)


def infinite_mapping(sf: Subflow, seq: int, payload_len: int,
                     remaining: int) -> OutOptions | None:
    """After an MP_FAIL, one DSS with an infinite mapping (data-level length 0) on the
    next data segment tells the peer where plain TCP begins (RFC 8684 3.7; Linux
    `mptcp_update_infinite_map`), then no more options. With one subflow that carried
    everything from its first byte, subflow byte `seq` is data offset seq - 1."""
    if not sf.send_infinite_map or not payload_len or remaining < DSS_FULL:
        return None
    sf.send_infinite_map = False
    msk = sf.msk
    msk.counters["InfiniteMapTx"] += 1
    return OutOptions(dss=mo.Dss(data_ack=msk.wire_data_ack(), data_ack64=True,
                                 dsn=msk.wire_dsn(seq - 1), dsn64=True, ssn=seq & 0xFFFFFFFF,
                                 data_len=0,
                                 checksum=0 if msk.csum_enabled else None))


def established_options_mp_fail(sf: Subflow, remaining: int, opts: OutOptions) -> None:
    """`mptcp_established_options_mp_fail`: MP_FAIL with the DSN of the failed mapping,
    once (RFC 8684 3.7)."""
    if sf.send_mp_fail is not None and remaining >= mo.TCPOLEN_MPTCP_FAIL:
        opts.fail = mo.MpFail(sf.send_mp_fail)
        sf.send_mp_fail = None
        sf.msk.counters["MPFailTx"] += 1


def rst_options(sf: Subflow, remaining: int) -> OutOptions | None:
    """`mptcp_established_options_rst` / `_fastclose`: MP_FASTCLOSE (the peer's key)
    and MP_TCPRST (reason) on an RST we send."""
    msk = sf.msk
    if msk.fallback:
        return None
    opts = OutOptions()
    if msk.fastclosing and msk.remote_key is not None and remaining >= mo.TCPOLEN_MPTCP_FASTCLOSE:
        opts.fastclose = mo.MpFastclose(msk.remote_key)
        remaining -= mo.TCPOLEN_MPTCP_FASTCLOSE
        msk.counters["MPFastcloseTx"] += 1
    if remaining >= mo.TCPOLEN_MPTCP_RST:
        opts.rst = mo.MpTcpRst(sf.reset_reason, 0)
        msk.counters["MPRstTx"] += 1
    return opts
