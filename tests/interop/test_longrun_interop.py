"""tools/longrun.py, short (45 s, path 1 down and up every 10 s, 5% loss each way on
both paths): every byte the kernel got is what we sent, the connection closed cleanly,
and our RSS stayed flat. The full run (30 minutes, a flap every 30 s) is
`python -m tools.longrun`; its figures are in the issue notes."""

from __future__ import annotations

import os
import subprocess

from tools import longrun


def test_a_short_long_run_loses_nothing_through_loss_and_flaps() -> None:
    prefix = f"lr{os.getpid() % 100000}"
    res = longrun.run(minutes=0.75, loss=5.0, flap=10.0, prefix=prefix)
    print(f"\nlongrun (short): {res['sent']} B, {res['goodput_mbps']} Mbit/s, "
          f"{res['flaps']} flaps, {res['dropped_by_loss_rules']} dropped, findings "
          f"{res['diagnosis']}, RSS {res['rss_mib']}")
    assert res["bytes_ok"], res
    assert res["clean"], res
    assert res["flaps"] >= 2 and res["dropped_by_loss_rules"] > 100, res
    assert res["rss_flat"] is not False, res
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in left
