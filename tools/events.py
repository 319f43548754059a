"""`--events FILE`: one JSON object per line, fields named as `ip mptcp monitor` names
them (event, token, remote_token, saddr4, daddr4, sport, dport, locid, remid, backup,
error) plus `time` (seconds since the run started). Plain TCP connections carry no
token fields; MPTCP events add them."""

from __future__ import annotations

import json
import socket
from typing import TextIO

from stack.host import Accepted, Connection, ConnEvent, HostEvent
from stack.mptcp.connection import MptcpEvent
from stack.tcp.engine import Closed, Connected, State, StateChanged


class EventLog:
    def __init__(self, f: TextIO, t0: float) -> None:
        self.f = f
        self.t0 = t0

    def emit(self, event: str, conn: Connection, now: float, **extra: object) -> None:
        (la, lp), (ra, rp) = conn.local, conn.remote
        rec: dict[str, object] = {"event": event, "time": round(now - self.t0, 6),
                                  "saddr4": la, "daddr4": ra, "sport": lp, "dport": rp}
        rec.update({k: v for k, v in extra.items() if v is not None})
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()

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
                # SF_* / ANNOUNCED / REMOVED: the subflow's own addresses and ids
                sub = {k: socket.inet_ntoa(v) if isinstance(v, bytes) and len(v) == 4
                       else v for k, v in e.subflow}
                if "addr" in sub:
                    sub["daddr4"] = sub.pop("addr")
                self.emit(e.name, ev.conn, now, token=f"{e.token:08x}",
                          remote_token=None if e.remote_token is None
                          else f"{e.remote_token:08x}",
                          error=e.detail if e.name in ("CLOSED", "SF_CLOSED") else None,
                          reason=e.detail if e.name not in ("CLOSED", "SF_CLOSED") else None,
                          **sub)
            return
        if isinstance(e, StateChanged) and e.new in (State.SYN_SENT, State.SYN_RECEIVED):
            self.emit("CREATED", ev.conn, now)
        elif isinstance(e, Connected):
            self.emit("ESTABLISHED", ev.conn, now)
        elif isinstance(e, Closed):
            self.emit("CLOSED", ev.conn, now, error=e.error)
