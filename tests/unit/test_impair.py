"""The impairment layer (stack/impair.py): the rule syntax, and what each impairment
does to real IPv4 and IPv6 packets, offloads included, seeded."""

from __future__ import annotations

import pytest

from stack.addr import ip
from stack.host import Datagram
from stack.impair import SUBTYPES, Impairer, Impairment, mptcp_options, tcp_offset
from stack.wire import gso, tcp

A4, B4 = ip("10.0.2.2"), ip("10.0.2.1")
OTHER = ip("10.0.1.2")
A6, B6 = ip("fd00:2::2"), ip("fd00:2::1")
DSS = tcp.UnknownOption(30, bytes((SUBTYPES["dss"] << 4, 0x01)) + bytes(4))  # a data ACK
ADD_ADDR = tcp.UnknownOption(30, bytes((SUBTYPES["add_addr"] << 4 | 1, 1)) + A4)


def seg(payload: bytes = b"", *, src: bytes = A4, dst: bytes = B4, opts: list | None = None,
        partial: bool = False) -> bytes:
    hdr = tcp.TcpHeader(40000, 5000, 1000, 2000, tcp.ACK, 512,
                        [tcp.NOP, tcp.NOP, *(opts or [])])
    emit = tcp.emit_ipv4_segment if len(src) == 4 else tcp.emit_ipv6_segment
    return emit(src, dst, 1, 64, hdr, payload, partial)[0]


def valid(pkt: bytes) -> bool:
    off = tcp_offset(pkt)
    assert off is not None
    if pkt[0] >> 4 == 4:
        return tcp.verify_checksum_v4(pkt[12:16], pkt[16:20], pkt[off:])
    return tcp.verify_checksum_v6(pkt[8:24], pkt[24:40], pkt[off:])


def out(rule: str, d: Datagram, seed: int = 1, now: float = 10.0) -> list[tuple[float, Datagram]]:
    return Impairer([Impairment.parse(rule)], seed).outbound(d, now)


def datagram(pkt: bytes, **kw: object) -> Datagram:
    off = tcp_offset(pkt)
    assert off is not None
    thl = (pkt[off + 12] >> 4) * 4
    return Datagram(pkt[:off + thl], l4_offset=off, l4_header_len=thl,
                    payload=memoryview(pkt)[off + thl:], **kw)  # type: ignore[arg-type]


# ---- the syntax -----------------------------------------------------------------------
def test_a_rule_is_parsed_with_units_and_percentages() -> None:
    r = Impairment.parse("10.0.2.2:delay=25ms,jitter=500us,loss=1%,duplicate=0.02,dir=out")
    assert (r.addr, r.delay, r.jitter, r.loss, r.duplicate, r.dir) == \
        (A4, 0.025, 0.0005, 0.01, 0.02, "out")
    assert Impairment.parse("[fd00:2::2]:drop=add_addr+mp_prio").drop == \
        frozenset({SUBTYPES["add_addr"], SUBTYPES["mp_prio"]})
    assert Impairment.parse("fd00:2::2:strip").addr == A6  # unbracketed IPv6 too
    assert Impairment.parse("*:reorder=5%,reorder_delay=2ms").addr is None


@pytest.mark.parametrize("spec", [
    "10.0.2.2:delay=25ms,loss=1%", "[fd00:2::2]:drop=add_addr+mp_prio,strip,dir=in",
    "*:jitter=3ms,reorder=10%,reorder_delay=2ms,corrupt=0.1%,duplicate=50%"])
def test_a_rule_prints_as_it_parses(spec: str) -> None:
    r = Impairment.parse(spec)
    assert Impairment.parse(str(r)) == r


@pytest.mark.parametrize(("spec", "says"), [
    ("10.0.2.2:delay=25", "with its unit"),
    ("10.0.2.2:loss=5", "did you mean 5%"),
    ("10.0.2.2:loss=120%", "between 0 and 100%"),
    ("10.0.2.2:frob=1", "unknown key 'frob'"),
    ("10.0.2.2:drop=dsss", "'dsss' is no MPTCP suboption"),
    ("10.0.2.2:dir=sideways", "one of both, in, out"),
    ("host:delay=1ms", "not an address"),
    ("delay=1ms", "ADDR:key=value"),
    ("10.0.2.2:dir=in", "no impairment given"),
])
def test_a_bad_rule_says_what_is_wrong(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Impairment.parse(spec)


# ---- what the rules do ----------------------------------------------------------------
def test_a_packet_no_rule_matches_passes_as_it_is() -> None:
    d = datagram(seg(b"x" * 100, src=OTHER))
    assert out("10.0.2.2:loss=100%", d) == [(10.0, d)]
    imp = Impairer([Impairment.parse("10.0.2.2:loss=100%,dir=out")], 1)
    p = seg(b"y")
    assert imp.inbound(p, False, 0, 5.0) == [(5.0, p, False)]  # dir=out: not inbound


def test_delay_alone_keeps_a_super_packet_and_its_offloads() -> None:
    d = datagram(seg(b"z" * 20000, partial=True), gso_size=1448, csum_partial=True)
    [(due, held)] = out("10.0.2.1:delay=25ms", d)  # the peer's address matches as well
    assert due == pytest.approx(10.025)
    assert (held.gso_size, held.csum_partial, held.packet) == (1448, True, d.packet)
    assert isinstance(held.payload, bytes)  # out of the send buffer


def test_loss_cuts_super_packets_into_wire_segments_and_is_seeded() -> None:
    d = datagram(seg(bytes(range(256)) * 100, partial=True), gso_size=1000, csum_partial=True)
    got = out("10.0.2.2:loss=30%", d, seed=7)
    assert got == out("10.0.2.2:loss=30%", d, seed=7)  # the same seed, the same losses
    assert got != out("10.0.2.2:loss=30%", d, seed=8)
    assert 10 <= len(got) <= 24  # of 26 segments, about 70% kept
    for _due, s in got:
        assert (s.gso_size, s.csum_partial) == (0, False) and valid(s.packet)
        assert len(s.packet) <= 20 + 24 + 1000
    want = {bytes(p) for p in gso.segment_tcp4(d.packet, 1000)}
    assert {s.packet for _, s in got} <= want


def test_loss_is_near_its_rate_and_counted() -> None:
    imp = Impairer([Impairment.parse("*:loss=10%")], 3)
    p = seg(b"d" * 10)
    kept = sum(len(imp.inbound(p, False, 0, 0.0)) for _ in range(5000))
    assert 4350 <= kept <= 4650
    assert imp.counters[0]["lost"] == 5000 - kept and imp.counters[0]["packets"] == 5000


@pytest.mark.parametrize("partial", [False, True])
def test_strip_turns_mptcp_options_into_nops(partial: bool) -> None:
    p = seg(b"payload", opts=[DSS], partial=partial)
    [(_, s)] = out("10.0.2.2:strip", datagram(p, csum_partial=partial))
    off = tcp_offset(s.packet)
    assert off is not None and mptcp_options(s.packet, off) == []
    assert len(s.packet) == len(p) and s.csum_partial == partial
    if partial:  # the pseudo-header sum stays for the device to complete
        assert s.packet[off + 16:off + 18] == p[off + 16:off + 18]
    assert valid(gso.complete_checksum(s.packet) if partial else s.packet)


def test_drop_takes_packets_carrying_the_named_suboptions_only() -> None:
    rule = "10.0.2.2:drop=add_addr"
    assert out(rule, datagram(seg(opts=[ADD_ADDR]))) == []
    assert len(out(rule, datagram(seg(b"data", opts=[DSS])))) == 1
    assert len(out(rule, datagram(seg(b"plain")))) == 1
    assert out("10.0.2.2:drop=mptcp", datagram(seg(opts=[DSS]))) == []
    imp = Impairer([Impairment.parse("[fd00:2::2]:drop=dss+add_addr")], 1)
    assert imp.inbound(seg(b"v6", src=B6, dst=A6, opts=[DSS]), False, 0, 0.0) == []
    assert imp.counters[0]["dropped"] == 1


def test_corrupt_inverts_one_payload_byte_and_fixes_the_checksum() -> None:
    p = seg(b"\x00" * 500)
    [(_, s)] = out("10.0.2.2:corrupt=100%", datagram(p))
    q = s.packet
    assert valid(q) and len(q) == len(p)
    csum = (20 + 16, 20 + 17)
    [i] = [i for i in range(len(p)) if p[i] != q[i] and i not in csum]
    assert q[i] == 0xFF and i >= len(p) - 500
    assert out("10.0.2.2:corrupt=100%", datagram(seg())) != []  # no payload: untouched


def test_inbound_gro_super_packets_are_cut_for_per_packet_rules_on_ipv6() -> None:
    p = seg(b"q" * 5000, src=B6, dst=A6, partial=True)
    imp = Impairer([Impairment.parse("fd00:2::2:duplicate=100%,jitter=1ms")], 2)
    got = imp.inbound(memoryview(p), True, 1200, 1.0)
    assert len(got) == 10  # 5 segments, each twice
    assert all(t and valid(bytes(x)) and 1.0 <= due <= 1.001 for due, x, t in got)
    assert imp.counters[0]["duplicated"] == 5 and imp.counters[0]["packets"] == 5


def test_reorder_holds_a_packet_back() -> None:
    [(due, _)] = out("10.0.2.2:delay=1ms,reorder=100%,reorder_delay=10ms", datagram(seg(b"r")))
    assert due == pytest.approx(10.011)


def test_the_first_matching_rule_applies_and_the_report_says_what_was_done() -> None:
    imp = Impairer([Impairment.parse("10.0.2.2:loss=100%"), Impairment.parse("*:delay=1ms")], 9)
    assert imp.outbound(datagram(seg(b"a")), 0.0) == []
    [(due, _)] = imp.outbound(datagram(seg(b"b", src=OTHER)), 0.0)
    assert due == pytest.approx(0.001)
    rep = imp.report()
    assert rep == {"seed": 9, "rules": [
        {"rule": "10.0.2.2:loss=100%", "packets": 1, "lost": 1},
        {"rule": "*:delay=1ms", "packets": 1, "delayed": 1}]}
    assert imp.lines()[0] == "impair 10.0.2.2:loss=100%: 1 packets, 1 lost (--impair-seed 9)"


def test_garbage_is_passed_on_for_the_stack_to_judge() -> None:
    imp = Impairer([Impairment.parse("*:strip,corrupt=100%")], 1)
    for junk in (b"", b"\x45", bytes(19), b"\x60" + bytes(10), b"\x45" + bytes(30)):
        for _due, p, _t in imp.inbound(junk, False, 0, 0.0):
            assert p == junk


# ---- in the shell: held on a timer of its own, then written or fed -----------------------
def test_the_shell_holds_delayed_packets_and_releases_them_in_order() -> None:
    import asyncio
    import os

    from stack.shell import TunShell

    async def main() -> None:
        shell = TunShell("mptun0", ["10.0.2.2"], offload=False,
                         impair=Impairer([Impairment.parse("10.0.2.2:delay=30ms")], 1))
        r, w = os.pipe()
        os.set_blocking(r, False)
        shell._loop, shell._fd = asyncio.get_running_loop(), w
        fed: list[tuple[bytes, float]] = []
        shell.stack.feed_batch = lambda batch, now: fed.extend(  # type: ignore[method-assign]
            (bytes(p), now) for p, _t in batch)
        try:
            t0 = shell.now()
            first, second = seg(b"1" * 10), seg(b"2" * 20)
            shell._write(datagram(first), t0)
            shell._write(datagram(second), t0 + 0.001)
            shell._write(datagram(seg(b"not delayed", src=OTHER)), t0)
            assert os.read(r, 4096) == seg(b"not delayed", src=OTHER)
            arriving = seg(b"in", src=B4, dst=A4)
            assert shell._impair_in([(arriving, False)], [0], t0) == []
            await asyncio.sleep(0.02)
            with pytest.raises(BlockingIOError):
                os.read(r, 4096)
            assert fed == []
            await asyncio.sleep(0.03)
            assert os.read(r, 4096) == first + second  # (a pipe: one stream)
            assert [p for p, _ in fed] == [arriving] and fed[0][1] >= t0 + 0.03
        finally:
            shell._fd = -1
            os.close(r)
            os.close(w)

    asyncio.run(main())
