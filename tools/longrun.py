"""`python -m tools.longrun`: a long MPTCP run through a hostile network, and whether
every byte arrived and our memory stayed flat.

Our stack (`connect --subflow 10.0.2.2 --send-seconds S --no-offload`: MTU-sized frames,
so that a drop is one segment) sends to a kernel MPTCP sink
over two paths of a private topology (netns-setup.sh --prefix), while:
  - nftables in the user namespace drops --loss percent of the packets each way on
    each path, at random (`numgen random`);
  - path 1 goes down, and up again, every --flap seconds (`ip link set path1 down|up`
    in the user namespace: the subflow over it goes stale, its data goes on path 2, and
    it comes back).
Our RSS is sampled every 5 s. At the end: the bytes the kernel received and their
sha256 against what we sent, the loss rules' drop counts, the number of flaps, and the
RSS over the run (flat: the last third's median within --rss-slack MiB of the second
third's). Exit 0 only if the bytes match, the connection closed cleanly and the RSS
stayed flat.

    python -m tools.longrun --minutes 30 --loss 5 --flap 30      # the issue's run
    python -m tools.longrun --minutes 1 --flap 10                # a short one

Needs root; builds its own namespaces and removes them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.bench import ROOT, Topology, _kpeer, _last_json, _ours, _wait_listening

PORT = 5500


def _rss_mib(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) / 1024 if m else None


def _loss(topo: Topology, pct: float) -> None:
    rules = "".join(f"  {d}ifname \"path{i}\" numgen random mod 1000 < {int(pct * 10)} "
                    f"counter drop\n" for i in (1, 2) for d in ("i", "o"))
    subprocess.run(topo.cmd(topo.user, "nft", "-f", "-"), check=True, text=True,
                   input=("table inet longrun {\n chain lossy_forward {\n  type filter hook "
                          "forward priority 0;\n" + rules + " }\n}\n"))


def _dropped(topo: Topology) -> int:
    out = subprocess.run(topo.cmd(topo.user, "nft", "list", "table", "inet", "longrun"),
                         capture_output=True, text=True, check=False).stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


def run(minutes: float, loss: float, flap: float, prefix: str, keep: bool = False,
        rss_slack: float = 16.0, progress: bool = False) -> dict[str, Any]:
    seconds = minutes * 60
    res: dict[str, Any] = {"minutes": minutes, "loss_pct": loss, "flap_s": flap}
    with Topology(prefix, keep, paths=2) as topo:
        _loss(topo, loss)
        srv = subprocess.Popen(_kpeer(topo, topo.peer, "server", "--port", str(PORT),
                                      "--once", "--mptcp", "--timeout", "120"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT)
        _wait_listening(topo, topo.peer, PORT)
        me = subprocess.Popen(_ours(topo, "connect", "10.0.1.1", str(PORT), "--subflow",
                                    "10.0.2.2", "--send-seconds", str(seconds), "--json",
                                    "--no-offload",  # MTU-sized frames: a drop is a segment
                                    "--timeout", str(seconds + 600)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT)
        t0 = time.monotonic()
        rss: list[tuple[float, float]] = []
        flaps, down, next_flap, next_rss = 0, False, t0 + flap, t0
        while me.poll() is None:
            now = time.monotonic()
            if now >= next_rss:
                r = _rss_mib(me.pid)
                if r:  # (0 or None: not started yet, or gone)
                    rss.append((round(now - t0, 1), round(r, 1)))
                next_rss += 5.0
                if progress:
                    print(f"\r{now - t0:7.0f} s  RSS {r} MiB  flaps {flaps}  dropped "
                          f"{_dropped(topo)}", end="", file=sys.stderr, flush=True)
            if flap and now >= next_flap and now - t0 < seconds:
                down = not down
                subprocess.run(topo.cmd(topo.user, "ip", "link", "set", "path1",
                                        "down" if down else "up"), check=True)
                flaps += down
                next_flap += flap
            time.sleep(0.2)
        if down:
            subprocess.run(topo.cmd(topo.user, "ip", "link", "set", "path1", "up"), check=True)
        out, err = me.communicate()
        sout, _ = srv.communicate(timeout=120)
        res["dropped_by_loss_rules"] = _dropped(topo)
    if progress:
        print(file=sys.stderr)
    ours = _last_json(out)
    kern = _last_json(sout)
    res.update(
        seconds=round(time.monotonic() - t0, 1), flaps=flaps, sent=ours.get("sent"),
        sent_sha256=ours.get("sent_sha256"), received_by_kernel=kern.get("rx_bytes"),
        kernel_sha256=kern.get("rx_sha256"), clean=bool(ours.get("clean")),
        error=ours.get("error"), subflows=ours.get("subflows"),
        diagnosis=[f["code"] for f in ours.get("diagnosis", [])],
        goodput_mbps=ours.get("goodput_mbps"), rss_mib=rss)
    res["bytes_ok"] = (res["sent"] == res["received_by_kernel"] and res["sent"] is not None
                       and res["sent_sha256"] == res["kernel_sha256"])
    thirds = [[r for t, r in rss if k * seconds / 3 <= t < (k + 1) * seconds / 3]
              for k in range(3)]
    if thirds[1] and thirds[2]:
        res["rss_mid_mib"] = statistics.median(thirds[1])
        res["rss_end_mib"] = statistics.median(thirds[2])
        res["rss_flat"] = res["rss_end_mib"] - res["rss_mid_mib"] <= rss_slack
    else:
        res["rss_flat"] = None
    if not res["bytes_ok"]:
        res["stderr"] = err[-2000:]
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.longrun", description=__doc__.split(
        "\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--loss", type=float, default=5.0, help="percent dropped per path and "
                   "direction (default 5)")
    p.add_argument("--flap", type=float, default=30.0, help="path 1 down, then up, every S "
                   "seconds (default 30; 0: never)")
    p.add_argument("--rss-slack", type=float, default=16.0, metavar="MIB",
                   help="how much the RSS may grow from the second third to the last")
    p.add_argument("--prefix", default=f"long{os.getpid() % 10000}")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("longrun: needs root (it builds network namespaces)", file=sys.stderr)
        return 3
    res = run(args.minutes, args.loss, args.flap, args.prefix, args.keep, args.rss_slack,
              progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps(res))
    else:
        rss = [r for _, r in res["rss_mib"]]
        print(f"{res['seconds']} s of MPTCP over 2 paths, {res['loss_pct']}% loss each way "
              f"on each ({res['dropped_by_loss_rules']} packets dropped), path 1 down "
              f"{res['flaps']} times: sent {res['sent']} B, the kernel received "
              f"{res['received_by_kernel']} B, sha256 {'equal' if res['bytes_ok'] else 'DIFFER'}"
              f"; {res['goodput_mbps']} Mbit/s; clean close: {res['clean']}; findings "
              f"{res['diagnosis']}")
        if rss:
            flat = {True: "flat", False: "GROWING", None: "?"}[res["rss_flat"]]
            print(f"RSS MiB: min {min(rss)}, max {max(rss)}, second third "
                  f"{res.get('rss_mid_mib')}, last third {res.get('rss_end_mib')}: {flat}")
    return 0 if res["bytes_ok"] and res["clean"] and res["rss_flat"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
