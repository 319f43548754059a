"""The fuzzer (tests/sim/fuzz.py), short: a few thousand mutated frames of every kind
through live connections of every variant (MPTCP with a join and an ADD_ADDR, DSS
checksums, v0, plain TCP, IPv6). Nothing escapes, every frame is counted. The long run
(10^6 frames and more) is `python -m tests.sim.fuzz --frames 1000000`."""

from __future__ import annotations

from tests.sim import fuzz


def test_mutated_frames_through_live_connections_never_raise_and_are_all_counted() -> None:
    rep = fuzz.run(frames=15_000, seed=7, data=100_000)
    assert rep.exceptions == [], rep.exceptions[0]["traceback"] + rep.exceptions[0]["frame"]
    assert rep.accounting == []
    assert rep.pairs >= 5  # every variant at least once
    assert set(rep.kinds) == set(fuzz.MUTATIONS)
    assert rep.frames >= 15_000 and rep.real > 1000


def test_a_mutation_that_escapes_is_reported_with_its_frame() -> None:
    rep = fuzz.Report()
    fuzz._guard(rep, "feed(test)", b"\x45\x00", lambda: 1 // 0)
    (e,) = rep.exceptions
    assert e["error"].startswith("ZeroDivisionError") and e["frame"] == "4500"
    assert "Traceback" in e["traceback"]
