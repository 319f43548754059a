"""SYN cookies (RFC 4987 3.6), as Linux makes them (net/ipv4/syncookies.c), and the
small table that keeps MP_JOIN working under them (net/mptcp/syncookies.c).

A listener whose SYN backlog is full (or one told to, Linux's `tcp_syncookies=2`)
keeps no state for a SYN: its SYN/ACK's ISN is a cookie, and the ACK that echoes it
rebuilds the connection. The cookie holds what the SYN told us that we must not forget:

    ISN = H1(4-tuple) + peer ISN + (count << 24) + ((H2(4-tuple, count) + mss index) mod 2^24)

`count` is the minute counter; a cookie older than `MAX_AGE` minutes is refused. The
peer's MSS is kept as an index into a table of 4 common values. The other SYN options
ride in the low 6 bits of our SYN/ACK's timestamp, which the ACK echoes: window scale
(4 bits, 0xF = none), SACK permitted, ECN. A peer without timestamps loses window
scaling and SACK, as with Linux.

MPTCP: a v1 third ACK carries both keys, so an MP_CAPABLE connection rebuilds from it
(the listener takes the key the ACK echoes as its own, once its token is unique). A
join's third ACK names neither the connection nor the nonces its HMAC covers: those go
in `JoinCookieTable`, a fixed number of slots indexed by a hash of the 4-tuple and the
joiner's ISN, best effort (a slot taken by a later join loses the earlier one, which
then fails as it would without cookies).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

Key = tuple[bytes, int, bytes, int]  # (local addr, local port, remote addr, remote port)

# Linux's msstab (IPv4) and msstab (IPv6, 1280/1480/1500/9000 less 60 bytes of headers)
MSS_TABLE_V4 = (536, 1300, 1440, 1460)
MSS_TABLE_V6 = (1220, 1420, 1440, 8940)
MAX_AGE = 2          # minutes a cookie stays good (MAX_SYNCOOKIE_AGE)
VALID_FOR = 120.0    # seconds after the last cookie sent that ACKs are tried as cookies
COOKIE_BITS = 24
COOKIE_MASK = (1 << COOKIE_BITS) - 1
# timestamp low bits (`cookie_init_timestamp`)
TS_BITS = 6
TS_MASK = (1 << TS_BITS) - 1
TS_WSCALE_NONE = 0xF
TS_SACK = 1 << 4
TS_ECN = 1 << 5
JOIN_SLOTS = 1024    # COOKIE_JOIN_SLOTS


@dataclass(frozen=True, slots=True)
class TsOptions:
    """What the timestamp echoed by a cookie ACK says about the SYN's options."""
    wscale: int | None
    sack: bool


class SynCookies:
    """Makes and checks cookies with a secret of the stack's (`secret`, 32 bytes)."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _hash(self, key: Key, extra: int) -> int:
        la, lp, ra, rp = key
        h = hashlib.blake2s(la + ra + struct.pack("!HHI", lp, rp, extra),
                            key=self._secret, digest_size=4)
        return int.from_bytes(h.digest(), "big")

    @staticmethod
    def _count(now: float) -> int:
        return int(now // 60) & 0xFF

    @staticmethod
    def mss_index(peer_mss: int, v6: bool) -> int:
        """The largest table MSS the peer's MSS allows (index 0 if none)."""
        table = MSS_TABLE_V6 if v6 else MSS_TABLE_V4
        for i in range(len(table) - 1, 0, -1):
            if peer_mss >= table[i]:
                return i
        return 0

    @classmethod
    def table_mss(cls, peer_mss: int, v6: bool) -> int:
        """The MSS a cookie keeps for a peer's `peer_mss`."""
        return (MSS_TABLE_V6 if v6 else MSS_TABLE_V4)[cls.mss_index(peer_mss, v6)]

    def make(self, key: Key, peer_isn: int, peer_mss: int, now: float) -> int:
        """The ISN of our SYN/ACK to a SYN with `peer_isn` and `peer_mss` on `key`."""
        count = self._count(now)
        idx = self.mss_index(peer_mss, len(key[0]) == 16)
        return (self._hash(key, 0xFFFFFFFF) + peer_isn + (count << COOKIE_BITS)
                + ((self._hash(key, count) + idx) & COOKIE_MASK)) & 0xFFFFFFFF

    def check(self, key: Key, peer_isn: int, cookie: int, now: float) -> int | None:
        """The MSS the cookie kept for an ACK on `key` (seq - 1 = `peer_isn`, ack - 1 =
        `cookie`), or None: not one of ours, or too old."""
        v = (cookie - self._hash(key, 0xFFFFFFFF) - peer_isn) & 0xFFFFFFFF
        count = v >> COOKIE_BITS
        if (self._count(now) - count) & 0xFF > MAX_AGE:
            return None
        idx = ((v & COOKIE_MASK) - self._hash(key, count)) & COOKIE_MASK
        table = MSS_TABLE_V6 if len(key[0]) == 16 else MSS_TABLE_V4
        return table[idx] if idx < len(table) else None

    def ts_offset(self, key: Key) -> int:
        """The timestamp offset of a connection made from a cookie: per 4-tuple, so that
        the rebuilt connection's clock is the one its SYN/ACK used (to 63 ms)."""
        return self._hash(key, 0xFFFFFFFE)


def ts_encode(wscale: int | None, sack: bool) -> int:
    """The low 6 bits of a cookie SYN/ACK's TSval for the SYN's options."""
    bits = TS_WSCALE_NONE if wscale is None else wscale & 0xF
    return bits | (TS_SACK if sack else 0)


def ts_decode(tsecr: int) -> TsOptions:
    """The SYN's options from the TSecr of a cookie ACK (every value is one we may
    have sent: 0-14 a window scale, 15 none)."""
    ws = tsecr & 0xF
    return TsOptions(None if ws == TS_WSCALE_NONE else ws, bool(tsecr & TS_SACK))


def cookie_tsval(now_ts: int, bits: int) -> int:
    """A TSval at or just before `now_ts` whose low bits are `bits` (Linux goes back at
    most 63 ms rather than forward: the peer must never see our clock jump back)."""
    ts = (now_ts & ~TS_MASK & 0xFFFFFFFF) | bits
    if ts > now_ts:
        ts -= TS_MASK + 1
    return ts & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class JoinCookie:
    """An MP_JOIN SYN answered with a cookie: what its third ACK does not repeat."""
    key: Key
    peer_isn: int
    token: int
    remote_nonce: int
    local_nonce: int
    remote_id: int
    remote_backup: bool


class JoinCookieTable:
    """`join_entries`: a fixed number of slots (memory bounded whatever arrives)."""

    __slots__ = ("_cookies", "_slots")

    def __init__(self, cookies: SynCookies, slots: int = JOIN_SLOTS) -> None:
        self._cookies = cookies
        self._slots: list[JoinCookie | None] = [None] * slots

    def _index(self, key: Key, peer_isn: int) -> int:
        return self._cookies._hash(key, peer_isn) % len(self._slots)

    def save(self, entry: JoinCookie) -> None:
        self._slots[self._index(entry.key, entry.peer_isn)] = entry

    def take(self, key: Key, peer_isn: int) -> JoinCookie | None:
        """The entry of the join on `key` whose SYN had `peer_isn`, removed (None: never
        saved, or its slot was taken since)."""
        i = self._index(key, peer_isn)
        e = self._slots[i]
        if e is None or e.key != key or e.peer_isn != peer_isn:
            return None
        self._slots[i] = None
        return e

    def __len__(self) -> int:
        return sum(1 for e in self._slots if e is not None)
