"""The path manager: which addresses a connection announces, which subflows it opens,
and what it does when the peer announces or withdraws addresses (RFC 8684 3.4).

Mirrors the kernel's split:
- `pm.c`, the hooks the protocol calls: `fully_established`, `add_addr_received`,
  `add_addr_echoed`, `rm_addr_received`, `prio_received`, `subflow_closed`; each says
  which kernel function it mirrors;
- `pm_kernel.c`, the in-kernel policy: what the hooks decide (open the `subflow`
  endpoints' joins and announce the `signal` ones once fully established; join an
  announced address while `add_addr_accepted_max` allows, from every `fullmesh`
  endpoint or else from the address routed towards it). It is all in `_policy_*`;
- `pm_userspace.c`, the commands (`announce`, `remove_addr`, `subflow_create`,
  `subflow_destroy`, `set_backup`): thin calls that change the same state.

The path manager owns the signalling state: ADD_ADDR to send, sent and not yet echoed
(with its retransmission deadline), echoes owed, REMOVE_ADDR ids to send, the peer's
addresses. The option writer asks it what is due (`signal_due`, `next_add_addr`,
`rm_addr_queue`) and the connection tells it what went out (`add_addr_written`,
`rm_addr_written`). Joins leave it as `JoinRequest` values; the host builds their TCP
engines (it owns ports and ISNs).

Two handshake facts steer it too: the peer's MP_CAPABLE C flag (no join to its initial
address and port: `remote_deny_join_id0`), and MP_CAPABLE SYN blackholes (the kernel's
ctrl.c: `mpc_syn` turns our SYN plain, consulting and teaching the host's memory).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import IntFlag
from typing import TYPE_CHECKING

from stack.addr import fmt, ntoa, unmap
from stack.diag import Code, PacketRef, Severity
from stack.mib import Mib
from stack.mptcp import crypto
from stack.mptcp.events import MptcpEventType
from stack.mptcp.subflow import Subflow
from stack.tcp.engine import State
from stack.wire import mptcp as wm

if TYPE_CHECKING:
    from stack.host import MpcBlackhole
    from stack.mptcp.connection import MptcpConnection

log = logging.getLogger(__name__)

Addr = bytes
# echoes waiting for a pure ACK; an ADD_ADDR beyond them is dropped (AddAddrDrop)
ECHO_QUEUE_MAX = 8
# announcements of one address before giving up (AddAddrTxDrop): the first and the
# kernel's ADD_ADDR_RETRANS_MAX (3) retransmissions
ADD_ADDR_TRIES = 4
_BLACKHOLE_HINT = ("something on the path drops SYNs carrying MPTCP options (TCP option "
                   "30) and passes plain ones: a firewall or middlebox rule")


class EndpointFlags(IntFlag):
    """`ip mptcp endpoint` flags, the kernel's MPTCP_PM_ADDR_FLAG_* values."""
    NONE = 0
    SIGNAL = 1 << 0    # announce it (ADD_ADDR)
    SUBFLOW = 1 << 1   # open a join from it
    BACKUP = 1 << 2    # subflows from it are backups (MP_JOIN B flag, MP_PRIO)
    FULLMESH = 1 << 3  # join every announced address from it


@dataclass(slots=True)
class Endpoint:
    """One of our addresses, as `ip mptcp endpoint show` lists it."""
    id: int
    addr: Addr
    port: int | None = None
    flags: EndpointFlags = EndpointFlags.NONE


class EndpointTable:
    """Our addresses with their ids and flags (the kernel's per-namespace endpoint
    list, `pm_kernel.c`). Ids are the addresses' order, the first one 0: the initial
    subflow's id, as the kernel numbers a connection's first address."""

    def __init__(self, addrs: list[Addr]) -> None:
        self._eps: dict[Addr, Endpoint] = {a: Endpoint(i, a) for i, a in enumerate(addrs)}

    def __contains__(self, addr: object) -> bool:
        return addr in self._eps

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self._eps.values())

    def id_of(self, addr: Addr) -> int:
        ep = self._eps.get(addr)
        return ep.id if ep is not None else 0

    def flags_of(self, addr: Addr) -> EndpointFlags:
        ep = self._eps.get(addr)
        return ep.flags if ep is not None else EndpointFlags.NONE

    def set_flag(self, addrs: list[Addr], flag: EndpointFlags) -> None:
        """Set `flag` on exactly `addrs` among our endpoints (clearing it elsewhere)."""
        for ep in self._eps.values():
            ep.flags = ep.flags | flag if ep.addr in addrs else ep.flags & ~flag

    def with_flag(self, flag: EndpointFlags) -> list[Addr]:
        return [ep.addr for ep in self._eps.values() if ep.flags & flag]

    def port_of(self, addr: Addr) -> int | None:
        """The port a `signal` endpoint announces (`ip mptcp endpoint add A signal port
        P`): its ADD_ADDR carries it, and joins arrive there; None: the connection's."""
        ep = self._eps.get(addr)
        return ep.port if ep is not None else None

    def set_port(self, addr: Addr, port: int | None) -> None:
        ep = self._eps.get(addr)
        if ep is not None:
            ep.port = port

    def ports(self) -> set[tuple[Addr, int]]:
        """The (address, port) pairs our port-based endpoints listen on: for joins only
        (the kernel's `mptcp_pm_nl_create_listen_socket`)."""
        return {(ep.addr, ep.port) for ep in self._eps.values() if ep.port}

    def source_for(self, remote: Addr) -> Addr:
        """The address a packet to `remote` leaves from: the one on its subnet (/24,
        or /64 for IPv6: the topology gives each path its own), else the first of the
        same family, else the first."""
        prefix = 3 if len(remote) == 4 else 8
        same = [a for a in self._eps if len(a) == len(remote)]
        for a in same:
            if a[:prefix] == remote[:prefix]:
                return a
        return same[0] if same else next(iter(self._eps))


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A join the path manager wants opened: from `local` to `remote`:`rport` (None:
    the connection's own remote address and port)."""
    local: Addr
    backup: bool
    remote: Addr | None = None
    rport: int | None = None


@dataclass(slots=True)
class _Sent:
    """An ADD_ADDR of ours on the wire and not yet echoed."""
    addr: Addr
    deadline: float
    tries: int


class PathManager:
    """One connection's path manager (the kernel's `struct mptcp_pm_data` and the
    functions around it)."""

    def __init__(self, msk: MptcpConnection, endpoints: EndpointTable) -> None:
        self.msk = msk
        self.endpoints = endpoints
        # what this connection does once fully established (the kernel's `subflow`
        # and `signal` endpoints; per connection here: connect --subflow, listen
        # --announce)
        self.subflow_addrs: list[tuple[Addr, bool]] = []
        self.signal_addrs: list[Addr] = []
        # ADD_ADDR (RFC 8684 3.4.1): ours to send, ours sent and not yet echoed, the
        # echoes we owe the peer
        self.add_addr_queue: list[tuple[int, Addr]] = []
        self.add_addr_sent: dict[int, _Sent] = {}
        # what we announced and have not removed, by id, with the port announced (the
        # kernel's `anno_list`): a join to a port of ours must be to one of these
        self.announced: dict[int, tuple[Addr, int | None]] = {}
        # for the diagnosis: the last ADD_ADDR packet of each id, the echoes seen
        self.add_addr_last: dict[int, PacketRef] = {}
        self.add_addr_echo_seen: dict[int, tuple[bytes, PacketRef]] = {}
        # MP_JOIN SYNs of this connection that reached an address of ours where nothing
        # listens (refused with RST): the first of each address
        self.joins_unheard: dict[Addr, PacketRef] = {}
        self.echo_queue: list[wm.AddAddr] = []
        self.rm_addr_queue: list[int] = []  # our ids to REMOVE_ADDR (RFC 8684 3.4.2)
        # the peer's addresses, by id, and those we accepted (joined)
        self.remote_addrs: dict[int, tuple[Addr, int | None]] = {}
        self.accepted_ids: set[int] = set()
        self.joins: list[JoinRequest] = []  # for the host to open
        # the family of "our socket" (Linux `mptcp_pm_addr_families_match`): an IPv4
        # one (a connect to an IPv4 address written as such) uses IPv4 addresses only;
        # an IPv6 one (our listeners, as a "::" socket; a connect to an IPv6 or
        # v4-mapped address) may mix families, each subflow's two ends of one family
        self.ipv6_socket = True
        # hook work done later, outside the segment being handled (the kernel's PM
        # worker, `mptcp_pm_worker`): the engine has finished with it by then
        self.work_pending = False
        # the peer's MP_CAPABLE C flag (RFC 8684 3.1; `msk->pm.remote_deny_join_id0`):
        # no join to its initial address and port; the segment that said so
        self.remote_deny_join_id0 = False
        self._mpc_backup_checked = False
        # `subflow` endpoints the peer's C flag left without a join, waiting for an
        # ADD_ADDR (the kernel's C-flag case)
        self._c_flag_waiting: list[tuple[Addr, bool]] = []
        self._deny_ref: PacketRef | None = None
        self._deny_on = ""
        # MP_CAPABLE SYN blackholes (the kernel's ctrl.c): the host's memory (an
        # active open's only), when our first SYN left, and while a plain SYN sent
        # after unanswered MP_CAPABLE ones waits for its answer (`subflow->mpc_drop`):
        # that SYN, its number, and what the finding will say
        self.blackhole: MpcBlackhole | None = None
        self._first_syn_at = 0.0
        self._mpc_drop: PacketRef | None = None
        self._mpc_drop_syn = 0
        self._mpc_drop_text = ""

    # ---- hooks (pm.c) -------------------------------------------------------------------
    def fully_established(self) -> None:
        """`mptcp_pm_fully_established`: schedules the in-kernel PM's work (`work`):
        create the `subflow` endpoints' joins and announce the `signal` ones
        (`mptcp_pm_create_subflow_or_signal_addr`)."""
        self.work_pending = True

    def work(self) -> None:
        """`mptcp_pm_worker`: the work the hooks scheduled."""
        self.work_pending = False
        if self._mpc_drop is not None:
            self._mpc_drop_answered()
        if self.msk.fallback:
            return
        initial = self.msk.master.engine.local_addr
        if not self._mpc_backup_checked and self.msk.fully_established:
            # the initial subflow's address is a backup endpoint (mptcp_join.sh "mpc
            # backup"): that subflow is a backup too, which an MP_PRIO tells the peer
            self._mpc_backup_checked = True
            if self._backup(initial) and not self.msk.master.backup:
                self.set_backup(initial, True)
        joins, self.subflow_addrs = self.subflow_addrs, []
        # the initial subflow already runs from its own address
        joins = [(addr, backup) for addr, backup in joins if addr != initial]
        if joins and self.remote_deny_join_id0:
            # `fill_remote_addresses_vec`: a `subflow` endpoint joins the peer's initial
            # address and port only, which its C flag forbids (a `fullmesh` one joins
            # the other subflows' remote addresses: there are none yet): no join now.
            # An ADD_ADDR arriving later still takes them (6.18's C-flag case handles a
            # late ADD_ADDR); if none does, `conclude` says why they were not made.
            self._c_flag_waiting = joins
            joins = []
        for addr, backup in joins:
            self.joins.append(JoinRequest(addr, backup or self._backup(addr)))
        signals, self.signal_addrs = self.signal_addrs, []
        for addr in signals:
            self.announce(self.local_id_of(addr), addr)

    def add_addr_received(self, a: wm.AddAddr) -> None:
        """`mptcp_pm_add_addr_received`: an announcement whose HMAC checked out. Echo it
        (the address as it came), remember the address (ANNOUNCED; a v4-mapped one as
        the IPv4 address it is), and let the policy decide whether to join."""
        msk = self.msk
        if len(self.echo_queue) >= ECHO_QUEUE_MAX:
            # a peer announcing faster than our ACKs can echo: dropped, not queued
            # without bound (Linux drops one that arrives while its PM still handles
            # the last: AddAddrDrop); unechoed, a real announcement comes again
            msk.counters[Mib.AddAddrDrop] += 1
            return
        msk.counters[Mib.AddAddr] += 1
        if a.port:
            msk.counters[Mib.PortAdd] += 1
        if a.version == 1:  # (RFC 6824's ADD_ADDR is never echoed)
            self.echo_queue.append(wm.AddAddr(a.addr_id, a.addr, a.port, None, True, 1))
            msk.signal_soon()
        a = replace(a, addr=unmap(a.addr))
        if self.remote_addrs.get(a.addr_id) == (a.addr, a.port):
            msk.counters[Mib.AddAddrRepeated] += 1  # our echo was late: echo again, no more
            return
        self.remote_addrs[a.addr_id] = (a.addr, a.port)
        text = ntoa(a.addr)
        msk.event(MptcpEventType.ANNOUNCED, f"{text}:{a.port or 0} id {a.addr_id}",
                  daddr=a.addr, remid=a.addr_id, port=a.port or 0)
        self._policy_add_addr(a)

    def add_addr_echoed(self, addr_id: int, port: int | None = None) -> None:
        """`mptcp_pm_add_addr_echoed`: the peer echoed our ADD_ADDR; stop repeating it.
        (Linux counts an echo with a port as PortAdd too.)"""
        if port:
            self.msk.counters[Mib.PortAdd] += 1
        sent = self.add_addr_sent.pop(addr_id, None)
        if sent is not None:
            self.msk.counters[Mib.EchoAdd] += 1
            if self.add_addr_queue:
                self.msk.signal_soon()  # the next announcement was waiting for this echo
            # kept for the diagnosis: an echoed address nobody joins (add-addr-ignored)
            self.add_addr_echo_seen[addr_id] = (sent.addr, self.msk.diag.packet_in(
                self.msk.now, self.msk.master.key))

    def rm_addr_received(self, ids: tuple[int, ...]) -> None:
        """`mptcp_pm_rm_addr_received` (`mptcp_pm_nl_rm_addr_received`): the peer
        withdrew addresses: close every subflow to them, forget them (an accepted
        ADD_ADDR frees its slot), one REMOVED event each."""
        msk = self.msk
        for addr_id in ids:
            msk.counters[Mib.RmAddr] += 1
            self.remote_addrs.pop(addr_id, None)
            self.accepted_ids.discard(addr_id)
            msk.remove_subflows(lambda sf, i=addr_id: sf.remote_id == i,  # type: ignore[misc]
                                f"the peer removed its address id {addr_id}")
            msk.event(MptcpEventType.REMOVED, f"id {addr_id}", remid=addr_id)

    def prio_received(self, sf: Subflow, backup: bool, v0_addr_id: int | None) -> None:
        """`mptcp_pm_mp_prio_received`: the peer wants the subflow it arrived on used
        as a backup (or no longer)."""
        self.msk.counters[Mib.MPPrioRx] += 1
        if v0_addr_id is not None:
            return  # v0 names an address id; we only speak v0's handshake
        sf.remote_backup = backup
        self.msk.sf_event(MptcpEventType.SF_PRIORITY, sf, "received MP_PRIO")

    # ---- the in-kernel policy (pm_kernel.c) ---------------------------------------------
    def _policy_add_addr(self, a: wm.AddAddr) -> None:
        """`mptcp_pm_nl_add_addr_received`: a client joins an announced address while
        `add_addr_accepted_max` allows, from each `fullmesh` endpoint, else from the
        address routed towards it (the kernel's `fill_local_addresses_vec`)."""
        msk = self.msk
        if not msk.client:
            return
        if self._c_flag_case(a):
            return
        if not self.families_match(a.addr):
            msk.finding(Code.ADD_ADDR_OTHER_FAMILY, Severity.INFO,
                        f"the peer announced {ntoa(a.addr)} (id {a.addr_id}) on a connection "
                        "whose socket is IPv4: not joined (Linux: 'IPv4 sockets do not use "
                        "IPv6 addresses')", packet="in",
                        hint="connect to the v4-mapped form (::ffff:A.B.C.D) for a "
                             "dual-stack connection that may add IPv6 subflows",
                        key=a.addr_id)
            return
        if len(self.accepted_ids) >= msk.config.add_addr_accepted_max:
            msk.counters[Mib.AddAddrNotAccepted] += 1
            return
        if not _unicast(a.addr):
            # Linux's connect() to it fails at once (`tcp_v4_connect`: ENETUNREACH for a
            # multicast or broadcast route): MPJoinSynTxConnectErr, no SYN, and the
            # address takes no place under add_addr_accepted (counted on success only)
            msk.counters[Mib.MPJoinSynTxConnectErr] += 1
            log.info("announced address %s is not unicast: not joined", ntoa(a.addr))
            return
        # `fill_local_addresses_vec` (6.18): the fullmesh endpoints of the announced
        # address's family; none (mptcp_join.sh "simult IPv4 and IPv6 subflows,
        # fullmesh 1x1"): the address routed towards it. (Kernels with
        # `mptcp_pm_get_endp_fullmesh_max` stop at the fullmesh ones: no join then.)
        locals_ = [e for e in self.endpoints.with_flag(EndpointFlags.FULLMESH)
                   if len(e) == len(a.addr)] or [self.endpoints.source_for(a.addr)]
        if len(locals_[0]) != len(a.addr):
            return  # no address of ours of that family
        self.accepted_ids.add(a.addr_id)
        for local in locals_:
            self.joins.append(JoinRequest(local, self._backup(local), a.addr,
                                          a.port or msk.master.engine.remote_port))

    def local_id_of(self, addr: Addr) -> int:
        """Our address id for `addr` on this connection (`mptcp_pm_get_local_id`): 0 for
        the initial subflow's address, else its endpoint's id; the endpoint that has 0
        in the table (our first address) takes the initial address's id instead, so that
        ids stay unique when the connection began on another address."""
        initial = self.msk.master.engine.local_addr
        if addr == initial:
            return 0
        i = self.endpoints.id_of(addr)
        return i or self.endpoints.id_of(initial)

    def join_without_listener(self, local: Addr, ref: PacketRef) -> None:
        self.joins_unheard.setdefault(local, ref)

    def families_match(self, remote: Addr) -> bool:
        """Whether our socket may use the peer's address `remote` (`ipv6_socket`)."""
        return self.ipv6_socket or len(remote) == 4

    def _c_flag_case(self, a: wm.AddAddr) -> bool:
        """The kernel's C-flag case (`mptcp_pm_add_addr_c_flag_case`, in
        `fill_local_addresses_vec`): a peer that forbids joins to its initial address
        and announces another one before our `subflow` endpoints were used (right after
        the handshake) gets that one ADD_ADDR accepted even when we accept none
        (`add_addr_accepted_max` 0), and joined from those endpoints. True: done."""
        msk = self.msk
        waiting = self.subflow_addrs or self._c_flag_waiting
        if not (self.remote_deny_join_id0 and a.addr_id and waiting
                and msk.config.add_addr_accepted_max == 0 and not self.accepted_ids):
            return False
        initial = msk.master.engine.local_addr
        joins = [(addr, backup) for addr, backup in waiting if addr != initial]
        if not joins:
            return False
        self.subflow_addrs, self._c_flag_waiting = [], []
        self.accepted_ids.add(a.addr_id)
        for addr, backup in joins:
            self.joins.append(JoinRequest(addr, backup or self._backup(addr), a.addr,
                                          a.port or msk.master.engine.remote_port))
        return True

    # ---- the peer's C flag (RFC 8684 3.1) ------------------------------------------------
    def deny_join_id0_received(self, segment: str) -> None:
        """The peer's MP_CAPABLE on `segment` (its "SYN/ACK", or its "SYN" when we
        listen: the segment being processed) carried the C flag: no join of ours may
        go to the peer's initial address and port (`remote_deny_join_id0`)."""
        msk = self.msk
        self.remote_deny_join_id0 = True
        # on a SYN the subflow has no engine yet: its 4-tuple is filled in later
        self._deny_ref = msk.diag.packet_in(msk.now, None)
        self._deny_on = segment

    def conclude(self) -> None:
        """The path manager's findings only the end shows: `subflow` endpoints the
        peer's C flag left without a join, no ADD_ADDR having come to take them."""
        if self._c_flag_waiting:
            self._join_denied([addr for addr, _ in self._c_flag_waiting])
            self._c_flag_waiting = []

    def _join_denied(self, locals_: list[Addr]) -> None:
        """Joins from `locals_` to the peer's initial address and port are not made
        (its C flag): counted, and a finding pointing at the segment with the flag."""
        msk = self.msk
        eng = msk.master.engine
        msk.counters[Mib.JoinInitialDenied] += len(locals_)
        ref = self._deny_ref
        if ref is not None and ref.subflow is None:
            ref = replace(ref, subflow=msk.master.key)
        text = (f"the peer set the C flag on its {self._deny_on or 'MP_CAPABLE'}: no join to "
                f"{fmt(eng.remote_addr, eng.remote_port)}; not made: "
                + ", ".join(f"from {ntoa(a)}" for a in locals_))
        log.info("%s", text)
        msk.diag.add(Code.JOIN_INITIAL_DENIED, Severity.WARNING, text, ref,
                     "the peer takes no joins to its initial address and port (Linux: "
                     "net.mptcp.allow_join_initial_addr_port=0, or a load balancer in "
                     "front): only an address it announces (ADD_ADDR) can be joined",
                     key=tuple(locals_))

    # ---- MP_CAPABLE SYN blackholes (the kernel's ctrl.c) ---------------------------------
    def mpc_syn(self, sf: Subflow) -> None:
        """Our initial SYN is being written (the `syn_retransmits`-th retransmission;
        0: the first). Before MP_CAPABLE goes on it: a plain SYN instead while the
        host has MPTCP active opens disabled (`mptcp_active_should_disable`:
        MPCapableSYNTXDisabled), or once `syn_retrans_before_tcp_fallback`
        retransmissions with MP_CAPABLE went unanswered (`mptcp_active_detect_blackhole`:
        MPCapableSYNTXDrop); either way the connection falls back to TCP. Whether that
        plain SYN is answered tells a blackhole (`_mpc_drop_answered`); a second plain
        SYN means the path drops every SYN, not a blackhole (`mpc_drop` cleared)."""
        msk = self.msk
        n = sf.engine.syn_retransmits
        cfg = msk.config
        if msk.fallback:
            if self._mpc_drop is not None and n > self._mpc_drop_syn:
                ref, self._mpc_drop = self._mpc_drop, None
                msk.diag.add(Code.MPC_SYN_BLACKHOLED, Severity.WARNING,
                             f"{self._mpc_drop_text}; the plain SYN went unanswered too: "
                             "no MPTCP blackhole (every SYN is lost), MPTCP stays enabled",
                             ref)
            return
        if n == 0:
            self._first_syn_at = msk.now
            left = (self.blackhole.disabled_for(msk.now, cfg.blackhole_timeout)
                    if self.blackhole is not None else 0.0)
            if left > 0:
                msk.counters[Mib.MPCapableSYNTXDisabled] += 1
                msk.fall_back(f"MPTCP active opens disabled for {left:.0f} s more (an "
                              "MP_CAPABLE SYN blackhole was found): plain SYN")
                msk.finding(Code.MPC_SYN_BLACKHOLED, Severity.WARNING,
                            f"MPTCP active opens are disabled for {left:.0f} s more (our "
                            "MP_CAPABLE SYNs were blackholed on an earlier connection): "
                            "sent a plain SYN, no MPTCP", sf=sf, packet="out",
                            hint=_BLACKHOLE_HINT)
            return
        if n <= cfg.syn_retrans_before_tcp_fallback:
            return
        msk.counters[Mib.MPCapableSYNTXDrop] += 1
        self._mpc_drop_text = (f"{n} MP_CAPABLE SYNs unanswered "
                               f"({msk.now - self._first_syn_at:.1f} s): sent a plain SYN, "
                               "fell back to TCP")
        msk.fall_back(f"{n} MP_CAPABLE SYNs unanswered: SYN retransmitted without "
                      "MP_CAPABLE (syn_retrans_before_tcp_fallback "
                      f"{cfg.syn_retrans_before_tcp_fallback})")
        self._mpc_drop = msk.diag.packet_out(msk.now, sf.key, msk.tx_index)
        self._mpc_drop_syn = n
        self.work_pending = True  # `work` watches for its answer

    def _mpc_drop_answered(self) -> None:
        """The plain SYN sent after unanswered MP_CAPABLE ones: answered (a SYN/ACK),
        MP_CAPABLE SYNs are blackholed on this path while TCP passes: the host
        disables MPTCP active opens (`mptcp_active_disable`: Blackhole). Still waiting:
        look again after the next input."""
        msk = self.msk
        state = msk.master.engine.state
        if state is State.SYN_SENT:
            self.work_pending = True
            return
        ref, self._mpc_drop = self._mpc_drop, None
        if state is State.CLOSED:
            return  # refused (RST) or given up: nothing learnt
        period = (self.blackhole.disable(msk.now, msk.config.blackhole_timeout)
                  if self.blackhole is not None else 0.0)
        if period:
            msk.counters[Mib.Blackhole] += 1
            tail = f"MPTCP active opens disabled for {period:.0f} s (blackhole)"
        else:
            tail = "blackhole detection is off (blackhole_timeout 0)"
        log.info("MP_CAPABLE SYN blackhole: %s", tail)
        msk.diag.add(Code.MPC_SYN_BLACKHOLED, Severity.WARNING,
                     f"{self._mpc_drop_text}; {tail}", ref, _BLACKHOLE_HINT)

    # ---- commands (pm_userspace.c) ------------------------------------------------------
    def announce(self, addr_id: int, addr: Addr) -> None:
        """ADD_ADDR one of our addresses (with its HMAC, on a pure ACK once fully
        established, repeated until echoed): `ip mptcp endpoint add A signal`."""
        if not self.msk.fully_established:
            self.signal_addrs.append(addr)  # sent by `fully_established`
            return
        self.announced[addr_id] = (addr, self.endpoints.port_of(addr))
        self.add_addr_queue.append((addr_id, addr))
        self.msk.signal_soon()

    def join_port_ok(self, local: Addr, port: int) -> bool:
        """A join reached our `local`:`port`, not the connection's port: whether we
        announced that address with that port (`mptcp_pm_sport_in_anno_list`)."""
        return any(a == local and p == port for a, p in self.announced.values())

    def remove_addr(self, addr_id: int) -> int:
        """Withdraw one of our addresses (`mptcp_pm_remove_addr` and
        `mptcp_pm_remove_subflow`): a REMOVE_ADDR with its id on a pure ACK (the peer
        closes its subflows to it), any pending ADD_ADDR of it cancelled, and our
        subflows from it closed. Returns how many subflows were closed."""
        self.add_addr_queue = [(i, a) for i, a in self.add_addr_queue if i != addr_id]
        self.add_addr_sent.pop(addr_id, None)
        self.announced.pop(addr_id, None)
        closed = self.msk.remove_subflows(lambda sf: sf.local_id == addr_id,
                                          f"our address id {addr_id} was removed", ours=True)
        if addr_id not in self.rm_addr_queue:
            self.rm_addr_queue.append(addr_id)
        self.msk.signal_soon()
        return closed

    def subflow_create(self, local: Addr, backup: bool, remote: Addr | None = None,
                       rport: int | None = None) -> JoinRequest:
        """`ip mptcp subflow add`: a join from `local` (the host checks the limit when
        it opens it, as for every join)."""
        if not self.msk.fully_established or self.msk.fallback:
            raise OSError("joins need an MPTCP connection that is fully established")
        if local not in self.endpoints:
            raise OSError(f"{ntoa(local)} is not one of this stack's addresses")
        if not (self.families_match(local) and self.families_match(remote or local)):
            raise OSError("the connection's socket is IPv4: it uses IPv4 addresses only "
                          "(connect to ::ffff:A.B.C.D for a dual-stack one)")
        eng = self.msk.master.engine
        if self.remote_deny_join_id0 and (remote or eng.remote_addr) == eng.remote_addr \
                and (rport or eng.remote_port) == eng.remote_port:
            self._join_denied([local])
            raise OSError(f"the peer set the C flag: no joins to its initial address "
                          f"{fmt(eng.remote_addr, eng.remote_port)}")
        return JoinRequest(local, backup or self._backup(local), remote, rport)

    def _backup(self, local: Addr) -> bool:
        """Subflows from `local` are backups (its endpoint's `backup` flag)."""
        return bool(self.endpoints.flags_of(local) & EndpointFlags.BACKUP)

    def subflow_destroy(self, local: Addr, remote: Addr | None = None) -> int:
        """`ip mptcp subflow del`: close our subflows from `local` (to `remote`)
        without withdrawing the address; their unacknowledged data is sent again on
        the others. Returns how many were closed."""
        return self.msk.remove_subflows(lambda sf: _matches(sf, local, remote),
                                        f"subflow from {ntoa(local)} removed", ours=True)

    def set_backup(self, local: Addr, backup: bool, remote: Addr | None = None) -> int:
        """`ip mptcp endpoint change A backup|nobackup`: MP_PRIO on each of our
        subflows from `local` whose flag changes. Returns how many changed."""
        n = 0
        for sf in list(self.msk.subflows):
            eng = sf.engine
            if not _matches(sf, local, remote) or eng.is_closed or sf.backup == backup:
                continue
            sf.backup = backup
            sf.send_mp_prio = True
            eng.send_pure_ack()
            self.msk.sf_event(MptcpEventType.SF_PRIORITY, sf, "sent MP_PRIO")
            n += 1
        return n

    def can_add_subflow(self) -> bool:
        """Below `subflows_max` additional subflows (open or opening)."""
        live = sum(1 for sf in self.msk.subflows if sf.counts_against_limit)
        return live < self.msk.config.subflows_max

    def take_joins(self) -> list[JoinRequest]:
        joins, self.joins = self.joins, []
        return joins

    # ---- what the option writer asks, and what it tells -------------------------------
    def signal_due(self) -> bool:
        """An ADD_ADDR (or an echo) or a REMOVE_ADDR waits for a pure ACK."""
        return bool(self.echo_queue or self.rm_addr_queue or self._announcement_due())

    def _announcement_due(self) -> bool:
        """Our next ADD_ADDR may go: a repetition of the one on the wire, or a new one
        once no other is waiting for its echo. One at a time, as Linux's PM announces
        (the next `signal` endpoint when the last is echoed or given up): a peer that
        is still handling one announcement drops the next (Linux: AddAddrDrop)."""
        if not self.add_addr_queue or not self.msk.fully_established:
            return False
        head = self.add_addr_queue[0][0]
        return head in self.add_addr_sent or not self.add_addr_sent

    def next_add_addr(self) -> wm.AddAddr | None:
        """The ADD_ADDR the next pure ACK should carry: an echo first, else our next
        announcement with its HMAC (RFC 8684 3.4.1). Nothing changes until
        `add_addr_written`."""
        if self.echo_queue:
            return self.echo_queue[0]
        msk = self.msk
        if self._announcement_due() and msk.remote_key is not None:
            addr_id, addr = self.add_addr_queue[0]
            port = self.announced.get(addr_id, (addr, None))[1]
            if msk.version == 0:  # RFC 6824 3.4.1: no HMAC, the nibble is IPVer
                return wm.AddAddr(addr_id, addr, port, None, False, 0)
            hmac = crypto.add_addr_hmac(msk.local_key, msk.remote_key, addr_id, addr, port)
            return wm.AddAddr(addr_id, addr, port, hmac, False, 1)
        return None

    def add_addr_unsendable(self, a: wm.AddAddr) -> None:
        """`a` does not fit a pure ACK even alone (Linux `mptcp_pm_add_addr_signal`):
        dropped and counted, its retransmissions cancelled."""
        if a.echo:
            self.echo_queue.pop(0)
            self.msk.counters[Mib.EchoAddTxDrop] += 1
            return
        addr_id, _ = self.add_addr_queue.pop(0)
        self.add_addr_sent.pop(addr_id, None)
        self.msk.counters[Mib.AddAddrTxDrop] += 1

    def add_addr_written(self, a: wm.AddAddr, now: float,
                         on: tuple[bytes, int, bytes, int] | None = None) -> None:
        """`a` went out: off its queue; an announcement is repeated if not echoed in
        time: the kernel's ADD_ADDR timer (6.18 `mptcp_pm_add_timer`), the largest RTO
        of the subflows, at most `add_addr_timeout`, doubling per retransmission."""
        if a.echo:
            self.echo_queue.pop(0)
            return
        addr_id, addr = self.add_addr_queue.pop(0)
        msk = self.msk
        self.add_addr_last[addr_id] = msk.diag.packet_out(msk.now, on, msk.tx_index)
        self.msk.counters[Mib.AddAddrTx] += 1
        if a.version == 0:
            return  # RFC 6824 has no echo: nothing to wait for, nothing to repeat
        prev = self.add_addr_sent.get(addr_id)
        tries = (prev.tries if prev is not None else 0) + 1
        timeout = self._add_addr_timeout() * (1 << (tries - 1))
        self.add_addr_sent[addr_id] = _Sent(addr, now + timeout, tries)

    def _add_addr_timeout(self) -> float:
        """`mptcp_adjust_add_addr_timeout`: the largest RTO of the open subflows, at
        most `add_addr_timeout` (net.mptcp.add_addr_timeout, which is now a maximum)."""
        cap = self.msk.config.add_addr_timeout
        rtos = [sf.engine.rto for sf in self.msk.subflows if not sf.engine.is_closed]
        return min(cap, max(rtos)) if rtos else cap

    def rm_addr_written(self, n: int) -> None:
        del self.rm_addr_queue[:n]
        self.msk.counters[Mib.RmAddrTx] += 1

    # ---- timers --------------------------------------------------------------------------
    def poll_timeout(self) -> float | None:
        return min((s.deadline for s in self.add_addr_sent.values()), default=None)

    def handle_timeout(self, now: float) -> None:
        """An announcement not echoed in time: announce again (up to ADD_ADDR_TRIES,
        backing off), then give up (`mptcp_pm_add_timer`)."""
        for addr_id, sent in list(self.add_addr_sent.items()):
            if sent.deadline > now:
                continue
            if sent.tries < ADD_ADDR_TRIES:
                self.add_addr_queue.insert(0, (addr_id, sent.addr))  # before new ones
                sent.deadline = float("inf")  # re-armed when it goes out
                self.msk.signal_soon(now=True)
            else:
                del self.add_addr_sent[addr_id]
                self.msk.counters[Mib.AddAddrTxDrop] += 1
                msk = self.msk
                if self.add_addr_queue:
                    msk.signal_soon(now=True)  # the next announcement may go
                msk.diag.add(
                    Code.ADD_ADDR_NOT_ECHOED, Severity.ERROR,
                    f"our ADD_ADDR for {ntoa(sent.addr)} (id {addr_id}) was sent "
                    f"{sent.tries} times and never echoed: given up",
                    self.add_addr_last.get(addr_id),
                    hint="the peer does not take ADD_ADDR (its PM, or a middlebox "
                         "stripping the option, or an HMAC it finds wrong: AddAddrHMacFailure"
                         " on its side)", key=addr_id)


def _unicast(addr: Addr) -> bool:
    """Not multicast, broadcast or unspecified (what a TCP connect() may reach)."""
    ip_ = ipaddress.ip_address(addr)
    return not (ip_.is_multicast or ip_.is_unspecified or
                (isinstance(ip_, ipaddress.IPv4Address) and
                 ip_ == ipaddress.IPv4Address("255.255.255.255")))


def _matches(sf: Subflow, local: Addr, remote: Addr | None) -> bool:
    eng = sf.engine
    return eng.local_addr == local and (remote is None or eng.remote_addr == remote)
