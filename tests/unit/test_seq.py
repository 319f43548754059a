"""Sequence-number arithmetic at the 2**32 and 2**64 wraps (stack.tcp.seq): `Seq` and
the offset helpers the engine and the MPTCP connection convert with."""

from hypothesis import given
from hypothesis import strategies as st

from stack.tcp.seq import Seq, near32, seq_between, unwrap32, unwrap64

u32 = st.integers(0, 2**32 - 1)
small = st.integers(-(2**31) + 1, 2**31 - 1)


def test_wraparound_ordering() -> None:
    a = Seq(0xFFFFFFF0)
    b = a + 0x20
    assert b.value == 0x10
    assert a < b and b > a and a <= b and not b < a
    assert b - a == 0x20
    assert a - b == -0x20
    assert (a - 0x20).value == 0xFFFFFFD0


def test_in_window_across_wrap() -> None:
    start = Seq(0xFFFFFF00)
    assert Seq(0xFFFFFF00).in_window(start, 1)
    assert Seq(0x10).in_window(start, 0x200)
    assert not Seq(0x100).in_window(start, 0x200)
    assert not Seq(0xFFFFFEFF).in_window(start, 0x200)
    assert not Seq(5).in_window(Seq(5), 0)


def test_min_max_and_equality() -> None:
    a, b = Seq(0xFFFFFFFF), Seq(1)
    assert max(a, b) == b and min(a, b) == a
    assert Seq(2**32 + 5) == Seq(5)
    assert hash(Seq(7)) == hash(Seq(7 + 2**32))


@given(u32, small)
def test_add_then_diff(x: int, d: int) -> None:
    a = Seq(x)
    b = a + d
    assert b - a == d
    assert b.diff(a) == d
    assert (b > a) == (d > 0)


@given(st.integers(0, 2**40), small)
def test_unwrap_inverts_masking(ref: int, d: int) -> None:
    off = ref + d
    assert unwrap32(ref, off & 0xFFFFFFFF) == off


@given(st.integers(0, 2**70), st.integers(-(2**63) + 1, 2**63 - 1))
def test_unwrap64_inverts_masking(ref: int, d: int) -> None:
    off = ref + d
    assert unwrap64(ref, off & (2**64 - 1)) == off


def test_near32_widens_like_expand_seq() -> None:
    # an offset whose 64-bit wire value is 0x1_FFFF_FFF0: a 32-bit value just past the
    # 32-bit wrap is ahead, one just before it is behind (Linux `expand_seq`)
    ref_off, ref_wire = 1000, 0x1_FFFF_FFF0
    assert near32(ref_off, ref_wire, 0x10) == ref_off + 0x20
    assert near32(ref_off, ref_wire, 0xFFFF_FF00) == ref_off - 0xF0


def test_seq_between_wraps() -> None:
    assert seq_between(5, 0xFFFF_FFF0, 10)
    assert not seq_between(11, 0xFFFF_FFF0, 10)
    assert not seq_between(0xFFFF_FFEF, 0xFFFF_FFF0, 10)
