"""Application drivers for simulations: move bytes through `Connection.sock` (an MPTCP
connection or a TCP engine), both ways, then close, and report what arrived."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from stack.host import Accepted, Connection, Stack, StackConfig, ip
from stack.mptcp.connection import MptcpConfig, MptcpEvent
from stack.tcp.engine import Closed
from tests.sim.net import LinkProfile, SimNet

A, B = ip("10.0.1.2"), ip("10.0.1.1")


def mptcp_pair(seed: int = 1, profile: LinkProfile | None = None, *, csum_a: bool = False,
               csum_b: bool = False, mptcp_a: bool = True, mptcp_b: bool = True,
               gso_a: int = 1, offload_a: bool = False) -> tuple[Stack, Stack, SimNet]:
    from stack.tcp.engine import TcpConfig
    ca = StackConfig(tcp=TcpConfig(gso_segments=gso_a), tx_csum_offload=offload_a,
                     split_payload=offload_a,  # as the TUN shell: payloads apart
                     mptcp=MptcpConfig(checksum=csum_a) if mptcp_a else None)
    cb = StackConfig(mptcp=MptcpConfig(checksum=csum_b) if mptcp_b else None)
    a = Stack([A], rng=random.Random(seed), config=ca)
    b = Stack([B], rng=random.Random(seed + 1), config=cb)
    return a, b, SimNet([a, b], seed=seed, profile=profile)


def multipath_pair(seed: int = 1, profile: LinkProfile | None = None, paths: int = 2,
                   cfg_a: MptcpConfig | None = None, cfg_b: MptcpConfig | None = None,
                   ) -> tuple[Stack, Stack, SimNet]:
    """Two MPTCP stacks with one address per path each, as the topology has them: a
    (the client, ours) 10.0.i.2 and b 10.0.i.1."""
    a = Stack([ip(f"10.0.{i}.2") for i in range(1, paths + 1)], rng=random.Random(seed),
              config=StackConfig(mptcp=cfg_a or MptcpConfig()))
    b = Stack([ip(f"10.0.{i}.1") for i in range(1, paths + 1)], rng=random.Random(seed + 1),
              config=StackConfig(mptcp=cfg_b or MptcpConfig()))
    return a, b, SimNet([a, b], seed=seed, profile=profile)


@dataclass
class Side:
    conn: Connection | None = None
    data: bytes = b""
    sent: int = 0
    got: bytearray = field(default_factory=bytearray)
    closed: bool = False
    closing: bool = False
    error: str | None = "not closed"
    events: list[object] = field(default_factory=list)

    def mptcp_events(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, MptcpEvent)]


def bulk(a: Stack, b: Stack, net: SimNet, data_a: bytes, data_b: bytes = b"",
         port: int = 5000, max_time: float = 600.0,
         after_handshake: LinkProfile | None = None,
         join_from: list[tuple[bytes, bool]] | None = None,
         announce: list[bytes] | None = None,
         on_step: Callable[[Side, Side], None] | None = None,
         server: bytes = B, ipv6_socket: bool | None = None) -> tuple[Side, Side]:
    """a connects to b:port; each sends its data then closes once the peer's stream
    ended too. Returns both sides (bytes received, close error, events).
    `after_handshake`: the link profile from the moment the client's MPTCP connection
    is fully established (or plain TCP is up) on. `join_from`: the client's MPTCP
    joins (address, backup); `announce`: the server's ADD_ADDRs. `on_step(client,
    server)`: called at every step. `ipv6_socket`: the client's socket family
    (`Stack.connect`)."""
    b.listen(port, announce=announce)
    sa, sb = Side(data=data_a), Side(data=data_b)
    sa.conn = a.connect(server, port, net.now, join_from=join_from, ipv6_socket=ipv6_socket)

    def drive(stack: Stack, side: Side) -> None:
        while (ev := stack.poll_event()) is not None:
            if isinstance(ev, Accepted):
                side.conn = ev.conn
                continue
            side.events.append(ev.event)
            if isinstance(ev.event, Closed):
                side.closed, side.error = True, ev.event.tag
        conn = side.conn
        if conn is None:
            return
        sock = conn.sock
        side.got += sock.recv()  # what arrived, even with the Closed event
        if side.closed:
            return
        if side.sent < len(side.data):
            side.sent += sock.send(memoryview(side.data)[side.sent:])
        elif not side.closing:
            sock.close()
            side.closing = True
        stack.touch(conn)

    def done() -> bool:
        nonlocal after_handshake
        drive(a, sa)
        drive(b, sb)
        if on_step is not None:
            on_step(sa, sb)
        if after_handshake is not None and sa.conn is not None:
            msk = sa.conn.msk
            if msk is None or msk.fully_established or msk.fallback:
                net.profile, after_handshake = after_handshake, None
        return sa.closed and sb.closed

    net.run_until(done, max_time)
    return sa, sb
