"""MP_JOIN with the Linux kernel, both roles (issue 4, first scenarios): a second
subflow on path 2, both subflows carrying data, checked by sha256, by the kernel's
`ip mptcp monitor` (SF_ESTABLISHED), by its MPJoin counters, and by the bytes that
crossed path 2."""

from __future__ import annotations

import json
import select
import subprocess
import time
from typing import Any

from tests.interop import ours
from tests.interop.harness import Topology, nstat_diff, nstat_errors
from tests.interop.payload import expected_sha256
from tests.interop.test_mptcp_interop import Monitor

MB = 1_000_000


def first_report(p: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    """The first JSON line of a long-running kpeer server, which is then stopped (it
    keeps its listener open: the kernel takes MP_JOIN SYNs through the listener)."""
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([p.stdout], [], [], 0.2)[0]:
                line = p.stdout.readline()
                if line.startswith("{"):
                    return json.loads(line)  # type: ignore[no-any-return]
                if not line:
                    break
        raise AssertionError("the kernel server printed no report")
    finally:
        p.terminate()


def path_rx_bytes(topo: Topology, ns: str, dev: str) -> int:
    return int(topo.run_in(ns, "cat", f"/sys/class/net/{dev}/statistics/rx_bytes").stdout)


def test_our_client_joins_a_second_subflow_on_path2(topology: Topology) -> None:
    before = topology.nstat_peer()
    mon = Monitor(topology)
    srv = topology.popen_peer(*topology.kpeer("server", "--port", 6200, "--mptcp"))
    topology.wait_listening(topology.peer_ns, 6200)
    p2 = path_rx_bytes(topology, topology.peer_ns, "path2")
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6200,
                                "--subflow", topology.our_addr(2), "--send-bytes", 100 * MB,
                                "--json"), timeout=180)
    kernel = first_report(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["rx_bytes"] == 100 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    assert me["subflows"] == 2 and all(b > MB for b in me["subflow_bytes"]), me["subflow_bytes"]
    # the join's bytes really crossed path 2
    assert path_rx_bytes(topology, topology.peer_ns, "path2") - p2 > min(me["subflow_bytes"])
    sf = [e for e in mon.events() if e["event"] == "SF_ESTABLISHED"]
    assert sf and sf[0].get("daddr4") == topology.our_addr(2)
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtMPJoinSynRx") == 1 and diff.get("MPTcpExtMPJoinAckRx") == 1
    assert nstat_errors(diff, me) == {}


def test_kernel_client_with_a_subflow_endpoint_joins_our_listener(
        topology: Topology, no_endpoints: None) -> None:
    # No `dev`: by the topology contract all traffic of 10.0.1.2 crosses path1, and a
    # device-bound kernel subflow socket would not take our SYN/ACK arriving there.
    topology.run_peer("ip", "mptcp", "endpoint", "add", topology.peer_addr(2), "subflow")
    before = topology.nstat_peer()
    mon = Monitor(topology)
    lst = ours.start_listener(topology, 6201, "--once", "--json", "--echo")
    cli = topology.run_peer(*topology.kpeer("client", topology.our_addr(1), 6201, "--mptcp",
                                            "--send-bytes", 50 * MB, "--echo-check"),
                            timeout=180)
    me = ours.result(lst)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert me["returncode"] == 0, me["stderr"]
    assert me["received_sha256"] == expected_sha256(50 * MB)
    assert me["subflows"] == 2 and all(b > 0 for b in me["subflow_rx_bytes"]), me
    sf = [e for e in mon.events() if e["event"] == "SF_ESTABLISHED"]
    assert sf and sf[0].get("saddr4") == topology.peer_addr(2)
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtMPJoinSynTx") == 1
    assert nstat_errors(diff, me) == {}


def path1_down_after(topo: Topology, seconds: float) -> subprocess.Popen[str]:
    """Cut path 1 once path 2 has carried 5 MB either way (the join is busy), or after
    `seconds` at the latest: a fixed delay alone races the join on a loaded machine."""
    script = ("import sys, time\n"
              "d = '/sys/class/net/path2/statistics/'\n"
              "n = lambda: int(open(d + 'rx_bytes').read()) + int(open(d + 'tx_bytes').read())\n"
              "start, t0 = n(), time.monotonic()\n"
              f"while time.monotonic() - t0 < {seconds}:\n"
              "    if n() - start > 5_000_000: break\n"
              "    time.sleep(0.02)\n")
    return topo.popen_peer("sh", "-c", f"python3 -c \"{script}\" && ip link set path1 down")


def test_path1_dies_during_60mb_our_client_completes_on_path2(
        topology: Topology, shaped_paths: None) -> None:
    srv = topology.popen_peer(*topology.kpeer("server", "--port", 6210, "--mptcp"))
    topology.wait_listening(topology.peer_ns, 6210)
    cut = path1_down_after(topology, 15)
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6210,
                                "--subflow", topology.our_addr(2), "--send-bytes", 60 * MB,
                                "--json", "--stats", "--timeout", "60"), timeout=90)
    cut.wait(timeout=30)
    kernel = first_report(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["rx_bytes"] == 60 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    assert me["subflows"] == 2 and me["subflow_bytes"][1] > 30 * MB  # path 2 took over
    assert "SubflowStale" in me["stderr"] and "Reinjected" in me["stderr"]



def test_our_listener_announces_path2_and_the_kernel_client_joins_it(
        topology: Topology, no_endpoints: None) -> None:
    before = topology.nstat_peer()
    mon = Monitor(topology)
    lst = ours.start_listener(topology, 6220, "--once", "--json", "--stats",
                              "--announce", topology.our_addr(2))
    cli = topology.run_peer(*topology.kpeer("client", topology.our_addr(1), 6220, "--mptcp",
                                            "--send-bytes", 50 * MB), timeout=120)
    me = ours.result(lst)
    assert cli.returncode == 0 and me["returncode"] == 0, me["stderr"]
    assert me["received_sha256"] == expected_sha256(50 * MB)
    assert me["subflows"] == 2 and all(b > 0 for b in me["subflow_rx_bytes"])
    evs = mon.events()
    assert any(e["event"] == "ANNOUNCED" and e.get("daddr4") == topology.our_addr(2)
               for e in evs), evs
    assert any(e["event"] == "SF_ESTABLISHED" and e.get("daddr4") == topology.our_addr(2)
               for e in evs)
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtAddAddr") == 1 and diff.get("MPTcpExtEchoAddTx", 0) >= 1
    assert "EchoAdd" in me["stderr"]  # the kernel echoed our ADD_ADDR
    assert nstat_errors(diff, me) == {}


def test_kernel_server_signal_endpoint_our_client_joins_it(
        topology: Topology, no_endpoints: None, shaped_paths: None) -> None:
    # shaped: at full speed 50 MB is through before the announcement can matter
    topology.run_peer("ip", "mptcp", "endpoint", "add", topology.peer_addr(2), "dev", "path2",
                      "signal")
    before = topology.nstat_peer()
    srv = topology.popen_peer(*topology.kpeer("server", "--port", 6221, "--mptcp"))
    topology.wait_listening(topology.peer_ns, 6221)
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6221,
                                "--send-bytes", 50 * MB, "--json", "--stats"), timeout=120)
    kernel = first_report(srv)
    assert "AddAddr " in me["stderr"]  # we accepted the kernel's ADD_ADDR (HMAC checked)
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["rx_sha256"] == me["sent_sha256"] and kernel["rx_bytes"] == 50 * MB
    assert me["subflows"] == 2 and all(b > 0 for b in me["subflow_bytes"]), me["stderr"]
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtEchoAdd", 0) >= 1  # the kernel got our echo
    assert diff.get("MPTcpExtMPJoinSynRx") == 1
    assert nstat_errors(diff, me) == {}


def test_path1_dies_during_60mb_kernel_client_completes_on_path2(
        topology: Topology, shaped_paths: None, no_endpoints: None) -> None:
    # our listener announces 10.0.2.2, so the kernel's second subflow runs on path 2
    lst = ours.start_listener(topology, 6222, "--once", "--json",
                              "--announce", topology.our_addr(2))
    cut = path1_down_after(topology, 15)
    cli = topology.run_peer(*topology.kpeer("client", topology.our_addr(1), 6222, "--mptcp",
                                            "--send-bytes", 60 * MB), timeout=120)
    cut.wait(timeout=30)
    me = ours.result(lst, timeout=60)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert me["returncode"] == 0, me["stderr"]
    assert me["received"] == 60 * MB and me["received_sha256"] == expected_sha256(60 * MB)
    assert me["subflows"] == 2 and me["subflow_rx_bytes"][1] > 30 * MB
