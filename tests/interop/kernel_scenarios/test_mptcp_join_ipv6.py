"""mptcp_join.sh's IPv6 scenarios (groups ipv6_tests, v4mapped_tests, mixed_tests and
the IPv6 cases of add_tests and bind_tests) with our stack as one end, in each role
the scenario allows (the catalogue says why a role is left out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import Topology
from tests.interop.kernel_scenarios.catalogue import IPV6, Scenario
from tests.interop.kernel_scenarios.runner import cases, ids, run_scenario

CASES = cases(IPV6)


@pytest.mark.parametrize(("sc", "role"), CASES, ids=ids(CASES))
def test_kernel_scenario(topology: Topology, shaped_paths: None, tmp_path: Path,
                         sc: Scenario, role: str) -> None:
    port = 7600 + 2 * CASES.index((sc, role))
    run_scenario(topology, sc, role, port, tmp_path)
