"""docs/kernel-scenarios.md is generated from the interop suite's catalogues: it must
be what the generator writes today (run its --write after changing a catalogue)."""

from tests.interop.kernel_scenarios import coverage


def test_the_coverage_table_is_current() -> None:
    assert coverage.main(["--check"]) == 0, \
        "python -m tests.interop.kernel_scenarios.coverage --write"


def test_every_scenario_is_listed_once() -> None:
    from tests.interop.kernel_scenarios.catalogue import IPV6
    from tests.interop.kernel_scenarios.catalogue_ipv4 import IPV4
    titles = [sc.title for sc in IPV4 + IPV6] + [t for t, _g, _r in coverage.LISTED]
    assert len(titles) == len(set(titles)) == 137  # mptcp_join.sh, Linux 6.18
