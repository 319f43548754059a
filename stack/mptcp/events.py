"""Connection-level events: what `ip mptcp monitor` reports, with the same names and
fields, plus ours (FALLBACK, MP_FAIL, ...). Small frozen values; `tools/events.py`
turns them into the `--events` JSON lines."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum, unique

from stack.diag import Finding


@unique
class MptcpEventType(StrEnum):
    # as `ip mptcp monitor` (the kernel's MPTCP_EVENT_*)
    CREATED = "CREATED"
    ESTABLISHED = "ESTABLISHED"
    CLOSED = "CLOSED"
    ANNOUNCED = "ANNOUNCED"        # the peer announced an address (ADD_ADDR)
    REMOVED = "REMOVED"            # the peer withdrew one (REMOVE_ADDR)
    SF_ESTABLISHED = "SF_ESTABLISHED"
    SF_CLOSED = "SF_CLOSED"
    SF_PRIORITY = "SF_PRIORITY"
    # ours
    FALLBACK = "FALLBACK"          # the connection became plain TCP (RFC 8684 3.7)
    MP_FAIL = "MP_FAIL"            # a DSS checksum failed, ours or the peer's
    MP_FASTCLOSE = "MP_FASTCLOSE"  # the peer aborted the connection
    MP_TCPRST = "MP_TCPRST"        # an RST with a reason arrived on a subflow
    JOIN_FAILED = "JOIN_FAILED"    # a join was refused (HMAC, missing MP_JOIN)
    SF_STALE = "SF_STALE"          # a subflow stopped answering (repeated RTOs)
    DIAGNOSIS = "DIAGNOSIS"        # a finding of stack.diag: what went wrong, and where


@dataclass(frozen=True, slots=True)
class MptcpEvent:
    """One event. `token` is ours; `detail` says why (an error for CLOSED/SF_CLOSED).
    SF_* events carry the subflow's addresses, ports and ids; ANNOUNCED the peer's
    address (`daddr`), `port` (0: none) and id (`remid`); REMOVED the id; DIAGNOSIS
    its `finding`."""
    name: MptcpEventType
    token: int
    remote_token: int | None = None
    detail: str | None = None
    saddr: bytes | None = None
    daddr: bytes | None = None
    sport: int | None = None
    dport: int | None = None
    locid: int | None = None
    remid: int | None = None
    backup: bool | None = None
    port: int | None = None
    finding: Finding | None = None
