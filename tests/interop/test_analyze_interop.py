"""`mptcp-tun analyze` on captures of the kernel talking to the kernel (`tcpdump -i any`,
Linux cooked capture, in the peer namespace): a kernel client in the user namespace
(the router's 10.0.i.254 addresses) and a kernel server. analyze must group the
subflows exactly as tshark's MPTCP analysis groups them into one `mptcp.stream`, agree
with tshark on every key and join token, verify every HMAC, and say what the scenario
was built to show (the join, the fallback); the plot must be an image."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import Topology
from tools import analyze

MB = 1_000_000


def tshark() -> str:
    path = shutil.which("tshark")
    assert path is not None, "tshark is installed by tools/install.sh"
    return path


@pytest.fixture
def user_endpoints(topology: Topology) -> Iterator[None]:
    """The kernel client's MPTCP endpoints and limits in the user namespace, and the
    server's in the peer namespace, empty before and after."""
    for ns in (topology.user_ns, topology.peer_ns):
        topology.run_in(ns, "ip", "mptcp", "endpoint", "flush")
    yield
    for ns in (topology.user_ns, topology.peer_ns):
        topology.run_in(ns, "ip", "mptcp", "endpoint", "flush", check=False)


def capture(topology: Topology, path: Path, port: int, run: Any) -> None:
    """`tcpdump -i any -w path tcp port PORT` in the peer namespace around `run()`."""
    dump = topology.popen_peer("tcpdump", "-i", "any", "-U", "-B", "65536", "-w", str(path),
                               "-s", "0", "tcp", "port", str(port), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while dump.stderr is not None and time.monotonic() < deadline:
            line = dump.stderr.readline()  # "listening on any, ..."
            if "listening" in line or not line:
                break
        run()
        time.sleep(0.5)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.communicate(timeout=10)


def analyse(path: Path, *args: str) -> tuple[int, str]:
    p = argparse.ArgumentParser()
    analyze.configure(p)
    out = io.StringIO()
    return analyze.run(p.parse_args([str(path), *args]), out), out.getvalue()


def tshark_streams(path: Path) -> dict[int, set[int]]:
    """tshark's grouping: mptcp.stream -> the tcp.streams in it."""
    out = subprocess.run([tshark(), "-r", str(path), "-o", "mptcp.analyze_mptcp:TRUE",
                          "-o", "mptcp.relative_sequence_numbers:FALSE",
                          "-Y", "mptcp.stream", "-T", "fields", "-e", "mptcp.stream",
                          "-e", "tcp.stream"], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    got: dict[int, set[int]] = {}
    for line in out.splitlines():
        m, t = line.split("\t")
        got.setdefault(int(m), set()).add(int(t))
    return got


def tshark_values(path: Path, field: str) -> set[int]:
    """Every value of `field` tshark prints (decimal or 0x-hex), as numbers."""
    out = subprocess.run([tshark(), "-r", str(path), "-Y", field, "-T", "fields", "-e", field],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return {int(v.strip(), 0) for line in out.splitlines() for v in line.split(",")
            if v.strip()}


def test_two_kernel_subflows_are_grouped_and_checked_as_tshark_sees_them(
        topology: Topology, user_endpoints: None, tmp_path: Path) -> None:
    port = 6950
    topology.run_user("ip", "mptcp", "limits", "set", "subflows", 2, "add_addr_accepted", 2)
    topology.run_user("ip", "mptcp", "endpoint", "add", topology.router_addr(2), "dev",
                      topology.path_dev(2), "subflow")
    pcap = tmp_path / "k2k.pcap"

    def run() -> None:
        srv = topology.popen_peer(*topology.kpeer("server", "--port", port, "--once",
                                                  "--mptcp", "--send-bytes", MB))
        topology.wait_listening(topology.peer_ns, port)
        cli = topology.run_user(*topology.kpeer("client", topology.peer_addr(1), port,
                                                "--mptcp", "--bind", topology.router_addr(1),
                                                "--send-bytes", 5 * MB, "--join-pause", 0.2),
                                timeout=60)
        assert cli.returncode == 0, cli.stderr
        topology.kpeer_result(srv)

    capture(topology, pcap, port, run)
    cap = analyze.read_capture(pcap)
    assert cap.link in ("Linux cooked v1", "Linux cooked v2") and cap.truncated is None
    an = analyze.analyse(cap)
    (c,) = an.connections
    assert len(c.subflows) == 2 and c.join_dirs == ["client"] and c.fallback is None
    # tshark groups the same two TCP streams into one MPTCP connection
    streams = tshark_streams(pcap)
    assert len(streams) == 1 and len(next(iter(streams.values()))) == 2, streams
    # the same keys, and the join's token is the server's
    keys = {c.initial.client_key, c.initial.server_key}
    assert tshark_values(pcap, "tcp.options.mptcp.sendkey") == keys
    assert tshark_values(pcap, "tcp.options.mptcp.recvtok") == {c.tokens()["server"]}
    rc, text = analyse(pcap, "--connection", "1", "--plot", str(tmp_path / "k2k.png"))
    assert rc == 0 and "MISMATCH" not in text, text
    for what in ("receiver key", "join token", "join thmac", "join HMAC"):
        assert any(what in line and "verified" in line for line in text.splitlines()), what
    assert (tmp_path / "k2k.png").read_bytes()[:4] == b"\x89PNG"
    got = json.loads(analyse(pcap, "--json", "--connection", "1")[1])
    rows = got["stats"]["subflows"]
    # the payload bytes tshark counts, per direction, and ours (a capture may miss some:
    # tcpdump's buffer on a fast veth)
    out = subprocess.run([tshark(), "-r", str(pcap), "-Y", "tcp.len > 0", "-T", "fields",
                          "-e", "tcp.dstport", "-e", "tcp.len"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    to_server = sum(int(n) for p, n in (x.split("\t") for x in out.splitlines())
                    if int(p) == port)
    assert sum(r["bytes"]["c2s"] for r in rows) == to_server > 4 * MB, rows
    assert all(r["bytes"]["c2s"] > 0 for r in rows)


def test_a_kernel_client_to_a_plain_tcp_server_is_shown_as_fallback(
        topology: Topology, user_endpoints: None, tmp_path: Path) -> None:
    port = 6952
    pcap = tmp_path / "fallback.pcap"

    def run() -> None:
        srv = topology.popen_peer(*topology.kpeer("server", "--port", port, "--once",
                                                  "--send-bytes", 1000))
        topology.wait_listening(topology.peer_ns, port)
        cli = topology.run_user(*topology.kpeer("client", topology.peer_addr(1), port,
                                                "--mptcp", "--bind", topology.router_addr(1),
                                                "--send-bytes", MB), timeout=60)
        assert cli.returncode == 0, cli.stderr
        topology.kpeer_result(srv)

    capture(topology, pcap, port, run)
    an = analyze.analyse(analyze.read_capture(pcap))
    (c,) = an.connections
    assert c.fallback is not None and "no MP_CAPABLE" in c.fallback
    rc, text = analyse(pcap, "--connection", "1")
    assert rc == 0 and "fallback" in text
    assert tshark_streams(pcap) == {} or len(tshark_streams(pcap)) == 1


def test_interval_reports_while_our_client_runs(topology: Topology,
                                                user_endpoints: None) -> None:
    """`connect --interval 0.5`: a line per subflow and one for the connection every
    0.5 s on stderr, the summary as usual; the transfer is held 1.5 s by a pause."""
    from tests.interop import ours

    port = 6954
    srv = topology.popen_peer(*topology.kpeer("server", "--port", port, "--once", "--mptcp"))
    topology.wait_listening(topology.peer_ns, port)
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), port,
                                "--subflow", topology.our_addr(2), "--send-bytes", 10 * MB,
                                "--pause-after", MB, "--pause", 1.5, "--interval", 0.5,
                                "--json"), timeout=60)
    got = topology.kpeer_result(srv)
    assert me["returncode"] == 0 and got["rx_bytes"] == 10 * MB, me["stderr"]
    lines = [x for x in me["stderr"].splitlines() if x.startswith("[")]
    conn = [x for x in lines if " conn " in x]
    assert len(conn) >= 2, me["stderr"][-2000:]
    assert any(" sf1 " in x for x in lines) and any(" sf2 " in x for x in lines)
    assert all("acked" in x and "window" in x for x in conn)
