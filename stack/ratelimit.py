"""How often the host may answer with an ICMP error (RFC 1812 4.3.2.8, RFC 4443 2.4 (f)),
limited the way Linux limits it, so that a flood of bad packets cannot make us flood.

Two token buckets, both of which must allow a message:
- global (Linux `icmp_global_allow`): `per_sec` messages a second, up to `burst` at once
  (net.ipv4.icmp_msgs_per_sec 1000, icmp_msgs_burst 50);
- per destination (Linux `inet_peer_xrlim_allow`): one message per `interval` seconds,
  up to `burst_factor` at once after a quiet spell (net.ipv4.icmp_ratelimit and
  net.ipv6.icmp.ratelimit, 1000 ms; XRLIM_BURST_FACTOR 6). The table of destinations is
  bounded: past `max_peers` the one unused longest is forgotten.
Sans-I/O: the caller passes `now`."""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum


class Verdict(Enum):
    SEND = "send"
    HOST = "host"      # the destination's bucket is empty (Linux IcmpOutRateLimitHost)
    GLOBAL = "global"  # the global bucket is empty (Linux IcmpOutRateLimitGlobal)


class IcmpRateLimit:
    def __init__(self, per_sec: float = 1000.0, burst: float = 50.0, interval: float = 1.0,
                 burst_factor: int = 6, max_peers: int = 4096) -> None:
        self.per_sec, self.burst = per_sec, burst
        self.interval, self.burst_factor, self.max_peers = interval, burst_factor, max_peers
        self._global = burst
        self._global_at: float | None = None
        self._peers: OrderedDict[bytes, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, dst: bytes, now: float) -> Verdict:
        """Whether an error to `dst` may go now; if it may, its tokens are spent."""
        if self._global_at is not None:
            self._global = min(self.burst, self._global + (now - self._global_at) * self.per_sec)
        self._global_at = now
        cap = self.burst_factor * self.interval
        tokens, at = self._peers.pop(dst, (cap, now))  # a new destination: a full burst
        tokens = min(cap, tokens + (now - at))
        verdict = Verdict.SEND
        if tokens < self.interval:
            verdict = Verdict.HOST
        elif self._global < 1:
            verdict = Verdict.GLOBAL
        else:
            tokens -= self.interval
            self._global -= 1
        self._peers[dst] = (tokens, now)
        if len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
        return verdict
