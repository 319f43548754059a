"""`--control`: the path-manager commands, run against two of our stacks in simulation
(the TUN shell gives the controller nothing more than `stack`, `now` and `kick`)."""

from __future__ import annotations

import random

from stack.host import Connection, ip
from tests.sim.apps import Side, bulk, multipath_pair
from tests.sim.net import LinkProfile, SimNet
from tools.control import Controller


class SimShell:
    def __init__(self, stack: object, net: SimNet) -> None:
        self.stack, self.net = stack, net

    def now(self) -> float:
        return self.net.now

    def kick(self, conn: Connection | None = None) -> None:
        if conn is not None:
            self.stack.touch(conn)  # type: ignore[attr-defined]


def test_status_and_every_command_steer_a_live_connection() -> None:
    data = random.Random(1).randbytes(6_000_000)
    a, b, net = multipath_pair(seed=1, profile=LinkProfile(delay=0.003, rate_bps=100e6),
                               paths=3)
    ctl = Controller(SimShell(a, net))
    log: dict[str, dict[str, object]] = {}

    def step(sa: Side, sb: Side) -> None:
        got = len(sb.got)
        if "add" not in log and sa.conn is not None and sa.conn.msk.fully_established:
            log["add"] = ctl.execute("subflow add 10.0.2.2")
            log["add3"] = ctl.execute("subflow add 10.0.3.2 10.0.1.1:5000 backup")
        elif got > 2_000_000 and "status" not in log:
            log["status"] = ctl.execute("status")
            tok = log["status"]["connections"][0]["token"]  # type: ignore[index]
            log["prio"] = ctl.execute(f"token {tok} backup 10.0.2.2 on")
            log["del"] = ctl.execute("subflow del 10.0.3.2")
        elif got > 4_000_000 and "remove" not in log:
            log["remove"] = ctl.execute("remove 10.0.2.2")

    sa, sb = bulk(a, b, net, data, on_step=step)
    assert bytes(sb.got) == data and sa.error is None and sb.error is None
    assert all(r["ok"] for r in log.values()), log
    (conn,) = log["status"]["connections"]  # type: ignore[index]
    sfs = conn["subflows"]
    assert [s["local"].split(":")[0] for s in sfs] == ["10.0.1.2", "10.0.2.2", "10.0.3.2"]
    assert sfs[2]["backup"] and sfs[1]["tx_bytes"] > 0 and conn["fully_established"]
    assert log["prio"]["done"] == {conn["token"]: 1}
    assert log["del"]["done"] == {conn["token"]: 1} and log["remove"]["done"] == {
        conn["token"]: 1}
    ca, cb = a.all_counters(), b.all_counters()
    assert ca["MPPrioTx"] == 1 and cb["MPPrioRx"] == 1
    assert ca["RmAddrTx"] == 1 and cb["RmAddr"] == 1 and ca["RmSubflow"] == 2


def test_bad_commands_say_what_is_wrong() -> None:
    a, b, net = multipath_pair()
    ctl = Controller(SimShell(a, net))
    assert ctl.execute("status") == {"ok": True, "connections": []}
    assert "no open MPTCP connection" in str(ctl.execute("announce 10.0.2.2")["error"])
    b.listen(5000)
    a.connect(ip("10.0.1.1"), 5000, 0.0)
    net.run(0.1)
    assert "unknown command 'frobnicate'" in str(ctl.execute("frobnicate")["error"])
    assert "not an IPv4 address" in str(ctl.execute("remove nowhere")["error"])
    assert "no MPTCP connection with token 00000000" in str(
        ctl.execute("token 00000000 status")["error"])
    assert "not one of this stack's addresses" in str(ctl.execute("announce 10.9.9.9")["error"])
    assert "COMMAND" in str(ctl.execute("help")["help"]) or "status" in str(
        ctl.execute("help")["help"])
