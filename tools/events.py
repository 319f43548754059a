"""`--events FILE`: one JSON object per line, fields named as `ip mptcp monitor` names
them (event, token, remote_token, saddr4/saddr6, daddr4/daddr6, sport, dport, locid, remid, backup,
error) plus `time` (seconds since the run started); DIAGNOSIS events add `code`,
`severity`, `reason` (the finding's text), `hint` and `packet`. Plain TCP connections carry no
token fields; MPTCP events add them."""

from __future__ import annotations

import json
from typing import TextIO

from stack.addr import ntoa
from stack.diag import Finding
from stack.host import Accepted, Connection, ConnEvent, HostEvent
from stack.mptcp.events import MptcpEvent, MptcpEventType
from stack.tcp.engine import Closed, Connected, State, StateChanged


class EventLog:
    def __init__(self, f: TextIO, t0: float) -> None:
        self.f = f
        self.t0 = t0

    def emit(self, event: str, conn: Connection, now: float, addrs: bool = True,
             **extra: object) -> None:
        """One line; `addrs`: with the connection's addresses and ports (an event
        about a subflow brings its own in `extra`, maybe of the other family)."""
        rec: dict[str, object] = {"event": event, "time": round(now - self.t0, 6)}
        if addrs:
            (la, lp), (ra, rp) = conn.local, conn.remote
            fam = "6" if ":" in la else "4"  # `ip mptcp monitor`'s saddr4/saddr6
            rec.update({"saddr" + fam: la, "daddr" + fam: ra, "sport": lp, "dport": rp})
        rec.update({k: v for k, v in extra.items() if v is not None})
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()

    def finding(self, conn: Connection, f: Finding, now: float) -> None:
        """A DIAGNOSIS event: the finding's code, severity, text (`reason`), hint and
        packet (frame, time on the connection's clock, direction, subflow)."""
        msk = conn.msk
        tokens: dict[str, object] = {} if msk is None else {
            "token": f"{msk.local_token:08x}",
            "remote_token": None if msk.remote_token is None else f"{msk.remote_token:08x}"}
        self.emit("DIAGNOSIS", conn, now, **tokens, **_finding_fields(f, conn.diag_t0))

    def __call__(self, ev: HostEvent, now: float) -> None:
        if isinstance(ev, Accepted):
            if ev.conn.msk is None:
                self.emit("ESTABLISHED", ev.conn, now)
            return
        assert isinstance(ev, ConnEvent)
        e = ev.event
        if ev.conn.msk is not None:
            # MPTCP: the connection-level events, with tokens (as `ip mptcp monitor`)
            if isinstance(e, MptcpEvent):
                if e.finding is not None:
                    self.finding(ev.conn, e.finding, now)
                    return
                closing = e.name in (MptcpEventType.CLOSED, MptcpEventType.SF_CLOSED)
                self.emit(e.name, ev.conn, now, addrs=e.saddr is None and e.daddr is None,
                          token=f"{e.token:08x}",
                          remote_token=None if e.remote_token is None
                          else f"{e.remote_token:08x}",
                          error=e.detail if closing else None,
                          reason=None if closing else e.detail,
                          **_fields(e))
            return
        if isinstance(e, StateChanged) and e.new in (State.SYN_SENT, State.SYN_RECEIVED):
            self.emit("CREATED", ev.conn, now)
        elif isinstance(e, Connected):
            self.emit("ESTABLISHED", ev.conn, now)
        elif isinstance(e, Closed):
            self.emit("CLOSED", ev.conn, now, error=e.tag)


def _finding_fields(f: Finding, t0: float) -> dict[str, object]:
    out = f.as_dict(t0)
    return {"code": out["code"], "severity": out["severity"], "reason": out["text"],
            "hint": out["hint"] or None, "packet": out["packet"]}


def _fields(e: MptcpEvent) -> dict[str, object]:
    """SF_* events: the subflow's own addresses, ports and ids; ANNOUNCED / REMOVED:
    the peer's address id (and address and port), as `ip mptcp monitor` prints them."""
    out: dict[str, object] = {}
    a = e.saddr if e.saddr is not None else e.daddr
    fam = "6" if a is not None and len(a) == 16 else "4"
    for name, value in (("saddr" + fam, e.saddr), ("daddr" + fam, e.daddr), ("sport", e.sport),
                        ("dport", e.dport), ("locid", e.locid), ("remid", e.remid),
                        ("backup", e.backup), ("port", e.port)):
        if isinstance(value, bytes):
            out[name] = ntoa(value)
        elif isinstance(value, bool):
            out[name] = int(value)
        elif value is not None:
            out[name] = value
    return out
