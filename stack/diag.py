"""Diagnosis: what went wrong with a connection, in one line, with the packet that proves it.

Sans-I/O like the rest of the core: the MPTCP layer, the TCP engine and the host record
a `Finding` at the moment they see its cause (a reset join, a stripped option, a
checksum that failed, a window that stayed shut), pointing at the packet involved by
its frame number: the stack counts every packet it takes in or sends out, in the order
`Stack.tap` sees them, so frame N here is frame N in `--pcap` and in Wireshark.

Codes are stable (the README lists them; scripts match on them). A finding is `unmet`
when something the user asked for did not happen (a join, an announcement, MPTCP or
DSS checksums): the CLI exits with its own status then, even if every byte arrived.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum, unique

from stack.addr import fmt

Key = tuple[bytes, int, bytes, int]  # (local addr, local port, remote addr, remote port)


@unique
class Code(StrEnum):
    JOIN_REFUSED = "join-refused"
    ADD_ADDR_IGNORED = "add-addr-ignored"
    ADD_ADDR_NOT_ECHOED = "add-addr-not-echoed"
    JOIN_UNKNOWN_TOKEN = "join-unknown-token"
    JOIN_BAD_HMAC = "join-bad-hmac"
    MPC_VERSION_UNSUPPORTED = "mpc-version-unsupported"
    MPC_STRIPPED = "mpc-stripped"
    DSS_STRIPPED = "dss-stripped"
    DSS_CHECKSUM_FAILED = "dss-checksum-failed"
    MPC_SYN_BLACKHOLED = "mpc-syn-blackholed"
    JOIN_INITIAL_DENIED = "join-initial-denied"
    JOIN_NOT_OPENED = "join-not-opened"
    ADD_ADDR_OTHER_FAMILY = "add-addr-other-family"
    PATH_FAILED = "path-failed"
    SUBFLOW_RESET = "subflow-reset"
    FASTCLOSE = "fastclose"
    WINDOW_STALL = "window-stall"
    FALLBACK = "fallback"
    VALUE_MISMATCH = "value-mismatch"  # offline (analyze): a derived value did not check


@unique
class Severity(StrEnum):
    ERROR = "error"      # the connection, or something asked for, failed
    WARNING = "warning"  # it went on, but not as it should have (a path lost, a fallback)
    INFO = "info"        # worth knowing (the peer fast-closed as it may)


# Codes that mean "something the user asked for did not happen".
# (join-unknown-token is not one: a join someone else sent to our listener)
UNMET = frozenset({Code.JOIN_REFUSED, Code.JOIN_NOT_OPENED, Code.ADD_ADDR_IGNORED,
                   Code.ADD_ADDR_NOT_ECHOED,
                   Code.JOIN_BAD_HMAC, Code.MPC_VERSION_UNSUPPORTED,
                   Code.MPC_STRIPPED, Code.DSS_STRIPPED, Code.DSS_CHECKSUM_FAILED,
                   Code.MPC_SYN_BLACKHOLED, Code.JOIN_INITIAL_DENIED, Code.FALLBACK})


@dataclass(frozen=True, slots=True)
class PacketRef:
    """One packet: its frame number (1-based, as in `--pcap`), the stack's clock when
    it passed, its direction ("in" / "out") and the subflow it belongs to."""
    frame: int
    time: float
    direction: str
    subflow: Key | None = None

    def describe(self, t0: float) -> str:
        where = f" on {fmt_key(self.subflow)}" if self.subflow else ""
        arrow = "received" if self.direction == "in" else "sent"
        return f"frame {self.frame} ({arrow} at {self.time - t0:.4f} s{where})"

    def as_dict(self, t0: float) -> dict[str, object]:
        return {"frame": self.frame, "time": round(self.time - t0, 6),
                "direction": self.direction,
                "subflow": fmt_key(self.subflow) if self.subflow else None}


@dataclass(frozen=True, slots=True)
class Finding:
    code: Code
    severity: Severity
    text: str
    packet: PacketRef | None = None
    hint: str = ""

    @property
    def unmet(self) -> bool:
        return self.code in UNMET

    def line(self, t0: float) -> str:
        """`<severity> <code>: <text> [<packet>] (hint: ...)`, the one line we print."""
        where = f" [{self.packet.describe(t0)}]" if self.packet is not None else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{self.severity} {self.code}: {self.text}{where}{hint}"

    def as_dict(self, t0: float) -> dict[str, object]:
        return {"code": str(self.code), "severity": str(self.severity), "text": self.text,
                "packet": self.packet.as_dict(t0) if self.packet is not None else None,
                "hint": self.hint}


class FrameClock:
    """The stack's packet count, shared with every connection's `Diagnosis`. `n` is the
    frame number of the last packet taken in or handed out; `out_base` + k is the
    frame number of the k-th segment a connection writes in the current transmit poll
    (the host sets it before polling each connection)."""

    __slots__ = ("n", "out_base")

    def __init__(self) -> None:
        self.n = 0
        self.out_base = 0


@dataclass
class Diagnosis:
    """The findings of one connection (or of the host, for packets no connection
    owns), in the order they were made; each (code, key) once. `on_finding` lets the
    owner turn each into an event as it is made."""
    frames: FrameClock
    t0: float
    findings: list[Finding] = field(default_factory=list)
    on_finding: Callable[[Finding], None] | None = None
    _seen: set[tuple[Code, object]] = field(default_factory=set)

    def packet_in(self, now: float, subflow: Key | None) -> PacketRef:
        """The packet being processed right now (an input)."""
        return PacketRef(self.frames.n, now, "in", subflow)

    def packet_out(self, now: float, subflow: Key | None, index: int) -> PacketRef:
        """The `index`-th (1-based) segment written in the current transmit poll."""
        return PacketRef(self.frames.out_base + index, now, "out", subflow)

    def add(self, code: Code, severity: Severity, text: str, packet: PacketRef | None = None,
            hint: str = "", key: object = None) -> Finding | None:
        """Record a finding unless one with the same code and `key` exists."""
        if (code, key) in self._seen:
            return None
        self._seen.add((code, key))
        f = Finding(code, severity, text, packet, hint)
        self.findings.append(f)
        if self.on_finding is not None:
            self.on_finding(f)
        return f

    def has(self, code: Code) -> bool:
        return any(f.code is code for f in self.findings)


def fmt_key(key: Key | None) -> str:
    if key is None:
        return "-"
    la, lp, ra, rp = key
    return f"{fmt(la, lp)} > {fmt(ra, rp)}"


# RFC 8684 3.6: MP_TCPRST reason codes, as a user needs them explained.
RST_REASONS = {
    0: "unspecified error",
    1: "MPTCP-specific error (the peer's MPTCP rules were broken, e.g. a wrong join HMAC "
       "or an unknown token)",
    2: "lack of resources (the peer's subflow or memory limits)",
    3: "administratively prohibited (the peer's policy refused this subflow; Linux: "
       "also its subflow limit)",
    4: "too much outstanding data",
    5: "unacceptable performance (the subflow's path was too slow)",
    6: "middlebox interference (options stripped or payload changed on the path)",
}
