"""Round-trip time estimation and the retransmission timeout (RFC 6298, RFC 7323 3.4).

One job: turn RTT samples into SRTT/RTTVAR and an RTO, and back the RTO off
exponentially on expiry. Which samples are valid (Karn's rule, RFC 6298 section 3;
timestamps giving unambiguous samples, RFC 7323 section 4) is the engine's decision:
it calls `sample()` only with RTTs it may use.

    first sample R:   SRTT = R, RTTVAR = R/2
    later samples:    RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|;  SRTT = 7/8 SRTT + 1/8 R
    RTO = max(rto_min, SRTT + max(G, 4 * RTTVAR)), at most rto_max

`rto_min` is 200 ms like Linux (`TCP_RTO_MIN`) rather than RFC 6298's 1 s; the initial
RTO is 1 s (RFC 6298 section 2.1, Linux `TCP_TIMEOUT_INIT`). On expiry the timer
doubles (RFC 6298 5.5) up to rto_max; an ACK for new data resets the backoff
(Linux clears `icsk_backoff` in `tcp_ack()`).
"""

from __future__ import annotations

CLOCK_GRANULARITY = 0.001  # G: the engine's timestamps tick in milliseconds
MAX_BACKOFF_SHIFT = 16


class RttEstimator:
    """SRTT/RTTVAR/RTO state, mirrors Linux `tcp_rtt_estimator()` + `tcp_set_rto()`."""

    __slots__ = (
        "_base",
        "backoff",
        "granularity",
        "latest",
        "min_rtt",
        "rto_initial",
        "rto_max",
        "rto_min",
        "rttvar",
        "srtt",
    )

    def __init__(self, rto_initial: float = 1.0, rto_min: float = 0.2, rto_max: float = 120.0,
                 granularity: float = CLOCK_GRANULARITY) -> None:
        if not 0 < rto_min <= rto_max:
            raise ValueError("need 0 < rto_min <= rto_max")
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.min_rtt: float | None = None
        self.latest: float | None = None
        self.backoff = 0  # number of consecutive expiries
        self.rto_initial = rto_initial
        self.rto_min = rto_min
        self.rto_max = rto_max
        self.granularity = granularity
        self._base = min(max(rto_initial, 0.0), rto_max)  # un-backed-off RTO

    def sample(self, r: float) -> None:
        """Feed one valid RTT measurement (seconds). Negative samples are ignored."""
        if r < 0:
            return
        self.latest = r
        if self.min_rtt is None or r < self.min_rtt:
            self.min_rtt = r
        srtt = self.srtt
        if srtt is None:
            # RFC 6298 2.2
            srtt = r
            self.rttvar = r / 2
        else:
            # RFC 6298 2.3 (beta = 1/4, alpha = 1/8); RTTVAR first, with the old SRTT
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(srtt - r)
            srtt = 0.875 * srtt + 0.125 * r
        self.srtt = srtt
        rto = srtt + max(self.granularity, 4 * self.rttvar)
        self._base = min(max(rto, self.rto_min), self.rto_max)

    @property
    def base_rto(self) -> float:
        """The RTO without backoff."""
        return self._base

    @property
    def rto(self) -> float:
        """The current RTO, backoff included (RFC 6298 5.5), capped at rto_max."""
        if self.backoff == 0:
            return self._base
        return min(self._base * (1 << min(self.backoff, MAX_BACKOFF_SHIFT)), self.rto_max)

    def on_timeout(self) -> None:
        """The retransmission timer expired: double the RTO (RFC 6298 5.5)."""
        self.backoff += 1

    def reset_backoff(self) -> None:
        """New data was acknowledged: forget the backoff."""
        self.backoff = 0

    def backed_off(self, n: int) -> float:
        """The base RTO doubled `n` times, capped (used by the persist timer)."""
        return min(self._base * (1 << min(n, MAX_BACKOFF_SHIFT)), self.rto_max)
