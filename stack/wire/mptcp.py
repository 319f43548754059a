"""MPTCP suboptions: the codec for TCP option kind 30 (RFC 8684 section 3; RFC 6824 for
the "v0" dialect). Formats only: what the options mean to a connection is
`stack.mptcp.options` (the kernel's `net/mptcp/options.c`).

Every MPTCP option starts with the same four bits after kind and length:
```
 0                   1                   2                   3
 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
+---------------+---------------+-------+-----------------------+
|     Kind=30   |    Length     |Subtype|  (subtype-specific)   |
+---------------+---------------+-------+-----------------------+
```
Subtypes: 0 MP_CAPABLE, 1 MP_JOIN, 2 DSS, 3 ADD_ADDR, 4 REMOVE_ADDR, 5 MP_PRIO,
6 MP_FAIL, 7 MP_FASTCLOSE, 8 MP_TCPRST; others are returned as `UnknownMptcp`.

Two levels, as the kernel has them:
- `parse_option` / `emit_option`: one option <-> one frozen value per layout. The
  parser checks the length against the flags exactly as the kernel's
  `mptcp_parse_option` does (an option it would ignore raises `MalformedPacket` with a
  reason tag `mptcp-<subtype>-length`, ...), and also reads the v0 layouts (RFC 6824)
  the kernel ignores. `emit_option(parse_option(b)) == b` for every option whose
  reserved bits are zero (reserved bits are ignored on receipt, RFC 8684 section 3,
  and written as zero).
- `stack.mptcp.options.parse_received` builds on it: the kernel's `mptcp_get_options`
  + the per-segment rules of its callers, giving a `ReceivedOptions`.

The TCP codec (`stack.wire.tcp`) keeps MPTCP options as `UnknownOption(30, data)`;
`parse_tcp_option` reads one, `to_tcp_option` makes one for the TCP writer.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from stack.mptcp.crypto import key_token_idsn
from stack.wire.errors import MalformedPacket
from stack.wire.tcp import OPT_MPTCP, UnknownOption


# --- subtypes, lengths, flags (named as in the kernel's net/mptcp/protocol.h) ---------
class MptcpSubtype(IntEnum):
    MP_CAPABLE = 0
    MP_JOIN = 1
    DSS = 2
    ADD_ADDR = 3
    REMOVE_ADDR = 4
    MP_PRIO = 5
    MP_FAIL = 6
    MP_FASTCLOSE = 7
    MP_TCPRST = 8


MPTCPOPT_MP_CAPABLE = MptcpSubtype.MP_CAPABLE
MPTCPOPT_MP_JOIN = MptcpSubtype.MP_JOIN
MPTCPOPT_DSS = MptcpSubtype.DSS
MPTCPOPT_ADD_ADDR = MptcpSubtype.ADD_ADDR
MPTCPOPT_RM_ADDR = MptcpSubtype.REMOVE_ADDR
MPTCPOPT_MP_PRIO = MptcpSubtype.MP_PRIO
MPTCPOPT_MP_FAIL = MptcpSubtype.MP_FAIL
MPTCPOPT_MP_FASTCLOSE = MptcpSubtype.MP_FASTCLOSE
MPTCPOPT_RST = MptcpSubtype.MP_TCPRST

MPTCP_SUPPORTED_VERSION = 1
MPTCP_VERSION_MASK = 0x0F

# Whole-option lengths (kind and length bytes included), v1 unless marked _V0.
TCPOLEN_MPTCP_MPC_SYN = 4
TCPOLEN_MPTCP_MPC_SYNACK = 12
TCPOLEN_MPTCP_MPC_ACK = 20
TCPOLEN_MPTCP_MPC_ACK_DATA = 22
TCPOLEN_MPTCP_DSS_CHECKSUM = 2
TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM = TCPOLEN_MPTCP_MPC_ACK_DATA + TCPOLEN_MPTCP_DSS_CHECKSUM
TCPOLEN_MPTCP_MPC_SYN_V0 = 12  # RFC 6824: the SYN carries the sender's key
TCPOLEN_MPTCP_MPC_ACK_V0 = 20
TCPOLEN_MPTCP_MPJ_SYN = 12
TCPOLEN_MPTCP_MPJ_SYNACK = 16
TCPOLEN_MPTCP_MPJ_ACK = 24
TCPOLEN_MPTCP_DSS_BASE = 4
TCPOLEN_MPTCP_DSS_ACK32 = 4
TCPOLEN_MPTCP_DSS_ACK64 = 8
TCPOLEN_MPTCP_DSS_MAP32 = 10
TCPOLEN_MPTCP_DSS_MAP64 = 14
TCPOLEN_MPTCP_ADD_ADDR = 16
TCPOLEN_MPTCP_ADD_ADDR_PORT = 18
TCPOLEN_MPTCP_ADD_ADDR_BASE = 8
TCPOLEN_MPTCP_ADD_ADDR_BASE_PORT = 10
TCPOLEN_MPTCP_ADD_ADDR6 = 28
TCPOLEN_MPTCP_ADD_ADDR6_PORT = 30
TCPOLEN_MPTCP_ADD_ADDR6_BASE = 20
TCPOLEN_MPTCP_ADD_ADDR6_BASE_PORT = 22
TCPOLEN_MPTCP_ADD_ADDR_V0 = 8  # RFC 6824: no HMAC, no echo
TCPOLEN_MPTCP_ADD_ADDR_PORT_V0 = 10
TCPOLEN_MPTCP_ADD_ADDR6_V0 = 20
TCPOLEN_MPTCP_ADD_ADDR6_PORT_V0 = 22
TCPOLEN_MPTCP_PORT_LEN = 2
TCPOLEN_MPTCP_RM_ADDR_BASE = 3
TCPOLEN_MPTCP_PRIO = 3
TCPOLEN_MPTCP_PRIO_ALIGN = 4  # the kernel follows MP_PRIO with a NOP
TCPOLEN_MPTCP_PRIO_V0 = 4  # RFC 6824: with the address id
TCPOLEN_MPTCP_FAIL = 12
TCPOLEN_MPTCP_FASTCLOSE = 12
TCPOLEN_MPTCP_RST = 4
MAX_DATA_LEN = 0xFFFF  # a DSS mapping's data-level length is 16 bits
MPTCP_RM_IDS_MAX = 8  # the kernel's REMOVE_ADDR list limit
MPTCPOPT_HMAC_LEN = 20
MPTCPOPT_THMAC_LEN = 8

# MP_CAPABLE flags (RFC 8684 3.1). In v0 (RFC 6824) C..H are all crypto bits, H = SHA-1.
MPC_FLAG_A = 0x80  # checksum required
MPC_FLAG_B = 0x40  # extensibility
MPC_FLAG_C = 0x20  # do not join my initial address (kernel: deny_join_id0)
MPC_FLAG_H = 0x01  # HMAC-SHA256 (v1) / HMAC-SHA1 (v0)
MPTCP_CAP_CHECKSUM_REQD = MPC_FLAG_A
MPTCP_CAP_EXTENSIBILITY = MPC_FLAG_B
MPTCP_CAP_DENY_JOIN_ID0 = MPC_FLAG_C
MPTCP_CAP_HMAC_SHA256 = MPC_FLAG_H
MPTCP_CAP_FLAG_MASK = 0x1F  # the crypto-algorithm bits D..H the kernel checks (v1)
MPTCP_CAP_FLAG_MASK_V0 = 0x3F  # C..H in RFC 6824

# DSS flags (RFC 8684 3.3): A, a, M, m, F from the least significant bit.
MPTCP_DSS_HAS_ACK = 0x01
MPTCP_DSS_ACK64 = 0x02
MPTCP_DSS_HAS_MAP = 0x04
MPTCP_DSS_DSN64 = 0x08
MPTCP_DSS_DATA_FIN = 0x10
MPTCP_DSS_FLAG_MASK = 0x1F

MPTCP_ADDR_ECHO = 0x01  # ADD_ADDR E flag (v1)
MPTCPOPT_BACKUP = 0x01  # MP_JOIN B flag
MPTCP_PRIO_BKUP = 0x01  # MP_PRIO B flag
MPTCP_RST_TRANSIENT = 0x01  # MP_TCPRST T flag


class MptcpResetReason(IntEnum):
    """MP_TCPRST reason codes (RFC 8684 3.6; the kernel's MPTCP_RST_E*)."""

    MPTCP_RST_EUNSPEC = 0  # unspecified error
    MPTCP_RST_EMPTCP = 1  # MPTCP-specific error
    MPTCP_RST_ERESOURCE = 2  # lack of resources
    MPTCP_RST_EPROHIBIT = 3  # administratively prohibited
    MPTCP_RST_EWQ2BIG = 4  # too much outstanding data
    MPTCP_RST_EBADPERF = 5  # unacceptable performance
    MPTCP_RST_EMIDDLEBOX = 6  # middlebox interference


MPTCP_RST_EUNSPEC = MptcpResetReason.MPTCP_RST_EUNSPEC
MPTCP_RST_EMPTCP = MptcpResetReason.MPTCP_RST_EMPTCP
MPTCP_RST_ERESOURCE = MptcpResetReason.MPTCP_RST_ERESOURCE
MPTCP_RST_EPROHIBIT = MptcpResetReason.MPTCP_RST_EPROHIBIT
MPTCP_RST_EWQ2BIG = MptcpResetReason.MPTCP_RST_EWQ2BIG
MPTCP_RST_EBADPERF = MptcpResetReason.MPTCP_RST_EBADPERF
MPTCP_RST_EMIDDLEBOX = MptcpResetReason.MPTCP_RST_EMIDDLEBOX

_RESET_TEXT = ("unspecified", "MPTCP error", "lack of resources", "administratively prohibited",
               "too much outstanding data", "unacceptable performance", "middlebox interference")

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_II = struct.Struct("!II")
_QI = struct.Struct("!QI")
_QQ = struct.Struct("!QQ")


# --- the option values ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MpCapable:
    """MP_CAPABLE (RFC 8684 3.1; RFC 6824 3.1 for v0). The layout follows the fields:
    no key (4 bytes, v1 SYN), sender key (12: v1 SYN/ACK, v0 SYN and SYN/ACK), both keys
    (20: third ACK), + data-level length (22: v1 first data), + DSS checksum (24).
    ```
    +---------------+---------------+-------+-------+---------------+
    |     Kind      |    Length     |Subtype|Version|A|B|C|D|E|F|G|H|
    +---------------+---------------+-------+-------+---------------+
    |                  Option Sender's Key (64 bits)                |  12+
    +---------------------------------------------------------------+
    |                 Option Receiver's Key (64 bits)               |  20+
    +-------------------------------+-------------------------------+
    |  Data-Level Length (16 bits)  |  Checksum (16 bits, optional) |  22 / 24
    +-------------------------------+-------------------------------+
    ```
    In the third ACK the sender key is the client's, the receiver key the server's."""

    version: int
    flags: int
    sender_key: int | None = None
    receiver_key: int | None = None
    data_len: int | None = None
    checksum: int | None = None


@dataclass(frozen=True, slots=True)
class MpJoinSyn:
    """MP_JOIN on a SYN, 12 bytes (RFC 8684 3.2): the token of the connection to join
    (the receiver's) and the joiner's random nonce.
    ```
    +---------------+---------------+-------+-----+-+---------------+
    |     Kind      |  Length = 12  |Subtype|     |B|   Address ID  |
    +---------------+---------------+-------+-----+-+---------------+
    |                   Receiver's Token (32 bits)                  |
    |                Sender's Random Number (32 bits)               |
    +---------------------------------------------------------------+
    ```"""

    backup: bool
    addr_id: int
    token: int
    nonce: int


@dataclass(frozen=True, slots=True)
class MpJoinSynAck:
    """MP_JOIN on a SYN/ACK, 16 bytes (RFC 8684 3.2): the leftmost 64 bits of the
    responder's HMAC (`thmac`, as the kernel names it) and its nonce.
    ```
    +---------------+---------------+-------+-----+-+---------------+
    |     Kind      |  Length = 16  |Subtype|     |B|   Address ID  |
    +---------------+---------------+-------+-----+-+---------------+
    |                Sender's Truncated HMAC (64 bits)              |
    |                Sender's Random Number (32 bits)               |
    +---------------------------------------------------------------+
    ```"""

    backup: bool
    addr_id: int
    thmac: int
    nonce: int


@dataclass(frozen=True, slots=True)
class MpJoinAck:
    """MP_JOIN on the third ACK, 24 bytes (RFC 8684 3.2): 160 bits of the joiner's HMAC.
    ```
    +---------------+---------------+-------+-----------------------+
    |     Kind      |  Length = 24  |Subtype|      (reserved)       |
    +---------------+---------------+-------+-----------------------+
    |                  Sender's HMAC (160 bits, 20 bytes)           |
    +---------------------------------------------------------------+
    ```"""

    hmac: bytes


@dataclass(frozen=True, slots=True)
class Dss:
    """Data Sequence Signal (RFC 8684 3.3). `data_ack` / `dsn` are None when the A / M
    flag is clear; `data_ack64` / `dsn64` are the a / m flags (kept as sent, even when
    the field they size is absent). Length: 4 + (4|8 with A) + (10|14 with M) + 2 with
    a checksum. Without a mapping `ssn` and `data_len` are 0 (and a checksum, which the
    kernel tolerates there, is ignored by it).
    ```
    +---------------+---------------+-------+----------------------+
    |     Kind      |    Length     |Subtype| (reserved) |F|m|M|a|A|
    +---------------+---------------+-------+----------------------+
    |           Data ACK (4 or 8 octets, depending on flags)       |
    |   Data Sequence Number (4 or 8 octets, depending on flags)   |
    |              Subflow Sequence Number (4 octets)              |
    +-------------------------------+------------------------------+
    |  Data-Level Length (2 octets) |      Checksum (2 octets)     |
    +-------------------------------+------------------------------+
    ```"""

    data_ack: int | None = None
    data_ack64: bool = False
    dsn: int | None = None
    dsn64: bool = False
    ssn: int = 0
    data_len: int = 0
    checksum: int | None = None
    data_fin: bool = False

    @property
    def flags(self) -> int:
        """The flags byte as emitted."""
        return ((MPTCP_DSS_HAS_ACK if self.data_ack is not None else 0)
                | (MPTCP_DSS_ACK64 if self.data_ack64 else 0)
                | (MPTCP_DSS_HAS_MAP if self.dsn is not None else 0)
                | (MPTCP_DSS_DSN64 if self.dsn64 else 0)
                | (MPTCP_DSS_DATA_FIN if self.data_fin else 0))


@dataclass(frozen=True, slots=True)
class AddAddr:
    """ADD_ADDR (RFC 8684 3.4.1; RFC 6824 3.4.1 for v0). `addr` is 4 (IPv4) or 16 (IPv6)
    bytes; `ipver` follows from it. v1: low nibble = flags (E = echo), an HMAC unless an
    echo; lengths v4 16 / echo 8, v6 28 / 20, +2 with a port. v0: low nibble = IPVer,
    no HMAC, no echo; v4 8, v6 20, +2 with a port.
    ```
    +---------------+---------------+-------+-------+---------------+
    |     Kind      |     Length    |Subtype|(rsv)|E|  Address ID   |   v1
    |     Kind      |     Length    |Subtype| IPVer |  Address ID   |   v0
    +---------------+---------------+-------+-------+---------------+
    |           Address (IPv4: 4 octets / IPv6: 16 octets)          |
    +-------------------------------+-------------------------------+
    |   Port (2 octets, optional)   |                               |
    +-------------------------------+                               |
    |                Truncated HMAC (8 octets, v1, not echo)        |
    +---------------------------------------------------------------+
    ```"""

    addr_id: int
    addr: bytes
    port: int | None = None
    hmac: int | None = None
    echo: bool = False
    version: int = 1

    @property
    def ipver(self) -> int:
        return 4 if len(self.addr) == 4 else 6

    @property
    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.addr)


@dataclass(frozen=True, slots=True)
class RemoveAddr:
    """REMOVE_ADDR (RFC 8684 3.4.2): 3 + n bytes for n address ids (1..8 in the kernel).
    ```
    +---------------+---------------+-------+-------+---------------+
    |     Kind      |  Length = 3+n |Subtype|(resvd)|   Address ID  | ...
    +---------------+---------------+-------+-------+---------------+
    ```"""

    addr_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MpPrio:
    """MP_PRIO (RFC 8684 3.3.8): 3 bytes, the B flag for the subflow it is sent on. The
    RFC 6824 form has 4 bytes with an address id (`addr_id` not None); the kernel
    ignores it.
    ```
    +---------------+---------------+-------+-----+-+--------------+
    |     Kind      |     Length    |Subtype|     |B| AddrID (v0)  |
    +---------------+---------------+-------+-----+-+--------------+
    ```"""

    backup: bool
    addr_id: int | None = None


@dataclass(frozen=True, slots=True)
class MpFail:
    """MP_FAIL (RFC 8684 3.7): 12 bytes, the 64-bit DSN where the checksum failed.
    ```
    +---------------+---------------+-------+----------------------+
    |     Kind      |   Length=12   |Subtype|      (reserved)      |
    +---------------+---------------+-------+----------------------+
    |                 Data Sequence Number (8 octets)              |
    +--------------------------------------------------------------+
    ```"""

    dsn: int


@dataclass(frozen=True, slots=True)
class MpFastclose:
    """MP_FASTCLOSE (RFC 8684 3.5): 12 bytes, the key of the option's receiver.
    ```
    +---------------+---------------+-------+-----------------------+
    |     Kind      |    Length     |Subtype|      (reserved)       |
    +---------------+---------------+-------+-----------------------+
    |                      Option Receiver's Key (64 bits)          |
    +---------------------------------------------------------------+
    ```"""

    receiver_key: int


@dataclass(frozen=True, slots=True)
class MpTcpRst:
    """MP_TCPRST (RFC 8684 3.6): 4 bytes, on RST segments only. `flags` is the U V W T
    nibble (T = 0x01: transient error); `reason` an `MptcpResetReason` value.
    ```
    +---------------+---------------+-------+-----------------------+
    |     Kind      |    Length     |Subtype|U|V|W|T|    Reason     |
    +---------------+---------------+-------+-----------------------+
    ```"""

    reason: int
    flags: int = 0

    @property
    def transient(self) -> bool:
        return bool(self.flags & MPTCP_RST_TRANSIENT)


@dataclass(frozen=True, slots=True)
class UnknownMptcp:
    """A suboption of an unassigned subtype (9..15), ignored by the receiver. `data` is
    the option after kind and length (so `data[0] >> 4 == subtype`), kept for round
    trips and traces."""

    subtype: int
    data: bytes


MptcpOption = (MpCapable | MpJoinSyn | MpJoinSynAck | MpJoinAck | Dss | AddAddr | RemoveAddr
               | MpPrio | MpFail | MpFastclose | MpTcpRst | UnknownMptcp)


# --- parse ---------------------------------------------------------------------------
def _mpc_context_ok(version: int, n: int, syn: bool, ack: bool, has_data: bool | None) -> bool:
    """The kernel's expected MP_CAPABLE size per segment (`mptcp_parse_option`): SYN 4,
    SYN/ACK 12, else 20 without payload and 22 (24 with a checksum) with payload; v0
    (RFC 6824) 12 on SYN and SYN/ACK and 20 after."""
    if syn:
        return (n == TCPOLEN_MPTCP_MPC_SYNACK if (version == 0 or ack)
                else n == TCPOLEN_MPTCP_MPC_SYN)
    if version == 0:
        return n == TCPOLEN_MPTCP_MPC_ACK_V0
    if has_data is None:
        return n in (TCPOLEN_MPTCP_MPC_ACK, TCPOLEN_MPTCP_MPC_ACK_DATA,
                     TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM)
    if has_data:
        return n in (TCPOLEN_MPTCP_MPC_ACK_DATA, TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM)
    return n == TCPOLEN_MPTCP_MPC_ACK


def _parse_mpc(b: bytes, n: int, syn: bool | None, ack: bool, has_data: bool | None) -> MpCapable:
    version = b[0] & MPTCP_VERSION_MASK
    if n == TCPOLEN_MPTCP_MPC_SYN:
        # "try to be gentle vs future versions on the initial syn": any version >= 1
        if version < MPTCP_SUPPORTED_VERSION:
            raise MalformedPacket("mptcp-mpc-version", f"version {version} in 4 bytes")
    elif n in (TCPOLEN_MPTCP_MPC_SYNACK, TCPOLEN_MPTCP_MPC_ACK):
        if version > MPTCP_SUPPORTED_VERSION:
            raise MalformedPacket("mptcp-mpc-version", f"version {version} in {n} bytes")
    elif n in (TCPOLEN_MPTCP_MPC_ACK_DATA, TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM):
        if version != MPTCP_SUPPORTED_VERSION:
            raise MalformedPacket("mptcp-mpc-version", f"version {version} in {n} bytes")
    else:
        raise MalformedPacket("mptcp-mpc-length", f"{n} bytes")
    if syn is not None and not _mpc_context_ok(version, n, syn, ack, has_data):
        where = ("SYN/ACK" if ack else "SYN") if syn else (
            "non-SYN segment" + ("" if has_data is None else
                                 " with data" if has_data else " without data"))
        raise MalformedPacket("mptcp-mpc-length", f"v{version} {n} bytes on a {where}")
    sender = receiver = data_len = csum = None
    if n >= TCPOLEN_MPTCP_MPC_SYNACK:
        sender = _U64.unpack_from(b, 2)[0]
    if n >= TCPOLEN_MPTCP_MPC_ACK:
        receiver = _U64.unpack_from(b, 10)[0]
    if n >= TCPOLEN_MPTCP_MPC_ACK_DATA:
        data_len = _U16.unpack_from(b, 18)[0]
    if n == TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM:
        csum = _U16.unpack_from(b, 20)[0]
    return MpCapable(version, b[1], sender, receiver, data_len, csum)


def _parse_mpj(b: bytes, n: int) -> MpJoinSyn | MpJoinSynAck | MpJoinAck:
    # Told apart by length only, as in the kernel; the segment's flags are the caller's.
    if n == TCPOLEN_MPTCP_MPJ_SYN:
        token, nonce = _II.unpack_from(b, 2)
        return MpJoinSyn(bool(b[0] & MPTCPOPT_BACKUP), b[1], token, nonce)
    if n == TCPOLEN_MPTCP_MPJ_SYNACK:
        thmac, nonce = _QI.unpack_from(b, 2)
        return MpJoinSynAck(bool(b[0] & MPTCPOPT_BACKUP), b[1], thmac, nonce)
    if n == TCPOLEN_MPTCP_MPJ_ACK:
        return MpJoinAck(bytes(b[2:2 + MPTCPOPT_HMAC_LEN]))
    raise MalformedPacket("mptcp-mpj-length", f"{n} bytes")


def _dss_layout(flags: int) -> tuple[int, struct.Struct | None]:
    fmt, n = "!", TCPOLEN_MPTCP_DSS_BASE
    if flags & MPTCP_DSS_HAS_ACK:
        wide = flags & MPTCP_DSS_ACK64
        fmt += "Q" if wide else "I"
        n += TCPOLEN_MPTCP_DSS_ACK64 if wide else TCPOLEN_MPTCP_DSS_ACK32
    if flags & MPTCP_DSS_HAS_MAP:
        wide = flags & MPTCP_DSS_DSN64
        fmt += ("Q" if wide else "I") + "IH"
        n += TCPOLEN_MPTCP_DSS_MAP64 if wide else TCPOLEN_MPTCP_DSS_MAP32
    return n, (struct.Struct(fmt) if len(fmt) > 1 else None)


# (expected length without checksum, body struct) for each A/a/M/m combination.
_DSS_LAYOUTS = tuple(_dss_layout(f) for f in range(16))


def _parse_dss(b: bytes, n: int) -> Dss:
    if n < TCPOLEN_MPTCP_DSS_BASE:
        raise MalformedPacket("mptcp-dss-length", f"{n} bytes, no flags")
    flags = b[1] & MPTCP_DSS_FLAG_MASK
    expected, st = _DSS_LAYOUTS[flags & 0x0F]
    # The kernel accepts the expected length with or without the 2 checksum bytes
    # (RFC 8684 3.3.0's checks on checksum presence come later, in subflow_data_ready).
    if n == expected:
        csum = None
    elif n == expected + TCPOLEN_MPTCP_DSS_CHECKSUM:
        csum = _U16.unpack_from(b, n - 4)[0]
    else:
        raise MalformedPacket("mptcp-dss-length", f"{n} bytes for flags 0x{flags:02x}")
    vals = st.unpack_from(b, 2) if st is not None else ()
    data_ack = dsn = None
    ssn = data_len = 0
    if flags & MPTCP_DSS_HAS_ACK:
        data_ack = vals[0]
        if flags & MPTCP_DSS_HAS_MAP:
            dsn, ssn, data_len = vals[1:]
    elif flags & MPTCP_DSS_HAS_MAP:
        dsn, ssn, data_len = vals
    return Dss(data_ack, bool(flags & MPTCP_DSS_ACK64), dsn, bool(flags & MPTCP_DSS_DSN64),
               ssn, data_len, csum, bool(flags & MPTCP_DSS_DATA_FIN))


_ADD_ADDR_V1 = {  # length -> (address bytes, has port), non-echo
    TCPOLEN_MPTCP_ADD_ADDR: (4, False), TCPOLEN_MPTCP_ADD_ADDR_PORT: (4, True),
    TCPOLEN_MPTCP_ADD_ADDR6: (16, False), TCPOLEN_MPTCP_ADD_ADDR6_PORT: (16, True)}
_ADD_ADDR_ECHO = {  # echo (v1), and v0 (same lengths)
    TCPOLEN_MPTCP_ADD_ADDR_BASE: (4, False), TCPOLEN_MPTCP_ADD_ADDR_BASE_PORT: (4, True),
    TCPOLEN_MPTCP_ADD_ADDR6_BASE: (16, False), TCPOLEN_MPTCP_ADD_ADDR6_BASE_PORT: (16, True)}


def _parse_add_addr(b: bytes, n: int) -> AddAddr:
    nib = b[0] & 0x0F
    version = 1
    if nib & MPTCP_ADDR_ECHO:
        echo = True
        layout = _ADD_ADDR_ECHO.get(n)
    else:
        echo = False
        layout = _ADD_ADDR_V1.get(n)
        if layout is None:
            # RFC 6824 layout: the nibble is IPVer (4 or 6, never odd, so never an echo)
            # and the lengths are those of a v1 echo, which a v1 non-echo never has.
            v0 = _ADD_ADDR_ECHO.get(n)
            if v0 is not None and nib == (4 if v0[0] == 4 else 6):
                layout, version = v0, 0
    if layout is None:
        raise MalformedPacket("mptcp-add-addr-length",
                              f"{n} bytes, {'echo' if echo else f'nibble {nib}'}")
    alen, has_port = layout
    addr = bytes(b[2:2 + alen])
    port = _U16.unpack_from(b, 2 + alen)[0] if has_port else None
    hmac = _U64.unpack_from(b, n - 10)[0] if (version == 1 and not echo) else None
    return AddAddr(b[1], addr, port, hmac, echo, version)


def _parse_rm_addr(b: bytes, n: int) -> RemoveAddr:
    if not TCPOLEN_MPTCP_RM_ADDR_BASE + 1 <= n <= TCPOLEN_MPTCP_RM_ADDR_BASE + MPTCP_RM_IDS_MAX:
        raise MalformedPacket("mptcp-rm-addr-length", f"{n} bytes")
    return RemoveAddr(tuple(b[1:]))


def _parse_prio(b: bytes, n: int) -> MpPrio:
    if n == TCPOLEN_MPTCP_PRIO:
        return MpPrio(bool(b[0] & MPTCP_PRIO_BKUP))
    if n == TCPOLEN_MPTCP_PRIO_V0:
        return MpPrio(bool(b[0] & MPTCP_PRIO_BKUP), b[1])
    raise MalformedPacket("mptcp-prio-length", f"{n} bytes")


def _parse_fail(b: bytes, n: int) -> MpFail:
    if n != TCPOLEN_MPTCP_FAIL:
        raise MalformedPacket("mptcp-fail-length", f"{n} bytes")
    return MpFail(_U64.unpack_from(b, 2)[0])


def _parse_fastclose(b: bytes, n: int) -> MpFastclose:
    if n != TCPOLEN_MPTCP_FASTCLOSE:
        raise MalformedPacket("mptcp-fastclose-length", f"{n} bytes")
    return MpFastclose(_U64.unpack_from(b, 2)[0])


def _parse_rst(b: bytes, n: int) -> MpTcpRst:
    if n != TCPOLEN_MPTCP_RST:
        raise MalformedPacket("mptcp-tcprst-length", f"{n} bytes")
    return MpTcpRst(b[1], b[0] & 0x0F)


_PARSERS: dict[int, Callable[[bytes, int], MptcpOption]] = {
    MPTCPOPT_MP_JOIN: _parse_mpj, MPTCPOPT_DSS: _parse_dss, MPTCPOPT_ADD_ADDR: _parse_add_addr,
    MPTCPOPT_RM_ADDR: _parse_rm_addr, MPTCPOPT_MP_PRIO: _parse_prio,
    MPTCPOPT_MP_FAIL: _parse_fail, MPTCPOPT_MP_FASTCLOSE: _parse_fastclose,
    MPTCPOPT_RST: _parse_rst}


def parse_body(data: bytes, syn: bool | None = None, ack: bool = False,
               has_data: bool | None = None) -> MptcpOption:
    """Parse an MPTCP option given its bytes after kind and length (what
    `UnknownOption(30, data).data` holds). See `parse_option`."""
    if not data:
        raise MalformedPacket("mptcp-truncated", "no subtype byte")
    subtype = data[0] >> 4
    n = len(data) + 2
    if subtype == MPTCPOPT_MP_CAPABLE:
        return _parse_mpc(data, n, syn, ack, has_data)
    parser = _PARSERS.get(subtype)
    if parser is None:
        return UnknownMptcp(subtype, bytes(data))
    return parser(data, n)


def parse_option(opt: bytes, syn: bool | None = None, ack: bool = False,
                 has_data: bool | None = None) -> MptcpOption:
    """Parse one whole MPTCP option (kind 30, length, body), mirroring the kernel's
    `mptcp_parse_option`: a length that does not match the subtype and flags raises
    `MalformedPacket` (the kernel ignores such an option); an unassigned subtype gives
    `UnknownMptcp`.

    MP_CAPABLE's layout is read from its length and version nibble (12 bytes: v1
    SYN/ACK or v0 SYN, both "sender key"). With `syn` given (the segment's SYN flag,
    `ack` its ACK flag, `has_data` whether it carries payload, None = unknown) the
    kernel's per-segment size check applies too: v1 SYN 4, SYN/ACK 12, else 20 without
    and 22/24 with payload; v0 12 on SYN and SYN/ACK, 20 after. With `syn=None` (the
    default) any valid layout is accepted. MP_JOIN's layout is told by length alone."""
    if len(opt) < 3:
        raise MalformedPacket("mptcp-truncated", f"{len(opt)} bytes")
    if opt[0] != OPT_MPTCP:
        raise MalformedPacket("mptcp-not-mptcp", f"kind {opt[0]}")
    if opt[1] != len(opt):
        raise MalformedPacket("mptcp-truncated" if opt[1] > len(opt) else "mptcp-option-length",
                              f"length byte {opt[1]}, {len(opt)} bytes")
    return parse_body(bytes(opt[2:]), syn, ack, has_data)


def parse_tcp_option(o: UnknownOption, syn: bool | None = None, ack: bool = False,
                     has_data: bool | None = None) -> MptcpOption:
    """Parse the MPTCP option the TCP codec kept as `UnknownOption(30, data)`."""
    if o.kind != OPT_MPTCP:
        raise MalformedPacket("mptcp-not-mptcp", f"kind {o.kind}")
    return parse_body(o.data, syn, ack, has_data)


# --- emit ----------------------------------------------------------------------------
def _check(value: int, bits: int, name: str) -> int:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name}={value} does not fit in {bits} bits")
    return value


def _emit_mpc(o: MpCapable) -> bytes:
    v, flags = _check(o.version, 4, "version"), _check(o.flags, 8, "flags")
    head = bytes((OPT_MPTCP, 0, MPTCPOPT_MP_CAPABLE << 4 | v, flags))
    if o.sender_key is None:
        if o.receiver_key is not None or o.data_len is not None or o.checksum is not None:
            raise ValueError("MP_CAPABLE: a receiver key, length or checksum needs a sender key")
        if v < 1:
            raise ValueError("MP_CAPABLE: v0 has no 4-byte (keyless) form")
        body = b""
    elif o.receiver_key is None:
        if o.data_len is not None or o.checksum is not None:
            raise ValueError("MP_CAPABLE: a data-level length needs both keys")
        body = _U64.pack(_check(o.sender_key, 64, "sender_key"))
    else:
        body = _QQ.pack(_check(o.sender_key, 64, "sender_key"),
                        _check(o.receiver_key, 64, "receiver_key"))
        if o.data_len is not None:
            body += _U16.pack(_check(o.data_len, 16, "data_len"))
            if o.checksum is not None:
                body += _U16.pack(_check(o.checksum, 16, "checksum"))
        elif o.checksum is not None:
            raise ValueError("MP_CAPABLE: a checksum needs a data-level length")
    if v > MPTCP_SUPPORTED_VERSION and body:
        raise ValueError(f"MP_CAPABLE: version {v} only in the 4-byte SYN form")
    if v == 0 and o.data_len is not None:
        raise ValueError("MP_CAPABLE: v0 has no data-level length")
    out = bytearray(head + body)
    out[1] = len(out)
    return bytes(out)


def _emit_mpj_syn(o: MpJoinSyn) -> bytes:
    return bytes((OPT_MPTCP, TCPOLEN_MPTCP_MPJ_SYN, MPTCPOPT_MP_JOIN << 4 | bool(o.backup),
                  _check(o.addr_id, 8, "addr_id"))) + _II.pack(
        _check(o.token, 32, "token"), _check(o.nonce, 32, "nonce"))


def _emit_mpj_synack(o: MpJoinSynAck) -> bytes:
    return bytes((OPT_MPTCP, TCPOLEN_MPTCP_MPJ_SYNACK, MPTCPOPT_MP_JOIN << 4 | bool(o.backup),
                  _check(o.addr_id, 8, "addr_id"))) + _QI.pack(
        _check(o.thmac, 64, "thmac"), _check(o.nonce, 32, "nonce"))


def _emit_mpj_ack(o: MpJoinAck) -> bytes:
    if len(o.hmac) != MPTCPOPT_HMAC_LEN:
        raise ValueError(f"MP_JOIN ACK: HMAC of {len(o.hmac)} bytes, not {MPTCPOPT_HMAC_LEN}")
    return bytes((OPT_MPTCP, TCPOLEN_MPTCP_MPJ_ACK, MPTCPOPT_MP_JOIN << 4, 0)) + bytes(o.hmac)


def _emit_dss(o: Dss) -> bytes:
    flags = o.flags
    n, st = _DSS_LAYOUTS[flags & 0x0F]
    vals: list[int] = []
    if o.data_ack is not None:
        vals.append(_check(o.data_ack, 64 if o.data_ack64 else 32, "data_ack"))
    if o.dsn is not None:
        vals += (_check(o.dsn, 64 if o.dsn64 else 32, "dsn"), _check(o.ssn, 32, "ssn"),
                 _check(o.data_len, 16, "data_len"))
    elif o.ssn or o.data_len:
        raise ValueError("DSS: ssn and data_len need a mapping (dsn)")
    if o.checksum is not None:
        n += TCPOLEN_MPTCP_DSS_CHECKSUM
    out = bytes((OPT_MPTCP, n, MPTCPOPT_DSS << 4, flags))
    if st is not None:
        out += st.pack(*vals)
    if o.checksum is not None:
        out += _U16.pack(_check(o.checksum, 16, "checksum"))
    return out


def _emit_add_addr(o: AddAddr) -> bytes:
    alen = len(o.addr)
    if alen not in (4, 16):
        raise ValueError(f"ADD_ADDR: address of {alen} bytes, not 4 or 16")
    if o.version == 1:
        if o.echo != (o.hmac is None):
            raise ValueError("ADD_ADDR: a v1 option has an HMAC exactly when it is not an echo")
        nib = MPTCP_ADDR_ECHO if o.echo else 0
    elif o.version == 0:
        if o.echo or o.hmac is not None:
            raise ValueError("ADD_ADDR: v0 has neither echo nor HMAC")
        nib = o.ipver
    else:
        raise ValueError(f"ADD_ADDR: version {o.version}")
    body = bytes(o.addr)
    if o.port is not None:
        body += _U16.pack(_check(o.port, 16, "port"))
    if o.hmac is not None:
        body += _U64.pack(_check(o.hmac, 64, "hmac"))
    return bytes((OPT_MPTCP, 4 + len(body), MPTCPOPT_ADD_ADDR << 4 | nib,
                  _check(o.addr_id, 8, "addr_id"))) + body


def _emit_rm_addr(o: RemoveAddr) -> bytes:
    if not 1 <= len(o.addr_ids) <= MPTCP_RM_IDS_MAX:
        raise ValueError(f"REMOVE_ADDR: {len(o.addr_ids)} ids, 1..{MPTCP_RM_IDS_MAX}")
    return bytes((OPT_MPTCP, TCPOLEN_MPTCP_RM_ADDR_BASE + len(o.addr_ids),
                  MPTCPOPT_RM_ADDR << 4, *(_check(i, 8, "addr_id") for i in o.addr_ids)))


def _emit_prio(o: MpPrio) -> bytes:
    head = bytes((OPT_MPTCP, TCPOLEN_MPTCP_PRIO, MPTCPOPT_MP_PRIO << 4 | bool(o.backup)))
    if o.addr_id is None:
        return head
    return bytes((OPT_MPTCP, TCPOLEN_MPTCP_PRIO_V0, head[2], _check(o.addr_id, 8, "addr_id")))


def _emit_fail(o: MpFail) -> bytes:
    return bytes((OPT_MPTCP, TCPOLEN_MPTCP_FAIL, MPTCPOPT_MP_FAIL << 4, 0)) + _U64.pack(
        _check(o.dsn, 64, "dsn"))


def _emit_fastclose(o: MpFastclose) -> bytes:
    return bytes((OPT_MPTCP, TCPOLEN_MPTCP_FASTCLOSE, MPTCPOPT_MP_FASTCLOSE << 4, 0)) + _U64.pack(
        _check(o.receiver_key, 64, "receiver_key"))


def _emit_rst(o: MpTcpRst) -> bytes:
    return bytes((OPT_MPTCP, TCPOLEN_MPTCP_RST, MPTCPOPT_RST << 4 | _check(o.flags, 4, "flags"),
                  _check(o.reason, 8, "reason")))


def _emit_unknown(o: UnknownMptcp) -> bytes:
    if not o.data or o.data[0] >> 4 != o.subtype or o.subtype <= MPTCPOPT_RST:
        raise ValueError(f"UnknownMptcp: subtype {o.subtype} and data {o.data.hex()} disagree")
    if len(o.data) > 253:
        raise ValueError("UnknownMptcp: too long")
    return bytes((OPT_MPTCP, 2 + len(o.data))) + o.data


_EMITTERS: dict[type, Callable[..., bytes]] = {
    MpCapable: _emit_mpc, MpJoinSyn: _emit_mpj_syn, MpJoinSynAck: _emit_mpj_synack,
    MpJoinAck: _emit_mpj_ack, Dss: _emit_dss, AddAddr: _emit_add_addr,
    RemoveAddr: _emit_rm_addr, MpPrio: _emit_prio, MpFail: _emit_fail,
    MpFastclose: _emit_fastclose, MpTcpRst: _emit_rst, UnknownMptcp: _emit_unknown}


def emit_option(o: MptcpOption) -> bytes:
    """Serialise one MPTCP option, kind and length included: the inverse of
    `parse_option`, reserved bits zero (as the kernel's `mptcp_write_options` writes
    them). Raises ValueError for values no valid option has (caller error)."""
    emitter = _EMITTERS.get(type(o))
    if emitter is None:
        raise TypeError(f"not an MPTCP option: {o!r}")
    return emitter(o)


def option_len(o: MptcpOption) -> int:
    """The option's length in bytes (for the writer's option-space budget), without
    serialising the common DSS."""
    if type(o) is Dss:
        n = _DSS_LAYOUTS[o.flags & 0x0F][0]
        return n + TCPOLEN_MPTCP_DSS_CHECKSUM if o.checksum is not None else n
    return len(emit_option(o))


def to_tcp_option(o: MptcpOption) -> UnknownOption:
    """The option as the TCP codec carries it: `UnknownOption(30, bytes after kind and
    length)`, ready for `stack.wire.tcp.emit_options`."""
    return UnknownOption(OPT_MPTCP, emit_option(o)[2:])


# --- describe ------------------------------------------------------------------------
def _letters(value: int, letters: str, top: int) -> str:
    """Letters of the set bits, most significant first (`letters[0]` is bit `top`)."""
    return "".join(ch for i, ch in enumerate(letters) if value & (1 << (top - i))) or "-"


def _key(name: str, key: int | None, version: int) -> str:
    if key is None:
        return ""
    if version in (0, 1):
        token, idsn = key_token_idsn(key, version)
        return f" {name}=0x{key:016x} (token {token:08x}, idsn 0x{idsn:016x})"
    return f" {name}=0x{key:016x}"


def describe(o: MptcpOption) -> str:
    """A one-line, human-readable rendering with every field: keys and HMACs in hex
    (with the token and IDSN a key implies), tokens as `ip mptcp monitor` prints them,
    flags by letter."""
    if isinstance(o, MpCapable):
        s = f"MP_CAPABLE v{o.version} flags={_letters(o.flags, 'ABCDEFGH', 7)}(0x{o.flags:02x})"
        s += _key("sender_key", o.sender_key, o.version)
        s += _key("receiver_key", o.receiver_key, o.version)
        if o.data_len is not None:
            s += f" data_len={o.data_len}"
        if o.checksum is not None:
            s += f" csum=0x{o.checksum:04x}"
        return s
    if isinstance(o, MpJoinSyn):
        return (f"MP_JOIN SYN backup={int(o.backup)} addr_id={o.addr_id} token={o.token:08x}"
                f" nonce=0x{o.nonce:08x}")
    if isinstance(o, MpJoinSynAck):
        return (f"MP_JOIN SYN/ACK backup={int(o.backup)} addr_id={o.addr_id}"
                f" thmac=0x{o.thmac:016x} nonce=0x{o.nonce:08x}")
    if isinstance(o, MpJoinAck):
        return f"MP_JOIN ACK hmac={o.hmac.hex()}"
    if isinstance(o, Dss):
        s = f"DSS flags={_letters(o.flags, 'FmMaA', 4)}"
        if o.data_ack is not None:
            s += f" data_ack=0x{o.data_ack:0{16 if o.data_ack64 else 8}x}"
        if o.dsn is not None:
            s += (f" dsn=0x{o.dsn:0{16 if o.dsn64 else 8}x} ssn={o.ssn} data_len={o.data_len}")
        if o.checksum is not None:
            s += f" csum=0x{o.checksum:04x}"
        if o.data_fin:
            s += " DATA_FIN"
        return s
    if isinstance(o, AddAddr):
        s = "ADD_ADDR" + (" v0" if o.version == 0 else "") + (" echo" if o.echo else "")
        s += f" addr_id={o.addr_id} {o.address}"
        if o.port is not None:
            s += f" port={o.port}"
        if o.hmac is not None:
            s += f" hmac=0x{o.hmac:016x}"
        return s
    if isinstance(o, RemoveAddr):
        return "REMOVE_ADDR addr_ids=" + ",".join(str(i) for i in o.addr_ids)
    if isinstance(o, MpPrio):
        s = f"MP_PRIO backup={int(o.backup)}"
        return s if o.addr_id is None else f"MP_PRIO v0 backup={int(o.backup)} addr_id={o.addr_id}"
    if isinstance(o, MpFail):
        return f"MP_FAIL dsn=0x{o.dsn:016x}"
    if isinstance(o, MpFastclose):
        return f"MP_FASTCLOSE receiver_key=0x{o.receiver_key:016x}"
    if isinstance(o, MpTcpRst):
        text = _RESET_TEXT[o.reason] if o.reason < len(_RESET_TEXT) else "unknown"
        return (f"MP_TCPRST reason={o.reason} ({text}) flags={_letters(o.flags, 'UVWT', 3)}"
                f"(0x{o.flags:x})")
    return f"MPTCP subtype {o.subtype} (unknown) data={o.data.hex()}"
