"""`--interval S`: every S seconds, while connections run, one line per subflow and one
for the connection, as iperf3 `-i` and `ss -ti` users expect: bytes each way in the
interval and the goodput they make, RTT, cwnd, retransmissions; for MPTCP the
data-level bytes acknowledged and the peer's data-level window. On a terminal a
transfer shows this every 2 s by default (`--interval 0` turns it off).

    [  4.0 s] sf1 10.0.1.2:40312 > 10.0.1.1:5000  tx 11.9 MB 95.2 Mbit/s  rx 0 B
              0.0 Mbit/s  rtt 1.9 ms  cwnd 412 KB  retrans 0      (one line)
    [  4.0 s] conn 10.0.1.2:40312 > 10.0.1.1:5000  acked 23.8 MB 190.4 Mbit/s
              received 0 B 0.0 Mbit/s  window 4.1 MB              (one line)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TextIO

from stack.diag import fmt_key
from stack.host import Connection
from stack.mib import Mib


def _size(n: float) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def _rate(n: float, dt: float) -> str:
    return f"{n * 8 / dt / 1e6:.1f} Mbit/s" if dt > 0 else "-"


class IntervalReporter:
    """Samples the connections `conns()` gives every `every` seconds of `clock()`."""

    def __init__(self, conns: Callable[[], list[Connection]], clock: Callable[[], float],
                 every: float, out: TextIO | None = None) -> None:
        self.conns = conns
        self.clock = clock
        self.every = every
        self.out = out or sys.stderr
        self.t0 = clock()
        self.last: dict[object, tuple[float, int, int]] = {}  # key -> (t, tx, rx)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.report()

    def _delta(self, key: object, now: float, tx: int, rx: int) -> tuple[int, int, float]:
        t, tx0, rx0 = self.last.get(key, (self.t0, 0, 0))
        self.last[key] = (now, tx, rx)
        return tx - tx0, rx - rx0, now - t

    def report(self) -> None:
        now = self.clock()
        head = f"[{now - self.t0:5.1f} s]"
        lines = []
        for conn in self.conns():
            msk = conn.msk
            engines = [(f"sf{n + 1}", sf.engine, sf.tx_next - 1, sf.rx_next - 1)
                       for n, sf in enumerate(msk.subflows)] if msk is not None and \
                not msk.fallback else [("tcp", conn.engine, conn.engine.snd_una_rel,
                                        (conn.engine.rcv_nxt.value - conn.engine.irs.value
                                         - 1) & 0xFFFFFFFF)]
            for name, eng, tx, rx in engines:
                if eng.is_closed:
                    continue
                dtx, drx, dt = self._delta((id(conn), name), now, tx, rx)
                srtt = eng.srtt
                key = (eng.local_addr, eng.local_port, eng.remote_addr, eng.remote_port)
                lines.append(
                    f"{head} {name} {fmt_key(key)}"
                    f"  tx {_size(dtx)} {_rate(dtx, dt)}  rx {_size(drx)} {_rate(drx, dt)}"
                    f"  rtt {'-' if srtt is None else f'{srtt * 1000:.1f} ms'}"
                    f"  cwnd {_size(eng.cwnd)}  retrans {eng.counters[Mib.RetransSegs]}")
            if msk is not None and not msk.fallback:
                acked, got = msk.snd_una, msk.ack_off
                dtx, drx, dt = self._delta(id(conn), now, acked, got)
                lines.append(f"{head} conn {fmt_key(conn.key)}  acked {_size(dtx)} "
                             f"{_rate(dtx, dt)}  received {_size(drx)} {_rate(drx, dt)}  "
                             f"window {_size(max(msk.snd_wnd_end - msk.snd_nxt, 0))}")
        if lines:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()
