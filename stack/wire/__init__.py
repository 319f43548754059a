"""Wire formats only: pure `parse(bytes) -> value` / `emit(value) -> bytes` codecs.

Nothing here keeps state, reads a clock or does I/O. Every parser raises the one
`MalformedPacket` type on bad input, so callers count and drop with one `except`.
"""

from stack.wire.errors import MalformedPacket

__all__ = ["MalformedPacket"]
