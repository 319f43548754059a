"""Congestion control: one interface, Reno (RFC 5681) and CUBIC (RFC 9438) behind it.

One job: own `cwnd` and `ssthresh` (bytes) and change them on the three signals the
engine gives — new data acknowledged (`on_ack`), loss detected by duplicate ACKs or
SACK (`enter_recovery`, end with `exit_recovery`), retransmission timeout (`on_rto`).
The engine does loss recovery itself (RFC 6675 pipe / RFC 6582 NewReno), so during
recovery it does not call `on_ack`, and `enter_recovery` simply sets
cwnd = ssthresh (no RFC 5681 window inflation; the pipe estimate replaces it, as
Linux's `tcp_cwnd_reduction()` does).

Like Linux: initial window 10 segments (RFC 6928, `TCP_INIT_CWND`), slow start adds
every acknowledged byte (`tcp_slow_start()`, so stretch ACKs from GRO/GSO peers are
counted in full), congestion avoidance counts bytes (RFC 3465), the loss window after
an RTO is one segment. CUBIC is `tcp_cubic.c`: C = 0.4, beta = 0.7, fast convergence,
the Reno-friendly region of RFC 9438 section 4.3, and HyStart (Linux's defaults), without
which slow start fills a deep bottleneck queue and loses a window's worth of segments at
once. Slow start ends (ssthresh = cwnd) when, in one round trip, the ACKs have come in
one train (no gap over 2 ms) for longer than half the path's smallest RTT (the window
has reached about the path's capacity), or the smallest RTT of the round's first 8
samples exceeds the path's smallest by an eighth of it, clamped to 4..16 ms (a queue
is building). Both only from a window of 16 segments on; the ACK train only on paths of
4 ms and more (our RTT samples come from millisecond timestamps).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

INITIAL_WINDOW_SEGMENTS = 10
SSTHRESH_INFINITE = 0x7FFFFFFF


class CongestionControl(ABC):
    """The interface the engine uses. `cwnd`/`ssthresh` are bytes."""

    name = "abstract"

    def __init__(self, mss: int, initial_window: int = INITIAL_WINDOW_SEGMENTS) -> None:
        if mss <= 0:
            raise ValueError("mss must be positive")
        self.mss = mss
        self._cwnd = float(initial_window * mss)
        self._ssthresh = float(SSTHRESH_INFINITE)
        self.in_recovery = False

    # --- read-only view ------------------------------------------------------------
    @property
    def cwnd(self) -> int:
        return int(self._cwnd)

    @property
    def ssthresh(self) -> int:
        return int(self._ssthresh)

    @property
    def in_slow_start(self) -> bool:
        return self._cwnd < self._ssthresh

    def set_mss(self, mss: int) -> None:
        """The effective MSS became known (after the handshake): rescale the windows
        that are counted in segments (the initial window)."""
        if mss <= 0:
            raise ValueError("mss must be positive")
        self._cwnd = self._cwnd / self.mss * mss
        self.mss = mss

    # --- signals -------------------------------------------------------------------
    def _slow_start(self, acked: int) -> int:
        """Grow by the acknowledged bytes up to ssthresh; return bytes left over for
        congestion avoidance (Linux `tcp_slow_start()`)."""
        room = self._ssthresh - self._cwnd
        if acked <= room:
            self._cwnd += acked
            return 0
        self._cwnd = max(self._cwnd, self._ssthresh)
        return acked - max(int(room), 0)

    @abstractmethod
    def on_ack(self, acked: int, rtt: float | None, now: float) -> None:
        """`acked` bytes newly acknowledged outside recovery; `rtt` the current
        smoothed (or latest) RTT in seconds if known."""

    @abstractmethod
    def enter_recovery(self, flight: int, now: float) -> None:
        """Loss detected by duplicate ACKs / SACK (fast retransmit)."""

    def on_rtt_sample(self, rtt: float, una: int, nxt: int, now: float) -> bool:
        """A fresh RTT sample (seconds) from an ACK that moved `una`, with `nxt` the
        next sequence number to send. True if it ended slow start (HyStart)."""
        return False

    def on_loss(self, flight: int, now: float) -> None:
        """Alias of `enter_recovery`."""
        self.enter_recovery(flight, now)

    def exit_recovery(self, now: float) -> None:
        """Recovery ended (the recovery point was acknowledged): cwnd = ssthresh
        (RFC 6582 / RFC 6675 "full ACK"; Linux `tcp_end_cwnd_reduction()`)."""
        self.in_recovery = False
        self._cwnd = max(min(self._cwnd, self._ssthresh), float(self.mss))

    @abstractmethod
    def on_rto(self, flight: int, now: float, first: bool = True) -> None:
        """Retransmission timeout: cwnd = loss window (1 MSS); ssthresh reduced only on
        the `first` expiry of a series (Linux `tcp_enter_loss()`: a backed-off
        retransmission says nothing new about the path)."""

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(cwnd={self.cwnd}, ssthresh={self.ssthresh})"


class Reno(CongestionControl):
    """RFC 5681 slow start / congestion avoidance with byte counting (RFC 3465)."""

    name = "reno"

    def __init__(self, mss: int, initial_window: int = INITIAL_WINDOW_SEGMENTS) -> None:
        super().__init__(mss, initial_window)
        self._acc = 0.0  # bytes acknowledged toward the next +1 MSS in CA

    def on_ack(self, acked: int, rtt: float | None, now: float) -> None:
        if self._cwnd < self._ssthresh:
            acked = self._slow_start(acked)
            if not acked:
                return
        # RFC 5681 3.1 / RFC 3465: +1 SMSS per cwnd bytes acknowledged
        self._acc += acked
        if self._acc >= self._cwnd:
            steps = int(self._acc // self._cwnd)
            self._acc -= steps * self._cwnd
            self._cwnd += steps * self.mss

    def enter_recovery(self, flight: int, now: float) -> None:
        # RFC 5681 eq. (4): ssthresh = max(FlightSize / 2, 2*SMSS)
        self._ssthresh = float(max(flight // 2, 2 * self.mss))
        self._cwnd = self._ssthresh
        self._acc = 0.0
        self.in_recovery = True

    def on_rto(self, flight: int, now: float, first: bool = True) -> None:
        if first:
            self._ssthresh = float(max(flight // 2, 2 * self.mss))
        self._cwnd = float(self.mss)
        self._acc = 0.0
        self.in_recovery = False


class Cubic(CongestionControl):
    """CUBIC (RFC 9438), windows computed in segments as floats like the RFC."""

    name = "cubic"
    C = 0.4
    BETA = 0.7
    ALPHA = 3 * (1 - BETA) / (1 + BETA)  # RFC 9438 eq. 4: Reno-friendly additive increase

    def __init__(self, mss: int, initial_window: int = INITIAL_WINDOW_SEGMENTS,
                 fast_convergence: bool = True) -> None:
        super().__init__(mss, initial_window)
        self.fast_convergence = fast_convergence
        self.w_max = 0.0            # segments, window before the last reduction
        self.k = 0.0                # seconds to reach w_max again
        self.epoch: float | None = None  # start of the current congestion-avoidance epoch
        self.w_est = 0.0            # segments, the Reno-friendly estimate
        self.cwnd_epoch = 0.0       # segments, cwnd at the start of the epoch
        # HyStart (delay): the path's smallest RTT, and this round's (a round ends when
        # `round_end`, nxt at its start, is acknowledged)
        self.delay_min: float | None = None
        self.hystart_found = False
        self.round_end: int | None = None
        self.round_min = float("inf")
        self.round_samples = 0
        self.round_start = self.last_ack = 0.0

    HYSTART_LOW_WINDOW = 16   # segments: no detection below (tcp_cubic hystart_low_window)
    HYSTART_MIN_SAMPLES = 8
    HYSTART_DELAY_MIN, HYSTART_DELAY_MAX = 0.004, 0.016
    HYSTART_ACK_DELTA = 0.002  # the longest gap within an ACK train

    def on_rtt_sample(self, rtt: float, una: int, nxt: int, now: float) -> bool:
        """`cubictcp_acked` + `hystart_update`: ACK train, then delay."""
        if self.epoch is not None and now - self.epoch < 1.0:
            return False  # right after a reduction: not a slow-start sample
        if self.delay_min is None or rtt < self.delay_min:
            self.delay_min = rtt
        if self.hystart_found or not self.in_slow_start or \
                self._cwnd < self.HYSTART_LOW_WINDOW * self.mss:
            return False
        if self.round_end is None or una > self.round_end:
            self.round_end, self.round_min, self.round_samples = nxt, float("inf"), 0
            self.round_start = self.last_ack = now
        # (our RTT samples come from millisecond timestamps: below a few ms they cannot
        # tell half the RTT from none, and every ACK would look like a long train)
        if self.delay_min >= self.HYSTART_DELAY_MIN and \
                now - self.last_ack <= self.HYSTART_ACK_DELTA:
            self.last_ack = now
            if now - self.round_start > self.delay_min / 2:
                self.hystart_found = True
                self._ssthresh = self._cwnd
                return True
        self.round_min = min(self.round_min, rtt)
        if self.round_samples < self.HYSTART_MIN_SAMPLES:
            self.round_samples += 1
            return False
        thresh = min(max(self.delay_min / 8, self.HYSTART_DELAY_MIN), self.HYSTART_DELAY_MAX)
        if self.round_min > self.delay_min + thresh:
            self.hystart_found = True
            self._ssthresh = self._cwnd
            return True
        return False

    def w_cubic(self, t: float) -> float:
        """RFC 9438 eq. 1, in segments."""
        d = t - self.k
        return self.C * d * d * d + self.w_max

    def on_ack(self, acked: int, rtt: float | None, now: float) -> None:
        if self._cwnd < self._ssthresh:
            acked = self._slow_start(acked)
            if not acked:
                return
        mss = self.mss
        cwnd = self._cwnd / mss
        if self.epoch is None:
            # RFC 9438 4.2: a new congestion-avoidance epoch
            self.epoch = now
            self.cwnd_epoch = cwnd
            self.w_est = cwnd
            if cwnd < self.w_max:
                self.k = ((self.w_max - cwnd) / self.C) ** (1.0 / 3.0)
            else:
                self.k = 0.0
                self.w_max = cwnd
        t = now - self.epoch
        segs = acked / mss
        # RFC 9438 4.3: Reno-friendly estimate; alpha becomes 1 once past w_max
        alpha = 1.0 if self.w_est >= self.w_max else self.ALPHA
        self.w_est += alpha * segs / cwnd
        if self.w_cubic(t) < self.w_est:
            cwnd = self.w_est
        else:
            # RFC 9438 4.4/4.5: aim at W_cubic one RTT ahead, clamped to [cwnd, 1.5 cwnd]
            target = self.w_cubic(t + (rtt if rtt is not None else 0.0))
            if target < cwnd:
                target = cwnd
            elif target > 1.5 * cwnd:
                target = 1.5 * cwnd
            cwnd += (target - cwnd) / cwnd * segs
        self._cwnd = cwnd * mss

    def _reduce(self) -> None:
        cwnd = self._cwnd / self.mss
        # RFC 9438 4.7 fast convergence
        if self.fast_convergence and cwnd < self.w_max:
            self.w_max = cwnd * (1 + self.BETA) / 2
        else:
            self.w_max = cwnd
        self._ssthresh = max(cwnd * self.BETA, 2.0) * self.mss
        self.epoch = None

    def enter_recovery(self, flight: int, now: float) -> None:
        # RFC 9438 4.6: ssthresh = cwnd * beta (Linux `bictcp_recalc_ssthresh()` uses cwnd)
        self._reduce()
        self._cwnd = self._ssthresh
        self.in_recovery = True

    def on_rto(self, flight: int, now: float, first: bool = True) -> None:
        # RFC 9438 4.8: as a loss, then cwnd = loss window
        if first:
            self._reduce()
        self.epoch = None
        self._cwnd = float(self.mss)
        self.in_recovery = False
        # `cubictcp_state(TCP_CA_Loss)`: slow start again, HyStart watching again
        self.hystart_found, self.round_end = False, None


def make_congestion(name: str, mss: int) -> CongestionControl:
    """The congestion controller called `name` ("cubic" or "reno")."""
    match name.lower():
        case "cubic":
            return Cubic(mss)
        case "reno" | "newreno":
            return Reno(mss)
        case _:
            raise ValueError(f"unknown congestion control {name!r}")
