"""Fixtures for interop tests: a private netns-setup.sh topology per test session.

Skips (not root, no /dev/net/tun, no MPTCP in the kernel) become failures when the
environment variable CI is set: in CI an interop test that does not run is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import Topology, unique_prefix

HERE = Path(__file__).resolve().parent
TOPOLOGY_PATHS = 3


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _is_interop(path: Any) -> bool:
    try:
        return Path(str(path)).resolve().is_relative_to(HERE)
    except (OSError, ValueError):
        return False


def missing_prerequisite() -> str | None:
    """Why interop tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "interop tests need root (network namespaces, TUN)"
    if not os.path.exists("/dev/net/tun"):
        return "interop tests need /dev/net/tun (TUN driver)"
    if not os.path.exists("/proc/sys/net/mptcp/enabled"):
        return "interop tests need a kernel with CONFIG_MPTCP"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_interop(item.path):
            item.add_marker(pytest.mark.interop)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and in_ci() and _is_interop(item.path) and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"interop test skipped under CI=true (skips are failures in CI): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and in_ci() and _is_interop(collector.path):
        rep.outcome = "failed"
        rep.longrepr = f"interop module skipped under CI=true: {rep.longrepr}"


@pytest.fixture(scope="session")
def topology() -> Iterator[Topology]:
    """A private topology (`netns-setup.sh up --paths 3 --prefix t<pid>`), torn down at
    the end of the session even when tests fail; processes started through it are killed."""
    why = missing_prerequisite()
    if why:
        pytest.skip(why)
    topo = Topology(unique_prefix(), TOPOLOGY_PATHS)
    try:
        topo.setup()
        yield topo
    finally:
        topo.teardown()


@pytest.fixture(autouse=True)
def _kill_test_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Processes a test started through `topology.popen_*` do not outlive the test."""
    if "topology" not in request.fixturenames:
        yield
        return
    topo: Topology = request.getfixturevalue("topology")
    mark = topo.mark()
    yield
    topo.kill_since(mark)


@pytest.fixture
def no_endpoints(topology: Topology):  # type: ignore[no-untyped-def]
    topology.run_peer("ip", "mptcp", "endpoint", "flush")
    yield
    topology.run_peer("ip", "mptcp", "endpoint", "flush")


@pytest.fixture
def shaped_paths(topology: Topology):  # type: ignore[no-untyped-def]
    """Every path at 100 Mbit/s each way (tbf), so a 60 MB transfer lasts seconds."""
    paths = range(1, TOPOLOGY_PATHS + 1)
    for ns in (topology.user_ns, topology.peer_ns):
        for i in paths:
            topology.run_in(ns, "tc", "qdisc", "replace", "dev", f"path{i}", "root", "tbf",
                            "rate", "100mbit", "burst", "64kb", "latency", "50ms")
    yield
    for ns in (topology.user_ns, topology.peer_ns):
        for i in paths:
            topology.run_in(ns, "tc", "qdisc", "del", "dev", f"path{i}", "root", check=False)
    topology.run_peer("ip", "link", "set", "path1", "up")
    # a kernel subflow cut off by a path-down test lingers (FIN-WAIT-1, backing off) and,
    # with path 1 back, would end during the next test and move its counters: destroy
    # what is left of this test's connections
    topology.run_peer("ss", "-K", "-tn", "state", "connected", check=False)
