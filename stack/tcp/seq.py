"""Wrapping sequence numbers (RFC 9293 section 3.4; RFC 1982 serial arithmetic).

`Seq` is the only way the engine compares or moves a 32-bit sequence number:
`a < b` means "a comes before b" modulo 2**32, `a + n` advances, `b - a` is the signed
distance. Raw integers are never compared as sequence numbers. 64-bit data-level
sequence numbers (MPTCP DSNs) use `Seq64`.
"""

from __future__ import annotations

from typing import ClassVar

_M32 = (1 << 32) - 1
_H32 = 1 << 31
_M64 = (1 << 64) - 1
_H64 = 1 << 63


def unwrap32(ref: int, raw: int) -> int:
    """The offset nearest `ref` whose value modulo 2**32 is `raw`."""
    return ref + ((raw - ref + _H32) & _M32) - _H32


def unwrap64(ref: int, raw: int) -> int:
    """The offset nearest `ref` whose value modulo 2**64 is `raw`."""
    return ref + ((raw - ref + _H64) & _M64) - _H64


def near32(ref_off: int, ref_wire: int, low: int) -> int:
    """The offset nearest `ref_off` (whose 64-bit wire value is `ref_wire`) whose wire
    value has the low 32 bits `low` (Linux `expand_seq`), without objects: it runs per
    segment."""
    d = (low - ref_wire) & _M32
    return ref_off + (d - (1 << 32) if d >= _H32 else d)


def seq_between(seq: int, lo: int, hi: int) -> bool:
    """lo <= seq <= hi modulo 2**32 (raw wire values)."""
    return (seq - lo) & _M32 <= (hi - lo) & _M32


class Seq:
    """An immutable 32-bit sequence number with modular ordering."""

    __slots__ = ("value",)
    BITS: ClassVar[int] = 32
    MOD: ClassVar[int] = 1 << 32
    HALF: ClassVar[int] = 1 << 31
    MASK: ClassVar[int] = (1 << 32) - 1

    value: int

    def __init__(self, value: int) -> None:
        object.__setattr__(self, "value", value & self.MASK)

    def __setattr__(self, name: str, v: object) -> None:
        raise AttributeError("Seq is immutable")

    def __add__(self, n: int) -> Seq:
        return self.__class__(self.value + n)

    def __sub__(self, other: Seq | int) -> Seq | int:
        if isinstance(other, int):
            return self.__class__(self.value - other)
        d = (self.value - other.value) & self.MASK
        return d - self.MOD if d >= self.HALF else d

    def diff(self, other: Seq) -> int:
        """Signed distance self - other, in [-2**(BITS-1), 2**(BITS-1))."""
        d = (self.value - other.value) & self.MASK
        return d - self.MOD if d >= self.HALF else d

    def __lt__(self, other: Seq) -> bool:
        return 0 < ((other.value - self.value) & self.MASK) < self.HALF

    def __le__(self, other: Seq) -> bool:
        return ((other.value - self.value) & self.MASK) < self.HALF

    def __gt__(self, other: Seq) -> bool:
        return other < self

    def __ge__(self, other: Seq) -> bool:
        return other <= self

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.value == self.value  # type: ignore[attr-defined,unused-ignore]

    def __hash__(self) -> int:
        return hash(self.value)

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.value})"

    def in_window(self, start: Seq, size: int) -> bool:
        """start <= self < start + size (RFC 9293's acceptability test)."""
        return ((self.value - start.value) & self.MASK) < size
