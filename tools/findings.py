"""The diagnosis, offline: what went wrong with one MPTCP connection of a capture, one
line per finding with the frame that proves it.

The same codes and line format as the live diagnosis (stack/diag.py), found from the
wire alone, on a capture taken anywhere (two kernels, a middlebox, our `--pcap`). Two
sources:

- the ladder's derived values (tools/trace.py, fed every packet of the connection): a
  value marked MISMATCH (join HMACs, DSS checksums, tokens, echoed keys, first DSNs,
  ADD_ADDR HMACs, the MP_FASTCLOSE key), a fallback, an MP_FAIL, a version answered
  with another;
- what the subflows did (tools/analyze.py's first pass): joins reset in their
  handshake or never answered, established subflows reset (MP_TCPRST reason), fast
  close, ADD_ADDRs never echoed or echoed and never joined, MP_CAPABLE SYNs unanswered
  (and the plain SYN the kernel sends after them), segments sent again and again and
  never acknowledged (a failed path), receive windows shut for a second or more.

Directions are the ladder's: "sent" is by the client's host (the MP_CAPABLE SYN's
sender), "received" by it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.addr import ip, ntoa
from stack.diag import RST_REASONS, Code, Diagnosis, FrameClock, Key, PacketRef, Severity
from stack.wire.mptcp import AddAddr, MpFastclose
from tools.trace import MISMATCH

if TYPE_CHECKING:
    from tools.analyze import Analysis, Connection, Flow

RESENT = 2  # a segment sent this many times again and never acknowledged: its path failed
SYN_TRIES = 2  # MP_CAPABLE SYNs unanswered before a blackhole is said


class Derived:
    """The ladder's derived lines, (frame, direction, subflow, line): the tracer's
    `on_derived`."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str, Key, str]] = []

    def __call__(self, frame: int, direction: str, key: Key, line: str) -> None:
        self.lines.append((frame, direction, key, line))


def diagnose(an: Analysis, conn: Connection, derived: Derived) -> Diagnosis:
    t0 = conn.initial.first
    diag = Diagnosis(FrameClock(), t0)
    times = {fr.number: fr.time for fr in (an.capture.frames[i] for f in conn.subflows
                                           for i in f.frames)}
    for frame, direction, key, line in derived.lines:
        _from_line(diag, PacketRef(frame, times.get(frame, t0), direction, key), line)
    labels = {id(f): f"sf{n + 1}" for n, f in enumerate(conn.subflows)}
    for f, opener in zip(conn.subflows, ["client", *conn.join_dirs], strict=True):
        ref = _Refs(an, f, opener == "client")
        _handshake(diag, conn, f, ref, labels[id(f)])
        _resets(diag, f, ref, labels[id(f)])
        _failed_path(diag, conn, f, ref, labels)
        _stalls(diag, f, ref, labels[id(f)])
    _announcements(diag, an, conn)
    diag.findings.sort(key=lambda f: f.packet.frame if f.packet is not None else 0)
    return diag


class _Refs:
    """PacketRefs for one subflow's frames, seen from the client's host."""

    def __init__(self, an: Analysis, f: Flow, opened_by_client: bool) -> None:
        self.an, self.f = an, f
        self.client_side = opened_by_client  # whether the flow's client is that host
        us, them = (f.client, f.server) if opened_by_client else (f.server, f.client)
        self.key: Key = (ip(us[0]), us[1], ip(them[0]), them[1])

    def __call__(self, i: int, way: str) -> PacketRef:
        fr = self.an.capture.frames[i]
        by_client_host = (way == "c2s") == self.client_side
        return PacketRef(fr.number, fr.time, "out" if by_client_host else "in", self.key)

    def host(self, way: str) -> str:
        """Who sent `way` ("c2s": the flow's SYN sender)."""
        return "client" if (way == "c2s") == self.client_side else "server"


def _from_line(diag: Diagnosis, ref: PacketRef, line: str) -> None:
    low = line.lower()
    if MISMATCH in line:
        if low.startswith("join thmac") or low.startswith("join hmac"):
            diag.add(Code.JOIN_BAD_HMAC, Severity.ERROR, line, ref,
                     hint="the receiver resets the join (Linux: MPJoinSynAckHMacFailure "
                          "or MPJoinAckHMacFailure): a middlebox rewrote the option, or "
                          "the keys are not those of the MP_CAPABLE handshake",
                     key=(ref.subflow, low[:9]))
        elif "dss checksum" in low:
            diag.add(Code.DSS_CHECKSUM_FAILED, Severity.ERROR, line, ref,
                     hint="the payload (or the mapping) changed on the path: the "
                          "receiver answers MP_FAIL and falls back or resets the subflow",
                     key=ref.subflow)
        else:
            diag.add(Code.VALUE_MISMATCH, Severity.ERROR, line, ref,
                     hint="a value the RFC 8684 derivation does not give: an "
                          "implementation bug, or a middlebox that rewrites MPTCP options",
                     key=(ref.subflow, line.split(" ")[0]))
    elif line.startswith("MPTCP fallback") or line.startswith("infinite mapping"):
        diag.add(Code.FALLBACK, Severity.WARNING, line, ref,
                 hint=("the server does not speak MPTCP (net.mptcp.enabled 0, or a plain "
                       "TCP socket), or a middlebox removed the option: a capture at the "
                       "other end tells which" if "SYN/ACK" in line else
                       "RFC 8684 3.7: after a checksum failure or missing mappings, the "
                       "connection goes on as plain TCP on one subflow"
                       if "infinite" in line else
                       "a middlebox removed the option from the third ACK"),
                 key="fallback")
    elif line.startswith("MP_FAIL at DSN"):
        diag.add(Code.DSS_CHECKSUM_FAILED, Severity.ERROR,
                 f"the {_sender(ref)} reported a DSS checksum failure: {line}", ref,
                 hint="MP_FAIL: the receiver of the data found its checksum wrong "
                      "(RFC 8684 3.7)", key=("mp_fail", ref.subflow))
    elif " answers a v" in line:
        diag.add(Code.MPC_VERSION_UNSUPPORTED, Severity.WARNING, line, ref,
                 hint="the server speaks another MPTCP version; the client falls back "
                      "if it cannot speak that one (upstream Linux speaks only v1)")


def _sender(ref: PacketRef) -> str:
    return "client" if ref.direction == "out" else "server"


def _rst_text(reason: int | None) -> str:
    if reason is None:
        return "a plain RST (no MP_TCPRST)"
    return f"MP_TCPRST reason {reason} ({RST_REASONS.get(reason, 'unknown')})"


def _handshake(diag: Diagnosis, conn: Connection, f: Flow, ref: _Refs, label: str) -> None:
    """MP_CAPABLE SYNs unanswered; joins refused in their handshake or never answered."""
    if f is conn.initial:
        mpc = [i for i, has in f.syns if has]
        plain = [i for i, has in f.syns if not has]
        if len(mpc) >= SYN_TRIES and f.mpc_synack is None:
            after = (f"; then a SYN without MP_CAPABLE (frame "
                     f"{ref.an.capture.frames[plain[0]].number}): the connection is plain "
                     "TCP" if plain and plain[0] > mpc[-1] else "; no answer at all")
            diag.add(Code.MPC_SYN_BLACKHOLED, Severity.WARNING,
                     f"{label}: the MP_CAPABLE SYN was sent {len(mpc)} times and never "
                     f"answered{after}", ref(mpc[0], "c2s"),
                     hint="a middlebox drops SYNs with MPTCP options (Linux then retries "
                          "without them: MPTcpExtMPCapableSYNTXDrop, and pauses MPTCP "
                          "active opens), or the path is down")
        return
    if f.synack is None and len(f.syns) >= 2 and f.rst is None:
        diag.add(Code.JOIN_REFUSED, Severity.ERROR,
                 f"{label}: join {_flow_text(f)} never answered: its SYN was sent "
                 f"{len(f.syns)} times", ref(f.syns[0][0], "c2s"),
                 hint="a firewall drops it (an MP_JOIN filter, the address's link "
                      "down), or the address is not the peer's", key=ref.key)
    if f.rst is None or f.bytes["c2s"] or f.bytes["s2c"]:
        return
    i, way, reason = f.rst
    by = ref.host(way)
    if way == "c2s":
        when = "after the responder's SYN/ACK"
        hint = ("the joiner found the SYN/ACK's HMAC wrong (MP_TCPRST reason 1), or gave "
                "the join up: Linux does (a plain RST) when its connection is no longer "
                "established, the other side's DATA_FIN having come first")
    elif f.synack is None:
        when = "at its SYN"
        hint = ("an unknown token (the connection is gone there), or a join to an address "
                "it does not accept (Linux: MPJoinNoTokenFound)" if reason is not None else
                "no MPTCP listener at that address and port (a plain RST: a firewall's "
                "reject, or a port nobody listens on)")
    else:
        when = "after the joiner's third ACK" if f.established is not None else \
            "after its SYN/ACK"
        hint = ("the responder found the third ACK's HMAC wrong (Linux: "
                "MPJoinAckHMacFailure)" if reason == 1 else
                "the responder's subflow limit (Linux: 'ip mptcp limits' subflows, "
                "MPJoinRejected on its side)" if reason in (2, 3) else
                "the reason code says why")
    diag.add(Code.JOIN_REFUSED, Severity.ERROR,
             f"{label}: join {_flow_text(f)} refused: the {by} reset it {when} with "
             f"{_rst_text(reason)}", ref(i, way), hint=hint, key=ref.key)


def _resets(diag: Diagnosis, f: Flow, ref: _Refs, label: str) -> None:
    """An established subflow reset, and MP_FASTCLOSE."""
    fast = next(((i, w) for i, w, m in f.signals if type(m) is MpFastclose), None)
    if fast is not None:
        diag.add(Code.FASTCLOSE, Severity.INFO,
                 f"the {ref.host(fast[1])} fast-closed the connection (MP_FASTCLOSE on "
                 f"{label}; its key is checked in the ladder)", ref(*fast),
                 hint="an application abort (close with unread data, SO_LINGER 0) or a "
                      "fatal error: every subflow is reset", key="fastclose")
        return
    if f.rst is None or not (f.bytes["c2s"] or f.bytes["s2c"]):
        return
    i, way, reason = f.rst
    diag.add(Code.SUBFLOW_RESET, Severity.WARNING,
             f"{label} {_flow_text(f)} reset by the {ref.host(way)} with "
             f"{_rst_text(reason)}", ref(i, way),
             hint="the MP_TCPRST reason says why; with MP_TCPRST the connection goes on "
                  "over its other subflows", key=ref.key)


def _failed_path(diag: Diagnosis, conn: Connection, f: Flow, ref: _Refs,
                 labels: dict[int, str]) -> None:
    """A segment sent RESENT times again and never acknowledged afterwards."""
    for way, resent in f.resent.items():
        acked = f.acked.get(way)
        for seq, (i, times) in resent.items():
            if times < RESENT or (acked is not None
                                  and 0 < (acked - seq) & 0xFFFFFFFF < 0x80000000):
                continue
            fr = ref.an.capture.frames[i]
            others = sorted({labels[id(o)] for o in conn.subflows if o is not f
                             and o.bytes[way] and o.last > fr.time})
            then = f"data went on over {', '.join(others)}" if others else \
                "no other subflow carried data afterwards"
            diag.add(Code.PATH_FAILED, Severity.WARNING,
                     f"{labels[id(f)]} {_flow_text(f)}: the {ref.host(way)} sent a "
                     f"segment again {times} times (the first time in this frame) and "
                     f"it was never acknowledged; {then}", ref(i, way),
                     hint="its path is down or blackholed (a link down, a firewall): the "
                          "sender marks the subflow stale (Linux: MPTcpExtSubflowStale) "
                          "and reinjects its data elsewhere", key=ref.key)
            break


def _stalls(diag: Diagnosis, f: Flow, ref: _Refs, label: str) -> None:
    for i, way, secs in f.stalls:
        diag.add(Code.WINDOW_STALL, Severity.WARNING,
                 f"{label}: the {ref.host(way)}'s receive window stayed 0 for "
                 f"{secs:.1f} s", ref(i, way),
                 hint="its application was not reading (or reads slowly): the sender can "
                      "only probe", key=(ref.key, way, i))


def _announcements(diag: Diagnosis, an: Analysis, conn: Connection) -> None:
    """ADD_ADDRs never echoed, and echoed but never joined."""
    sent: dict[tuple[str, int, str], tuple[int, PacketRef, AddAddr]] = {}
    echoed: set[tuple[str, int, str]] = set()
    for f, opener in zip(conn.subflows, ["client", *conn.join_dirs], strict=True):
        ref = _Refs(an, f, opener == "client")
        for i, way, m in f.signals:
            if type(m) is not AddAddr:
                continue
            host = ref.host(way)
            k = (host if not m.echo else ("server" if host == "client" else "client"),
                 m.addr_id, ntoa(m.addr))
            if m.echo:
                echoed.add(k)
            elif k in sent:
                n, first, _ = sent[k]
                sent[k] = (n + 1, first, m)
            else:
                sent[k] = (1, ref(i, way), m)
    for (host, addr_id, addr), (n, first, m) in sent.items():
        other = "server" if host == "client" else "client"
        what = f"the {host}'s ADD_ADDR for {addr}" + (f" port {m.port}" if m.port else "") + \
            f" (id {addr_id})"
        if (host, addr_id, addr) not in echoed:
            diag.add(Code.ADD_ADDR_NOT_ECHOED, Severity.ERROR,
                     f"{what} was sent {n} time{'s' if n > 1 else ''} and never echoed",
                     first, hint=f"the {other} did not take it (an HMAC it found wrong: "
                                 "Linux AddAddrHMacFailure; a middlebox stripping it), or the "
                                 "capture ended first", key=(host, addr_id))
            continue
        joined = any(_opener(conn, j) == other and j.server[0] == addr
                     for j in conn.joins)
        if not joined:
            diag.add(Code.ADD_ADDR_IGNORED, Severity.INFO,
                     f"{what} was echoed but the {other} opened no subflow to it", first,
                     hint=f"the {other}'s limits (Linux: 'ip mptcp limits' add_addr_accepted "
                          "and subflows) or its path manager", key=(host, addr_id))


def _opener(conn: Connection, j: Flow) -> str:
    return conn.join_dirs[conn.joins.index(j)]


def _flow_text(f: Flow) -> str:
    from tools.analyze import _ep
    return f"{_ep(f.client)} > {_ep(f.server)}"
