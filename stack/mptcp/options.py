"""What MPTCP options mean to a connection: the kernel's `net/mptcp/options.c`.

- Receiving: `parse_received` reads a segment's MPTCP options into a
  `ReceivedOptions` (`struct mptcp_options_received`, `mptcp_get_options` ->
  `mptcp_parse_option`) with a `suboptions` bitmask and a reason for every option it
  ignored; `incoming_options` hands each to the part of the connection it is for
  (`mptcp_incoming_options`): handshakes to `subflow`, signals to the path manager,
  the data ACK to the send side, mappings to the receive path (`recv`).
- Sending: `syn_options`, `synack_options` and `established_options` decide which
  suboptions a segment carries within the remaining option space
  (`mptcp_syn_options`, `mptcp_synack_options`, `mptcp_established_options`, the last
  fanning out to one helper per suboption, each charged against `remaining`), and
  `write_options` serialises the decision (`mptcp_write_options`). The writer changes
  nothing: it returns an `OutOptions`; the connection's `options_written` takes the
  queue entries it used and clears the one-shot flags it served.

Which suboptions may share a segment (as in the kernel): MP_CAPABLE or MP_JOIN on the
handshake segments; otherwise one DSS, plus REMOVE_ADDR / MP_PRIO / MP_FAIL when room is
left; an ADD_ADDR (or its echo) alone on a pure ACK (Linux 6.18: "add-addr: always drop
other suboptions"); MP_FASTCLOSE and MP_TCPRST only on RST segments.

The byte formats are `stack.wire.mptcp`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntFlag
from typing import TYPE_CHECKING

from stack.diag import Code, Severity
from stack.mib import Mib
from stack.mptcp import crypto
from stack.tcp.seq import Seq
from stack.wire.errors import MalformedPacket
from stack.wire.mptcp import (
    _DSS_LAYOUTS,
    _U16,
    MPC_FLAG_A,
    MPC_FLAG_B,
    MPC_FLAG_C,
    MPC_FLAG_H,
    MPTCP_CAP_FLAG_MASK,
    MPTCP_CAP_FLAG_MASK_V0,
    MPTCP_DSS_ACK64,
    MPTCP_DSS_DATA_FIN,
    MPTCP_DSS_DSN64,
    MPTCP_DSS_FLAG_MASK,
    MPTCP_DSS_HAS_ACK,
    MPTCP_DSS_HAS_MAP,
    MPTCP_RM_IDS_MAX,
    MPTCPOPT_DSS,
    TCPOLEN_MPTCP_DSS_BASE,
    TCPOLEN_MPTCP_DSS_CHECKSUM,
    TCPOLEN_MPTCP_FAIL,
    TCPOLEN_MPTCP_FASTCLOSE,
    TCPOLEN_MPTCP_MPC_ACK,
    TCPOLEN_MPTCP_MPC_ACK_DATA,
    TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM,
    TCPOLEN_MPTCP_MPC_SYN,
    TCPOLEN_MPTCP_MPC_SYNACK,
    TCPOLEN_MPTCP_MPJ_ACK,
    TCPOLEN_MPTCP_MPJ_SYN,
    TCPOLEN_MPTCP_MPJ_SYNACK,
    TCPOLEN_MPTCP_PRIO,
    TCPOLEN_MPTCP_RM_ADDR_BASE,
    TCPOLEN_MPTCP_RST,
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MptcpOption,
    MpTcpRst,
    RemoveAddr,
    describe,
    option_len,
    parse_body,
    to_tcp_option,
)
from stack.wire.tcp import ACK, OPT_MPTCP, RST, SYN, Nop, TcpHeader, TcpOption, UnknownOption

if TYPE_CHECKING:
    from stack.mptcp.connection import MptcpConnection
    from stack.mptcp.subflow import Subflow


# --- received options (struct mptcp_options_received) ---------------------------------
class MptcpSuboption(IntFlag):
    """The kernel's OPTION_MPTCP_* bits (net/mptcp/protocol.h), same values."""

    MPC_SYN = 1 << 0
    MPC_SYNACK = 1 << 1
    MPC_ACK = 1 << 2
    MPJ_SYN = 1 << 3
    MPJ_SYNACK = 1 << 4
    MPJ_ACK = 1 << 5
    ADD_ADDR = 1 << 6
    RM_ADDR = 1 << 7
    FASTCLOSE = 1 << 8
    PRIO = 1 << 9
    RST = 1 << 10
    DSS = 1 << 11
    FAIL = 1 << 12
    CSUMREQD = 1 << 13


OPTION_MPTCP_MPC_SYN = MptcpSuboption.MPC_SYN
OPTION_MPTCP_MPC_SYNACK = MptcpSuboption.MPC_SYNACK
OPTION_MPTCP_MPC_ACK = MptcpSuboption.MPC_ACK
OPTION_MPTCP_MPJ_SYN = MptcpSuboption.MPJ_SYN
OPTION_MPTCP_MPJ_SYNACK = MptcpSuboption.MPJ_SYNACK
OPTION_MPTCP_MPJ_ACK = MptcpSuboption.MPJ_ACK
OPTION_MPTCP_ADD_ADDR = MptcpSuboption.ADD_ADDR
OPTION_MPTCP_RM_ADDR = MptcpSuboption.RM_ADDR
OPTION_MPTCP_FASTCLOSE = MptcpSuboption.FASTCLOSE
OPTION_MPTCP_PRIO = MptcpSuboption.PRIO
OPTION_MPTCP_RST = MptcpSuboption.RST
OPTION_MPTCP_DSS = MptcpSuboption.DSS
OPTION_MPTCP_FAIL = MptcpSuboption.FAIL
OPTION_MPTCP_CSUMREQD = MptcpSuboption.CSUMREQD
OPTIONS_MPTCP_MPC = OPTION_MPTCP_MPC_SYN | OPTION_MPTCP_MPC_SYNACK | OPTION_MPTCP_MPC_ACK
OPTIONS_MPTCP_MPJ = OPTION_MPTCP_MPJ_SYN | OPTION_MPTCP_MPJ_SYNACK | OPTION_MPTCP_MPJ_ACK

_NO_SUBOPTIONS = MptcpSuboption(0)
# Plain ints for the per-segment accumulation (an IntFlag `|` costs a class call).
_MPC_SYN, _MPC_SYNACK, _MPC_ACK = int(OPTION_MPTCP_MPC_SYN), int(OPTION_MPTCP_MPC_SYNACK), \
    int(OPTION_MPTCP_MPC_ACK)
_MPJ_SYN, _MPJ_SYNACK, _MPJ_ACK = int(OPTION_MPTCP_MPJ_SYN), int(OPTION_MPTCP_MPJ_SYNACK), \
    int(OPTION_MPTCP_MPJ_ACK)
_ADD_ADDR, _RM_ADDR, _FASTCLOSE = int(OPTION_MPTCP_ADD_ADDR), int(OPTION_MPTCP_RM_ADDR), \
    int(OPTION_MPTCP_FASTCLOSE)
_PRIO, _RST, _DSS, _FAIL = int(OPTION_MPTCP_PRIO), int(OPTION_MPTCP_RST), int(OPTION_MPTCP_DSS), \
    int(OPTION_MPTCP_FAIL)
_CSUMREQD = int(OPTION_MPTCP_CSUMREQD)
_MPTCPS_MPC = int(OPTIONS_MPTCP_MPC)


@dataclass(slots=True)
class ReceivedOptions:
    """What one segment's MPTCP options say: the kernel's `struct
    mptcp_options_received`, same field names. A field is meaningful only when its
    suboption bit is set (as in the kernel). Fields marked "ours" are not in the
    kernel's struct: they keep what its v1-only parser discards."""

    suboptions: MptcpSuboption = _NO_SUBOPTIONS
    # MP_CAPABLE
    sndr_key: int = 0
    rcvr_key: int = 0  # MP_CAPABLE ACK receiver key, or MP_FASTCLOSE's key (kernel too)
    deny_join_id0: bool = False  # C flag (v1)
    version: int | None = None  # ours: version nibble of the accepted MP_CAPABLE
    mpc_flags: int = 0  # ours: its flags byte
    # DSS, or MP_CAPABLE with data (mpc_map: the mapping is the implicit first one)
    data_ack: int = 0
    data_seq: int = 0
    subflow_seq: int = 0
    data_len: int = 0
    csum: int = 0
    use_map: bool = False
    dsn64: bool = False
    data_fin: bool = False
    use_ack: bool = False
    ack64: bool = False
    mpc_map: bool = False
    # MP_TCPRST
    reset_reason: int = 0
    reset_transient: bool = False
    # ADD_ADDR (addr: the whole option: id, address, port, version)
    echo: bool = False
    addr: AddAddr | None = None
    ahmac: int = 0
    # MP_JOIN, MP_PRIO
    backup: bool = False
    join_id: int = 0
    token: int = 0
    nonce: int = 0
    thmac: int = 0
    hmac: bytes = b""
    prio_addr_id: int | None = None  # ours: the address id of a v0 MP_PRIO
    # REMOVE_ADDR, MP_FAIL
    rm_list: tuple[int, ...] = ()
    fail_seq: int = 0

    @property
    def csum_reqd(self) -> bool:
        """OPTION_MPTCP_CSUMREQD: an MP_CAPABLE with A set, or a mapping with a checksum."""
        return bool(self.suboptions & OPTION_MPTCP_CSUMREQD)

    def describe(self) -> str:
        """One line naming the suboptions present and their key fields."""
        s = self.suboptions
        if not s:
            return "no MPTCP options"
        parts = [str(s.name).replace("|", ",")] if s.name else [hex(s)]
        if s & OPTIONS_MPTCP_MPC:
            parts.append(f"v{self.version} flags=0x{self.mpc_flags:02x}")
            if s & (OPTION_MPTCP_MPC_SYNACK | OPTION_MPTCP_MPC_ACK):
                parts.append(f"sndr_key=0x{self.sndr_key:016x}")
            if s & OPTION_MPTCP_MPC_ACK:
                parts.append(f"rcvr_key=0x{self.rcvr_key:016x}")
        if s & OPTIONS_MPTCP_MPJ:
            parts.append(f"join_id={self.join_id} backup={int(self.backup)}")
            if s & OPTION_MPTCP_MPJ_SYN:
                parts.append(f"token={self.token:08x} nonce=0x{self.nonce:08x}")
            if s & OPTION_MPTCP_MPJ_SYNACK:
                parts.append(f"thmac=0x{self.thmac:016x} nonce=0x{self.nonce:08x}")
            if s & OPTION_MPTCP_MPJ_ACK:
                parts.append(f"hmac={self.hmac.hex()}")
        if s & OPTION_MPTCP_DSS:
            if self.use_ack:
                parts.append(f"data_ack=0x{self.data_ack:0{16 if self.ack64 else 8}x}")
            if self.use_map:
                parts.append("mpc_map" if self.mpc_map else
                             f"data_seq=0x{self.data_seq:0{16 if self.dsn64 else 8}x}"
                             f" subflow_seq={self.subflow_seq}")
                parts.append(f"data_len={self.data_len}")
            if self.data_fin:
                parts.append("DATA_FIN")
            if self.use_map and s & OPTION_MPTCP_CSUMREQD:
                parts.append(f"csum=0x{self.csum:04x}")
        if s & OPTION_MPTCP_ADD_ADDR and self.addr is not None:
            parts.append(describe(self.addr).removeprefix("ADD_ADDR "))
        if s & OPTION_MPTCP_RM_ADDR:
            parts.append("rm_list=" + ",".join(map(str, self.rm_list)))
        if s & OPTION_MPTCP_PRIO:
            parts.append(f"prio backup={int(self.backup)}")
        if s & OPTION_MPTCP_FAIL:
            parts.append(f"fail_seq=0x{self.fail_seq:016x}")
        if s & OPTION_MPTCP_FASTCLOSE:
            parts.append(f"fastclose key=0x{self.rcvr_key:016x}")
        if s & OPTION_MPTCP_RST:
            parts.append(f"reset_reason={self.reset_reason} transient={int(self.reset_transient)}")
        return " ".join(parts)


_SUBOPTION_CACHE: dict[int, MptcpSuboption] = {}


def _dss_into(ro: ReceivedOptions, b: bytes) -> int:
    """A DSS body read straight into `ro` (same checks as `_parse_dss`, which builds a
    `Dss`); the suboption bits it sets. The kernel reads the checksum only with a
    mapping."""
    n = len(b) + 2
    if n < TCPOLEN_MPTCP_DSS_BASE:
        raise MalformedPacket("mptcp-dss-length", f"{n} bytes, no flags")
    flags = b[1] & MPTCP_DSS_FLAG_MASK
    expected, st = _DSS_LAYOUTS[flags & 0x0F]
    if n != expected and n != expected + TCPOLEN_MPTCP_DSS_CHECKSUM:
        raise MalformedPacket("mptcp-dss-length", f"{n} bytes for flags 0x{flags:02x}")
    use_ack = bool(flags & MPTCP_DSS_HAS_ACK)
    use_map = bool(flags & MPTCP_DSS_HAS_MAP)
    ro.mpc_map = False
    ro.data_fin = bool(flags & MPTCP_DSS_DATA_FIN)
    ro.dsn64 = bool(flags & MPTCP_DSS_DSN64)
    ro.ack64 = bool(flags & MPTCP_DSS_ACK64)
    ro.use_ack, ro.use_map = use_ack, use_map
    if st is None:
        return _DSS
    vals = st.unpack_from(b, 2)
    if use_ack:
        ro.data_ack = vals[0]
        if not use_map:
            return _DSS
        ro.data_seq, ro.subflow_seq, ro.data_len = vals[1:]
    else:
        ro.data_seq, ro.subflow_seq, ro.data_len = vals
    if n == expected:
        return _DSS
    ro.csum = _U16.unpack_from(b, n - 4)[0]
    return _DSS | _CSUMREQD


def _mpc_flags_ok(version: int, flags: int) -> bool:
    """The kernel's `mptcp_cap_flag_sha256(flags) && !(flags & MPTCP_CAP_EXTENSIBILITY)`:
    HMAC-SHA256 the only crypto bit among D..H, B clear. v0 (RFC 6824): H (HMAC-SHA1) the
    only one among C..H, B clear."""
    if flags & MPC_FLAG_B:
        return False
    mask = MPTCP_CAP_FLAG_MASK if version else MPTCP_CAP_FLAG_MASK_V0
    return flags & mask == MPC_FLAG_H


def parse_received(options: Iterable[TcpOption], tcp_flags: int, has_data: bool | None = None,
                   *, accept_v0: bool = True) -> tuple[ReceivedOptions, list[str]]:
    """Read a segment's MPTCP options into a `ReceivedOptions`, like the kernel's
    `mptcp_get_options` -> `mptcp_parse_option`, plus the rule its SYN handler applies
    (`subflow_check_req`). Returns the value and one reason tag per ignored option.

    `options` are the segment's TCP options (`UnknownOption(30, ...)` are read, the rest
    skipped); `tcp_flags` its TCP flags; `has_data` whether it carries payload (for the
    size of a non-SYN MP_CAPABLE: 20 without, 22/24 with; None = either). Rules:
    - a malformed option is ignored whole (reason: the `MalformedPacket` tag);
    - MP_CAPABLE: its size must match the segment (SYN, SYN/ACK, ACK with or without
      data; `mptcp-mpc-length`), its flags must name HMAC-SHA256 (SHA-1 in v0) and
      leave B clear (`mptcp-mpc-flags`); v0 options are read only with `accept_v0`
      (else `mptcp-mpc-version`, as the v1-only kernel, which then falls back);
    - MP_JOIN is told by length alone and sets its bit on any segment, as in the kernel
      (the handler checks the bit it expects: MPJ_SYN on a SYN, and so on);
    - MP_TCPRST only on a segment with RST (`mptcp-tcprst-without-rst`);
    - the v0 forms of ADD_ADDR and MP_PRIO only with `accept_v0` (the kernel ignores
      them: `mptcp-add-addr-v0`, `mptcp-prio-v0`);
    - unknown subtypes are ignored (`mptcp-unknown-subtype`);
    - a SYN with both MP_CAPABLE and MP_JOIN is neither (`mptcp-syn-mpc-and-mpj`): the
      kernel answers it as plain TCP;
    - a later option of the same subtype overwrites an earlier one (the kernel does).
    """
    ro = ReceivedOptions()
    reasons: list[str] = []
    bits = 0
    syn = bool(tcp_flags & SYN)
    ack = bool(tcp_flags & ACK)
    for opt in options:
        if type(opt) is not UnknownOption or opt.kind != OPT_MPTCP:
            continue
        data = opt.data
        try:
            if data and data[0] >> 4 == MPTCPOPT_DSS:
                # the per-segment case: straight into `ro`, no intermediate value
                bits |= _dss_into(ro, data)
                continue
            m = parse_body(data, syn, ack, has_data)
        except MalformedPacket as e:
            reasons.append(e.reason)
            continue
        if type(m) is MpCapable:
            if m.version == 0 and not accept_v0:
                reasons.append("mptcp-mpc-version")
                continue
            if not _mpc_flags_ok(m.version, m.flags):
                reasons.append("mptcp-mpc-flags")
                continue
            if m.flags & MPC_FLAG_A:
                bits |= _CSUMREQD
            ro.deny_join_id0 = bool(m.version and m.flags & MPC_FLAG_C)
            ro.version, ro.mpc_flags = m.version, m.flags
            bits |= (_MPC_SYNACK if ack else _MPC_SYN) if syn \
                else _MPC_ACK
            if m.sender_key is not None:
                ro.sndr_key = m.sender_key
            if m.receiver_key is not None:
                ro.rcvr_key = m.receiver_key
            if m.data_len is not None:
                # RFC 8684 3.1: "the data parameters in a MP_CAPABLE are semantically
                # equivalent to those in a DSS option" -- the first, implicit mapping.
                bits |= _DSS
                ro.use_map, ro.mpc_map, ro.use_ack = True, True, False
                ro.data_len = m.data_len
            if m.checksum is not None:
                bits |= _CSUMREQD
                ro.csum = m.checksum
        elif type(m) is MpJoinSyn:
            bits |= _MPJ_SYN
            ro.backup, ro.join_id, ro.token, ro.nonce = m.backup, m.addr_id, m.token, m.nonce
        elif type(m) is MpJoinSynAck:
            bits |= _MPJ_SYNACK
            ro.backup, ro.join_id, ro.thmac, ro.nonce = m.backup, m.addr_id, m.thmac, m.nonce
        elif type(m) is MpJoinAck:
            bits |= _MPJ_ACK
            ro.hmac = m.hmac
        elif type(m) is AddAddr:
            if m.version == 0 and not accept_v0:
                reasons.append("mptcp-add-addr-v0")
                continue
            bits |= _ADD_ADDR
            ro.echo, ro.addr, ro.ahmac = m.echo, m, m.hmac or 0
        elif type(m) is RemoveAddr:
            bits |= _RM_ADDR
            ro.rm_list = m.addr_ids
        elif type(m) is MpPrio:
            if m.addr_id is not None and not accept_v0:
                reasons.append("mptcp-prio-v0")
                continue
            bits |= _PRIO
            ro.backup, ro.prio_addr_id = m.backup, m.addr_id
        elif type(m) is MpFastclose:
            bits |= _FASTCLOSE
            ro.rcvr_key = m.receiver_key
        elif type(m) is MpTcpRst:
            if not tcp_flags & RST:
                reasons.append("mptcp-tcprst-without-rst")
                continue
            bits |= _RST
            ro.reset_transient, ro.reset_reason = m.transient, m.reason
        elif type(m) is MpFail:
            bits |= _FAIL
            ro.fail_seq = m.dsn
        else:
            reasons.append("mptcp-unknown-subtype")
    if syn and not ack and bits & _MPC_SYN and bits & _MPJ_SYN:
        # subflow_check_req: "if (opt_mp_capable) { ... if (opt_mp_join) return 0; }" --
        # neither an MPTCP connection nor a join: answered as plain TCP.
        bits &= ~(_MPC_SYN | _MPJ_SYN | _CSUMREQD)
        reasons.append("mptcp-syn-mpc-and-mpj")
    if bits:
        flag = _SUBOPTION_CACHE.get(bits)
        if flag is None:
            flag = _SUBOPTION_CACHE[bits] = MptcpSuboption(bits)
        ro.suboptions = flag
    return ro, reasons


# --- the writer (options.c: mptcp_*_options) ------------------------------------------
# A full DSS as we send it: data ACK 64 + mapping with a 64-bit DSN (+ checksum), the
# space a data segment reserves (Linux reserves the same 28 bytes, "a full DSS").
DSS_FULL = TCPOLEN_MPTCP_DSS_BASE + 8 + 14
DSS_FULL_CSUM = DSS_FULL + TCPOLEN_MPTCP_DSS_CHECKSUM
DSS_ACK64 = TCPOLEN_MPTCP_DSS_BASE + 8  # a DSS with a 64-bit data ACK only
_NOP = Nop()  # options are frozen values: one padding NOP serves every segment


def aligned(n: int) -> int:
    return (n + 3) & ~3


@dataclass(slots=True)
class OutOptions:
    """The kernel's `struct mptcp_out_options`: what the writer decided."""
    mpc: MpCapable | None = None
    mpj: MpJoinSyn | MpJoinSynAck | MpJoinAck | None = None
    dss: Dss | None = None
    add_addr: AddAddr | None = None
    rm_addr: RemoveAddr | None = None
    prio: MpPrio | None = None
    fail: MpFail | None = None
    fastclose: MpFastclose | None = None
    rst: MpTcpRst | None = None
    # not an option: a pure ACK must follow (a DATA_FIN gave its room to a path-manager
    # signal and goes on the next one)
    pure_ack: bool = False

    def suboptions(self) -> list[MptcpOption]:
        return [o for o in (self.mpc, self.mpj, self.dss, self.add_addr, self.rm_addr,
                            self.prio, self.fail, self.fastclose, self.rst) if o is not None]


def write_options(opts: OutOptions) -> list[TcpOption]:
    """`mptcp_write_options`: the decided suboptions as TCP options, each padded with
    NOPs to a 4-byte boundary as the kernel pads them."""
    out: list[TcpOption] = []
    for o in opts.suboptions():
        raw = to_tcp_option(o)
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
        if remaining < TCPOLEN_MPTCP_MPJ_SYN or msk.remote_token is None:
            return None
        return OutOptions(mpj=MpJoinSyn(sf.backup, sf.local_id, msk.join_token(),
                                           sf.local_nonce))
    if msk.client:
        # the blackhole rules first (the kernel's ctrl.c): they may make this SYN plain
        msk.pm.mpc_syn(sf)
    if msk.fallback or remaining < TCPOLEN_MPTCP_MPC_SYN:
        return None
    if msk.version == 0:
        if remaining < TCPOLEN_MPTCP_MPC_SYNACK:
            return None
        return OutOptions(mpc=MpCapable(0, msk.mpc_flags(), sender_key=msk.local_key))
    return OutOptions(mpc=MpCapable(1, mpc_flags(msk)))


def mpc_flags(msk: MptcpConnection) -> int:
    """The flags of our MP_CAPABLE (SYN, SYN/ACK, ACK): the connection's (H, A) plus,
    in v1, C when we ask peers not to join our initial address and port
    (`mptcp_write_options`: MPTCP_CAP_DENY_JOIN_ID0 unless allow_join_id0)."""
    flags = msk.mpc_flags()
    return flags | MPC_FLAG_C if msk.version and msk.config.deny_join_id0 else flags


def synack_options(sf: Subflow, remaining: int) -> OutOptions | None:
    """`mptcp_synack_options`: MP_CAPABLE with our (the server's) key, 12 bytes."""
    msk = sf.msk
    if sf.join:
        # the truncated HMAC (leftmost 64 bits) proves we hold the keys
        if remaining < TCPOLEN_MPTCP_MPJ_SYNACK or msk.remote_key is None:
            return None
        thmac = msk.join_synack_thmac(sf)
        return OutOptions(mpj=MpJoinSynAck(sf.backup, sf.local_id, thmac, sf.local_nonce))
    if msk.fallback or remaining < TCPOLEN_MPTCP_MPC_SYNACK:
        return None
    return OutOptions(mpc=MpCapable(msk.version, mpc_flags(msk), sender_key=msk.local_key))


# --- established -------------------------------------------------------------------------
def established_options(sf: Subflow, seq: int, payload_len: int,
                        remaining: int, fin: bool = False) -> OutOptions | None:
    """`mptcp_established_options`: MP_CAPABLE on the client's third ACK and first data
    (`mptcp_established_options_mp`), else a DSS (`..._dss`); then, in the room left,
    a REMOVE_ADDR, an MP_PRIO and an MP_FAIL, each if due. An ADD_ADDR (or echo) due
    takes a pure ACK alone instead (`..._add_addr`, Linux 6.18)."""
    msk = sf.msk
    if msk.fallback:
        # plain TCP now, but an MP_FAIL or the one infinite mapping may still be due;
        # and after a one-sided fallback (the peer's options stripped on their way to
        # us, the peer still speaking MPTCP), a data ACK on every segment, so that the
        # peer does not resend at the data level what we have (RFC 8684 3.7)
        opts = infinite_mapping(sf, seq, payload_len, remaining) or OutOptions()
        if opts.dss is None and msk.ack_after_fallback:
            if msk.data_fin_queued and remaining >= DSS_ACK64 + 14:
                # and our DATA_FIN once we closed, so its data-level close completes
                # (a DATA_FIN-only mapping: subflow seq 0, length 1)
                dsn = msk.wire_dsn(msk.write_off)
                opts.dss = Dss(data_ack=msk.wire_data_ack(), data_ack64=True, dsn=dsn,
                               dsn64=True, ssn=0, data_len=1, data_fin=True,
                               checksum=crypto.dss_checksum(dsn, 0, 1, b"")
                               if msk.csum_enabled else None)
            elif remaining >= DSS_ACK64:
                opts.dss = Dss(data_ack=msk.wire_data_ack(), data_ack64=True)
        used = sum(aligned(option_len(o)) for o in opts.suboptions())
        established_options_mp_fail(sf, remaining - used, opts)
        return opts if opts.suboptions() else None
    opts = OutOptions()
    if established_options_mpj(sf, remaining, opts):
        return opts
    if not established_options_mp(sf, seq, payload_len, remaining, opts):
        established_options_dss(sf, seq, payload_len, remaining, opts,
                                data_fin_ok=payload_len > 0 or not _signal_due(sf))
        if not payload_len and not fin:
            # a pure ACK: an ADD_ADDR due takes it without the DSS (below), an MP_PRIO
            # may ride along as in Linux's `mptcp_established_options`; a DATA_FIN
            # that gave way to it still asks for the next pure ACK
            add_addr = established_options_add_addr(sf, remaining)
            if add_addr is not None:
                add_addr.pure_ack = opts.pure_ack
                assert add_addr.add_addr is not None
                established_options_mp_prio(sf, remaining
                                            - aligned(option_len(add_addr.add_addr)), add_addr)
                return add_addr
    used = sum(aligned(option_len(o)) for o in opts.suboptions())
    added = established_options_rm_addr(sf, remaining - used, opts)
    used += added
    used += established_options_mp_prio(sf, remaining - used, opts)
    established_options_mp_fail(sf, remaining - used, opts)
    return opts


def _signal_due(sf: Subflow) -> bool:
    """A path-manager suboption waits for a pure ACK: ADD_ADDR (or its echo),
    REMOVE_ADDR, MP_PRIO."""
    return sf.msk.pm.signal_due() or sf.send_mp_prio


def established_options_add_addr(sf: Subflow, remaining: int) -> OutOptions | None:
    """`mptcp_established_options_add_addr` (Linux since "add-addr: always drop other
    suboptions", in 6.18 and measured there: its ADD_ADDR and echo ACKs carry no DSS):
    an ADD_ADDR (or the echo of the peer's) goes on a pure ACK ALONE, a plain dup-ack
    for TCP; the data ACK rides on the next segment, and whatever else was due (a
    DATA_FIN, REMOVE_ADDR, MP_PRIO, MP_FAIL) on the next pure ACK (`options_written`
    asks for it). One that does not fit even alone (an IPv6 address with a port beside
    timestamps: 30 + 12 > 40) is dropped and counted (AddAddrTxDrop/EchoAddTxDrop), as
    Linux does, instead of waiting for ever."""
    pm = sf.msk.pm
    a = pm.next_add_addr()
    if a is None:
        return None
    if remaining < aligned(option_len(a)):
        pm.add_addr_unsendable(a)
        return None
    return OutOptions(add_addr=a)


def established_options_rm_addr(sf: Subflow, remaining: int, opts: OutOptions) -> int:
    """`mptcp_established_options_rm_addr`: REMOVE_ADDR with as many of the queued
    address ids as fit (up to the kernel's MPTCP_RM_IDS_MAX, 8); the bytes it took."""
    queued = sf.msk.pm.rm_addr_queue
    if not queued or opts.mpc is not None:
        return 0
    fit = min(len(queued), MPTCP_RM_IDS_MAX)
    while fit and aligned(TCPOLEN_MPTCP_RM_ADDR_BASE + fit) > remaining:
        fit -= 1
    if not fit:
        return 0
    opts.rm_addr = RemoveAddr(tuple(queued[:fit]))
    return aligned(option_len(opts.rm_addr))


def established_options_mp_prio(sf: Subflow, remaining: int, opts: OutOptions) -> int:
    """`mptcp_established_options_mp_prio`: MP_PRIO with our backup wish for this
    subflow, once after it changed (RFC 8684 3.3.8)."""
    if not sf.send_mp_prio or opts.mpc is not None or remaining < aligned(TCPOLEN_MPTCP_PRIO):
        return 0
    opts.prio = MpPrio(sf.backup)
    return aligned(TCPOLEN_MPTCP_PRIO)


def established_options_mpj(sf: Subflow, remaining: int, opts: OutOptions) -> bool:
    """The joiner's MP_JOIN ACK (160-bit HMAC), on its third ACK and repeated until the
    responder's fourth ACK shows it arrived (Linux: until `fully_established`)."""
    if not sf.join or sf.fully_established or not sf.initiator:
        return False
    if remaining < TCPOLEN_MPTCP_MPJ_ACK:
        return False
    opts.mpj = MpJoinAck(sf.msk.join_ack_hmac(sf))
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
        size = TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM if msk.csum_enabled \
            else TCPOLEN_MPTCP_MPC_ACK_DATA
        if remaining < size:
            return False
        opts.mpc = MpCapable(1, mpc_flags(msk), msk.local_key, msk.remote_key, m.length,
                                m.csum if msk.csum_enabled else None)
        return True
    if remaining < TCPOLEN_MPTCP_MPC_ACK:
        return False
    opts.mpc = MpCapable(msk.version, mpc_flags(msk), msk.local_key, msk.remote_key)
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
        opts.pure_ack = True
    elif msk.data_fin_to_signal():
        dsn, ssn, length, data_fin = msk.wire_dsn(msk.write_off), 0, 1, True
        if csum:
            checksum = msk.data_fin_csum()
    size = TCPOLEN_MPTCP_DSS_BASE + 8
    if dsn is not None:
        size += 14 + (2 if checksum is not None else 0)
    if remaining < size:
        if dsn is None or remaining < TCPOLEN_MPTCP_DSS_BASE + 8:
            return
        # no room for the mapping: the data ACK alone (the kernel drops the map too)
        dsn, checksum, data_fin = None, None, False
    ack = msk.wire_data_ack() if msk.remote_key is not None else None
    opts.dss = Dss(data_ack=ack, data_ack64=ack is not None, dsn=dsn, dsn64=dsn is not None,
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
    msk = sf.msk
    m = sf.tx_map_at(seq)
    if m is not None and m.ssn != seq and remaining >= DSS_FULL_CSUM:
        # inside a mapping already begun: its own DSS, as before, and the infinite one
        # where it ends. A receiver midway through a mapping takes no other before its
        # end (Linux drops it, then finds data without a mapping: DSSFallback)
        return OutOptions(dss=Dss(data_ack=msk.wire_data_ack(), data_ack64=True,
                                  dsn=msk.wire_dsn(m.data_off), dsn64=True,
                                  ssn=m.ssn & 0xFFFFFFFF, data_len=m.length,
                                  checksum=m.csum if msk.csum_enabled else None))
    if sf.send_mp_fail is not None:
        # our answer to the peer's MP_FAIL goes no later than this mapping: a peer that
        # falls back on it ignores every option after it, and Linux, never seeing the
        # answer, resets the subflow when its MP_FAIL timer expires. Linux sends its
        # answer first, on an ACK of its own; here both go on this segment, the mapping
        # in its short form (no data ACK, 32-bit DSN) so that the MP_FAIL fits beside it
        dss = Dss(dsn=msk.wire_dsn(seq - 1) & 0xFFFFFFFF, ssn=seq & 0xFFFFFFFF, data_len=0,
                  checksum=0 if msk.csum_enabled else None)
        if aligned(option_len(dss)) + TCPOLEN_MPTCP_FAIL <= remaining:
            return OutOptions(dss=dss)
    return OutOptions(dss=Dss(data_ack=msk.wire_data_ack(), data_ack64=True,
                                 dsn=msk.wire_dsn(seq - 1), dsn64=True, ssn=seq & 0xFFFFFFFF,
                                 data_len=0,
                                 checksum=0 if msk.csum_enabled else None))


def established_options_mp_fail(sf: Subflow, remaining: int, opts: OutOptions) -> None:
    """`mptcp_established_options_mp_fail`: MP_FAIL with the DSN of the failed mapping,
    once (RFC 8684 3.7)."""
    if sf.send_mp_fail is not None and remaining >= TCPOLEN_MPTCP_FAIL:
        opts.fail = MpFail(sf.send_mp_fail)


def rst_options(sf: Subflow, remaining: int) -> OutOptions | None:
    """`mptcp_established_options_rst` / `_fastclose`: MP_FASTCLOSE (the peer's key)
    and MP_TCPRST (reason) on an RST we send."""
    msk = sf.msk
    if msk.fallback:
        return None
    opts = OutOptions()
    if msk.fastclosing and msk.remote_key is not None and remaining >= TCPOLEN_MPTCP_FASTCLOSE:
        opts.fastclose = MpFastclose(msk.remote_key)
        remaining -= TCPOLEN_MPTCP_FASTCLOSE
    if remaining >= TCPOLEN_MPTCP_RST:
        opts.rst = MpTcpRst(sf.reset_reason or 0, 0)
    return opts


# --- what arrives (options.c: mptcp_incoming_options) -------------------------------------
def stripped_nops(hdr: TcpHeader) -> int:
    """The longest run of NOP options, if 4 or more: a middlebox that removes an option
    (nft `reset tcp option`) overwrites it with NOPs, so such a run is where an MPTCP
    option was (Linux pads with at most 2 in a row). 0: none."""
    run = best = 0
    for o in hdr.options:
        if type(o) is Nop:
            run += 1
            best = max(best, run)
        else:
            run = 0
    return best if best >= 4 else 0


def incoming_options(msk: MptcpConnection, sf: Subflow, hdr: TcpHeader,
                     payload_len: int) -> bool:
    """The ULP `on_options` hook: read the segment's MPTCP options and hand each to
    the part of the connection it is for (`mptcp_incoming_options`, with the subflow
    handshake checks of `subflow.c`). False drops the segment."""
    ro, reasons = parse_received(hdr.options, hdr.flags, payload_len > 0,
                                 accept_v0=msk.version == 0)
    for r in reasons:
        msk.counters["OptionIgnored:" + r] += 1
    flags = hdr.flags
    s = int(ro.suboptions)  # plain int: IntFlag arithmetic costs a class call
    if flags & RST:
        fastclose = bool(s & _FASTCLOSE) and ro.rcvr_key == msk.local_key
        if s & _RST:
            msk.tcprst_received(sf, ro.reset_reason, fastclose)
        if fastclose:
            msk.fastclose_received(sf)
        elif s & _FASTCLOSE:
            _bad_fastclose(msk, sf, ro)
        return True
    if msk.fallback:
        if s & _FAIL:  # the answer to our MP_FAIL (or a late one): counted, timer off
            msk.mp_fail_received(sf, ro.fail_seq)
        if s & _DSS and ro.data_fin and msk.ack_after_fallback and ro.use_map:
            # one-sided: the peer still closes at the data level; its DATA_FIN is
            # where its mapping ends (our byte count matches its, on the one subflow)
            recv.rx_data_fin(msk, msk.rx_off(ro.data_seq, ro.dsn64) + max(ro.data_len, 1) - 1)
        return True
    if sf.join:
        if not subflow.join_rx(sf, ro, s, flags):
            return False
        if sf.state is subflow.SubflowState.FAILED or flags & SYN:
            return True
        return _established_rx(msk, sf, ro, s, payload_len, hdr.window)
    if flags & SYN:
        if flags & ACK and msk.client:
            subflow.mpc_synack_rx(msk, ro)
            if msk.fallback:
                _mpc_fallback(msk, sf, hdr, ro, "SYN/ACK")
            elif msk.version == 0:
                # RFC 6824: the keys go on the third ACK alone, before data (whose
                # segments carry DSS mappings); v1 puts them on the first data too
                sf.engine.ack_before_data()
        elif s & _MPC_SYN:
            msk.counters[Mib.MPCapableSYNRX] += 1
            if ro.deny_join_id0:  # the client's C flag: not its initial address
                msk.pm.deny_join_id0_received("SYN")
            if ro.csum_reqd:
                msk.csum_enabled = True
        return True
    if s & _FASTCLOSE:
        if ro.rcvr_key == msk.local_key:
            msk.fastclose_received(None)
            return False
        _bad_fastclose(msk, sf, ro)
    if not msk.client and msk.remote_key is None and not subflow.mpc_third_ack_rx(msk, ro):
        _mpc_fallback(msk, sf, hdr, ro, "third ACK")
        return True  # fell back
    if (not msk.fully_established and msk.remote_key is not None
            and not s & _MPTCPS_MPC and not (s & _DSS and ro.use_ack) and not s & _ADD_ADDR):
        # Linux `check_fully_established`: the peer's first segment after the
        # handshake must carry a data ACK (or MP_CAPABLE); if it does not, a
        # middlebox strips our options: fall back to TCP.
        msk.counters[Mib.MPCapableDataFallback] += 1
        msk.finding(Code.DSS_STRIPPED, Severity.WARNING,
                    "the peer's first segment after the MP_CAPABLE handshake has no DSS"
                    + (f" ({nops} NOPs where an option was)" if (nops := stripped_nops(hdr))
                       else "") + ": its MPTCP options are stripped on their way to us; "
                    "fell back to TCP (one-sided: our data ACKs go on)", sf=sf,
                    hint="a middlebox on this path removes TCP option 30 after the handshake")
        msk.fall_back("the peer's first segment after the handshake had no DSS "
                      "(options stripped?)", one_sided=True)
        return True
    if not s and msk.fully_established and not sf.join and len(msk.subflows) == 1 \
            and _acks_mapped_data(sf, hdr):
        _peer_dropped_mptcp(msk, sf, hdr)
        return True
    ok = _established_rx(msk, sf, ro, s, payload_len, hdr.window)
    if s & _FAIL:
        msk.mp_fail_received(sf, ro.fail_seq)
    return ok


def _acks_mapped_data(sf: Subflow, hdr: TcpHeader) -> bool:
    """`hdr` acknowledges subflow bytes we sent with a mapping (not just our FIN) and
    carries no MPTCP option at all."""
    eng = sf.engine
    d = Seq(hdr.ack).diff(eng.snd_una)
    maps = sf.tx_maps
    return d > 0 and bool(maps) and eng.snd_una_rel + d > maps[0].ssn and not any(
        type(o) is UnknownOption and o.kind == OPT_MPTCP for o in hdr.options)


def _peer_dropped_mptcp(msk: MptcpConnection, sf: Subflow, hdr: TcpHeader) -> None:
    """The peer acknowledged our data on the only subflow without any MPTCP option: it
    no longer speaks MPTCP there. Linux does so without MP_FAIL when the DSS checksum
    of the first mapping fails (it counts DSSFallback); a middlebox stripping its
    options looks the same to us. Its data ACKs will not come: fall back too (RFC 8684
    3.7), or our data-level retransmissions would reach its application, now reading
    plain TCP, as new bytes. One-sided: if it does still speak MPTCP, our data ACKs go
    on."""
    nops = stripped_nops(hdr)
    if nops:
        msk.finding(Code.DSS_STRIPPED, Severity.WARNING,
                    f"the peer acknowledged our data without a DSS ({nops} NOPs where an "
                    "option was): its MPTCP options are stripped on their way to us; fell "
                    "back to TCP (one-sided: our data ACKs go on)", sf=sf,
                    hint="a middlebox on this path removes TCP option 30 after the handshake")
    elif msk.csum_enabled:
        msk.finding(Code.DSS_CHECKSUM_FAILED, Severity.WARNING,
                    "the peer acknowledged our data without any MPTCP option: it fell back "
                    "to TCP without MP_FAIL, as Linux does when the DSS checksum of the first "
                    "mapping fails; fell back too", sf=sf,
                    hint="a middlebox changes the payload on this path; the peer's "
                         "application gets the changed bytes, as TCP would deliver them")
    else:
        msk.finding(Code.FALLBACK, Severity.WARNING,
                    "the peer acknowledged our data without any MPTCP option: it fell back "
                    "to TCP without telling (no MP_FAIL, no infinite mapping); fell back too",
                    sf=sf)
    msk.fall_back("the peer acknowledged our data without MPTCP options (it fell back)",
                  one_sided=True)


def _bad_fastclose(msk: MptcpConnection, sf: Subflow, ro: ReceivedOptions) -> None:
    msk.counters[Mib.MPFastcloseBadKey] += 1
    msk.finding(Code.FASTCLOSE, Severity.WARNING,
                f"an MP_FASTCLOSE with key 0x{ro.rcvr_key:016x}, not ours "
                f"(0x{msk.local_key:016x}): ignored", sf=sf, key="bad-key",
                hint="a forged or misdirected MP_FASTCLOSE (RFC 8684 3.5 requires our key)")


def _mpc_fallback(msk: MptcpConnection, sf: Subflow, hdr: TcpHeader, ro: ReceivedOptions,
                  what: str) -> None:
    """Say why the MP_CAPABLE handshake fell back: a v0 peer answered by upstream
    Linux, the option stripped in transit (NOPs where it was), or a peer without MPTCP."""
    nops = stripped_nops(hdr)
    if nops:
        msk.finding(Code.MPC_STRIPPED, Severity.WARNING,
                    f"the {what} arrived without MP_CAPABLE but with {nops} NOPs where an "
                    "option was: a middlebox stripped it; fell back to TCP", sf=sf,
                    hint="a firewall or NAT on this path removes TCP option 30 "
                         "(nft 'reset tcp option mptcp' does exactly this)")
    elif msk.version == 0 and what == "SYN/ACK":
        msk.finding(Code.MPC_VERSION_UNSUPPORTED, Severity.WARNING,
                    "our MP_CAPABLE v0 SYN (RFC 6824) was answered without MP_CAPABLE: the "
                    "peer does not speak v0 (upstream Linux speaks only v1); fell back to TCP",
                    sf=sf, hint="drop --mptcp-version 0 to speak RFC 8684 (v1)")
    elif ro.suboptions & _MPTCPS_MPC and ro.version != msk.version:
        msk.finding(Code.MPC_VERSION_UNSUPPORTED, Severity.WARNING,
                    f"the {what} answered MP_CAPABLE version {ro.version}, we speak "
                    f"{msk.version}: fell back to TCP", sf=sf)
    else:
        msk.finding(Code.FALLBACK, Severity.WARNING,
                    f"the {what} carried no MP_CAPABLE: the peer does not speak MPTCP (or "
                    "has it off: net.mptcp.enabled=0, a plain TCP socket); plain TCP "
                    "(RFC 8684 3.1)" if what == "SYN/ACK" else
                    f"the {what} carried no valid MP_CAPABLE: fell back to TCP (RFC 8684 3.1)",
                    sf=sf)


def _established_rx(msk: MptcpConnection, sf: Subflow, ro: ReceivedOptions, s: int,
                    payload_len: int, window: int) -> bool:
    """The suboptions of an established subflow's segment: path-manager signals to the
    path manager, the data ACK to the send side, the mapping to the receive path."""
    if s & _ADD_ADDR and msk.remote_key is not None:
        _add_addr_rx(msk, ro)
    if s & _RM_ADDR:
        msk.pm.rm_addr_received(ro.rm_list)
    if s & _PRIO:
        msk.pm.prio_received(sf, ro.backup, ro.prio_addr_id)
    if not s & _DSS:
        return True
    if ro.use_ack:
        msk.data_ack_received(sf, ro.data_ack, ro.ack64, window)
    if not ro.use_map:
        return True
    return recv.mapping_received(msk, sf, ro, s, payload_len)


def _add_addr_rx(msk: MptcpConnection, ro: ReceivedOptions) -> None:
    """ADD_ADDR (RFC 8684 3.4.1): an echo of ours, or the peer's announcement, whose
    HMAC must check out (else it is ignored, `add_addr_hmac_valid`)."""
    a = ro.addr
    if a is None:
        return
    if a.version != msk.version:
        # the other dialect's layout (RFC 6824's carries no HMAC): on a v1 connection
        # an announcement without one, which the kernel's parser refuses too
        msk.counters[Mib.AddAddrWrongVersion] += 1
        return
    if ro.echo:
        msk.pm.add_addr_echoed(a.addr_id, a.port)
        return
    assert msk.remote_key is not None
    want = crypto.add_addr_hmac(msk.remote_key, msk.local_key, a.addr_id, a.addr, a.port)
    if a.version != 0 and ro.ahmac != want:
        msk.counters[Mib.AddAddrHMacFailure] += 1  # silently ignored (RFC 8684 3.4.1)
        return
    # any further ack, an ADD_ADDR included, makes the connection fully established
    # (Linux check_fully_established), so the join it invites may go at once
    msk.set_fully_established()
    msk.pm.add_addr_received(a)


# The dispatch hands segments to modules that themselves read `ReceivedOptions` and
# call the writer: imported last, once this module's names exist.
from stack.mptcp import recv, subflow  # noqa: E402
