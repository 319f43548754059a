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
        snap[f"{ns} sysctl6"] = topo.run_in(ns, "sysctl", "-a", "-r",
                                            r"^net\.ipv6\.(conf\..*\.(forwarding|proxy_ndp|"
                                            r"accept_dad|accept_ra|autoconf|disable_ipv6|"
                                            r"addr_gen_mode|router_solicitations)|"
                                            r"neigh\..*\.proxy_delay)$").stdout
        snap[f"{ns} rule6"] = run(["ip", "-n", ns, "-6", "rule"]).stdout
        snap[f"{ns} proxy6"] = "".join(sorted(run(
            ["ip", "-n", ns, "-6", "neigh", "show", "proxy"]).stdout.splitlines(True)))
    snap["mptcp limits"] = run(["ip", "-n", topo.peer_ns, "mptcp", "limits", "show"]).stdout
    snap["mptcp endpoints"] = run(["ip", "-n", topo.peer_ns, "mptcp", "endpoint", "show"]).stdout
    def norm(v: str) -> str:
        v = re.sub(r"@if\d+", "@ifN", v)
        v = re.sub(r" fe80::\S+", "", v)
        if recreated_links:
            v = re.sub(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", "MAC", v)
        return v

    # Routes (both families) sorted: link-local routes are listed in the order of their
    # addresses, which follow the links' random MACs.
    return {k: "".join(sorted(norm(v).splitlines(True))) if k.endswith(" route") else norm(v)
            for k, v in snap.items()}


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


def test_status_shows_v6(topology: Topology) -> None:
    out = topology.status().stdout
    for name in ("fd00:3::1/64", "fd00:2::fe/64", "fd00:1::2 dev mptun0",
                 "from fd00:2::2 lookup 102", "table 103: default via fd00:3::1 dev path3",
                 "fd00:1::2 dev path1 proxy"):
        assert name in out, (name, out)


def test_v6_addresses_in_hex() -> None:
    """Path i's prefix is fd00:i::/64 with i in hex (path 10 is fd00:a::/64); no DAD
    delay: the new addresses work as soon as `up` returns."""
    topo = Topology(f"x{os.getpid() % 10000}", 10)
    try:
        topo.setup()
        assert topo.our_addr6(10) == "fd00:a::2"
        addrs = run(["ip", "-n", topo.peer_ns, "-6", "-o", "addr", "show", "dev",
                     "path10", "scope", "global"]).stdout
        assert " fd00:a::1/64 " in addrs and "tentative" not in addrs, addrs
        rules = run(["ip", "-n", topo.user_ns, "-6", "rule"]).stdout
        assert "from fd00:a::2 lookup 110" in rules, rules
        topo.run_user("ping", "-6", "-c", "1", "-W", "2", topo.peer_addr6(10))
    finally:
        topo.teardown()


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
    assert "fd00:1::2 dev mptun0" in before[f"{topology.user_ns} route"]
    assert "from fd00:3::2 lookup 103" in before[f"{topology.user_ns} rule6"]
    assert "fd00:2::2 dev path2 proxy" in before[f"{topology.user_ns} proxy6"]


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
        rules6 = run(["ip", "-n", topo.user_ns, "-6", "rule"]).stdout
        assert "fd00:1::2" in rules6 and "fd00:2::2" not in rules6 and "fd00:3::2" not in rules6
        routes6 = run(["ip", "-n", topo.user_ns, "-6", "route", "show", "table", "all"]).stdout
        assert "fd00:1::2 dev mptun0" in routes6 and "fd00:3::" not in routes6, routes6
        topo.setup()
        assert snapshot(topo, recreated_links=True) == three
    finally:
        topo.teardown()
    assert run([str(NETNS_SETUP), "status", "--prefix", topo.prefix], check=False).returncode


@pytest.mark.parametrize("i", [1, 2, 3])
def test_ping_router(topology: Topology, i: int) -> None:
    topology.run_peer("ping", "-c", "1", "-W", "2", topology.router_addr(i))


@pytest.mark.parametrize("i", [1, 2, 3])
def test_v6_ping(topology: Topology, i: int) -> None:
    """The v6 addresses answer in both directions on every path; none is tentative."""
    topology.run_user("ping", "-6", "-c", "1", "-W", "2", topology.peer_addr6(i))
    topology.run_peer("ping", "-6", "-c", "1", "-W", "2", topology.router_addr6(i))
    for ns in (topology.user_ns, topology.peer_ns):
        addrs = run(["ip", "-n", ns, "-6", "addr", "show", "dev", f"path{i}"]).stdout
        assert "tentative" not in addrs, addrs


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

def nft_count_rules(family: str, table: str, icmp: str) -> str:
    """Count echo replies in and echo requests out, per path, in `table` (family ip
    or ip6; `icmp` the matching keyword: icmp or icmpv6)."""
    def chain(name: str, hook: str, way: str, kind: str) -> str:
        rules = "\n".join(f'        {way}name "path{i}" {icmp} type {kind} counter'
                           for i in (1, 2, 3))
        return (f"    chain {name} {{\n        type filter hook {hook} priority 0; "
                f"policy accept;\n{rules}\n    }}\n")
    return (f"table {family} {table} {{\n" + chain("input", "input", "iif", "echo-reply")
            + chain("output", "output", "oif", "echo-request") + "}\n")


NFT_COUNT = nft_count_rules("ip", "pathcheck", "icmp")


def _nft_counts(topo: Topology, family: str = "ip",
                table: str = "pathcheck") -> dict[tuple[str, str], int]:
    data = json.loads(topo.run_peer("nft", "-j", "list", "table", family, table).stdout)
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


# --- IPv6 (fd00:i::/64, i in hex) ---

# A kernel TCP/MPTCP endpoint over IPv6 for kernel-to-kernel transfers (kpeer.py is
# IPv4-only): `server ADDR PORT` receives until EOF, `client BIND ADDR PORT N` sends the
# first N bytes of payload.py's stream. Each prints one JSON line.
V6_XFER = textwrap.dedent("""
    import errno, hashlib, json, socket, sys
    sys.path.insert(0, sys.argv[1])
    import payload
    mptcp = sys.argv[2] == "mptcp"
    def sock():
        return socket.socket(socket.AF_INET6, socket.SOCK_STREAM, 262 if mptcp else 0)
    def fallback(s):
        if not mptcp:
            return None
        try:
            raw = s.getsockopt(284, 1, 256)  # SOL_MPTCP, MPTCP_INFO
        except OSError as e:
            return True if e.errno == errno.EOPNOTSUPP else None
        return bool(int.from_bytes(raw[8:12], sys.byteorder) & 1)
    if sys.argv[3] == "server":
        ls = sock()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((sys.argv[4], int(sys.argv[5])))
        ls.listen(1)
        ls.settimeout(30)
        c, peer = ls.accept()
        c.settimeout(30)
        h, n = hashlib.sha256(), 0
        fb = fallback(c)
        while True:
            b = c.recv(1 << 16)
            if not b:
                break
            h.update(b)
            n += len(b)
        c.close()
        print(json.dumps({"remote": peer[0], "rx_bytes": n, "rx_sha256": h.hexdigest(),
                          "fallback": fb}))
    else:
        s = sock()
        s.settimeout(30)
        s.bind((sys.argv[4], 0))
        s.connect((sys.argv[5], int(sys.argv[6])))
        fb = fallback(s)
        n = 0
        for piece in payload.chunks(int(sys.argv[7])):
            s.sendall(piece)
            n += len(piece)
        s.shutdown(socket.SHUT_WR)
        while s.recv(1 << 16):
            pass
        s.close()
        print(json.dumps({"tx_bytes": n, "fallback": fb}))
""")


@pytest.mark.parametrize("mptcp", [False, True], ids=["tcp", "mptcp"])
def test_v6_kernel_to_kernel_10mb(topology: Topology, mptcp: bool) -> None:
    """Kernel to kernel over IPv6 across path 1: router fd00:1::fe -> peer fd00:1::1."""
    port = 5010 + int(mptcp)
    mode = "mptcp" if mptcp else "tcp"
    here = str(Path(__file__).resolve().parent)
    before = topology.nstat_peer()
    srv = topology.popen_peer(sys.executable, "-c", V6_XFER, here, mode, "server",
                              topology.peer_addr6(1), port)
    topology.wait_listening(topology.peer_ns, port)
    cli = topology.run_user(sys.executable, "-c", V6_XFER, here, mode, "client",
                            topology.router_addr6(1), topology.peer_addr6(1), port, TEN_MB)
    out, err = srv.communicate(timeout=60)
    assert srv.returncode == 0, err
    got = json.loads(out.splitlines()[-1])
    sent = json.loads(cli.stdout.splitlines()[-1])
    assert sent["tx_bytes"] == TEN_MB, sent
    assert got["rx_bytes"] == TEN_MB and got["rx_sha256"] == expected_sha256(TEN_MB), got
    assert got["remote"] == topology.router_addr6(1), got
    diff = nstat_diff(before, topology.nstat_peer())
    assert diff.get("Ip6InReceives", 0) > 0, diff
    if mptcp:
        assert got["fallback"] is False and sent["fallback"] is False, (got, sent)
        assert diff.get("MPTcpExtMPCapableSYNRX", 0) >= 1, diff
        errors = nstat_errors(diff)
        errors.pop("MPTcpExtDuplicateData", None)  # the kernel sender's own resends
        assert errors == {}, diff


# A throwaway TUN reader opened as our stack opens it (IFF_TUN | IFF_NO_PI | IFF_VNET_HDR,
# offloads set): prints one JSON line per packet it read (IPv6: addresses, next header,
# ICMPv6 type), and with "echo" answers ICMPv6 echo requests. Runs in the user namespace.
TUN6_READER = textwrap.dedent("""
    import fcntl, json, select, socket, struct, sys, time
    import pytun
    VNET = 10
    t = pytun.TunTapDevice(name="mptun0",
                           flags=pytun.IFF_TUN | pytun.IFF_NO_PI | pytun.IFF_VNET_HDR)
    fcntl.ioctl(t.fileno(), 0x400454D0, 0x01 | 0x02 | 0x04)  # TUNSETOFFLOAD CSUM|TSO4|TSO6
    def csum(b):
        if len(b) % 2: b += b"\\0"
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        while s >> 16: s = (s & 0xFFFF) + (s >> 16)
        return ~s & 0xFFFF
    print(json.dumps({"ready": True}), flush=True)
    end = time.time() + float(sys.argv[1])
    echo = sys.argv[2] == "echo"
    while time.time() < end:
        if not select.select([t], [], [], 0.2)[0]: continue
        p = t.read(65536 + VNET)[VNET:]
        if p[0] >> 4 != 6:
            print(json.dumps({"version": p[0] >> 4}), flush=True); continue
        src = socket.inet_ntop(socket.AF_INET6, p[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, p[24:40])
        nh, plen = p[6], struct.unpack("!H", p[4:6])[0]
        rec = {"version": 6, "src": src, "dst": dst, "nh": nh, "plen": plen, "hlim": p[7]}
        if nh == 58: rec["type"] = p[40]
        print(json.dumps(rec), flush=True)
        if echo and nh == 58 and p[40] == 128:
            ic = bytearray(p[40:40 + plen]); ic[0] = 129; ic[2:4] = b"\\0\\0"
            pseudo = p[24:40] + p[8:24] + struct.pack("!IxxxB", plen, 58)
            ic[2:4] = struct.pack("!H", csum(pseudo + bytes(ic)))
            ip = bytearray(p[:40]); ip[8:24], ip[24:40] = p[24:40], p[8:24]; ip[7] = 64
            t.write(bytes(VNET) + bytes(ip + ic))
""")


def _start_tun6_reader(topo: Topology, seconds: float, echo: bool) -> subprocess.Popen[str]:
    reader = topo.popen_user(sys.executable, "-c", TUN6_READER, seconds,
                             "echo" if echo else "read")
    assert reader.stdout is not None
    assert json.loads(reader.stdout.readline()) == {"ready": True}
    return reader


def _stop_tun_reader(reader: subprocess.Popen[str]) -> list[dict[str, object]]:
    reader.terminate()
    out, _ = reader.communicate(timeout=5)
    return [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]


def test_v6_ping_from_peer_reaches_tun(topology: Topology) -> None:
    """`ping -6 fd00:1::2` from the peer is routed onto mptun0 (after proxy NDP on path1
    answered for fd00:1::2): the reader gets the ICMPv6 echo request, hop limit 63."""
    reader = _start_tun6_reader(topology, 10, echo=False)
    try:
        topology.run_peer("ip", "-6", "neigh", "flush", "dev", "path1")
        topology.run_peer("ping", "-6", "-c", "1", "-W", "1", topology.our_addr6(1),
                          check=False)
    finally:
        pkts = _stop_tun_reader(reader)
    assert pkts, "nothing read from mptun0"
    req = pkts[0]
    assert req["version"] == 6 and req["nh"] == 58 and req["type"] == 128, pkts
    assert (req["src"], req["dst"]) == (topology.peer_addr6(1), topology.our_addr6(1)), pkts
    assert req["hlim"] == 63, pkts  # forwarded once, by the user namespace's kernel
    assert all(p.get("type") == 128 for p in pkts), pkts  # nothing else: no MLD, RS, NS
    neigh = topology.run_peer("ip", "-6", "neigh", "show", topology.our_addr6(1)).stdout
    router_mac = json.loads(run(["ip", "-n", topology.user_ns, "-j", "link", "show",
                                 "path1"]).stdout)[0]["address"]
    assert f"lladdr {router_mac}" in neigh, (neigh, router_mac)


NFT6_COUNT = nft_count_rules("ip6", "pathcheck6", "icmpv6")


def _nft6_counts(topo: Topology) -> dict[tuple[str, str], int]:
    return _nft_counts(topo, "ip6", "pathcheck6")


def test_v6_tun_reader_gets_peer_traffic_on_the_right_path(topology: Topology) -> None:
    """IPv6 like IPv4: ping from fd00:j::1 to fd00:i::2 goes out by path<i> and the
    reply from fd00:i::2 comes back by path<i> too, even when j != i; and nothing but
    those echo requests reaches mptun0 (no RS, DAD, MLD: the TUN is opened here, which
    is when the kernel would send them)."""
    reader = _start_tun6_reader(topology, 30, echo=True)
    topology.run_peer("nft", "-f", "-", input=NFT6_COUNT)
    try:
        time.sleep(2)  # long enough for the kernel's first unsolicited MLD/RS, if any
        cases = [(1, 1), (2, 2), (3, 3), (1, 2), (3, 1)]
        for j, i in cases:
            before = _nft6_counts(topology)
            deadline = time.monotonic() + 10
            while topology.run_peer("ping", "-6", "-c", "1", "-W", "1", "-I",
                                    topology.peer_addr6(j), topology.our_addr6(i),
                                    check=False).returncode != 0:
                assert time.monotonic() < deadline, f"no reply from {topology.our_addr6(i)}"
            after = _nft6_counts(topology)
            delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
            assert delta.get(("output", f"path{i}"), 0) >= 1, (j, i, delta)
            assert delta.get(("input", f"path{i}"), 0) >= 1, (j, i, delta)
            assert all(dev == f"path{i}" for (_, dev) in delta), (j, i, delta)
    finally:
        topology.run_peer("nft", "delete", "table", "ip6", "pathcheck6", check=False)
        pkts = _stop_tun_reader(reader)
    echoes = {(p["src"], p["dst"]) for p in pkts if p.get("type") == 128}
    for j, i in cases:
        assert (topology.peer_addr6(j), topology.our_addr6(i)) in echoes, pkts
    assert all(p["version"] == 6 and p.get("type") == 128 for p in pkts), pkts


def test_v6_tun_route_survives_without_reader(topology: Topology) -> None:
    """Without a reader (and after readers came and went) the /128 routes to mptun0
    stay, and proxy NDP still answers the peer for fd00:i::2."""
    reader = _start_tun6_reader(topology, 5, echo=False)
    _stop_tun_reader(reader)
    routes = run(["ip", "-n", topology.user_ns, "-6", "route", "show", "dev", "mptun0"]).stdout
    for i in range(1, topology.paths + 1):
        assert re.search(rf"^{re.escape(topology.our_addr6(i))} ", routes, re.MULTILINE), routes
    topology.run_peer("ip", "-6", "neigh", "flush", "dev", "path2")
    topology.run_peer("ping", "-6", "-c", "1", "-W", "1", topology.our_addr6(2), check=False)
    neigh = topology.run_peer("ip", "-6", "neigh", "show", topology.our_addr6(2)).stdout
    assert "lladdr" in neigh, neigh
    with pytest.raises(subprocess.CalledProcessError):
        topology.run_peer("ping", "-6", "-c", "1", "-W", "1", topology.our_addr6(2))


def test_v6_proxy_ndp_answers_unicast_probes(topology: Topology) -> None:
    """The peer's unicast reachability probe (NS sent to fd00:1::2 itself, as in NUD's
    PROBE state) is answered by the router: the entry becomes REACHABLE."""
    router_mac = json.loads(run(["ip", "-n", topology.user_ns, "-j", "link", "show",
                                 "path1"]).stdout)[0]["address"]
    topology.run_peer("ip", "-6", "neigh", "replace", topology.our_addr6(1), "lladdr",
                      router_mac, "dev", "path1", "nud", "probe")
    deadline = time.monotonic() + 5
    while True:
        neigh = topology.run_peer("ip", "-6", "neigh", "show", topology.our_addr6(1)).stdout
        if "REACHABLE" in neigh:
            break
        assert time.monotonic() < deadline, neigh
        time.sleep(0.1)


def test_v6_survives_peer_link_flap(topology: Topology) -> None:
    """Tests set a peer link down and up again: like 10.0.1.1, fd00:1::1 stays (with its
    route), and the user namespace's routes and proxy NDP entry for path 1 work again."""
    try:
        topology.run_peer("ip", "link", "set", "path1", "down")
        addrs = topology.run_peer("ip", "-6", "-o", "addr", "show", "dev", "path1",
                                  "scope", "global").stdout
        assert " fd00:1::1/64 " in addrs, addrs
    finally:
        topology.run_peer("ip", "link", "set", "path1", "up")
    deadline = time.monotonic() + 10
    while topology.run_user("ping", "-6", "-c", "1", "-W", "1", topology.peer_addr6(1),
                            check=False).returncode != 0:
        assert time.monotonic() < deadline, "fd00:1::1 unreachable after the flap"
    routes = topology.run_peer("ip", "-6", "route", "show", "dev", "path1").stdout
    assert "fd00:1::/64" in routes, routes
    proxies = run(["ip", "-n", topology.user_ns, "-6", "neigh", "show", "proxy"]).stdout
    assert "fd00:1::2 dev path1 proxy" in proxies, proxies
