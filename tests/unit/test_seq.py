"""Sequence-number arithmetic at the 2**32 wrap (stack.tcp.seq) and the engine's
boundary conversion to stream offsets."""

from hypothesis import given
from hypothesis import strategies as st

from stack.tcp.engine import _unwrap
from stack.tcp.seq import Seq, Seq64, seq_max, seq_min

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
    assert seq_max(a, b) == b and seq_min(a, b) == a
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
    assert _unwrap(ref, off & 0xFFFFFFFF) == off


def test_seq64_expand32() -> None:
    cur = Seq64(0x1_FFFF_FFF0)
    assert cur.expand32(0x10).value == 0x2_0000_0010
    assert cur.expand32(0xFFFF_FF00).value == 0x1_FFFF_FF00
