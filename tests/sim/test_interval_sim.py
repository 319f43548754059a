"""`--interval S` (tools/interval.py): the lines a running transfer prints, sampled from
the connections of a simulated MPTCP transfer with a join, and from plain TCP."""

from __future__ import annotations

import io
import random
import re

from stack.host import Connection, Stack
from tests.sim.apps import Side, bulk, multipath_pair
from tests.sim.net import LinkProfile, SimNet
from tools.interval import IntervalReporter

A2 = bytes([10, 0, 2, 2])
LINE = re.compile(r"^\[ *[\d.]+ s\] (sf\d|tcp|conn) .*$")


def kind(line: str) -> str:
    m = LINE.match(line)
    assert m is not None, line
    return m.group(1)


def sampled(a: Stack, b: Stack, net: SimNet, data: bytes,
            join: bool) -> tuple[list[str], Side]:
    """The transfer with `report()` called at 20, 40 and 60 ms of simulated time."""
    out = io.StringIO()
    conns: list[Connection] = []
    reporter = IntervalReporter(lambda: conns, lambda: net.now, 0.01, out)
    samples = [0.02, 0.04, 0.06]

    def step(sa: Side, sb: Side) -> None:
        if sa.conn is not None and not conns:
            conns.append(sa.conn)
        if samples and net.now >= samples[0]:
            samples.pop(0)
            reporter.report()

    sa, sb = bulk(a, b, net, data, data[::-1], join_from=[(A2, False)] if join else None,
                  on_step=step)
    assert bytes(sb.got) == data
    return out.getvalue().splitlines(), sa


def test_each_sample_has_a_line_per_subflow_and_one_for_the_connection() -> None:
    a, b, net = multipath_pair(seed=31, profile=LinkProfile(delay=0.002, rate_bps=100e6))
    lines, _ = sampled(a, b, net, random.Random(1).randbytes(2_000_000), join=True)
    assert lines and all(LINE.match(x) for x in lines), lines
    kinds = [kind(x) for x in lines]
    assert kinds.count("conn") == 3 and kinds.count("sf1") == 3 and kinds.count("sf2") >= 2
    conn_lines = [x for x in lines if kind(x) == "conn"]
    assert all("acked" in x and "window" in x and "Mbit/s" in x for x in conn_lines)
    sf_lines = [x for x in lines if kind(x).startswith("sf")]
    assert all("rtt" in x and "cwnd" in x and "retrans" in x for x in sf_lines)
    # what the lines say was acknowledged adds up to no more than was sent
    acked = 0.0
    for x in conn_lines:
        n, unit = re.search(r"acked ([\d.]+) (B|KB|MB)", x).groups()  # type: ignore[union-attr]
        acked += float(n) * {"B": 1, "KB": 1e3, "MB": 1e6}[unit]
    assert 0 < acked <= 2_000_000 * 1.01


def test_plain_tcp_has_one_line_per_sample() -> None:
    a, b, net = multipath_pair(seed=32, profile=LinkProfile(delay=0.002, rate_bps=100e6))
    a.config.mptcp = None
    lines, _ = sampled(a, b, net, random.Random(2).randbytes(1_000_000), join=False)
    assert lines and all(kind(x) == "tcp" for x in lines), lines
    assert all("rtt" in x and "tx" in x for x in lines)
