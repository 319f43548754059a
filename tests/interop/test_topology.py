"""The test topology itself (netns-setup.sh) with kernel <-> kernel traffic only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tests.interop.harness import NETNS_SETUP, Topology, nstat_diff, nstat_errors, run
from tests.interop.payload import expected_sha256

TEN_MB = 10_000_000


def snapshot(topo: Topology, recreated_links: bool = False) -> dict[str, str]:
    """Everything `up` is responsible for, with volatile bits (peer ifindexes, IPv6
    link-local addresses; and MACs when links may have been re-created) removed."""
    snap: dict[str, str] = {}
    for ns in (topo.user_ns, topo.peer_ns):
        snap[f"{ns} addr"] = run(["ip", "-n", ns, "-br", "addr"]).stdout
        snap[f"{ns} link"] = run(["ip", "-n", ns, "-d", "-br", "link"]).stdout
        snap[f"{ns} route"] = run(["ip", "-n", ns, "route", "show", "table", "all"]).stdout
        snap[f"{ns} rule"] = run(["ip", "-n", ns, "rule"]).stdout
        snap[f"{ns} sysctl"] = topo.run_in(ns, "sysctl", "-a", "-r",
                                           r"^net\.(ipv4\.(ip_forward|conf\..*\.(rp_filter|"
                                           r"proxy_arp|forwarding))|mptcp\.enabled)$").stdout
    snap["mptcp limits"] = run(["ip", "-n", topo.peer_ns, "mptcp", "limits", "show"]).stdout
    snap["mptcp endpoints"] = run(["ip", "-n", topo.peer_ns, "mptcp", "endpoint", "show"]).stdout
    def norm(v: str) -> str:
        v = re.sub(r"@if\d+", "@ifN", v)
        v = re.sub(r" fe80::\S+", "", v)
        if recreated_links:
            v = re.sub(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", "MAC", v)
        return v

    return {k: norm(v) for k, v in snap.items()}


@pytest.mark.parametrize("mptcp", [False, True], ids=["tcp", "mptcp"])
def test_kernel_to_kernel_10mb(topology: Topology, mptcp: bool) -> None:
    port = 5000 + int(mptcp)
    flag = ["--mptcp"] if mptcp else []
    before, user_before = topology.nstat_peer(), topology.nstat_user()
    srv = topology.popen_peer(*topology.kpeer("server", "--port", port, "--once", *flag))
    topology.wait_listening(topology.peer_ns, port)
    cli = topology.run_user(*topology.kpeer(
        "client", topology.peer_addr(1), port, "--bind", topology.router_addr(1),
        "--send-bytes", TEN_MB, *flag))
    got = topology.kpeer_result(srv)
    sent = json.loads(cli.stdout.splitlines()[-1])
    want = expected_sha256(TEN_MB)
    assert sent["ok"] and sent["tx_bytes"] == TEN_MB and sent["tx_sha256"] == want, sent
    assert got["ok"] and got["rx_bytes"] == TEN_MB and got["rx_sha256"] == want, got
    assert got["returncode"] == 0
    assert got["remote"].startswith(topology.router_addr(1) + ":")
    if mptcp:
        assert got["fallback"] is False and sent["fallback"] is False, (got, sent)
        diff = nstat_diff(before, topology.nstat_peer())
        assert diff.get("MPTcpExtMPCapableSYNRX", 0) >= 1, diff
        # the kernel sender's own data-level resends and zero-window probes reach the
        # receiver as DuplicateData (seen once in ~20 CI runs): not an error
        sender = nstat_diff(user_before, topology.nstat_user())
        errors = nstat_errors(diff)
        dup = errors.pop("MPTcpExtDuplicateData", 0)
        assert dup <= sender.get("MPTcpExtMPTCPRetrans", 0) + sender.get(
            "MPTcpExtWinProbe", 0), (diff, sender)
        assert errors == {}, diff


def test_status(topology: Topology) -> None:
    out = topology.status().stdout
    for name in (topology.user_ns, topology.peer_ns, "mptun0", "10.0.3.1/24",
                 "10.0.2.254/24", "10.0.1.2 dev mptun0", "subflows 8", "add_addr_accepted 8"):
        assert name in out


def test_status_fails_when_down() -> None:
    cp = run([str(NETNS_SETUP), "status", "--prefix", "nonexistent-xyz"], check=False)
    assert cp.returncode != 0


def test_up_is_idempotent(topology: Topology) -> None:
    before = snapshot(topology)
    topology.setup()
    after = snapshot(topology)
    assert after == before
    assert "mptun0" in before[f"{topology.user_ns} link"]
    assert "10.0.1.2 dev mptun0" in before[f"{topology.user_ns} route"]


def test_up_with_other_path_count_reshapes() -> None:
    topo = Topology(f"r{os.getpid() % 10000}", 3)
    try:
        topo.setup()
        three = snapshot(topo, recreated_links=True)
        run([str(NETNS_SETUP), "up", "--paths", "1", "--prefix", topo.prefix])
        links = run(["ip", "-n", topo.peer_ns, "-br", "link"]).stdout
        assert "path1" in links and "path2" not in links and "path3" not in links
        rules = run(["ip", "-n", topo.user_ns, "rule"]).stdout
        assert "10.0.1.2" in rules and "10.0.2.2" not in rules
        topo.setup()
        assert snapshot(topo, recreated_links=True) == three
    finally:
        topo.teardown()
    assert run([str(NETNS_SETUP), "status", "--prefix", topo.prefix], check=False).returncode


@pytest.mark.parametrize("i", [1, 2, 3])
def test_ping_router(topology: Topology, i: int) -> None:
    topology.run_peer("ping", "-c", "1", "-W", "2", topology.router_addr(i))


def test_peer_mptcp_defaults(topology: Topology) -> None:
    assert topology.run_peer("sysctl", "-n", "net.mptcp.enabled").stdout.strip() == "1"
    lim = run(["ip", "-n", topology.peer_ns, "mptcp", "limits", "show"]).stdout.split()
    assert lim[lim.index("subflows") + 1] == "8"
    assert lim[lim.index("add_addr_accepted") + 1] == "8"
    assert run(["ip", "-n", topology.peer_ns, "mptcp", "endpoint", "show"]).stdout.strip() == ""


def test_non_root_is_refused() -> None:
    # Run a copy from a world-readable place: the checkout may sit under /root.
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        script = Path(d) / "netns-setup.sh"
        shutil.copy(NETNS_SETUP, script)
        os.chmod(script, 0o755)
        cp = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  str(script), "up"], check=False, cwd=d)
    assert cp.returncode == 1
    assert cp.stdout == ""
    assert cp.stderr == "netns-setup.sh: must run as root (try: sudo ./netns-setup.sh up)\n"


# A throwaway TUN reader: answers ICMP echo requests for our addresses, prints one JSON
# line per packet it read. Runs in the user namespace with the venv's python (pytun).
TUN_ECHO = textwrap.dedent("""
    import json, select, struct, sys, time
    import pytun
    def csum(b):
        if len(b) % 2: b += b"\\0"
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        while s >> 16: s = (s & 0xFFFF) + (s >> 16)
        return ~s & 0xFFFF
    t = pytun.TunTapDevice(name="mptun0", flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
    print(json.dumps({"ready": True}), flush=True)
    end = time.time() + float(sys.argv[1])
    while time.time() < end:
        if not select.select([t], [], [], 0.2)[0]: continue
        p = t.read(65536)
        if p[0] >> 4 != 4:
            print(json.dumps({"version": p[0] >> 4}), flush=True); continue
        ihl = (p[0] & 15) * 4
        src, dst = ".".join(map(str, p[12:16])), ".".join(map(str, p[16:20]))
        print(json.dumps({"src": src, "dst": dst, "proto": p[9], "type": p[ihl]}), flush=True)
        if p[9] == 1 and p[ihl] == 8:
            ip = bytearray(p[:ihl]); ip[12:16], ip[16:20] = p[16:20], p[12:16]; ip[8] = 64
            ic = bytearray(p[ihl:]); ic[0] = 0; ic[2:4] = b"\\0\\0"
            ic[2:4] = struct.pack("!H", csum(bytes(ic)))
            ip[10:12] = b"\\0\\0"; ip[10:12] = struct.pack("!H", csum(bytes(ip)))
            t.write(bytes(ip + ic))
""")

NFT_COUNT = """
table ip pathcheck {
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "path1" icmp type echo-reply counter
        iifname "path2" icmp type echo-reply counter
        iifname "path3" icmp type echo-reply counter
    }
    chain output {
        type filter hook output priority 0; policy accept;
        oifname "path1" icmp type echo-request counter
        oifname "path2" icmp type echo-request counter
        oifname "path3" icmp type echo-request counter
    }
}
"""


def _nft_counts(topo: Topology) -> dict[tuple[str, str], int]:
    data = json.loads(topo.run_peer("nft", "-j", "list", "table", "ip", "pathcheck").stdout)
    counts: dict[tuple[str, str], int] = {}
    for obj in data["nftables"]:
        rule = obj.get("rule")
        if not rule:
            continue
        dev = pkts = None
        for e in rule["expr"]:
            if "match" in e and e["match"]["left"].get("meta", {}).get("key") in ("iifname",
                                                                                   "oifname"):
                dev = e["match"]["right"]
            if "counter" in e:
                pkts = e["counter"]["packets"]
        assert dev is not None and pkts is not None
        counts[(rule["chain"], dev)] = pkts
    return counts


def test_tun_reader_gets_peer_traffic_on_the_right_path(topology: Topology) -> None:
    """Once a process opens mptun0, ping from the peer to 10.0.i.2 reaches it, and the
    reply goes back over path<i> even when addressed to the peer's address on path j."""
    reader = topology.popen_user(sys.executable, "-c", TUN_ECHO, "20")
    assert reader.stdout is not None
    assert json.loads(reader.stdout.readline()) == {"ready": True}
    topology.run_peer("nft", "-f", "-", input=NFT_COUNT)
    try:
        # (source on the peer, our address): the request must leave by path<i> of the
        # destination 10.0.i.2 and the reply come back by the same path.
        cases = [(1, 1), (2, 2), (3, 3), (1, 2), (3, 1)]
        for j, i in cases:
            before = _nft_counts(topology)
            deadline = time.monotonic() + 10
            while topology.run_peer("ping", "-c", "1", "-W", "1", "-I", topology.peer_addr(j),
                                    topology.our_addr(i), check=False).returncode != 0:
                assert time.monotonic() < deadline, f"no reply from {topology.our_addr(i)}"
            after = _nft_counts(topology)
            delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
            assert delta.get(("output", f"path{i}"), 0) >= 1, (j, i, delta)
            assert delta.get(("input", f"path{i}"), 0) >= 1, (j, i, delta)
            assert all(dev == f"path{i}" for (_, dev) in delta), (j, i, delta)
    finally:
        topology.run_peer("nft", "delete", "table", "ip", "pathcheck", check=False)
    reader.terminate()
    out, _ = reader.communicate(timeout=5)
    pkts = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert not [p for p in pkts if "version" in p], pkts  # no IPv6 noise on mptun0
    echoes = {(p["src"], p["dst"]) for p in pkts if p["proto"] == 1 and p["type"] == 8}
    assert ("10.0.1.1", "10.0.1.2") in echoes
    assert ("10.0.1.1", "10.0.2.2") in echoes
    assert ("10.0.3.1", "10.0.1.2") in echoes
    assert all(p["src"].startswith("10.0.") for p in pkts), pkts


def test_tun_route_survives_without_reader(topology: Topology) -> None:
    """Without a reader mptun0 has no carrier, yet the routes and proxy ARP are in place."""
    routes = run(["ip", "-n", topology.user_ns, "route", "show", "dev", "mptun0"]).stdout
    for i in range(1, topology.paths + 1):
        assert re.search(rf"^{re.escape(topology.our_addr(i))} ", routes, re.MULTILINE), routes
    topology.run_peer("ip", "neigh", "flush", "dev", "path2")
    topology.run_peer("ping", "-c", "1", "-W", "1", topology.our_addr(2), check=False)
    neigh = topology.run_peer("ip", "neigh", "show", topology.our_addr(2)).stdout
    assert "lladdr" in neigh, neigh
    with pytest.raises(subprocess.CalledProcessError):
        topology.run_peer("ping", "-c", "1", "-W", "1", topology.our_addr(2))
