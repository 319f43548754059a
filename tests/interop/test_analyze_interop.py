"""`mptcp-tun analyze` on captures of the kernel talking to the kernel (`tcpdump -i any`,
Linux cooked capture, in the peer namespace): a kernel client in the user namespace
(the router's 10.0.i.254 addresses) and a kernel server. analyze must group the
subflows exactly as tshark's MPTCP analysis groups them into one `mptcp.stream`, agree
with tshark on every key and join token, verify every HMAC, and say what the scenario
was built to show (the join, the fallback, a join refused, a fast close); the plot must be
an image. One more capture is of our stack against the kernel (whose keys our summary
also prints)."""

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
    # --immediate-mode: each packet to tcpdump at once (else the last ring block, up to
    # 1 s of packets, is still in the kernel when SIGINT ends the capture)
    dump = topology.popen_peer("tcpdump", "-i", "any", "--immediate-mode", "-U", "-B", "262144",
                               "-w", str(path),
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


def kernel_transfer(topology: Topology, pcap: Path, port: int, server: tuple[Any, ...] = (),
                    client: tuple[Any, ...] = (), size: int = 2 * MB,
                    client_ok: bool = True) -> None:
    """A kernel client (the user namespace, from 10.0.1.254) sends `size` bytes to a
    kernel MPTCP server (10.0.1.1), captured by tcpdump in the peer namespace."""
    def run() -> None:
        srv = topology.popen_peer(*topology.kpeer("server", "--port", port, "--once",
                                                  "--mptcp", *server))
        topology.wait_listening(topology.peer_ns, port)
        cli = topology.run_user(*topology.kpeer("client", topology.peer_addr(1), port,
                                                "--mptcp", "--bind", topology.router_addr(1),
                                                "--send-bytes", size, "--join-pause", 0.3,
                                                *client), timeout=60, check=False)
        assert cli.returncode == 0 or not client_ok, cli.stderr
        topology.kpeer_result(srv)

    capture(topology, pcap, port, run)


def checked(pcap: Path, show_data: int = 0,
            ) -> tuple[analyze.Connection, str, list[dict[str, Any]]]:
    """The capture's one MPTCP connection, grouped as tshark groups it, with the same
    keys; its text analysis (ladder, statistics, findings) and its findings as JSON."""
    an = analyze.analyse(analyze.read_capture(pcap))
    (c,) = an.connections
    streams = tshark_streams(pcap)
    assert len(streams) == 1 and len(next(iter(streams.values()))) == len(c.subflows), \
        (streams, [analyze._ep(f.client) for f in c.subflows])
    assert tshark_values(pcap, "tcp.options.mptcp.sendkey") == \
        {c.initial.client_key, c.initial.server_key}
    rc, text = analyse(pcap, "--connection", "1", "--show-data", str(show_data))
    assert rc == 0, text
    got = json.loads(analyse(pcap, "--json", "--connection", "1")[1])
    return c, text, got["findings"]


def verified(text: str, what: str) -> int:
    """How many derived lines about `what` say verified (none may say MISMATCH)."""
    lines = [x for x in text.splitlines() if what in x]
    assert all("MISMATCH" not in x for x in lines), lines
    return sum("verified" in x for x in lines)


def test_an_add_addr_from_the_kernel_server_is_joined_and_its_hmac_verified(
        topology: Topology, user_endpoints: None, tmp_path: Path) -> None:
    port, pcap = 6956, tmp_path / "addaddr.pcap"
    topology.run_peer("ip", "mptcp", "limits", "set", "subflows", 1)
    topology.run_peer("ip", "mptcp", "endpoint", "add", topology.peer_addr(2), "dev",
                      topology.path_dev(2), "signal")
    topology.run_user("ip", "mptcp", "limits", "set", "subflows", 1, "add_addr_accepted", 1)
    kernel_transfer(topology, pcap, port)
    c, text, findings = checked(pcap)
    assert len(c.joins) == 1 and c.join_dirs == ["client"]
    assert c.joins[0].server[0] == topology.peer_addr(2)
    assert tshark_values(pcap, "tcp.options.mptcp.recvtok") == {c.tokens()["server"]}
    # the ADD_ADDR, its echo and the address tshark reads; the HMAC checked
    announced = subprocess.run([tshark(), "-r", str(pcap), "-Y", "tcp.options.mptcp.ipv4",
                                "-T", "fields", "-e", "tcp.options.mptcp.ipv4"],
                               capture_output=True, text=True, timeout=60, check=True).stdout
    assert set(announced.split()) == {topology.peer_addr(2)}
    assert verified(text, "ADD_ADDR hmac") >= 1
    assert verified(text, "join thmac") == verified(text, "join HMAC") == 1
    assert findings == [], findings


def test_a_join_the_kernel_refuses_is_found_at_its_reset(
        topology: Topology, user_endpoints: None, tmp_path: Path) -> None:
    """The server's subflow limit is 0: it resets the client's join after the third ACK
    (MP_TCPRST), the transfer goes on over the first subflow."""
    port, pcap = 6958, tmp_path / "refused.pcap"
    topology.run_peer("ip", "mptcp", "limits", "set", "subflows", 0)
    topology.run_user("ip", "mptcp", "limits", "set", "subflows", 1)
    topology.run_user("ip", "mptcp", "endpoint", "add", topology.router_addr(2), "dev",
                      topology.path_dev(2), "subflow")
    kernel_transfer(topology, pcap, port)
    c, text, findings = checked(pcap)
    assert len(c.joins) == 1 and c.joins[0].rst is not None
    (f,) = [f for f in findings if f["code"] == "join-refused"]
    # the frame it names is a reset tshark sees, with the reason it says
    rst = dict(line.split("\t") for line in subprocess.run(
        [tshark(), "-r", str(pcap), "-Y", "tcp.options.mptcp.rst_reason", "-T", "fields",
         "-e", "frame.number", "-e", "tcp.options.mptcp.rst_reason"], capture_output=True,
        text=True, timeout=60, check=True).stdout.splitlines())
    reason = rst.get(str(f["packet"]["frame"]))
    assert reason is not None, (f, rst)
    assert f"the server reset it after the joiner's third ACK with MP_TCPRST reason " \
           f"{int(reason, 0)} " in f["text"], f
    assert verified(text, "join HMAC") == 1  # the HMACs were right: it was the limit
    assert [x["code"] for x in findings] == ["join-refused"], findings


def test_dss_checksums_between_two_kernels_are_verified(
        topology: Topology, user_endpoints: None, tmp_path: Path) -> None:
    port, pcap = 6960, tmp_path / "csum.pcap"
    for ns in (topology.user_ns, topology.peer_ns):
        topology.run_in(ns, "sysctl", "-qw", "net.mptcp.checksum_enabled=1")
    try:
        kernel_transfer(topology, pcap, port, size=MB)
    finally:
        for ns in (topology.user_ns, topology.peer_ns):
            topology.run_in(ns, "sysctl", "-qw", "net.mptcp.checksum_enabled=0", check=False)
    _, text, findings = checked(pcap, show_data=10**6)
    sums = tshark_values(pcap, "tcp.options.mptcp.checksum")
    assert sums, "tshark sees DSS checksums"
    # every mapping's checksum checked, those over several segments too
    assert verified(text, "DSS checksum") >= 10, text[-3000:]
    assert "not checked" not in text
    assert findings == [], findings


def test_a_kernel_fast_close_is_found_with_its_key(
        topology: Topology, user_endpoints: None, tmp_path: Path) -> None:
    """The server reads for 0.5 s and closes with SO_LINGER 0 while the client still
    sends: MP_FASTCLOSE (and RST) from the server."""
    port, pcap = 6962, tmp_path / "fastclose.pcap"
    kernel_transfer(topology, pcap, port, server=("--abort-after", 0.5), size=200 * MB,
                    client_ok=False)
    _, text, findings = checked(pcap)
    assert verified(text, "MP_FASTCLOSE key") >= 1
    fc = [f for f in findings if f["code"] == "fastclose"]
    assert len(fc) == 1 and "the server fast-closed the connection" in fc[0]["text"], findings
    assert fc[0]["packet"]["direction"] == "in"


def test_our_stack_against_the_kernel_checks_out_with_our_own_keys(
        topology: Topology, user_endpoints: None, tmp_path: Path) -> None:
    """Our client (a join from 10.0.2.2) and a kernel server, captured in the peer
    namespace: the tokens analyze derives are those our summary prints."""
    from tests.interop import ours

    port, pcap = 6964, tmp_path / "ours.pcap"
    topology.run_peer("ip", "mptcp", "limits", "set", "subflows", 2)
    me: dict[str, Any] = {}

    def run() -> None:
        srv = topology.popen_peer(*topology.kpeer("server", "--port", port, "--once",
                                                  "--mptcp", "--send-bytes", MB))
        topology.wait_listening(topology.peer_ns, port)
        me.update(ours.result(ours.start(topology, "connect", topology.peer_addr(1), port,
                                         "--subflow", topology.our_addr(2),
                                         "--send-bytes", 3 * MB, "--json"), timeout=60))
        assert me["returncode"] == 0, me["stderr"]
        topology.kpeer_result(srv)

    capture(topology, pcap, port, run)
    c, text, findings = checked(pcap)
    assert len(c.subflows) == 2 and c.join_dirs == ["client"]
    assert me["mptcp"] and me["local_key"] == f"{c.initial.client_key:016x}", me
    assert (f"{c.tokens()['client']:08x}", f"{c.tokens()['server']:08x}") == \
        (me["token"], me["remote_token"]), me
    assert verified(text, "join thmac") == verified(text, "join HMAC") == 1
    assert verified(text, "receiver key") >= 1
    # the kernel's first DSN checked; ours is implicit (MP_CAPABLE with data, RFC 8684 3.1)
    assert verified(text, "first mapping from peer") == 1
    assert "first mapping from us (implicit): DSN = IDSN(us)+1" in text
    assert findings == [], findings
    out = tmp_path / "ours.svg"
    rc, _ = analyse(pcap, "--plot", str(out), "--plot-kind", "goodput")
    assert rc == 0 and out.read_text().lstrip().startswith("<?xml")


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
