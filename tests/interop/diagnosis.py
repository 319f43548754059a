"""Helpers for the interop tests of our diagnosis (issue 9): run our CLI and read its
summary and diagnosis, decode from our `--pcap` the frame a finding points at, and put
nftables rules (or a sysctl) in the peer namespace for one test.

- `finish(p)` waits for a run of `tools.cli` and gives a `Run`: its `--json` summary,
  its findings (from `--json`, else parsed back from its 'diagnosis:' lines), stdout,
  stderr and exit status; `counter` reads our `--stats` dump, `diagnosis_events` and
  `check_events` our `--events` file.
- `frames(pcap)` decodes every packet of our pcap into a `Frame`; `frame_of` is the one
  a finding points at, checked against the finding's subflow and direction.
- `peer_nft` loads chains (see `chain`) into a table of their own in the peer namespace,
  gives the rules' packet counters and deletes the table after; `peer_sysctl` sets a
  sysctl there and puts it back.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack.wire import ipv4, tcp
from stack.wire import mptcp as wm
from stack.wire.pcap import read as read_pcap
from tests.interop.harness import Topology

# the CLI's exit status: all went well; the connection failed; every byte delivered
# but something asked for did not happen (a join, an announcement, MPTCP itself)
EXIT_OK, EXIT_CONN, EXIT_UNMET = 0, 1, 4


# ---- our stack: run it, read what it said -------------------------------------------------
@dataclass
class Run:
    summary: dict[str, Any]      # the --json object ({} without --json)
    lines: list[str]             # the 'diagnosis:' lines on stdout (host-level ones only
    #                              with --json: the connection's are in `summary`)
    stdout: str
    stderr: str
    returncode: int

    @property
    def findings(self) -> list[dict[str, Any]]:
        """The connection's findings in the --json shape (parsed back from the
        'diagnosis:' lines when run without --json)."""
        if self.summary:
            return list(self.summary.get("diagnosis", []))
        return [parse_line(ln) for ln in self.lines]

    @property
    def codes(self) -> list[str]:
        return [f["code"] for f in self.findings]

    def said(self) -> list[str]:
        """The diagnosis as the CLI prints it without --json: every finding, one line
        each (the connection's, then the host-level ones)."""
        return [line_of(f) for f in self.summary.get("diagnosis", [])] + self.lines

    def explain(self) -> str:
        """What to print when an assertion fails: every diagnosis line, and stderr."""
        return ("\n".join(self.said()) or "(no diagnosis)") + f"\nrc={self.returncode}\n" \
            + self.stderr[-3000:]


def last_json(text: str) -> dict[str, Any]:
    """The last line of `text` that is a JSON object (our --json summary), or {}."""
    js = [ln for ln in text.splitlines() if ln.startswith("{")]
    return json.loads(js[-1]) if js else {}


def finish(p: subprocess.Popen[str], timeout: float = 60) -> Run:
    """Wait for a run of our CLI (text or --json); what it said."""
    out, err = p.communicate(timeout=timeout)
    run = Run(last_json(out), [ln for ln in out.splitlines() if ln.startswith("diagnosis: ")],
              out, err, p.returncode)
    for line in run.said():
        print(line)  # pytest shows a failed test's stdout: the diagnosis as the CLI says it
    return run


def line_of(f: dict[str, Any]) -> str:
    """A --json finding as the line the CLI prints without --json."""
    p = f["packet"]
    where = ""
    if p is not None:
        on = f" on {p['subflow']}" if p["subflow"] else ""
        arrow = "received" if p["direction"] == "in" else "sent"
        where = f" [frame {p['frame']} ({arrow} at {p['time']:.4f} s{on})]"
    hint = f" (hint: {f['hint']})" if f["hint"] else ""
    return f"diagnosis: {f['severity']} {f['code']}: {f['text']}{where}{hint}"


LINE = re.compile(r"^diagnosis: (?P<severity>\w+) (?P<code>[\w-]+): (?P<text>.*?)"
                  r"(?: \[frame (?P<frame>\d+) \((?P<arrow>received|sent) at "
                  r"(?P<time>[\d.]+) s(?: on (?P<subflow>[^)]+))?\)\])?"
                  r"(?: \(hint: (?P<hint>.*)\))?$")


def parse_line(line: str) -> dict[str, Any]:
    """A 'diagnosis:' line back into the --json shape."""
    m = LINE.match(line)
    assert m, f"not a diagnosis line: {line!r}"
    packet = None
    if m["frame"]:
        packet = {"frame": int(m["frame"]), "time": float(m["time"]),
                  "direction": "in" if m["arrow"] == "received" else "out",
                  "subflow": m["subflow"]}
    return {"code": m["code"], "severity": m["severity"], "text": m["text"],
            "packet": packet, "hint": m["hint"] or ""}


def counter(stderr: str, name: str) -> int:
    """A counter from our `--stats` dump (0 if absent)."""
    m = re.search(rf"^{name}\s+(\d+)$", stderr, re.MULTILINE)
    return int(m.group(1)) if m else 0


def diagnosis_events(path: Path) -> list[dict[str, Any]]:
    """The DIAGNOSIS events of an `--events` file."""
    evs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [e for e in evs if e["event"] == "DIAGNOSIS"]


def check_events(run: Run, events: Path) -> None:
    """--events: one DIAGNOSIS event per finding, same code, text and packet."""
    got = [(e["code"], e["reason"], e["packet"]) for e in diagnosis_events(events)]
    want = [(f["code"], f["text"], f["packet"]) for f in run.findings]
    assert got == want, run.explain()


# ---- our pcap ----------------------------------------------------------------------------
@dataclass
class Frame:
    """One packet of our pcap, decoded (a non-TCP one, e.g. an ICMP unreachable once a
    path is down, has its addresses only)."""
    n: int                       # its frame number, from 1
    time: float                  # its pcap timestamp
    src: str
    sport: int
    dst: str
    dport: int
    flags: int = 0
    seq: int = 0
    ack: int = 0
    window: int = 0
    payload: int = 0
    nops: int = 0                # the longest run of NOP options
    wscale: int | None = None
    mptcp: list[wm.MptcpOption] = field(default_factory=list)
    options: list[tcp.TcpOption] = field(default_factory=list, repr=False)  # all of them

    def has(self, cls: type) -> list[Any]:
        """Its MPTCP options of type `cls`."""
        return [o for o in self.mptcp if isinstance(o, cls)]

    def dss(self) -> wm.Dss | None:
        d = self.has(wm.Dss)
        return d[0] if d else None

    @property
    def flags_text(self) -> str:
        """Its TCP flags as tcpdump writes them ("S", "R.", ...)."""
        return tcp.TcpHeader(0, 0, 0, 0, self.flags, 0).describe()

    def on(self, subflow: str, direction: str) -> bool:
        """This packet belongs to `subflow` ('A:p > B:q', ours first) and went in
        `direction` ("in": from the peer to us)."""
        local, remote = subflow.split(" > ")
        ends = (f"{self.dst}:{self.dport}", f"{self.src}:{self.sport}") if direction == "in" \
            else (f"{self.src}:{self.sport}", f"{self.dst}:{self.dport}")
        return ends == (local, remote)

    def is_from(self, addr: str) -> bool:
        return self.src == addr


def frames(pcap: Path) -> list[Frame]:
    """Every packet of our pcap, in order."""
    out = []
    for n, (ts, pkt) in enumerate(read_pcap(pcap.read_bytes()), 1):
        iph, end = ipv4.parse(pkt, verify_checksum=False)
        src, dst = socket.inet_ntoa(iph.src), socket.inet_ntoa(iph.dst)
        if iph.proto != ipv4.PROTO_TCP:
            out.append(Frame(n, ts, src, 0, dst, 0))
            continue
        seg = memoryview(pkt)[iph.header_len:end]
        hdr, doff = tcp.parse(seg)
        syn, ack = bool(hdr.flags & tcp.SYN), bool(hdr.flags & tcp.ACK)
        opts = [wm.parse_tcp_option(o, syn=syn, ack=ack) for o in hdr.options
                if isinstance(o, tcp.UnknownOption) and o.kind == tcp.OPT_MPTCP]
        run = best = 0
        for o in hdr.options:
            run = run + 1 if isinstance(o, tcp.Nop) else 0
            best = max(best, run)
        ws = [o.shift for o in hdr.options if isinstance(o, tcp.WindowScale)]
        out.append(Frame(n, ts, src, hdr.src_port, dst, hdr.dst_port, hdr.flags, hdr.seq,
                         hdr.ack, hdr.window, len(seg) - doff, best, ws[0] if ws else None,
                         opts, list(hdr.options)))
    return out


def frame_of(run: Run, pcap: Path, finding: dict[str, Any],
             timed: bool = False) -> tuple[Frame, list[Frame]]:
    """The packet a finding points at, from our pcap, and every frame: it is on the
    finding's subflow (where it names one) and went the finding's way. `timed`: the
    finding names a subflow and the packet came at the finding's time, counted from the
    subflow's first packet (right for a connection with one subflow: the connection's
    clock starts at its first packet)."""
    p = finding["packet"]
    assert p is not None, run.explain()
    fs = frames(pcap)
    assert 1 <= p["frame"] <= len(fs), (p, len(fs), run.explain())
    f: Frame = fs[p["frame"] - 1]
    if timed:
        assert p["subflow"] is not None, (f, p, run.explain())
    if p["subflow"] is not None:
        assert f.on(p["subflow"], p["direction"]), (f, p, run.explain())
    if timed:
        first = next(g for g in fs if g.on(p["subflow"], "in") or g.on(p["subflow"], "out"))
        assert abs((f.time - first.time) - p["time"]) < 0.01, (f.time - first.time, p)
    return f, fs


# ---- the peer namespace: nftables rules, sysctls ------------------------------------------
Nft = Callable[[str], Callable[[], list[int]]]


def chain(hook: str, rule: str) -> str:
    """An nftables filter chain on `hook` (input, output) with `rule` (or several, one a
    line), accepting all else."""
    return (f" chain {hook} {{\n  type filter hook {hook} priority 0; policy accept;\n"
            f"  {rule}\n }}")


@contextmanager
def peer_nft(topology: Topology, table: str) -> Iterator[Nft]:
    """nftables in the peer namespace, in a table of its own (`inet table`): gives a
    loader that takes the chains (see `chain`) and returns a function giving the rules'
    packet counters, in order. The table is deleted on the way out."""
    def load(chains: str) -> Callable[[], list[int]]:
        topology.run_peer("nft", "-f", "-", input=f"table inet {table} {{\n{chains}\n}}\n")

        def counters() -> list[int]:
            out = topology.run_peer("nft", "list", "table", "inet", table).stdout
            return [int(n) for n in re.findall(r"counter packets (\d+)", out)]
        return counters
    try:
        yield load
    finally:
        topology.run_peer("nft", "delete", "table", "inet", table, check=False)


@contextmanager
def peer_sysctl(topology: Topology, name: str, value: int, after: int) -> Iterator[None]:
    """The sysctl `name` at `value` in the peer namespace; `after` on the way out."""
    topology.run_peer("sysctl", "-qw", f"{name}={value}")
    try:
        yield
    finally:
        topology.run_peer("sysctl", "-qw", f"{name}={after}")
