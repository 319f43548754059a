"""`mptcp-tun bench`: bulk goodput of our stack against the kernel's, in one run, over
the same path (`path1` of a private topology), for plain TCP and for MPTCP.

Measures, each as goodput seen by the receiver:
  kernel -> kernel   a kernel socket in the user namespace (10.0.1.254) and one in the
                     peer namespace (10.0.1.1): the same veth `path1`, no TUN, no Python;
  ours   -> kernel   `mptcp-tun connect 10.0.1.1 ... --send-bytes N` into a kernel sink;
  kernel -> ours     a kernel source into `mptcp-tun listen ... --once`;
and prints each with its ratio to the kernel in the same direction. `--json` for machines.

The timed runs do what the kernel-side application does: send, or read and discard; our
side hashes nothing (`--no-sha256`: SHA-256 would cost as much CPU as the stack). The
bytes are checked in a separate, untimed run each way (`--verify-bytes`, 20 MB by
default): the sender's sha256 against the receiver's, ours and the kernel's.

With `--paths 2`: MPTCP over two paths (each shaped with `tbf rate RATE` both ways,
`--rate 50mbit` by default; `--rate none` leaves them unshaped), the aggregate goodput
of our MPTCP against the kernel's MPTCP in the same run. Up: the peer's kernel server
announces 10.0.2.1 (a `signal` endpoint) and the client, ours or a kernel socket in the
user namespace, joins it from its path-2 address. Down: the client in the peer
namespace joins the path-2 address the server announces (ours: `--announce`).

Needs root (it builds its own namespaces with netns-setup.sh --prefix and removes them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import select
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "netns-setup.sh"
KPEER = ROOT / "tests" / "interop" / "kpeer.py"


class Topology:
    def __init__(self, prefix: str, keep: bool, paths: int = 1) -> None:
        self.prefix, self.keep, self.paths = prefix, keep, paths
        self.user, self.peer = f"{prefix}-user", f"{prefix}-peer"

    def __enter__(self) -> Self:
        subprocess.run([str(SETUP), "up", "--paths", str(self.paths), "--prefix", self.prefix],
                       check=True, stdout=subprocess.DEVNULL)
        return self

    def sh(self, ns: str, *argv: str) -> None:
        subprocess.run(self.cmd(ns, *argv), check=True, stdout=subprocess.DEVNULL)

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            subprocess.run([str(SETUP), "down", "--prefix", self.prefix], check=False,
                           stdout=subprocess.DEVNULL)

    def cmd(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]


# CPU pinning (`--pin`, the default where there are two CPUs and taskset): every process
# of the user namespace (ours, or the kernel socket standing in for it) on CPU 0, the
# peer namespace's on CPU 1, so that two runs compete for the same cores alike
PIN: dict[str, list[str]] = {}


def set_pinning(topo: Topology, on: bool) -> bool:
    PIN.clear()
    if on and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        PIN[topo.user], PIN[topo.peer] = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    return bool(PIN)


def _kpeer(topo: Topology, ns: str, *args: str) -> list[str]:
    return topo.cmd(ns, *PIN.get(ns, []), sys.executable, str(KPEER), *args)


def _ours(topo: Topology, *args: str) -> list[str]:
    return topo.cmd(topo.user, *PIN.get(topo.user, []), sys.executable, "-m", "tools.cli",
                    *args)


def _wait_listening(topo: Topology, ns: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(topo.cmd(ns, "ss", "-Hltn", f"sport = :{port}"),
                             capture_output=True, text=True, check=False).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} in {ns}")


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)  # type: ignore[no-any-return]
    raise RuntimeError(f"no JSON report in output: {text[-500:]!r}")


def _wait_said(proc: subprocess.Popen[str], marker: str, timeout: float = 15.0) -> None:
    """Wait until `proc` prints `marker` on stderr (our listener is not a kernel socket,
    so `ss` cannot see it; `mptcp-tun listen` says when it is listening)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 0.1)[0]:
            line = proc.stderr.readline()
            if marker in line:
                return
            if not line:
                break
    raise RuntimeError(f"the server never said {marker!r} (rc={proc.poll()})")


def _run_pair(server: list[str], client: list[str], server_ns: str, port: int,
              topo: Topology, timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start `server`, wait until it listens on `port`, run `client`; both JSON reports."""
    srv = subprocess.Popen(server, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=ROOT)
    try:
        if "tools.cli" in server:
            _wait_said(srv, "listening on")
        else:
            _wait_listening(topo, server_ns, port)
        cli = subprocess.run(client, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                             check=False)
        out, err = srv.communicate(timeout=timeout)
    except BaseException:
        srv.kill()
        srv.wait()
        raise
    if srv.returncode or cli.returncode:
        raise RuntimeError(f"run failed:\n server rc={srv.returncode} {err.strip()[-400:]}\n"
                           f" client rc={cli.returncode} {cli.stderr.strip()[-400:]}")
    return _last_json(out), _last_json(cli.stdout)


# path 1's addresses: (the kernel peer, the user namespace's router, our stack)
ADDRS = {False: ("10.0.1.1", "10.0.1.254", "10.0.1.2"),
         True: ("fd00:1::1", "fd00:1::fe", "fd00:1::2")}


def verify(topo: Topology, mptcp: bool, nbytes: int, offload: bool, timeout: float,
           base_port: int, ipv6: bool = False, multipath: bool = False) -> dict[str, bool]:
    """The bytes, checked once each way (untimed): our sha256 of what we sent against
    the kernel's of what it received, the kernel's of what it sent against ours of
    what we received. `multipath`: over two paths, as measure_multipath runs them."""
    peer, _, us = ADDRS[ipv6]
    cc = ["--cc", "cubic"] + (["--mptcp"] if mptcp else []) + (["--ipv6"] if ipv6 else [])
    ours_opts = ([] if offload else ["--no-offload"]) + ([] if mptcp else ["--no-mptcp"])
    p = [str(base_port), str(base_port + 1)]
    if multipath:
        _endpoints(topo, topo.peer, "10.0.2.1")
    srv, ours = _run_pair(_kpeer(topo, topo.peer, "server", "--port", p[0], "--once", *cc),
                          _ours(topo, "connect", peer, p[0], "--send-bytes", str(nbytes),
                                "--json", *ours_opts),
                          topo.peer, int(p[0]), topo, timeout)
    up = srv["rx_bytes"] == nbytes and srv["rx_sha256"] == ours["sent_sha256"]
    if multipath:
        _endpoints(topo, topo.peer, None)
    ours, cli = _run_pair(_ours(topo, "listen", p[1], "--once", "--json", *ours_opts,
                                *(["--announce", "10.0.2.2"] if multipath else [])),
                          _kpeer(topo, topo.peer, "client", us, p[1], "--send-bytes",
                                 str(nbytes), *cc),
                          topo.user, int(p[1]), topo, timeout)
    down = ours["received"] == nbytes and ours["received_sha256"] == cli["tx_sha256"]
    return {"ours_to_kernel_verified": up, "kernel_to_ours_verified": down}


def seg_kb(nbytes: int, segments: int) -> float:
    """The mean size of the segments our stack handled, in kB: with offloads a GRO/GSO
    super-packet is one segment, and the stack's work is per segment, so at a given
    cost per segment the goodput follows this size (the kernel's sender decides it
    when we receive: its TSO autosizing, from its pacing rate)."""
    return nbytes / max(segments, 1) / 1000


def measure_proto(topo: Topology, mptcp: bool, nbytes: int, kernel_seconds: float,
                  offload: bool, timeout: float, base_port: int,
                  ipv6: bool = False) -> dict[str, Any]:
    """One protocol (plain TCP or MPTCP), four runs over path1, each measured by the
    receiver: kernel->kernel both ways, ours->kernel, kernel->ours (IPv4, or IPv6)."""
    peer, router, us = ADDRS[ipv6]
    cc = ["--cc", "cubic"] + (["--mptcp"] if mptcp else []) + (["--ipv6"] if ipv6 else [])
    ours_opts = ([] if offload else ["--no-offload"]) + ([] if mptcp else ["--no-mptcp"]) \
        + ["--no-sha256"]
    p = [str(base_port + i) for i in range(4)]
    res: dict[str, Any] = {}
    srv, _ = _run_pair(_kpeer(topo, topo.peer, "sink", "--port", p[0], "--once", *cc),
                       _kpeer(topo, topo.user, "source", peer, p[0], "--bind",
                              router, "--seconds", str(kernel_seconds), *cc),
                       topo.peer, int(p[0]), topo, timeout)
    res["kernel_to_kernel_up_mbps"] = srv["rx_mbps"]
    srv, _ = _run_pair(_kpeer(topo, topo.user, "sink", "--port", p[1], "--once", *cc),
                       _kpeer(topo, topo.peer, "source", router, p[1], "--seconds",
                              str(kernel_seconds), *cc),
                       topo.user, int(p[1]), topo, timeout)
    res["kernel_to_kernel_down_mbps"] = srv["rx_mbps"]
    srv, ours = _run_pair(_kpeer(topo, topo.peer, "sink", "--port", p[2], "--once", *cc),
                          _ours(topo, "connect", peer, p[2], "--send-bytes",
                                str(nbytes), "--json", *ours_opts),
                          topo.peer, int(p[2]), topo, timeout)
    res["ours_to_kernel_mbps"] = srv["rx_mbps"]
    res["ours_to_kernel_seg_kb"] = seg_kb(nbytes, ours["segments_out"])
    res["ours_to_kernel_ok"] = (srv["rx_bytes"] == nbytes and ours["clean"]
                                and ours["mptcp"] == mptcp)
    ours, _ = _run_pair(_ours(topo, "listen", p[3], "--once", "--json", *ours_opts),
                        _kpeer(topo, topo.peer, "source", us, p[3], "--bytes",
                               str(nbytes), *cc),
                        topo.user, int(p[3]), topo, timeout)
    res["kernel_to_ours_mbps"] = ours["goodput_mbps"]
    res["kernel_to_ours_seg_kb"] = seg_kb(nbytes, ours["segments_in"])
    res["kernel_to_ours_ok"] = (ours["received"] == nbytes and ours["clean"]
                                and ours["mptcp"] == mptcp)
    res["ratio_ours_to_kernel"] = res["ours_to_kernel_mbps"] / res["kernel_to_kernel_up_mbps"]
    res["ratio_kernel_to_ours"] = res["kernel_to_ours_mbps"] / res["kernel_to_kernel_down_mbps"]
    return res


def measure(topo: Topology, nbytes: int, kernel_seconds: float, offload: bool,
            timeout: float, repeat: int = 1, ipv6: bool = False,
            verify_bytes: int = 20_000_000) -> dict[str, Any]:
    """TCP and MPTCP, `repeat` times, interleaved (so a drift of the machine touches
    both alike); each figure is the median of its runs, each run kept under "runs".
    First, untimed, the bytes verified each way (`verify`)."""
    checked = {proto: verify(topo, proto == "mptcp", verify_bytes, offload, timeout,
                             base, ipv6)
               for proto, base in (("tcp", 5191), ("mptcp", 5193))} if verify_bytes else {}
    runs: dict[str, list[dict[str, Any]]] = {"tcp": [], "mptcp": []}
    for i in range(repeat):
        for proto, base in (("tcp", 5201), ("mptcp", 5211)):
            runs[proto].append(measure_proto(topo, proto == "mptcp", nbytes, kernel_seconds,
                                             offload, timeout, base + 20 * i, ipv6))
    res: dict[str, Any] = {"bytes": nbytes, "offload": offload, "repeat": repeat,
                           "ipv6": ipv6, "verify_bytes": verify_bytes}
    for proto, rs in runs.items():
        med: dict[str, Any] = {k: statistics.median(r[k] for r in rs)
                               for k in rs[0] if k.endswith(("_mbps", "_seg_kb"))}
        med.update({k: all(r[k] for r in rs) for k in rs[0] if k.endswith("_ok")})
        med.update(checked.get(proto, {}))
        med["ratio_ours_to_kernel"] = med["ours_to_kernel_mbps"] / med["kernel_to_kernel_up_mbps"]
        med["ratio_kernel_to_ours"] = med["kernel_to_ours_mbps"] / \
            med["kernel_to_kernel_down_mbps"]
        res[proto] = med
    # the issue-3 target: our MPTCP goodput against our plain TCP goodput
    res["ours_mptcp_vs_tcp_up"] = res["mptcp"]["ours_to_kernel_mbps"] / \
        res["tcp"]["ours_to_kernel_mbps"]
    res["ours_mptcp_vs_tcp_down"] = res["mptcp"]["kernel_to_ours_mbps"] / \
        res["tcp"]["kernel_to_ours_mbps"]
    # the same ratio run by run (each MPTCP run against the TCP run just before it)
    res["ours_mptcp_vs_tcp_up_runs"] = [m["ours_to_kernel_mbps"] / t["ours_to_kernel_mbps"]
                                        for t, m in zip(runs["tcp"], runs["mptcp"], strict=True)]
    res["ours_mptcp_vs_tcp_down_runs"] = [m["kernel_to_ours_mbps"] / t["kernel_to_ours_mbps"]
                                          for t, m in zip(runs["tcp"], runs["mptcp"], strict=True)]
    res["runs"] = runs
    return res


def shape(topo: Topology, rate: str | None) -> None:
    """tbf on every path, both directions (as the interop tests shape them)."""
    for ns in (topo.user, topo.peer):
        for i in range(1, topo.paths + 1):
            if rate:
                topo.sh(ns, "tc", "qdisc", "replace", "dev", f"path{i}", "root", "tbf", "rate",
                        rate, "burst", "64kb", "latency", "50ms")
            else:
                subprocess.run(topo.cmd(ns, "tc", "qdisc", "del", "dev", f"path{i}", "root"),
                               check=False, capture_output=True)


def _endpoints(topo: Topology, ns: str, signal: str | None) -> None:
    topo.sh(ns, "ip", "mptcp", "endpoint", "flush")
    if signal:
        topo.sh(ns, "ip", "mptcp", "endpoint", "add", signal, "dev", "path2", "signal")


def measure_multipath(topo: Topology, nbytes: int, kernel_seconds: float, offload: bool,
                      timeout: float, base_port: int = 5301,
                      verify_bytes: int = 20_000_000) -> dict[str, Any]:
    """MPTCP over paths 1 and 2: kernel<->kernel and ours<->kernel, both directions,
    receiver-measured aggregate goodput, plus the bytes each of our subflows carried."""
    cc = ["--cc", "cubic", "--mptcp"]
    ours_opts = ([] if offload else ["--no-offload"]) + ["--no-sha256"]
    p = [str(base_port + i) for i in range(4)]
    topo.sh(topo.user, "ip", "mptcp", "limits", "set", "subflows", "8", "add_addr_accepted", "8")
    res: dict[str, Any] = verify(topo, True, verify_bytes, offload, timeout, base_port + 10,
                                 multipath=True) if verify_bytes else {}
    # up: the peer's server announces 10.0.2.1; each client joins it over path 2
    _endpoints(topo, topo.peer, "10.0.2.1")
    _endpoints(topo, topo.user, None)
    srv, _ = _run_pair(_kpeer(topo, topo.peer, "sink", "--port", p[0], "--once", *cc),
                       _kpeer(topo, topo.user, "source", "10.0.1.1", p[0], "--bind",
                              "10.0.1.254", "--seconds", str(kernel_seconds), *cc),
                       topo.peer, int(p[0]), topo, timeout)
    res["kernel_to_kernel_up_mbps"] = srv["rx_mbps"]
    res["kernel_to_kernel_up_subflows"] = 1 + srv.get("subflows", 0)
    srv, ours = _run_pair(_kpeer(topo, topo.peer, "sink", "--port", p[1], "--once", *cc),
                          _ours(topo, "connect", "10.0.1.1", p[1], "--send-bytes",
                                str(nbytes), "--json", *ours_opts),
                          topo.peer, int(p[1]), topo, timeout)
    res["ours_to_kernel_mbps"] = srv["rx_mbps"]
    res["ours_to_kernel_subflow_bytes"] = ours["subflow_bytes"]
    res["ours_to_kernel_seg_kb"] = seg_kb(nbytes, ours["segments_out"])
    res["ours_to_kernel_ok"] = srv["rx_bytes"] == nbytes and ours["clean"] and ours["mptcp"]
    # down: the server (user namespace) announces its path-2 address
    _endpoints(topo, topo.peer, None)
    _endpoints(topo, topo.user, "10.0.2.254")
    srv, _ = _run_pair(_kpeer(topo, topo.user, "sink", "--port", p[2], "--once", *cc),
                       _kpeer(topo, topo.peer, "source", "10.0.1.254", p[2], "--seconds",
                              str(kernel_seconds), *cc),
                       topo.user, int(p[2]), topo, timeout)
    res["kernel_to_kernel_down_mbps"] = srv["rx_mbps"]
    res["kernel_to_kernel_down_subflows"] = 1 + srv.get("subflows", 0)
    _endpoints(topo, topo.user, None)
    ours, _ = _run_pair(_ours(topo, "listen", p[3], "--once", "--json", "--announce",
                              "10.0.2.2", *ours_opts),
                        _kpeer(topo, topo.peer, "source", "10.0.1.2", p[3], "--bytes",
                               str(nbytes), *cc),
                        topo.user, int(p[3]), topo, timeout)
    res["kernel_to_ours_mbps"] = ours["goodput_mbps"]
    res["kernel_to_ours_subflow_bytes"] = ours["subflow_rx_bytes"]
    res["kernel_to_ours_seg_kb"] = seg_kb(nbytes, ours["segments_in"])
    res["kernel_to_ours_ok"] = ours["received"] == nbytes and ours["clean"] and ours["mptcp"]
    res["ratio_ours_to_kernel"] = res["ours_to_kernel_mbps"] / res["kernel_to_kernel_up_mbps"]
    res["ratio_kernel_to_ours"] = res["kernel_to_ours_mbps"] / res["kernel_to_kernel_down_mbps"]
    return res


def print_multipath(res: dict[str, Any], nbytes: int) -> None:
    shaped = f"each shaped with tbf rate {res['rate']}" if res["rate"] else "unshaped"
    mode = "with TUN offloads" if res["offload"] else "without offloads"
    mode += ", pinned (ours CPU 0, the peer CPU 1)" if res.get("pinned") else ", not pinned"
    print(f"MPTCP aggregate goodput over 2 paths ({shaped}), {nbytes} bytes through our "
          f"stack, {mode}")
    def mb(v: list[int]) -> str:
        return "/".join(f"{b / 1e6:.1f}" for b in v)
    print(f"  kernel -> kernel (up)    {res['kernel_to_kernel_up_mbps']:10.1f} Mbit/s   "
          f"{res['kernel_to_kernel_up_subflows']} subflows")
    print(f"  ours   -> kernel         {res['ours_to_kernel_mbps']:10.1f} Mbit/s   "
          f"{res['ratio_ours_to_kernel']:.3f} x kernel   "
          f"{res['ours_to_kernel_seg_kb']:5.1f} kB/segment   MB per subflow "
          f"{mb(res['ours_to_kernel_subflow_bytes'])}   bytes ok: {res['ours_to_kernel_ok']}"
          f", sha256: {res.get('ours_to_kernel_verified', 'not checked')}")
    print(f"  kernel -> kernel (down)  {res['kernel_to_kernel_down_mbps']:10.1f} Mbit/s   "
          f"{res['kernel_to_kernel_down_subflows']} subflows")
    print(f"  kernel -> ours           {res['kernel_to_ours_mbps']:10.1f} Mbit/s   "
          f"{res['ratio_kernel_to_ours']:.3f} x kernel   "
          f"{res['kernel_to_ours_seg_kb']:5.1f} kB/segment   MB per subflow "
          f"{mb(res['kernel_to_ours_subflow_bytes'])}   bytes ok: {res['kernel_to_ours_ok']}"
          f", sha256: {res.get('kernel_to_ours_verified', 'not checked')}")


# ---- --connections: connection rates, and many idle connections ------------------------
def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _listener(topo: Topology, port: int, *args: str,
              summaries: queue.Queue[dict[str, Any]] | None = None) -> subprocess.Popen[str]:
    """Our listener; its per-connection summaries (`--json`) into `summaries`, else to
    /dev/null; its stderr drained once it listens."""
    p = subprocess.Popen(_ours(topo, "listen", str(port), *args),
                         stdout=subprocess.PIPE if summaries is not None else subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT)
    _wait_said(p, "listening on")

    def drain(stream: Any, into: queue.Queue[dict[str, Any]] | None) -> None:
        for line in stream:
            if into is not None and line.startswith("{"):
                with contextlib.suppress(ValueError):  # (a summary cut by the exit)
                    into.put(json.loads(line))
    threading.Thread(target=drain, args=(p.stderr, None), daemon=True).start()
    if summaries is not None:
        threading.Thread(target=drain, args=(p.stdout, summaries), daemon=True).start()
    return p


def _stop(p: subprocess.Popen[str]) -> None:
    p.send_signal(signal.SIGINT)
    try:
        p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def _run_json(argv: list[str], timeout: float) -> dict[str, Any]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                         check=False)
    return _last_json(out.stdout + "\n" + out.stderr)


BULK_RUNS = 3  # each way of the idle comparison: the median (runs vary by 30%)


def measure_connections(topo: Topology, count: int, idle: int, nbytes: int,
                        timeout: float) -> dict[str, Any]:
    """Connection rates of short MPTCP connections (connect, 1000 bytes each way, close)
    kernel -> kernel, kernel -> ours and ours -> kernel; then `idle` idle MPTCP
    connections held open on our listener around a bulk transfer into it."""
    peer, router, ours = ADDRS[False]
    res: dict[str, Any] = {"count": count, "idle": idle, "bytes": nbytes}
    # kernel -> kernel: a kernel echo server in the peer namespace, clients in the user one
    srv = subprocess.Popen(_kpeer(topo, topo.peer, "server", "--port", "5400", "--mptcp",
                                  "--echo", "--timeout", "30"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        _wait_listening(topo, topo.peer, 5400)
        k2k = _run_json(_kpeer(topo, topo.user, "crr", peer, "5400", "--mptcp", "--bind",
                               router, "--count", str(count)), timeout)
        # ours -> kernel: the same server
        o2k = _run_json(_ours(topo, "connect", peer, "5400", "--repeat", str(count),
                              "--send-bytes", "1000", "--json", "--no-sha256"), timeout)
    finally:
        srv.kill()
        srv.wait()
    # kernel -> ours: our echo listener, kernel clients in the peer namespace
    lst = _listener(topo, 5401, "--echo", "--no-sha256")
    try:
        k2o = _run_json(_kpeer(topo, topo.peer, "crr", ours, "5401", "--mptcp", "--count",
                               str(count)), timeout)
    finally:
        _stop(lst)
    res["kernel_to_kernel_cps"] = k2k["rate_cps"]
    res["kernel_to_ours_cps"] = k2o["rate_cps"]
    res["ours_to_kernel_cps"] = o2k["rate_cps"]
    res["rates_ok"] = bool(k2k["ok"] and k2o["ok"] and o2k["clean"] == o2k["repeat"])
    res["ratio_kernel_to_ours"] = round(k2o["rate_cps"] / k2k["rate_cps"], 3)
    res["ratio_ours_to_kernel"] = round(o2k["rate_cps"] / k2k["rate_cps"], 3)
    # idle connections around a bulk transfer into our listener
    done: queue.Queue[dict[str, Any]] = queue.Queue()
    lst = _listener(topo, 5402, "--no-sha256", "--json", summaries=done)
    try:
        def bulk() -> float:
            """A kernel source into our listener: the goodput our side received."""
            r = _run_json(_kpeer(topo, topo.peer, "source", ours, "5402", "--mptcp",
                                 "--bytes", str(nbytes)), timeout)
            if not r["ok"]:
                raise RuntimeError(f"bulk transfer failed: {r}")
            while True:
                rec = done.get(timeout=timeout)
                if rec.get("received") == nbytes:
                    return float(rec["goodput_mbps"])
        res["rss_kib_start"] = _rss_kib(lst.pid)
        res["bulk_alone_runs"] = [bulk() for _ in range(BULK_RUNS)]
        res["bulk_alone_mbps"] = statistics.median(res["bulk_alone_runs"])
        res["rss_kib_before_idle"] = _rss_kib(lst.pid)
        hold = subprocess.Popen(_kpeer(topo, topo.peer, "hold", ours, "5402", "--mptcp",
                                       "--count", str(idle), "--timeout", "60"),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                cwd=ROOT)
        try:
            assert hold.stdout is not None
            opened = json.loads(hold.stdout.readline())
            res["idle_opened"], res["idle_open_seconds"] = opened["opened"], opened["seconds"]
            time.sleep(1.0)
            res["rss_kib_idle"] = _rss_kib(lst.pid)
            res["bulk_with_idle_runs"] = [bulk() for _ in range(BULK_RUNS)]
            res["bulk_with_idle_mbps"] = statistics.median(res["bulk_with_idle_runs"])
            res["rss_kib_after_bulk"] = _rss_kib(lst.pid)
        finally:
            hold.send_signal(signal.SIGTERM)
            hold.wait(timeout=60)
    finally:
        _stop(lst)
    res["bulk_ratio"] = round(res["bulk_with_idle_mbps"] / res["bulk_alone_mbps"], 3)
    res["kib_per_idle_connection"] = round(
        (res["rss_kib_idle"] - res["rss_kib_before_idle"]) / max(res["idle_opened"], 1), 2)
    return res


def print_connections(res: dict[str, Any]) -> None:
    print(f"short MPTCP connections (connect, 1000 bytes each way, close), "
          f"{res['count']} one after another, over path1:")
    print(f"  kernel -> kernel   {res['kernel_to_kernel_cps']:8.1f} connections/s")
    print(f"  kernel -> ours     {res['kernel_to_ours_cps']:8.1f} connections/s   "
          f"{res['ratio_kernel_to_ours']:.3f} x kernel")
    print(f"  ours   -> kernel   {res['ours_to_kernel_cps']:8.1f} connections/s   "
          f"{res['ratio_ours_to_kernel']:.3f} x kernel   all clean: {res['rates_ok']}")
    print(f"{res['idle_opened']} idle MPTCP connections on our listener (opened in "
          f"{res['idle_open_seconds']} s), a {res['bytes']}-byte MPTCP transfer into it:")
    runs = {k: " ".join(f"{x:.0f}" for x in res[k]) for k in
            ("bulk_alone_runs", "bulk_with_idle_runs")}
    print(f"  alone              {res['bulk_alone_mbps']:8.1f} Mbit/s   (median of "
          f"{runs['bulk_alone_runs']})")
    print(f"  with them          {res['bulk_with_idle_mbps']:8.1f} Mbit/s   "
          f"{res['bulk_ratio']:.3f} x alone   (median of {runs['bulk_with_idle_runs']})")
    print(f"  our RSS: {res['rss_kib_before_idle'] / 1024:.1f} MiB before, "
          f"{res['rss_kib_idle'] / 1024:.1f} MiB with them "
          f"({res['kib_per_idle_connection']} KiB each), "
          f"{res['rss_kib_after_bulk'] / 1024:.1f} MiB after the transfer")


def configure(p: argparse.ArgumentParser) -> None:
    """Make `p` the `mptcp-tun bench` command (tools/cli.py hands it its subparser)."""
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--bytes", type=int,
                   help="bytes each way through our stack (default 200 MB; 60 MB with "
                        "--paths 2 and a --rate)")
    p.add_argument("--paths", type=int, choices=[1, 2], default=1,
                   help="2: MPTCP over two paths, ours vs the kernel's (see above)")
    p.add_argument("--rate", default="50mbit",
                   help="with --paths 2: tbf rate of each path, both ways ('none': unshaped)")
    p.add_argument("--kernel-seconds", type=float, default=3.0,
                   help="duration of each kernel->kernel run (default 3 s)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run TCP and MPTCP N times each, interleaved, and report medians "
                        "(this machine's figures vary by 20%% and more from run to run)")
    p.add_argument("--no-offload", action="store_true",
                   help="run our stack without TUN offloads (MTU-sized frames, Python checksums)")
    p.add_argument("--prefix", default=f"bench{os.getpid() % 10000}",
                   help="namespace prefix of the private topology")
    p.add_argument("--keep", action="store_true", help="leave the namespaces up afterwards")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="give up on one transfer after S seconds (default 300)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not pin the processes to CPUs (default: the user namespace's "
                        "on CPU 0, the peer's on CPU 1, with taskset; figures vary far "
                        "more without)")
    p.add_argument("--verify-bytes", type=int, default=20_000_000, metavar="N",
                   help="bytes of the untimed run each way that checks the bytes by sha256 "
                        "(default 20 MB; 0: none). The timed runs hash nothing")
    p.add_argument("--ipv6", action="store_true",
                   help="over IPv6 (fd00:1::1 / fd00:1::2) instead of IPv4 (single path)")
    p.add_argument("--connections", type=int, metavar="N", nargs="?", const=2000,
                   help="instead of bulk goodput: the rate of N short MPTCP connections "
                        "(default 2000) kernel->kernel, kernel->ours and ours->kernel, then "
                        "--idle idle connections held on our listener around a --bytes "
                        "transfer into it (goodput with them / alone, and our RSS)")
    p.add_argument("--idle", type=int, default=10_000, metavar="N",
                   help="with --connections: idle MPTCP connections (default 10000)")


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.bench ...`, the same command as `mptcp-tun bench ...`."""
    p = argparse.ArgumentParser(prog="mptcp-tun bench")
    configure(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """`mptcp-tun bench`: measure, print, and exit 0 when every byte arrived intact."""
    if os.geteuid() != 0:
        print("mptcp-tun bench: needs root (it builds network namespaces)", file=sys.stderr)
        return 3
    if args.connections:
        with Topology(args.prefix, args.keep) as topo:
            pinned = set_pinning(topo, args.pin)
            res = measure_connections(topo, args.connections, args.idle,
                                      args.bytes or 100_000_000, args.timeout)
        res["pinned"] = pinned
        if args.json:
            print(json.dumps(res))
        else:
            print_connections(res)
        return 0 if res["rates_ok"] and res["idle_opened"] == args.idle else 1
    if args.paths == 2:
        rate = None if args.rate == "none" else args.rate
        nbytes = args.bytes or (60_000_000 if rate else 200_000_000)
        with Topology(args.prefix, args.keep, paths=2) as topo:
            pinned = set_pinning(topo, args.pin)
            shape(topo, rate)
            res = measure_multipath(topo, nbytes, max(args.kernel_seconds, 5.0 if rate else 0),
                                    not args.no_offload, args.timeout,
                                    verify_bytes=args.verify_bytes)
        res.update(rate=rate, bytes=nbytes, offload=not args.no_offload, pinned=pinned)
        if args.json:
            print(json.dumps(res))
        else:
            print_multipath(res, nbytes)
        return 0 if all(v for k, v in res.items() if k.endswith(("_ok", "_verified"))) else 1
    args.bytes = args.bytes or 200_000_000
    with Topology(args.prefix, args.keep) as topo:
        pinned = set_pinning(topo, args.pin)
        res = measure(topo, args.bytes, args.kernel_seconds, not args.no_offload, args.timeout,
                      max(args.repeat, 1), args.ipv6, args.verify_bytes)
    res["pinned"] = pinned
    if args.json:
        print(json.dumps(res))
    else:
        mode = "with TUN offloads" if res["offload"] else "without offloads"
        mode += ", pinned (ours CPU 0, the peer CPU 1)" if pinned else ", not pinned"
        med = f", medians of {res['repeat']} runs" if res["repeat"] > 1 else ""
        fam = "IPv6" if res["ipv6"] else "IPv4"
        print(f"bulk goodput over path1 ({fam}), MTU 1500, {args.bytes} bytes through our "
              f"stack, {mode}{med}; timed runs unhashed, bytes checked by sha256 in an "
              f"untimed {res['verify_bytes']}-byte run each way")
        for proto in ("tcp", "mptcp"):
            r = res[proto]
            print(f" {proto.upper()}")
            print(f"  kernel -> kernel (up)    {r['kernel_to_kernel_up_mbps']:10.1f} Mbit/s")
            print(f"  ours   -> kernel         {r['ours_to_kernel_mbps']:10.1f} Mbit/s   "
                  f"{r['ratio_ours_to_kernel']:.3f} x kernel   "
                  f"{r['ours_to_kernel_seg_kb']:5.1f} kB/segment"
                  f"   bytes ok: {r['ours_to_kernel_ok']}"
                  f", sha256: {r.get('ours_to_kernel_verified', 'not checked')}")
            print(f"  kernel -> kernel (down)  {r['kernel_to_kernel_down_mbps']:10.1f} Mbit/s")
            print(f"  kernel -> ours           {r['kernel_to_ours_mbps']:10.1f} Mbit/s   "
                  f"{r['ratio_kernel_to_ours']:.3f} x kernel   "
                  f"{r['kernel_to_ours_seg_kb']:5.1f} kB/segment"
                  f"   bytes ok: {r['kernel_to_ours_ok']}"
                  f", sha256: {r.get('kernel_to_ours_verified', 'not checked')}")
        print(f" our MPTCP / our TCP: {res['ours_mptcp_vs_tcp_up']:.3f} sending, "
              f"{res['ours_mptcp_vs_tcp_down']:.3f} receiving")
        if res["repeat"] > 1:
            for way in ("up", "down"):
                each = " ".join(f"{x:.2f}" for x in res[f"ours_mptcp_vs_tcp_{way}_runs"])
                print(f"   run by run, {'sending' if way == 'up' else 'receiving'}: {each}")
    ok = all(v for p in ("tcp", "mptcp") for k, v in res[p].items()
             if k.endswith(("_ok", "_verified")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
