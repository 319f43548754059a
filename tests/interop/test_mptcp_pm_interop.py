"""The path manager against the Linux kernel (issue 4's scenarios beyond the first
join): three paths, removing a subflow or an address from either side, backup
subflows and MP_PRIO both ways, fast-close across two subflows, refused joins, and
checksums with two subflows. Each is checked by sha256, by the kernel's own view
(`ip mptcp monitor`, nstat MPTcpExt) and by our `--control` status or counters.
Paths are shaped (tbf 100 Mbit/s) where a test must act in the middle of a transfer."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.interop import ours
from tests.interop.harness import Topology, mptcp_counters, nstat_diff, nstat_errors
from tests.interop.payload import expected_sha256
from tests.interop.test_mptcp_interop import Monitor
from tests.interop.test_mptcp_join_interop import first_report, path_rx_bytes

MB = 1_000_000


def counter(stderr: str, name: str) -> int:
    """A counter from our `--stats` dump (0 if absent)."""
    m = re.search(rf"^{name}\s+(\d+)$", stderr, re.MULTILINE)
    return int(m.group(1)) if m else 0


def allow_rst_on_removal(diff: dict[str, int]) -> None:
    """The kernel closes its side of a subflow to a removed address at once; with data
    of ours still unread in it, that close is an RST + MP_TCPRST (MPRstTx). We reinject
    what it lost (the DuplicateData that may cost is judged by `nstat_errors`)."""
    diff.pop("MPTcpExtMPRstTx", None)


def kernel_endpoint_id(topo: Topology, addr: str) -> int:
    out = topo.run_peer("ip", "mptcp", "endpoint", "show").stdout
    m = re.search(rf"^{re.escape(addr)} id (\d+)", out, re.MULTILINE)
    assert m, out
    return int(m.group(1))


NONE: dict[str, Any] = {"tx_bytes": 0, "rx_bytes": 0, "state": None, "remote_backup": False}


def sf(conn: dict[str, Any], local_addr: str) -> dict[str, Any]:
    """The subflow of a `status` connection from our address (a stand-in with zero
    bytes while there is none yet)."""
    return next((s for s in conn["subflows"] if s["local"].startswith(local_addr + ":")), NONE)


def remote_sf(conn: dict[str, Any], remote_addr: str) -> dict[str, Any]:
    """The subflow to the peer's address."""
    return next((s for s in conn["subflows"] if s["remote"].startswith(remote_addr + ":")),
                NONE)


def kernel_server(topo: Topology, port: int, *extra: Any) -> subprocess.Popen[str]:
    srv = topo.popen_peer(*topo.kpeer("server", "--port", port, "--mptcp", *extra))
    topo.wait_listening(topo.peer_ns, port)
    return srv


# --- three paths ------------------------------------------------------------------------
def test_three_paths_three_subflows_all_carry_data(topology: Topology) -> None:
    before = topology.nstat_peer()
    mon = Monitor(topology)
    srv = kernel_server(topology, 6300)
    rx = {i: path_rx_bytes(topology, topology.peer_ns, f"path{i}") for i in (2, 3)}
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6300,
                                "--subflow", topology.our_addr(2),
                                "--subflow", topology.our_addr(3),
                                "--send-bytes", 100 * MB, "--json", "--stats"), timeout=180)
    kernel = first_report(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["rx_bytes"] == 100 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    assert me["subflows"] == 3 and all(b > MB for b in me["subflow_bytes"]), me["subflow_bytes"]
    for i, b in zip((2, 3), me["subflow_bytes"][1:], strict=True):
        assert path_rx_bytes(topology, topology.peer_ns, f"path{i}") - rx[i] > b
    sfe = {e.get("daddr4") for e in mon.events() if e["event"] == "SF_ESTABLISHED"}
    assert sfe == {topology.our_addr(2), topology.our_addr(3)}
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtMPJoinAckRx") == 2
    assert nstat_errors(diff, me) == {}, me["stderr"]


# --- removing a subflow or an address -----------------------------------------------------
@pytest.mark.parametrize("how", ["subflow", "address"])
def test_we_remove_our_second_subflow_mid_transfer(topology: Topology, shaped_paths: None,
                                                   tmp_path: Path, how: str) -> None:
    ctl = tmp_path / "ctl"
    before = topology.nstat_peer()
    mon = Monitor(topology)
    srv = kernel_server(topology, 6310)
    p = ours.start(topology, "connect", topology.peer_addr(1), 6310, "--subflow",
                   topology.our_addr(2), "--send-bytes", 60 * MB, "--json", "--stats",
                   "--control", ctl)
    ours.wait_for(ctl, lambda c: sf(c, topology.our_addr(2))["tx_bytes"] > 5 * MB)
    cmd = f"subflow del {topology.our_addr(2)}" if how == "subflow" \
        else f"remove {topology.our_addr(2)}"
    answer = ours.ctl(ctl, cmd)
    assert answer["ok"] and list(answer["done"].values()) == [1], answer
    me = ours.result(p, timeout=120)
    kernel = first_report(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["rx_bytes"] == 60 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    assert me["subflow_bytes"][0] > 20 * MB  # path 1 carried the rest
    evs = mon.events()
    closed = [e for e in evs if e["event"] == "SF_CLOSED"]
    assert any(e.get("daddr4") == topology.our_addr(2) for e in closed), evs
    diff = nstat_diff(before, topology.nstat_peer())
    if how == "address":
        assert diff.get("MPTcpExtRmAddr") == 1 and counter(me["stderr"], "RmAddrTx") == 1
        assert any(e["event"] == "REMOVED" and e.get("remid") == "1" for e in evs), evs
        allow_rst_on_removal(diff)
    else:
        assert not diff.get("MPTcpExtRmAddr") and counter(me["stderr"], "RmSubflow") == 1
    assert nstat_errors(diff, me) == {}


def test_kernel_removes_its_announced_address(topology: Topology, no_endpoints: None,
                                              shaped_paths: None, tmp_path: Path) -> None:
    # the kernel server announces 10.0.2.1 (signal), we join it, then the endpoint is
    # deleted: the kernel sends REMOVE_ADDR, we close the join, the transfer completes
    ctl = tmp_path / "ctl"
    topology.run_peer("ip", "mptcp", "endpoint", "add", topology.peer_addr(2), "dev", "path2",
                      "signal")
    before = topology.nstat_peer()
    srv = kernel_server(topology, 6320)
    p = ours.start(topology, "connect", topology.peer_addr(1), 6320, "--send-bytes", 60 * MB,
                   "--json", "--stats", "--control", ctl, "--timeout", 60)
    ours.wait_for(ctl, lambda c: len(c["subflows"]) == 2
                  and remote_sf(c, topology.peer_addr(2))["tx_bytes"] > 5 * MB)
    topology.run_peer("ip", "mptcp", "endpoint", "delete", "id",
                      kernel_endpoint_id(topology, topology.peer_addr(2)))
    conn = ours.wait_for(ctl, lambda c: remote_sf(c, topology.peer_addr(2))["state"]
                         in ("CLOSED", "TIME_WAIT", "FIN_WAIT_2", "LAST_ACK", "CLOSING"))
    me = ours.result(p, timeout=120)
    kernel = first_report(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["rx_bytes"] == 60 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    assert counter(me["stderr"], "RmAddr") == 1, me["stderr"]
    assert remote_sf(conn, topology.peer_addr(2))["closing"]
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtRmAddrTx", 1) >= 1
    allow_rst_on_removal(diff)
    assert nstat_errors(diff, me) == {}


def test_kernel_client_removes_its_subflow_endpoint(topology: Topology, no_endpoints: None,
                                                    shaped_paths: None, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl"
    topology.run_peer("ip", "mptcp", "endpoint", "add", topology.peer_addr(2), "subflow")
    before = topology.nstat_peer()
    lst = ours.start_listener(topology, 6330, "--once", "--json", "--stats", "--control", ctl)
    cli = topology.popen_peer(*topology.kpeer("client", topology.our_addr(1), 6330, "--mptcp",
                                              "--send-bytes", 60 * MB))
    ours.wait_for(ctl, lambda c: len(c["subflows"]) == 2
                  and remote_sf(c, topology.peer_addr(2))["rx_bytes"] > 5 * MB)
    topology.run_peer("ip", "mptcp", "endpoint", "delete", "id",
                      kernel_endpoint_id(topology, topology.peer_addr(2)))
    me = ours.result(lst, timeout=120)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, out + err
    assert me["returncode"] == 0, me["stderr"]
    assert me["received"] == 60 * MB and me["received_sha256"] == expected_sha256(60 * MB)
    # Linux's counting (chk_rm_nr): RmSubflow is the remover's, here the kernel's
    assert counter(me["stderr"], "RmAddr") == 1 and counter(me["stderr"], "RmSubflow") == 0
    assert nstat_diff(before, topology.nstat_peer()).get("MPTcpExtRmSubflow") == 1
    assert nstat_errors(nstat_diff(before, topology.nstat_peer())) == {}


# --- backup subflows and MP_PRIO ----------------------------------------------------------
def test_a_backup_subflow_idles_then_takes_over_when_path1_fails(
        topology: Topology, shaped_paths: None, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl"
    mon = Monitor(topology)
    srv = kernel_server(topology, 6340)
    p = ours.start(topology, "connect", topology.peer_addr(1), 6340, "--subflow",
                   topology.our_addr(2), "--backup", topology.our_addr(2),
                   "--send-bytes", 60 * MB, "--json", "--stats", "--control", ctl,
                   "--timeout", "90")
    conn = ours.wait_for(ctl, lambda c: len(c["subflows"]) == 2 and c["sent"] > 15 * MB)
    backup = sf(conn, topology.our_addr(2))
    assert backup["established"] and backup["backup"] and backup["tx_bytes"] == 0, conn
    topology.run_peer("ip", "link", "set", "path1", "down")
    me = ours.result(p, timeout=120)
    kernel = first_report(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["rx_bytes"] == 60 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    assert me["subflow_bytes"][1] > 20 * MB  # the backup carried the rest
    sfe = [e for e in mon.events() if e["event"] == "SF_ESTABLISHED"]
    assert sfe and sfe[0].get("backup") == "1"  # the kernel saw our B flag


def test_our_mp_prio_stops_the_kernel_sending_on_a_subflow(
        topology: Topology, shaped_paths: None, tmp_path: Path) -> None:
    # the kernel server sends to us over two subflows; we flip ours from 10.0.2.2 to
    # backup: MP_PRIO, and the kernel's scheduler leaves it
    ctl = tmp_path / "ctl"
    before = topology.nstat_peer()
    mon = Monitor(topology)
    srv = kernel_server(topology, 6350, "--send-bytes", 60 * MB)
    p = ours.start(topology, "connect", topology.peer_addr(1), 6350, "--subflow",
                   topology.our_addr(2), "--json", "--stats", "--control", ctl)
    ours.wait_for(ctl, lambda c: sf(c, topology.our_addr(2))["rx_bytes"] > 3 * MB)
    assert ours.ctl(ctl, f"backup {topology.our_addr(2)} on")["ok"]
    time.sleep(0.3)  # in flight before the MP_PRIO landed
    at_flip = sf(ours.ctl(ctl, "status")["connections"][0], topology.our_addr(2))["rx_bytes"]
    me = ours.result(p, timeout=120)
    kernel = first_report(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert me["received"] == 60 * MB and me["received_sha256"] == kernel["tx_sha256"]
    assert me["subflow_rx_bytes"][1] - at_flip < MB, (at_flip, me["subflow_rx_bytes"])
    assert counter(me["stderr"], "MPPrioTx") == 1
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtMPPrioRx") == 1
    evs = mon.events()
    prio = [e for e in evs if e["event"] in ("SF_PRIO", "SF_PRIORITY")]  # iproute2: SF_PRIO
    assert prio and prio[0].get("backup") == "1", evs
    assert nstat_errors(diff, me) == {}


def test_kernel_mp_prio_makes_us_stop_sending_on_a_subflow(
        topology: Topology, no_endpoints: None, shaped_paths: None, tmp_path: Path) -> None:
    # the kernel server announces 10.0.2.1 and we join it while sending; `endpoint
    # change ... backup` makes the kernel send MP_PRIO on that subflow (its local
    # address), and our scheduler leaves it
    ctl, events = tmp_path / "ctl", tmp_path / "ev.jsonl"
    topology.run_peer("ip", "mptcp", "endpoint", "add", topology.peer_addr(2), "dev", "path2",
                      "signal")
    srv = kernel_server(topology, 6360)
    p = ours.start(topology, "connect", topology.peer_addr(1), 6360, "--send-bytes", 60 * MB,
                   "--json", "--stats", "--control", ctl, "--events", events)
    ours.wait_for(ctl, lambda c: remote_sf(c, topology.peer_addr(2))["tx_bytes"] > 3 * MB)
    topology.run_peer("ip", "mptcp", "endpoint", "change", "id",
                      kernel_endpoint_id(topology, topology.peer_addr(2)), "backup")
    conn = ours.wait_for(ctl, lambda c: remote_sf(c, topology.peer_addr(2))["remote_backup"])
    at_flip = remote_sf(conn, topology.peer_addr(2))["tx_bytes"]
    me = ours.result(p, timeout=120)
    kernel = first_report(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["rx_bytes"] == 60 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    # nothing new after MP_PRIO, beyond what was queued on the subflow then (two cwnds)
    assert me["subflow_bytes"][1] - at_flip < 2 * MB, (at_flip, me["subflow_bytes"])
    assert me["subflow_bytes"][0] > 30 * MB
    assert counter(me["stderr"], "MPPrioRx") == 1
    assert '"event": "SF_PRIORITY"' in events.read_text()


# --- fast close across two subflows ----------------------------------------------------
def test_our_fastclose_resets_both_subflows(topology: Topology, tmp_path: Path) -> None:
    # unshaped: a tbf queue full of our data drops RSTs that wait in it past its
    # latency bound, and the kernel would never see the MP_FASTCLOSE
    ctl = tmp_path / "ctl"
    before = topology.nstat_peer()
    srv = kernel_server(topology, 6370)
    p = ours.start(topology, "connect", topology.peer_addr(1), 6370, "--subflow",
                   topology.our_addr(2), "--send-bytes", 2000 * MB, "--json", "--stats",
                   "--control", ctl)
    # both subflows up and data flowing (unshaped, the join may carry none of it)
    ours.wait_for(ctl, lambda c: c["sent"] > 100 * MB and len(c["subflows"]) == 2
                  and all(s["established"] for s in c["subflows"]))
    assert ours.ctl(ctl, "fastclose")["ok"]
    me = ours.result(p, timeout=60)
    kernel = first_report(srv)
    assert me["returncode"] == 1 and "aborted" in me["error"]
    assert kernel["error"] is not None and kernel["rx_bytes"] < 2000 * MB
    assert counter(me["stderr"], "MPFastcloseTx") >= 1
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtMPFastcloseRx", 0) >= 1


def test_kernel_fastclose_resets_both_of_our_subflows(
        topology: Topology, no_endpoints: None, tmp_path: Path) -> None:
    # a kernel client with two subflows closes with unread data: MP_FASTCLOSE
    events = tmp_path / "ev.jsonl"
    topology.run_peer("ip", "mptcp", "endpoint", "add", topology.peer_addr(2), "subflow")
    lst = ours.start_listener(topology, 6380, "--once", "--json", "--send-bytes", 8 * MB,
                              "--stats", "--events", events)
    topology.kernel_abort(topology.our_addr(1), 6380, after=1.0)
    me = ours.result(lst, timeout=30)
    assert me["returncode"] == 1 and not me["clean"]
    assert counter(me["stderr"], "MPFastcloseRx") == 1, me["stderr"]
    kinds = [json.loads(ln)["event"] for ln in events.read_text().splitlines()]
    assert kinds.count("SF_ESTABLISHED") == 1  # the kernel's join
    assert "CLOSED" in kinds[kinds.index("MP_FASTCLOSE"):], kinds
    assert kinds.count("SF_CLOSED") == 1  # the join went too


# --- refused joins ---------------------------------------------------------------------
@pytest.mark.parametrize("fault,counter_name", [
    ("join-token", "MPTcpExtMPJoinNoTokenFound"),
    ("join-hmac", "MPTcpExtMPJoinAckHMacFailure")])
def test_the_kernel_refuses_a_bad_join_and_the_connection_lives(
        topology: Topology, tmp_path: Path, fault: str, counter_name: str) -> None:
    events = tmp_path / "ev.jsonl"
    before = topology.nstat_peer()
    srv = kernel_server(topology, 6390 + (fault == "join-hmac"))
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1),
                                6390 + (fault == "join-hmac"), "--subflow",
                                topology.our_addr(2), "--fault", fault,
                                "--send-bytes", 20 * MB, "--json", "--stats",
                                "--events", events), timeout=120)
    kernel = first_report(srv)
    # every byte through, but the join asked for was refused: exit 4, said why
    assert me["returncode"] == 4, me["stderr"]
    assert [d["code"] for d in me["diagnosis"]] == ["join-refused"], me["diagnosis"]
    assert kernel["rx_sha256"] == me["sent_sha256"] and kernel["rx_bytes"] == 20 * MB
    assert me["subflows"] == 1
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get(counter_name) == 1, diff
    closed = [ln for ln in events.read_text().splitlines() if '"SF_CLOSED"' in ln]
    assert closed and topology.our_addr(2) in closed[0]
    if fault == "join-token":
        assert "MP_TCPRST reason 1" in closed[0] or "reset" in closed[0] \
            or "refused" in closed[0], closed


# --- checksums with two subflows --------------------------------------------------------
def test_checksums_on_two_subflows(topology: Topology) -> None:
    # With checksums the kernel now and then leaves its data ACK behind (a stall until
    # --timeout, 1 run in ~7, before we had a data-level RTO; issue 4 note): all our
    # data TCP-acked, none of it data-acked. Our data-level RTO sends the head again,
    # the kernel drops it as DuplicateData and its ACK carries the data ACK.
    # Measured: 2 of 25 runs, each MPTCPRetrans 1 and kernel DuplicateData 1.
    before = topology.nstat_peer()
    srv = kernel_server(topology, 6395)
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6395,
                                "--subflow", topology.our_addr(2), "--checksum",
                                "--send-bytes", 50 * MB, "--json", "--stats",
                                "--timeout", 30), timeout=60)
    kernel = first_report(srv)
    diff = nstat_diff(before, topology.nstat_peer())
    assert me["returncode"] == 0, (me["stderr"], kernel, mptcp_counters(diff))
    assert me["checksum"] and me["subflows"] == 2
    assert kernel["rx_bytes"] == 50 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    assert all(b > MB for b in me["subflow_bytes"]), me["subflow_bytes"]
    assert nstat_errors(diff, me) == {}, (me["stderr"], mptcp_counters(diff))


# --- fullmesh -----------------------------------------------------------------------------
def test_fullmesh_joins_the_kernels_announced_address_from_both_of_ours(
        topology: Topology, no_endpoints: None) -> None:
    topology.run_peer("ip", "mptcp", "endpoint", "add", topology.peer_addr(2), "dev", "path2",
                      "signal")
    before = topology.nstat_peer()
    srv = kernel_server(topology, 6398)
    me = ours.result(ours.start(topology, "connect", topology.peer_addr(1), 6398,
                                "--fullmesh", topology.our_addr(1),
                                "--fullmesh", topology.our_addr(2),
                                "--send-bytes", 60 * MB, "--json"), timeout=180)
    kernel = first_report(srv)
    assert me["returncode"] == 0, me["stderr"]
    assert kernel["rx_bytes"] == 60 * MB and kernel["rx_sha256"] == me["sent_sha256"]
    # 10.0.1.2 -> 10.0.1.1 (initial), 10.0.2.2 -> 10.0.1.1, and both to 10.0.2.1
    assert me["subflows"] == 4, me
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("MPTcpExtMPJoinAckRx") == 3
    assert nstat_errors(diff, me) == {}
