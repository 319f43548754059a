"""Zero windows against the kernel (issue 9), both ways.

- The kernel receiver stops reading (kpeer `--read-delay`, a small SO_RCVBUF): its
  window closes while we still have data. We must probe it (the persist timer, RFC
  9293 3.8.6.1; for MPTCP a 1-byte mapping of the last data-acked byte, as Linux's
  `mptcp_sendmsg_frag` does, so that the subflow's persist timer runs), backing off,
  and finish with the same sha256 when it reads again. The probes are read from our
  pcap (a pure ACK at SND.UNA - 1 while the kernel's window is 0) and counted in our
  `--stats` (TCPWinProbe; MPTCP also WinProbe, as the kernel's MPTcpExtWinProbe).
- We receive into `--output -`, a pipe that nobody reads for a few seconds: our event
  loop must not block on the write. We stop reading instead, our window closes, the
  kernel probes it (its TcpExtTCPWinProbe moves, its TCPTimeouts do not: before the
  fix the whole stack froze and the kernel saw only RTO backoff), and every byte
  arrives once the pipe drains.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from stack.wire import ipv4, pcap, tcp
from tests.interop import ours
from tests.interop.harness import REPO, Topology, nstat_diff, nstat_errors

MB = 1_000_000
READ_DELAY = 4.0
M32 = 0xFFFFFFFF


def stats(stderr: str) -> dict[str, int]:
    """Our `--stats` counters (`name value` lines on stderr)."""
    out: dict[str, int] = {}
    for line in stderr.splitlines():
        m = re.fullmatch(r"\s*([A-Za-z][\w:-]*)\s+(\d+)\s*", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def window_probes(path: Path, ours_addr: str) -> tuple[float | None, list[float]]:
    """From our pcap: when the kernel's window first closed (a segment from it with
    window 0 while we had sent beyond nothing unacked), and the times of our
    zero-window probes (a pure ACK from us with SEG.SEQ = the kernel's last ACK - 1)."""
    me = bytes(int(x) for x in ours_addr.split("."))
    closed: float | None = None
    last_ack: int | None = None
    probes: list[float] = []
    for when, pkt in pcap.read(path.read_bytes()):
        iph, end = ipv4.parse(pkt)
        hdr, doff = tcp.parse(pkt[iph.header_len:end])
        plen = end - iph.header_len - doff
        if iph.dst == me:
            last_ack = hdr.ack
            if hdr.window == 0 and closed is None and not hdr.flags & tcp.SYN:
                closed = when
        elif (last_ack is not None and plen == 0 and hdr.flags == tcp.ACK
              and hdr.seq == (last_ack - 1) & M32):
            probes.append(when)
    return closed, probes


def check_backoff(closed: float | None, probes: list[float]) -> list[float]:
    """At least three probes, the first at least TCP's minimum RTO after the window
    closed, each gap about twice the one before (Linux's own: 0.2, 0.4, 0.8, 1.6 s).
    Returns the probe times relative to the close."""
    assert closed is not None, "the kernel's window never closed"
    rel = [round(p - closed, 3) for p in probes]
    assert len(rel) >= 3, f"probes after the window closed: {rel}"
    assert rel[0] >= 0.19, rel
    gaps = [b - a for a, b in itertools.pairwise([0.0, *rel])]
    for a, b in itertools.pairwise(gaps):
        assert 1.6 * a <= b <= 2.5 * a, f"no doubling: gaps {gaps} (probes at {rel})"
    return rel


@pytest.mark.parametrize("mode", ["tcp", "mptcp", "mptcp-checksum"])
def test_kernel_receiver_stops_reading_we_probe_its_zero_window(
        topology: Topology, tmp_path: Path, mode: str) -> None:
    port = 6600 + ["tcp", "mptcp", "mptcp-checksum"].index(mode)
    mptcp = mode != "tcp"
    before = topology.nstat_peer()
    srv = topology.popen_peer(*topology.kpeer(
        "server", "--port", port, "--once", "--rcvbuf", 65536, "--read-delay", READ_DELAY,
        *(["--mptcp"] if mptcp else [])))
    topology.wait_listening(topology.peer_ns, port)
    cap = tmp_path / "zw.pcap"
    extra = {"tcp": ["--no-mptcp"], "mptcp": [], "mptcp-checksum": ["--checksum"]}[mode]
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), port,
                                "--send-bytes", 2 * MB, "--json", "--stats", "--pcap", cap,
                                *extra), timeout=90)
    kernel = topology.kpeer_result(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert me["sent"] == kernel["rx_bytes"] == 2 * MB
    assert me["sent_sha256"] == kernel["rx_sha256"]
    assert me["mptcp"] is mptcp and not me["fallback"]
    closed, probes = window_probes(cap, topology.our_addr(1))
    rel = check_backoff(closed, probes)
    counters = stats(me["stderr"])
    assert counters.get("TCPWinProbe", 0) >= 3, counters
    if mptcp:
        assert counters.get("WinProbe", 0) >= 1, counters  # the 1-byte mapping
        assert me["checksum"] is (mode == "mptcp-checksum")
    moved = nstat_diff(before, topology.nstat_peer())
    errors = nstat_errors(moved, me)
    if mptcp:
        # each probe byte is old data to the kernel by design (a Linux sender's too)
        # (nstat_errors allows them: one per probe, `window_probes` in our JSON)
        assert 1 <= moved.get("MPTcpExtDuplicateData", 0) <= counters["WinProbe"], moved
        assert me["window_probes"] == counters["WinProbe"]
    assert errors == {}, moved
    print(f"{mode}: window closed at {closed}, our probes at +{rel} s; "
          f"kernel {[(k, v) for k, v in moved.items() if 'Window' in k or 'Dup' in k]}")


def _drain_after(p: subprocess.Popen[bytes], delay: float) -> tuple[int, str, bytes]:
    """Read nothing from `p`'s stdout (a pipe) for `delay` s, then all of it."""
    time.sleep(delay)
    h = hashlib.sha256()
    n = 0
    assert p.stdout is not None
    while chunk := p.stdout.read(1 << 20):
        h.update(chunk)
        n += len(chunk)
    _, err = p.communicate(timeout=60)
    return n, h.hexdigest(), err


@pytest.mark.parametrize("mptcp", [True, False], ids=["mptcp", "tcp"])
def test_output_into_a_pipe_read_late_closes_our_window_and_loses_nothing(
        topology: Topology, mptcp: bool) -> None:
    port = 6610 + int(mptcp)
    size = 40 * MB  # above our 16 MB MPTCP receive buffer: it fills, the window closes
    before = topology.nstat_peer()
    srv = topology.popen_peer(*topology.kpeer(
        "server", "--port", port, "--once", "--send-bytes", size,
        *(["--mptcp"] if mptcp else [])))
    topology.wait_listening(topology.peer_ns, port)
    p = topology.popen_user(*ours.argv("connect", topology.peer_addr(1), port, "--output", "-",
                                       "--json", *([] if mptcp else ["--no-mptcp"])),
                            cwd=REPO, stdout=subprocess.PIPE, text=False)
    n, digest, err = _drain_after(p, 3.0)
    kernel = topology.kpeer_result(srv)
    text = err.decode(errors="replace")
    assert p.returncode == 0, text
    me: dict[str, Any] = json.loads([ln for ln in text.splitlines() if ln.startswith("{")][-1])
    assert kernel["ok"] and kernel["tx_bytes"] == size
    assert n == me["received"] == size
    assert digest == me["received_sha256"] == kernel["tx_sha256"]
    moved = nstat_diff(before, topology.nstat_peer())
    # our window closed and the kernel probed it; our ACKs never stopped (no RTO)
    assert moved.get("TcpExtTCPWinProbe", 0) >= 1, moved
    assert moved.get("TcpExtTCPTimeouts", 0) == 0, moved
    assert nstat_errors(moved) == {}, moved


NFT_TABLE = "zwtest"


@pytest.mark.parametrize("mptcp", [True, False], ids=["mptcp", "tcp"])
def test_kernel_window_update_lost_our_probes_find_the_open_window(
        topology: Topology, tmp_path: Path, mptcp: bool) -> None:
    """As above, but every segment the kernel sends us with a non-zero window is
    dropped from 1.5 s to 5 s: its window update (when it reads, at 4 s) is lost, only
    a probe of ours can learn that the window opened. Before the fix, MPTCP stalled
    here for good (until the kernel's idle timeout)."""
    port = 6620 + int(mptcp)
    srv = topology.popen_peer(*topology.kpeer(
        "server", "--port", port, "--once", "--rcvbuf", 65536, "--read-delay", READ_DELAY,
        *(["--mptcp"] if mptcp else [])))
    topology.wait_listening(topology.peer_ns, port)
    cap = tmp_path / "lost.pcap"
    t0 = time.time()  # the pcap's clock
    p = ours.start(topology, "connect", topology.peer_addr(1), port, "--send-bytes", 2 * MB,
                   "--json", "--stats", "--pcap", cap, *([] if mptcp else ["--no-mptcp"]))
    time.sleep(1.5)
    rules = (f"table inet {NFT_TABLE} {{\n chain out {{\n"
             "  type filter hook output priority 0; policy accept;\n"
             f"  ip daddr {topology.our_addr(1)} tcp sport {port} tcp window != 0 counter drop\n"
             " }\n}\n")
    topology.run_peer("nft", "-f", "-", input=rules)
    try:
        time.sleep(max(0.0, t0 + 5.0 - time.time()))
        out = topology.run_peer("nft", "list", "table", "inet", NFT_TABLE).stdout
    finally:
        topology.run_peer("nft", "delete", "table", "inet", NFT_TABLE, check=False)
    m = re.search(r"counter packets (\d+)", out)
    assert m and int(m.group(1)) >= 1, f"no window update was dropped: {out}"
    me = ours.result(p, timeout=60)
    kernel = topology.kpeer_result(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert me["sent"] == kernel["rx_bytes"] == 2 * MB
    assert me["sent_sha256"] == kernel["rx_sha256"]
    closed, probes = window_probes(cap, topology.our_addr(1))
    rel = check_backoff(closed, probes)
    assert probes[-1] > t0 + 5.0, rel  # the probe that found the window open
    print(f"{'mptcp' if mptcp else 'tcp'}: window update lost; our probes at +{rel} s")
