"""Packet-trace tests for MPTCP, in smoltcp's `send!` / `recv!` / `recv_nothing!` style.

The test plays the Linux peer by hand against ONE of our `Stack`s on a virtual clock:
it builds each TCP/IPv4 segment the peer sends (flags, sequence and ack numbers,
window, payload, MPTCP suboptions as `stack.wire.mptcp` values), feeds it with
`Stack.feed`, and reads back, one at a time, what the stack sends, decoded into a
`Seg` (flags, relative seq/ack, payload, the MPTCP suboptions, the other TCP options).
Only the stack's outer surface is used (`feed`, `poll_transmit`, `poll_timeout`,
`handle_timeout`, `poll_event`, `all_counters`, the path-manager calls and
`conn.msk.send/close/recv`), so the internals can change under these tests; the
derived values (tokens, IDSNs, HMACs, DSS checksums) come from `stack.mptcp.crypto`.

Conventions:
- Sequence and ack numbers are *relative*, as RFC 8684's subflow sequence numbers are:
  the SYN is 0 and the first payload byte 1, on each side of each subflow. `Sf` keeps
  both ISNs and converts at the wire.
- Data sequence numbers: `t.our_dsn(off)` / `t.peer_dsn(off)` is the DSN of data byte
  `off` (0 = the first) of our stack / of the peer (IDSN + 1 + off, modulo 2**64).
- `t.send(...)` defaults its ack to everything the stack has sent on that subflow and
  its seq to the peer's next byte; `t.recv(...)` checks only the fields it is given,
  except the MPTCP suboptions, which are always compared exactly (order included), so
  a suboption that appears or vanishes fails the test.
- The clock only moves when the test says: `t.advance(dt)` / `t.at(time)` fire every
  deadline on the way (as the shell's timer would, at the deadline itself);
  `t.fire()` moves to the next deadline only and returns it; `t.deadline()` is
  `stack.poll_timeout()`.

Example (our stack as the server, the peer a Linux client)::

    t = Trace.server(our_key=K1, peer_key=K2)            # MP_CAPABLE handshake done
    t.send(t.sf, payload=b"hello", mptcp=[t.map(b"hello")])  # data with a DSS mapping
    t.advance(0.04)                                        # our delayed ACK timer
    t.recv(t.sf, flags=ACK, seq=1, ack=6, payload_len=0,
           mptcp=[Dss(data_ack=t.peer_dsn(5), data_ack64=True)])
    t.recv_nothing()
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stack.host import Accepted, Connection, ConnEvent, Stack, StackConfig, ip
from stack.mptcp import crypto
from stack.mptcp.connection import MptcpConfig
from stack.tcp.engine import TcpConfig
from stack.wire import ipv4, tcp
from stack.wire import mptcp as wm
from stack.wire.tcp import ACK, FIN, RST, SYN

M32 = 0xFFFFFFFF
M64 = (1 << 64) - 1

# The topology's addresses (README): our stack 10.0.i.2, the Linux peer 10.0.i.1.
OUR_ADDRS = [ip(f"10.0.{i}.2") for i in range(1, 11)]
PEER_ADDR, PEER_ADDR2 = ip("10.0.1.1"), ip("10.0.2.1")
OUR_ADDR, OUR_ADDR2 = OUR_ADDRS[0], OUR_ADDRS[1]
SERVER_PORT = 5000
PEER_PORT = 40000

HMAC_SHA256 = wm.MPC_FLAG_H

# What the peer's SYN carries besides MPTCP, as Linux sends it (MSS, SACK_PERM, TS,
# NOP, WS): a window scale of 7 and a 1460-byte MSS.
PEER_WSCALE = 7


@dataclass
class Sf:
    """One subflow as the peer sees it: addresses, both ISNs, the peer's next sequence
    number and what it has seen of ours (both relative: SYN = 0), the timestamp to
    echo, and the MP_JOIN values of a join."""

    peer: tuple[bytes, int]
    us: tuple[bytes, int]
    peer_iss: int
    our_iss: int | None = None  # learnt from our SYN or SYN/ACK
    snd_nxt: int = 0       # the peer's next sequence number (relative)
    rcv_nxt: int = 0       # the end of what our stack sent here (relative)
    ts: bool = True        # timestamps negotiated (the peer's SYN offered them)
    sack: bool = True      # the peer's SYN offered SACK
    ts_recent: int = 0     # the last TSval our stack sent, echoed by the peer
    addr_id: int = 0       # the peer's address id of this subflow
    peer_nonce: int = 0    # MP_JOIN: the peer's random number
    our_nonce: int = 0     # MP_JOIN: ours, read off the wire
    our_addr_id: int = 0   # MP_JOIN: our address id, read off the wire

    def __repr__(self) -> str:
        (pa, pp), (ua, up) = self.peer, self.us
        return f"<Sf peer {_ntoa(pa)}:{pp} us {_ntoa(ua)}:{up}>"


@dataclass
class Seg:
    """A segment our stack sent, decoded: seq relative to our ISN, ack relative to the
    peer's, `mptcp` every MPTCP suboption in order, `options` the other TCP options
    (no NOP/EOL padding), `sack` the SACK blocks relative to the peer's ISN, `time`
    the virtual time it left."""

    src: tuple[bytes, int]
    dst: tuple[bytes, int]
    flags: int
    seq: int
    ack: int
    window: int
    payload: bytes
    mptcp: list[wm.MptcpOption]
    options: list[tcp.TcpOption]
    sack: tuple[tuple[int, int], ...]
    time: float
    options_len: int  # bytes of TCP options, padding included

    def describe(self) -> str:
        flags = tcp.TcpHeader(0, 0, 0, 0, self.flags, 0).describe()
        opts = "; ".join(wm.describe(o) for o in self.mptcp) or "-"
        return (f"{_ntoa(self.src[0])}:{self.src[1]} > {_ntoa(self.dst[0])}:{self.dst[1]}"
                f" [{flags}] seq {self.seq} ack {self.ack} win {self.window}"
                f" len {len(self.payload)} sack {list(self.sack)} at {self.time}"
                f" mptcp: {opts}")


@dataclass
class _Randbytes:
    """The stack's CSPRNG stand-in: the keys the test chose, in order, for its 8-byte
    draws (MPTCP keys); everything else from a seeded generator."""

    keys: list[int]
    rng: random.Random

    def __call__(self, n: int) -> bytes:
        if n == 8 and self.keys:
            return self.keys.pop(0).to_bytes(8, "big")
        return self.rng.randbytes(n)


class Trace:
    """One of our stacks, driven packet by packet (see the module docstring)."""

    def __init__(self, *, our_key: int, peer_key: int, csum: bool = False,
                 mptcp: MptcpConfig | None = None, tcp_config: TcpConfig | None = None,
                 addrs: Sequence[bytes] = OUR_ADDRS[:3], now: float = 1.0,
                 seed: int = 1) -> None:
        # `csum`: the peer asks for DSS checksums (and, without `mptcp`, so do we)
        cfg = mptcp or MptcpConfig(checksum=csum)
        self.stack = Stack(list(addrs), rng=random.Random(seed),
                           config=StackConfig(tcp=tcp_config or TcpConfig(), mptcp=cfg),
                           randbytes=_Randbytes([our_key], random.Random(seed + 1)))
        self.now = now
        self.our_key, self.peer_key = our_key, peer_key
        self.our_token, self.our_idsn = crypto.key_token_idsn(our_key)
        self.peer_token, self.peer_idsn = crypto.key_token_idsn(peer_key)
        self.csum = csum
        self.conn: Connection | None = None
        self.sf: Sf = Sf((PEER_ADDR, PEER_PORT), (OUR_ADDR, SERVER_PORT), 0)
        self.subflows: list[Sf] = []
        self.outbox: deque[tuple[float, bytes]] = deque()  # (time, packet)
        self.events: list[object] = []
        self.our_data_end = 0   # data offset after the last byte our stack mapped
        self.peer_data_nxt = 0  # the peer's next data offset (for `map`)

    # ---- the MP_CAPABLE handshake, both roles ----------------------------------------
    @classmethod
    def server(cls, *, our_key: int, peer_key: int, csum: bool = False,
               ts: bool = True, peer_iss: int = 1_000_000, rtt: float = 0.0,
               **kw: object) -> Trace:
        """Our stack listens on SERVER_PORT; the peer, a Linux client at
        10.0.1.1:40000, connects (SYN with MP_CAPABLE, the A flag when `csum`), our
        SYN/ACK must carry our key, and its third ACK carries both keys, `rtt`
        seconds later (our first RTT sample): the connection is fully established on
        our side (RFC 8684 3.1)."""
        t = cls(our_key=our_key, peer_key=peer_key, csum=csum, **kw)  # type: ignore[arg-type]
        t.stack.listen(SERVER_PORT)
        flags = t.mpc_flags()
        sf = t.sf = Sf((PEER_ADDR, PEER_PORT), (OUR_ADDR, SERVER_PORT), peer_iss, ts=ts)
        t.subflows.append(sf)
        t.send(sf, flags=SYN, ack=0, mptcp=[wm.MpCapable(1, flags)])
        t.recv(sf, flags=SYN | ACK, seq=0, ack=1,
               mptcp=[wm.MpCapable(1, flags, sender_key=our_key)])
        if rtt:
            t.advance(rtt)
        t.send(sf, flags=ACK, mptcp=[wm.MpCapable(1, flags, peer_key, our_key)])
        t.recv_nothing()
        accepted = [e for e in t.events if isinstance(e, Accepted)]
        assert len(accepted) == 1, t.events
        t.conn = accepted[0].conn
        return t

    @classmethod
    def client(cls, *, our_key: int, peer_key: int, csum: bool = False,
               ts: bool = True, peer_iss: int = 2_000_000, fully_established: bool = True,
               **kw: object) -> Trace:
        """Our stack connects to the peer, a Linux server at 10.0.1.1:5000: our SYN
        (MP_CAPABLE, no key), the peer's SYN/ACK with its key, our third ACK with both
        keys. With `fully_established` the peer then sends a pure ACK with a DSS data
        ACK, which makes our side fully established (RFC 8684 3.1: the first DSS from
        the server confirms it got our keys)."""
        t = cls(our_key=our_key, peer_key=peer_key, csum=csum, **kw)  # type: ignore[arg-type]
        t.conn = t.stack.connect(PEER_ADDR, SERVER_PORT, t.now)
        t._poll()
        src, _ = t._head()
        sf = t.sf = Sf((PEER_ADDR, SERVER_PORT), src, peer_iss, ts=ts)
        t.subflows.append(sf)
        flags = t.mpc_flags()
        t.recv(sf, flags=SYN, seq=0, ack=0, mptcp=[wm.MpCapable(1, flags)])
        t.send(sf, flags=SYN | ACK, ack=1,
               mptcp=[wm.MpCapable(1, flags, sender_key=peer_key)])
        t.recv(sf, flags=ACK, seq=1, ack=1, payload_len=0,
               mptcp=[wm.MpCapable(1, flags, our_key, peer_key)])
        if fully_established:
            t.send(sf, mptcp=[t.data_ack()])
            t.recv_nothing()
        return t

    def mpc_flags(self) -> int:
        return HMAC_SHA256 | (wm.MPC_FLAG_A if self.csum else 0)

    # ---- MP_JOIN ------------------------------------------------------------------------
    def join(self, *, peer: tuple[bytes, int] = (PEER_ADDR2, PEER_PORT + 1),
             us: tuple[bytes, int] = (OUR_ADDR, SERVER_PORT), addr_id: int = 1,
             backup: bool = False, nonce: int = 0x0BADCAFE, peer_iss: int = 3_000_000,
             our_addr_id: int = 0, our_backup: bool = False, rtt: float = 0.0) -> Sf:
        """The peer opens a join to our listening stack (RFC 8684 3.2): SYN with
        MP_JOIN (our token, its nonce); our SYN/ACK's truncated HMAC is checked against
        HMAC(our key || peer key, our nonce || peer nonce); the third ACK carries the
        peer's HMAC, `rtt` seconds after the SYN/ACK (our RTT sample). Whatever our
        stack sends next (RFC 8684's fourth ACK) is left for the test to `recv`."""
        sf = Sf(peer, us, peer_iss, ts=self.sf.ts, addr_id=addr_id, peer_nonce=nonce)
        self.subflows.append(sf)
        self.send(sf, flags=SYN, ack=0,
                  mptcp=[wm.MpJoinSyn(backup, addr_id, self.our_token, nonce)])
        synack = self.take(sf)
        assert synack.flags == SYN | ACK and synack.ack == 1, synack.describe()
        (mpj,) = synack.mptcp
        assert isinstance(mpj, wm.MpJoinSynAck), synack.describe()
        sf.our_nonce, sf.our_addr_id = mpj.nonce, mpj.addr_id
        assert mpj == wm.MpJoinSynAck(our_backup, our_addr_id, crypto.join_synack_hmac(
            self.our_key, self.peer_key, mpj.nonce, nonce), mpj.nonce), synack.describe()
        if rtt:
            self.advance(rtt)
        self.send(sf, mptcp=[wm.MpJoinAck(crypto.join_ack_hmac(
            self.peer_key, self.our_key, nonce, mpj.nonce))])
        return sf

    def accept_join(self, *, peer: tuple[bytes, int] = (PEER_ADDR2, SERVER_PORT),
                    addr_id: int = 1, backup: bool = False, nonce: int = 0x5EED5EED,
                    peer_iss: int = 4_000_000, our_addr_id: int = 1,
                    our_backup: bool = False) -> Sf:
        """Our stack opened a join (the next segment out is its MP_JOIN SYN, naming the
        peer's token): the peer answers with its truncated HMAC, checks the HMAC of our
        third ACK, and sends the fourth ACK (RFC 8684 3.2)."""
        src, dst = self._head()
        assert dst == peer, f"our next segment goes to {dst}, not {peer}"
        sf = Sf(peer, src, peer_iss, ts=self.sf.ts, addr_id=addr_id, peer_nonce=nonce)
        self.subflows.append(sf)
        syn = self.take(sf)
        assert syn.flags == SYN, syn.describe()
        (mpj,) = syn.mptcp
        assert isinstance(mpj, wm.MpJoinSyn), syn.describe()
        assert mpj == wm.MpJoinSyn(our_backup, our_addr_id, self.peer_token, mpj.nonce), \
            syn.describe()
        sf.our_nonce, sf.our_addr_id = mpj.nonce, mpj.addr_id
        self.send(sf, flags=SYN | ACK, ack=1, mptcp=[wm.MpJoinSynAck(
            backup, addr_id, crypto.join_synack_hmac(self.peer_key, self.our_key, nonce,
                                                     mpj.nonce), nonce)])
        self.recv(sf, flags=ACK, seq=1, ack=1, payload_len=0, mptcp=[wm.MpJoinAck(
            crypto.join_ack_hmac(self.our_key, self.peer_key, mpj.nonce, nonce))])
        self.send(sf, mptcp=[self.data_ack()])
        return sf

    # ---- data sequence numbers ------------------------------------------------------------
    def our_dsn(self, off: int) -> int:
        """The DSN of our stack's data byte `off` (0: the first; IDSN + 1 + off)."""
        return (self.our_idsn + 1 + off) & M64

    def peer_dsn(self, off: int) -> int:
        return (self.peer_idsn + 1 + off) & M64

    def data_ack(self, off: int | None = None) -> wm.Dss:
        """A DSS with only the peer's 64-bit data ACK: for our data up to `off`
        (default: all our stack has mapped so far)."""
        return wm.Dss(data_ack=self.our_dsn(self.our_data_end if off is None else off),
                      data_ack64=True)

    def our_data_ack(self, off: int | None = None) -> wm.Dss:
        """The DSS our stack should send on a pure ACK: its data ACK for the peer's
        data up to `off` (default: all the peer sent)."""
        return wm.Dss(data_ack=self.peer_dsn(self.peer_data_nxt if off is None else off),
                      data_ack64=True)

    def map(self, payload: bytes, *, sf: Sf | None = None, off: int | None = None,
            ssn: int | None = None, data_ack: int | None = None,
            data_fin: bool = False) -> wm.Dss:
        """A DSS mapping the peer would send for `payload` as the next segment of `sf`
        (data offset `off`, default the peer's next), with its data ACK (default: all
        of our data) and, when checksums are on, the DSS checksum. Advances the peer's
        data offset."""
        sf = sf or self.sf
        off = self.peer_data_nxt if off is None else off
        ssn = sf.snd_nxt if ssn is None else ssn
        length = len(payload) + (1 if data_fin else 0)
        dsn = self.peer_dsn(off)
        csum = crypto.dss_checksum(dsn, ssn, length, payload) if self.csum else None
        self.peer_data_nxt = max(self.peer_data_nxt, off + len(payload))
        return wm.Dss(data_ack=self.our_dsn(self.our_data_end if data_ack is None
                                            else data_ack), data_ack64=True,
                      dsn=dsn, dsn64=True, ssn=ssn, data_len=length, checksum=csum,
                      data_fin=data_fin)

    # ---- send! --------------------------------------------------------------------------
    def send(self, sf: Sf, *, flags: int = ACK, seq: int | None = None,
             ack: int | None = None, window: int = 0xFFFF, payload: bytes = b"",
             mptcp: Iterable[wm.MptcpOption] = (),
             sack: Sequence[tuple[int, int]] = (), ts: bool | None = None,
             extra_nops: int = 0) -> None:
        """The peer sends one segment on `sf` (seq/ack relative; SACK blocks relative
        to our ISN). Options in Linux's order: timestamps (when negotiated), the MPTCP
        suboptions (each NOP-padded to 4 bytes), SACK; a SYN carries MSS, SACK_PERM,
        TS, NOP, WS before MPTCP instead."""
        seq = sf.snd_nxt if seq is None else seq
        ack = sf.rcv_nxt if ack is None else ack
        use_ts = sf.ts if ts is None else ts
        tsval = (int(self.now * 1000) + 7_000) & M32
        opts: list[tcp.TcpOption] = []
        if flags & SYN:
            opts.append(tcp.Mss(1460))
            if use_ts:
                opts += [tcp.SackPermitted()] if sf.sack else [tcp.NOP, tcp.NOP]
                opts.append(tcp.Timestamps(tsval, sf.ts_recent if flags & ACK else 0))
            elif sf.sack:
                opts += [tcp.NOP, tcp.NOP, tcp.SackPermitted()]
            opts += [tcp.NOP, tcp.WindowScale(PEER_WSCALE)]
        elif use_ts:
            opts += [tcp.NOP, tcp.NOP, tcp.Timestamps(tsval, sf.ts_recent)]
        for o in mptcp:
            raw = wm.to_tcp_option(o)
            opts.append(raw)
            opts += [tcp.NOP] * (-(len(raw.data) + 2) % 4)
        opts += [tcp.NOP] * extra_nops  # where a middlebox removed an option
        iss = sf.our_iss or 0
        if sack:
            opts += [tcp.NOP, tcp.NOP, tcp.Sack(tuple(
                ((iss + left) & M32, (iss + right) & M32) for left, right in sack))]
        hdr = tcp.TcpHeader(sf.peer[1], sf.us[1], (sf.peer_iss + seq) & M32,
                            (iss + ack) & M32 if flags & ACK else 0, flags,
                            window, opts)
        body = tcp.emit(hdr, payload, sf.peer[0], sf.us[0])
        iph = ipv4.IPv4Header(sf.peer[0], sf.us[0], ipv4.PROTO_TCP)
        self.stack.feed(ipv4.emit(iph, len(body)) + body, self.now)
        end = seq + len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        if not flags & RST and end - sf.snd_nxt > 0:
            sf.snd_nxt = end
        self._poll()

    # ---- recv! / recv_nothing! ----------------------------------------------------------
    def take(self, sf: Sf | None = None) -> Seg:
        """The next segment our stack sent (on `sf`, if given), unchecked."""
        self._poll()
        assert self.outbox, "expected a segment, the stack sent nothing"
        seg = self._decode(*self.outbox.popleft())
        if sf is not None:
            assert (seg.src, seg.dst) == (sf.us, sf.peer), \
                f"expected a segment on {sf}, got {seg.describe()}"
        sf = next((s for s in self.subflows if (s.us, s.peer) == (seg.src, seg.dst)), None)
        if sf is not None:
            end = seg.seq + len(seg.payload) + (1 if seg.flags & (SYN | FIN) else 0)
            if not seg.flags & RST and end - sf.rcv_nxt > 0:
                sf.rcv_nxt = end
            ts = next((o for o in seg.options if isinstance(o, tcp.Timestamps)), None)
            if ts is not None:
                sf.ts_recent = ts.tsval
        for o in seg.mptcp:
            if isinstance(o, wm.Dss) and o.dsn is not None and o.data_len:
                off = (o.dsn - self.our_idsn - 1) & M64
                self.our_data_end = max(self.our_data_end,
                                        off + o.data_len - (1 if o.data_fin else 0))
            elif isinstance(o, wm.MpCapable) and o.data_len:
                self.our_data_end = max(self.our_data_end, o.data_len)
        return seg

    def recv(self, sf: Sf, *, mptcp: Sequence[wm.MptcpOption], flags: int | None = ACK,
             seq: int | None = None, ack: int | None = None, payload: bytes | None = None,
             payload_len: int | None = None, window: int | None = None,
             sack: Sequence[tuple[int, int]] | None = None,
             time: float | None = None) -> Seg:
        """Expect the next segment our stack sent to be on `sf` with exactly these
        MPTCP suboptions and, for each other argument given, that value (`flags=None`:
        any flags; `sack=()`: no SACK option; `time`: sent at that virtual time)."""
        seg = self.take(sf)
        want = {"flags": flags, "seq": seq, "ack": ack, "payload": payload,
                "payload_len": payload_len, "window": window,
                "sack": None if sack is None else tuple(sack), "time": time}
        got = {"flags": seg.flags, "seq": seg.seq, "ack": seg.ack, "payload": seg.payload,
               "payload_len": len(seg.payload), "window": seg.window, "sack": seg.sack,
               "time": seg.time}
        bad = [f"{k}: expected {v!r}, got {got[k]!r}" for k, v in want.items()
               if v is not None and got[k] != v]
        if list(seg.mptcp) != list(mptcp):
            bad.append("mptcp: expected " + ("; ".join(wm.describe(o) for o in mptcp) or "-")
                       + "\n        got " + ("; ".join(wm.describe(o) for o in seg.mptcp)
                                             or "-")
                       + f"\n   values: {seg.mptcp!r}")
        assert not bad, f"{seg.describe()}\n  " + "\n  ".join(bad)
        return seg

    def recv_nothing(self) -> None:
        self._poll()
        assert not self.outbox, "expected nothing, the stack sent:\n  " + \
            "\n  ".join(self._decode(*p).describe() for p in self.outbox)

    # ---- the clock ------------------------------------------------------------------------
    def deadline(self) -> float | None:
        return self.stack.poll_timeout()

    def at(self, time: float) -> None:
        """Move the clock to `time`, firing every deadline up to it at its own time."""
        assert time >= self.now, f"the clock does not go back ({time} < {self.now})"
        for _ in range(100_000):
            d = self.stack.poll_timeout()
            if d is None or d > time:
                break
            self.now = max(self.now, d)
            self.stack.handle_timeout(self.now)
            self._poll()
        else:  # pragma: no cover - a deadline that does not move on
            raise AssertionError(f"a deadline keeps firing at {self.now}")
        self.now = time
        self._poll()

    def advance(self, seconds: float) -> None:
        self.at(self.now + seconds)

    def fire(self) -> float:
        """Move to the next deadline, fire it, and return its time."""
        d = self.stack.poll_timeout()
        assert d is not None, "no deadline armed"
        self.at(d)
        return d

    # ---- what else the stack says -----------------------------------------------------
    def counters(self) -> dict[str, int]:
        return {str(k): v for k, v in self.stack.all_counters().items()}

    def counter(self, name: str) -> int:
        return self.counters().get(name, 0)

    def mptcp_events(self) -> list[str]:
        """The names of the MPTCP events so far (CREATED, ANNOUNCED, ...), then forgotten
        (the engine's events stay for `conn_events`)."""
        names = [event_name(e.event) for e in self.events if isinstance(e, ConnEvent)]
        self.events = [e for e in self.events
                       if not (isinstance(e, ConnEvent) and event_name(e.event)
                               and event_name(e.event) != "DIAGNOSIS")]
        return [n for n in names if n and n != "DIAGNOSIS"]

    def findings(self) -> list[str]:
        """The codes of the diagnosis findings so far (DIAGNOSIS events), then forgotten."""
        codes = [str(e.event.finding.code) for e in self.events
                 if isinstance(e, ConnEvent) and event_name(e.event) == "DIAGNOSIS"]
        self.events = [e for e in self.events
                       if not (isinstance(e, ConnEvent) and event_name(e.event) == "DIAGNOSIS")]
        return codes

    def conn_events(self) -> list[object]:
        """Every connection event so far (engine and MPTCP), then forgotten."""
        evs: list[object] = [e.event for e in self.events if isinstance(e, ConnEvent)]
        self.events = [e for e in self.events if not isinstance(e, ConnEvent)]
        return evs

    @property
    def msk(self):  # type: ignore[no-untyped-def]
        """The connection's public MPTCP socket (send / recv / close)."""
        assert self.conn is not None and self.conn.msk is not None
        return self.conn.msk

    @property
    def connection(self) -> Connection:
        assert self.conn is not None, "no connection yet"
        return self.conn

    # ---- the path manager's calls (`ip mptcp endpoint ...`), each followed by a poll ---
    def announce(self, addr: bytes) -> None:
        self.stack.announce(self.connection, addr)
        self._poll()

    def remove_addr(self, addr: bytes) -> int:
        n = self.stack.remove_addr(self.connection, addr)
        self._poll()
        return n

    def set_backup(self, addr: bytes, backup: bool) -> int:
        n = self.stack.set_backup(self.connection, addr, backup)
        self._poll()
        return n

    def app_send(self, data: bytes) -> int:
        """The application writes `data` (msk.send), and the stack is polled."""
        n = int(self.msk.send(data))
        self.stack.touch(self.connection)
        self._poll()
        return n

    def app_close(self) -> None:
        """The application closes its side (msk.close: DATA_FIN after the data)."""
        self.msk.close()
        self.stack.touch(self.connection)
        self._poll()

    # ---- internals ------------------------------------------------------------------------
    def _head(self) -> tuple[tuple[bytes, int], tuple[bytes, int]]:
        """(source, destination) of the next segment out, not taken."""
        self._poll()
        assert self.outbox, "expected a segment, the stack sent nothing"
        pkt = self.outbox[0][1]
        iph, _ = ipv4.parse(pkt)
        hdr, _ = tcp.parse(pkt[iph.header_len:])
        return (iph.src, hdr.src_port), (iph.dst, hdr.dst_port)

    def _poll(self) -> None:
        for d in self.stack.poll_transmit(self.now):
            self.outbox.append((self.now, d.data))
        while (ev := self.stack.poll_event()) is not None:
            self.events.append(ev)

    def _decode(self, time: float, pkt: bytes) -> Seg:
        iph, end = ipv4.parse(pkt)
        body = pkt[iph.header_len:end]
        assert tcp.verify_checksum_v4(iph.src, iph.dst, body), "bad TCP checksum"
        hdr, doff = tcp.parse(body)
        src, dst = (iph.src, hdr.src_port), (iph.dst, hdr.dst_port)
        sf = next((s for s in self.subflows if (s.us, s.peer) == (src, dst)), None)
        if sf is not None and sf.our_iss is None and hdr.flags & SYN:
            sf.our_iss = hdr.seq
        our_iss = (sf.our_iss or 0) if sf is not None else 0
        peer_iss = sf.peer_iss if sf is not None else 0
        mptcp: list[wm.MptcpOption] = []
        other: list[tcp.TcpOption] = []
        sack: tuple[tuple[int, int], ...] = ()
        for o in hdr.options:
            if isinstance(o, tcp.UnknownOption) and o.kind == tcp.OPT_MPTCP:
                mptcp.append(wm.parse_tcp_option(o))
            elif isinstance(o, tcp.Sack):
                sack = tuple(((left - peer_iss) & M32, (right - peer_iss) & M32)
                             for left, right in o.blocks)
            elif not isinstance(o, (tcp.Nop, tcp.Eol)):
                other.append(o)
        return Seg(src, dst, hdr.flags, (hdr.seq - our_iss) & M32,
                   (hdr.ack - peer_iss) & M32 if hdr.flags & ACK else 0, hdr.window,
                   bytes(body[doff:]), mptcp, other, sack, time, doff - tcp.HEADER_LEN)


def event_name(ev: object) -> str | None:
    """An MPTCP event's name (CREATED, ...); None for the engine's events."""
    name = getattr(ev, "name", None)
    return None if name is None else str(name)


def _ntoa(addr: bytes) -> str:
    return ".".join(str(b) for b in addr)
