"""Interop harness: a private netns-setup.sh topology and the helpers tests use on it.

    def test_x(topology):                      # fixture from tests/interop/conftest.py
        srv = topology.popen_peer(*topology.kpeer("server", "--port", "5000", "--once"))
        topology.wait_listening(topology.peer_ns, 5000)
        before = topology.nstat_peer()
        ...
        assert nstat_errors(nstat_diff(before, topology.nstat_peer())) == {}

Processes started through `popen_peer`/`popen_user` are tracked and only they are
killed at teardown (each runs in its own session, so its process group is ours).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
NETNS_SETUP = REPO / "netns-setup.sh"
KPEER = Path(__file__).resolve().parent / "kpeer.py"
TUN = "mptun0"

# MPTcpExt counters that mean "the kernel did not like what it got" (names as in this
# kernel's `nstat -az`). An interop test snapshots nstat before/after and asserts that
# none of these moved (`nstat_errors(nstat_diff(before, after)) == {}`). Tests that
# provoke an error on purpose assert the exact counter instead. Benign races
# (RcvWndConflict*, SndWndShared) and normal events (OFOQueue, MPTCPRetrans) are not here.
MPTCP_ERROR_COUNTERS = frozenset(
    {
        "MPTcpExtMPCapableFallbackACK",
        "MPTcpExtMPCapableFallbackSYNACK",
        "MPTcpExtMPCapableSYNTXDrop",
        "MPTcpExtMPCapableDataFallback",
        "MPTcpExtMPFallbackTokenInit",
        "MPTcpExtMPJoinNoTokenFound",
        "MPTcpExtMPJoinSynAckHMacFailure",
        "MPTcpExtMPJoinAckHMacFailure",
        "MPTcpExtMPJoinRejected",
        "MPTcpExtMPJoinSynTxCreatSkErr",
        "MPTcpExtMPJoinSynTxBindErr",
        "MPTcpExtMPJoinSynTxConnectErr",
        "MPTcpExtDSSNotMatching",
        "MPTcpExtDSSCorruptionFallback",
        "MPTcpExtDSSCorruptionReset",
        "MPTcpExtInfiniteMapTx",
        "MPTcpExtInfiniteMapRx",
        "MPTcpExtDSSNoMatchTCP",
        "MPTcpExtDataCsumErr",
        "MPTcpExtNoDSSInWindow",
        "MPTcpExtDuplicateData",
        "MPTcpExtAddAddrDrop",
        "MPTcpExtAddAddrTxDrop",
        "MPTcpExtEchoAddTxDrop",
        "MPTcpExtRmAddrDrop",
        "MPTcpExtRmAddrTxDrop",
        "MPTcpExtMismatchPortSynRx",
        "MPTcpExtMismatchPortAckRx",
        "MPTcpExtMPFailTx",
        "MPTcpExtMPFailRx",
        "MPTcpExtMPRstTx",
        "MPTcpExtMPRstRx",
        "MPTcpExtBlackhole",
        "MPTcpExtMD5SigFallback",
        "MPTcpExtDssFallback",
        "MPTcpExtSimultConnectFallback",
        "MPTcpExtFallbackFailed",
    }
)


def run(cmd: Sequence[str], check: bool = True, timeout: float = 60,
        **kw: Any) -> subprocess.CompletedProcess[str]:
    """subprocess.run with text output captured; on failure the error shows stderr."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    if "input" not in kw:
        kw.setdefault("stdin", subprocess.DEVNULL)
    cp = subprocess.run(list(cmd), check=False, timeout=timeout, **kw)
    if check and cp.returncode != 0:
        raise subprocess.CalledProcessError(cp.returncode, cp.args, cp.stdout, cp.stderr)
    return cp


def nstat_parse(text: str) -> dict[str, int]:
    """Parse `nstat -az` output: 'Name  value  rate' lines (first line is a header)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#") and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def nstat_diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters that changed between two snapshots: name -> after - before."""
    return {k: after.get(k, 0) - before.get(k, 0)
            for k in sorted(set(before) | set(after))
            if after.get(k, 0) != before.get(k, 0)}


def nstat_errors(diff: dict[str, int], ours: dict[str, Any] | None = None) -> dict[str, int]:
    """The part of a diff that is MPTCP error counters (should be {} in a clean test).

    With `ours` (our `--json` summary), kernel DuplicateData within what we sent again
    at the data level is not an error: bytes reinjected after a subflow died, or
    resent by the data-level RTO, may have reached the kernel's msk already (Linux's
    own sender causes the same). The kernel counts one per skb: at most one per 1000
    bytes resent; and one per data-level zero-window probe (an acked byte sent again
    on purpose, as Linux's `mptcp_sendmsg_frag` probes)."""
    errors = {k: v for k, v in diff.items() if k in MPTCP_ERROR_COUNTERS}
    if ours is not None:
        dup = errors.get("MPTcpExtDuplicateData", 0)
        if 0 < dup <= -(-int(ours.get("resent_bytes", 0)) // 1000) + int(
                ours.get("window_probes", 0)):
            del errors["MPTcpExtDuplicateData"]
    return errors


def tcp_counters(snap: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in snap.items() if k.startswith(("Tcp", "TcpExt"))}


def mptcp_counters(snap: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in snap.items() if k.startswith("MPTcpExt")}


class Topology:
    """A netns-setup.sh topology with prefix `prefix` and `paths` paths."""

    def __init__(self, prefix: str, paths: int) -> None:
        self.prefix = prefix
        self.paths = paths
        self.user_ns = f"{prefix}-user"
        self.peer_ns = f"{prefix}-peer"
        self.tun = TUN
        self._procs: list[subprocess.Popen[Any]] = []

    # --- addresses (docs/architecture.md, "The test topology") ---
    @staticmethod
    def peer_addr(i: int) -> str:
        return f"10.0.{i}.1"

    @staticmethod
    def our_addr(i: int) -> str:
        return f"10.0.{i}.2"

    @staticmethod
    def router_addr(i: int) -> str:
        return f"10.0.{i}.254"

    @staticmethod
    def path_dev(i: int) -> str:
        return f"path{i}"

    # IPv6: path i is fd00:i::/64, i in hex (netns-setup.sh's `printf %x`).
    @staticmethod
    def net6(i: int) -> str:
        """The prefix of path i without "::/64": fd00:<i in hex>."""
        return f"fd00:{i:x}"

    @staticmethod
    def peer_addr6(i: int) -> str:
        return f"fd00:{i:x}::1"

    @staticmethod
    def our_addr6(i: int) -> str:
        return f"fd00:{i:x}::2"

    @staticmethod
    def router_addr6(i: int) -> str:
        return f"fd00:{i:x}::fe"

    # --- the script ---
    def setup(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return run([str(NETNS_SETUP), "up", "--paths", str(self.paths),
                    "--prefix", self.prefix, *extra])

    def status(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([str(NETNS_SETUP), "status", "--prefix", self.prefix], check=check)

    def teardown(self) -> None:
        self.kill_all()
        run([str(NETNS_SETUP), "down", "--prefix", self.prefix], check=False)

    # --- running things in the namespaces ---
    @staticmethod
    def _argv(args: tuple[Any, ...]) -> list[str]:
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            args = tuple(args[0])
        return [str(a) for a in args]

    def run_in(self, ns: str, *cmd: Any, check: bool = True, timeout: float = 60,
               **kw: Any) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", ns, *self._argv(cmd)], check=check,
                   timeout=timeout, **kw)

    def run_peer(self, *cmd: Any, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run_in(self.peer_ns, *cmd, **kw)

    def run_user(self, *cmd: Any, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run_in(self.user_ns, *cmd, **kw)

    def popen_in(self, ns: str, *cmd: Any, **kw: Any) -> subprocess.Popen[Any]:
        """Start a tracked process in `ns` (stdout/stderr piped as text by default)."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("text", True)
        kw["start_new_session"] = True
        p: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", ns, *self._argv(cmd)], **kw)
        self._procs.append(p)
        return p

    def popen_peer(self, *cmd: Any, **kw: Any) -> subprocess.Popen[Any]:
        return self.popen_in(self.peer_ns, *cmd, **kw)

    def popen_user(self, *cmd: Any, **kw: Any) -> subprocess.Popen[Any]:
        return self.popen_in(self.user_ns, *cmd, **kw)

    def mark(self) -> int:
        """A bookmark in the list of started processes, for `kill_since`."""
        return len(self._procs)

    def kill_all(self) -> None:
        """Stop the processes this topology started (and only them): TERM, then KILL."""
        self.kill_since(0)

    def kill_since(self, mark: int) -> None:
        """Stop the processes started after `mark` (TERM, then KILL after 3 s)."""
        procs = self._procs[mark:]
        del self._procs[mark:]
        live = [p for p in procs if p.poll() is None]
        for p in live:
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for p in live:
            try:
                p.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait(timeout=5)
        for p in procs:
            for f in (p.stdout, p.stderr):
                if f is not None and not f.closed:
                    f.close()

    # --- kpeer ---
    @staticmethod
    def kpeer(*args: Any) -> list[str]:
        """argv for kpeer.py (the kernel-side peer), to pass to run_*/popen_*."""
        return [sys.executable, str(KPEER), *[str(a) for a in args]]

    @staticmethod
    def kpeer_result(p: subprocess.Popen[Any], timeout: float = 60) -> dict[str, Any]:
        """Wait for a kpeer process started with popen_*; return its (last) JSON report."""
        out, err = p.communicate(timeout=timeout)
        return parse_report(out, err, p.returncode)

    def kernel_abort(self, addr: str, port: int, after: float) -> None:
        """A kernel MPTCP client in the peer namespace that connects, reads nothing and
        closes after `after` s: closing with unread data aborts the connection (RST
        with MP_FASTCLOSE and MP_TCPRST)."""
        code = ("import socket, time\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n"
                f"s.connect(('{addr}', {port}))\n"
                f"time.sleep({after})\n"
                "s.close()\n")
        self.run_peer("python3", "-c", code, timeout=30)

    def wait_listening(self, ns: str, port: int, timeout: float = 10) -> None:
        """Wait until a TCP (or MPTCP) listener on `port` exists in `ns`."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.run_in(ns, "ss", "-Hltn", f"sport = :{port}", check=False).stdout
            if out.strip():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on port {port} in {ns}")
            time.sleep(0.02)

    # --- counters ---
    def nstat(self, ns: str) -> dict[str, int]:
        """Absolute counters of namespace `ns` (`nstat -az`, history ignored)."""
        # -a: absolute values, -z: zeros too, -s: do not touch nstat's history file.
        return nstat_parse(self.run_in(ns, "nstat", "-azs").stdout)

    def nstat_peer(self) -> dict[str, int]:
        return self.nstat(self.peer_ns)

    def nstat_user(self) -> dict[str, int]:
        return self.nstat(self.user_ns)


def parse_report(out: str, err: str = "", rc: int | None = None) -> dict[str, Any]:
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise AssertionError(f"kpeer printed no report (rc={rc}); stdout={out!r} stderr={err!r}")
    rec: dict[str, Any] = json.loads(lines[-1])
    rec["returncode"] = rc
    return rec


def _signal_group(p: subprocess.Popen[Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, sig)  # the session we created for it: only its own processes


def unique_prefix() -> str:
    """A short namespace prefix unique to this process (t<pid mod 10000>)."""
    return f"t{os.getpid() % 10000}"

