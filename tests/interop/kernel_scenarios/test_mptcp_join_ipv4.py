"""mptcp_join.sh's IPv4 scenarios (catalogue_ipv4.IPV4) with our stack as one end, in
each role the scenario allows (the catalogue says why a role is left out; LISTED, the
scenarios not played and what they would need)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.harness import NETNS_SETUP, Topology, run
from tests.interop.kernel_scenarios.catalogue import IPV6, Scenario
from tests.interop.kernel_scenarios.catalogue_ipv4 import IPV4, LISTED
from tests.interop.kernel_scenarios.runner import cases, ids, run_scenario

CASES = cases(IPV4)
PATHS = 4  # the script's links 1-4


@pytest.fixture(scope="module")
def four_paths(topology: Topology) -> Iterator[None]:
    """The topology with a fourth path for this module (netns-setup.sh `up` adds or
    removes paths in place); back to the session's count afterwards."""
    run([str(NETNS_SETUP), "up", "--paths", str(PATHS), "--prefix", topology.prefix])
    try:
        yield
    finally:
        run([str(NETNS_SETUP), "up", "--paths", str(topology.paths),
             "--prefix", topology.prefix], check=False)


@pytest.fixture
def shaped_path4(four_paths: None, topology: Topology) -> Iterator[None]:
    """Path 4 shaped as `shaped_paths` shapes the session's paths."""
    for ns in (topology.user_ns, topology.peer_ns):
        topology.run_in(ns, "tc", "qdisc", "replace", "dev", "path4", "root", "tbf",
                        "rate", "100mbit", "burst", "64kb", "latency", "50ms")
    yield
    for ns in (topology.user_ns, topology.peer_ns):
        topology.run_in(ns, "tc", "qdisc", "del", "dev", "path4", "root", check=False)


def test_catalogue_covers_the_script() -> None:
    """Every IPv4 title once, played or listed; none of the IPv6 catalogue's."""
    titles = [sc.title for sc in IPV4] + [t for t, _, _ in LISTED]
    assert len(titles) == len(set(titles)) == 112
    assert not set(titles) & {sc.title for sc in IPV6}
    assert all(reason for _, _, reason in LISTED)
    assert all(sc.not_ours for sc in IPV4 if len(sc.roles) < 2)
    assert 8000 + 2 * len(CASES) < 8600


@pytest.mark.parametrize(("sc", "role"), CASES, ids=ids(CASES))
def test_kernel_scenario(topology: Topology, shaped_paths: None, shaped_path4: None,
                         tmp_path: Path, sc: Scenario, role: str) -> None:
    port = 8000 + 2 * CASES.index((sc, role))
    run_scenario(topology, sc, role, port, tmp_path)
