"""mptcp_join.sh scenarios, as data (see the package docstring).

Addresses are written `ns:family:link`: `ns1:6:2` is ns1's IPv6 address on link 2,
`ns2:4:3` ns2's IPv4 one on link 3, `ns1:m:1` ns1's IPv4 address on link 1 in its
v4-mapped form (::ffff:A.B.C.D). The script's links 1-4 are our topology's paths (its
dead:beef:i::/64 is our fd00:i::/64, its 10.0.i.0/24 ours); whoever plays ns1 or ns2
has the `.1`/`::1` (the kernel) or `.2`/`::2` (our stack) address of the link.

Counters are the script's:
- `join` = chk_join_nr (syn, synack, ack): MPJoinSynRx on ns1, MPJoinSynAckRx on ns2,
  MPJoinAckRx on ns1; ns2's MPJoinSynTx must be `join_syn_tx` (default: syn); no join
  HMAC failure on either side, no MPJoinRejected on ns1, no fallback.
- `add` = chk_add_nr (add, echo): AddAddr on ns2 (at least `add` when > 0), EchoAdd on
  ns1 (exactly); `add_port` its third argument (ADD_ADDR with a port, joins to it).
- An endpoint is "ADDR FLAGS" or "ADDR FLAGS port N" (`signal port N`).
- `rm` = chk_rm_nr (rm_addr, rm_subflow[, invert]): RmAddr on ns1 and RmSubflow on ns2,
  or the other way round with `invert`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Side:
    """One namespace as the script sets it up."""
    # pm_nl_set_limits: (add_addr_accepted, subflows); None: the kernel's defaults (0, 2)
    limits: tuple[int, int] | None = None
    # pm_nl_add_endpoint before the transfer: "ADDR FLAGS" (flags comma-separated)
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """What pm_nl_set_endpoint does during the transfer on one namespace: `add` an
    endpoint ("ADDR FLAGS"), or `del` one (the first of its endpoints, as the script's
    addr_nr_nsX=-1 does; with an ADDR, that address, as addr_nr_nsX=-9 deletes id 0
    with the address of the initial subflow), waiting for the other side to count the
    RM_ADDR; or `flush` them all (addr_nr_nsX=-8)."""
    ns: str
    op: str
    arg: str = ""


@dataclass(frozen=True)
class Scenario:
    title: str
    group: str
    connect: str  # the address ns2 connects to
    ns1: Side = Side()
    ns2: Side = Side()
    steps: tuple[Step, ...] = ()
    join: tuple[int, int, int] = (0, 0, 0)
    join_syn_tx: int | None = None
    add: tuple[int, int] | None = None
    rm: tuple[int, int, bool] | None = None
    bind: str | None = None  # bind_addr: ns1 listens on this address only (ours: --bind)
    extra_listener: str | None = None  # a second ns1 listener, same port (ours: --bind)
    # the roles our stack plays; a role left out says why in `not_ours`
    roles: tuple[str, ...] = ("connector", "listener")
    not_ours: str = ""
    # what our side says where the kernel's script expects nothing of it: the diagnosis
    # codes our run reports when ours is that role (`ours_codes[role]`)
    ours_codes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    slow: bool = False  # steps during the transfer: a longer one
    # reset_with_add_addr_timeout: the kernel's net.mptcp.add_addr_timeout when it is
    # ns1 (ours follows the same rule: the subflow RTO under a 120 s cap), and every
    # segment carrying an ADD_ADDR (the echoes) dropped on its way out of ns2
    add_addr_timeout: int | None = None
    drop_add_addr_from_ns2: bool = False
    # ---- added for the IPv4 scenarios (catalogue_ipv4.py); the defaults change nothing
    # join_syn_rej: MPJoinRejected on ns1 (chk_join_nr's "syn rejected")
    join_syn_rej: int = 0
    # join_create_err, join_bind_err, join_connect_err: ns2's MPJoinSynTxCreatSkErr,
    # MPJoinSynTxBindErr, MPJoinSynTxConnectErr (chk_join_tx_nr)
    join_tx_errs: tuple[int, int, int] = (0, 0, 0)
    # chk_add_nr ADD ECHO PORT: PortAdd and MPJoinPortSynAckRx on ns2, MPJoinPortSynRx
    # and MPJoinPortAckRx on ns1 (each PORT), MismatchPort{Syn,Ack}Rx on ns1 (0)
    add_port: int = 0
    # chk_add_nr ADD ECHO 0 invert: AddAddr on ns1, EchoAdd on ns2 (ns2 announced)
    add_invert: tuple[int, int] | None = None
    # chk_rm_nr ... simult: RmSubflow of both sides summed, within [rm_subflow, 2 x it]
    rm_simult: bool = False
    # reset_with_tcp_filter NS SRC TARGET: TCP from address SRC into NS dropped
    # ("drop") or refused with an ICMP port unreachable ("reject"), as iptables' REJECT
    tcp_filter: tuple[str, str, str] | None = None
    # per-namespace sysctls, (ns1, ns2): net.mptcp.checksum_enabled (reset_with_checksum;
    # ours: --checksum) and net.mptcp.allow_join_initial_addr_port
    # (reset_with_allow_join_id0; ours: --deny-join-id0 where it is 0)
    checksum: tuple[bool, bool] = (False, False)
    allow_join_id0: tuple[bool, bool] = (True, True)
    # reset_with_cookies: net.ipv4.tcp_syncookies=2 (the kernel's; ours as ns1:
    # listen --syncookies 2)
    syncookies: bool = False
    # set_userspace_pm: the namespaces with net.mptcp.pm_type=1 (the kernel's only)
    userspace_pm: tuple[str, ...] = ()
    # the kernel's application neither sends (after its first MB) nor reads for this
    # long (kpeer --pause-after/--pause, --read-delay): both directions stay open (ours
    # cannot finish against a shut window), as the script's rate-limited transfers
    # (speed=10) keep them, for what must happen while they are (Linux opens no join
    # once either side has sent its DATA_FIN)
    kernel_pause: float | None = None
    # both sides stop sending after their first MB for this long, reading on (the
    # script's speed=5/10 transfers, which last, with every window open): the connection
    # stays up while the kernel's userspace PM is driven or ADD_ADDRs are retried (a read
    # pause instead shuts the window on data in flight: a join went stale, and our
    # ADD_ADDR retries, which follow the RTO, spread past the end)
    idle: float | None = None
    # no transfer: ns2 opens an MP_CAPABLE connection to ns1's `signal port N` endpoint
    # (its first), which must refuse it at once (chk_mpc_endp_attempt: the connect fails,
    # not by timeout; MPCapableEndpAttempt on ns1 is 1)
    mpc_to_endpoint: bool = False
    # fastclose=client|server (test_linkfail=1024): that side aborts the connection 1 s
    # into the transfer (MP_FASTCLOSE on an RST with MP_TCPRST); chk_fclose_nr 1 1 and
    # chk_rst_nr 1 1 on the aborting side's Tx and its peer's Rx; no bytes compared
    fastclose: str = ""
    # sflags: 1 s into the transfer, every endpoint of both sides (the implicit ones of
    # the joins included) changes to these flags (`ip mptcp endpoint change`; ours: `ctl
    # backup A on|off` for every address of ours with an endpoint or a join)
    sflags: str = ""
    # chk_prio_nr: MPPrioTx and MPPrioRx on ns1, MPJoinSynBackupRx on ns1,
    # MPJoinSynAckBackupRx on ns2
    prio: tuple[int, int, int, int] | None = None
    # test_linkfail=1|2 (link_failure_tests): every link shaped to 20 Mbit/s; ns2 sends
    # a file, pauses, ns1's links `failing_links` go down for good (() = one of 1-4 at
    # random), then ns2 sends the file again; with 2, ns1 sends a large file too.
    # chk_stale_nr on ns2: (min, max or -1 for none, stale - recover exactly);
    # chk_link_usage: (link, percent of what ns2 sent that ns2's end of it carried, +-5)
    # userspace PM commands, the kernel's (its side is in `userspace_pm`), issued in order
    # during the transfer as pm_nl_ctl does (tests/interop/mptcp_pm_nl.py), 1 s apart:
    # ("ann", ADDR, ID), ("rem", ID), ("csf", ADDR, ID), ("dsf", ADDR: the kernel's
    # subflow from ADDR), ("csf!", ADDR, ID): a create the kernel must refuse
    pm_cmds: tuple[tuple[str, ...], ...] = ()
    # chk_subflows_total after them: the subflows open on (ns1, ns2), the initial one's
    # included; `no_rst`: chk_rst_nr 0 0 (no MP_TCPRST either way)
    subflows_total: tuple[int, int] | None = None
    no_rst: bool = False
    linkfail: int = 0
    # `ip -net ns2 route add A via ns1's address on link L dev ns2ethL` ("force this
    # path"): (A, L); the kernel's when it is ns2 (ours picks no route by destination)
    ns2_routes: tuple[tuple[str, int], ...] = ()
    failing_links: tuple[int, ...] = ()
    stale: tuple[int, int, int] | None = None
    link_usage: tuple[int, int] | None = None


# ---- IPv6 (issue 10): ipv6_tests, v4mapped_tests, mixed_tests and the v6 cases of
# add_tests, add_addr_timeout_tests and bind_tests --------------------------------------
IPV6 = [
    Scenario("add multiple subflows IPv6", "add_tests", "ns1:6:1",
             ns1=Side((0, 2)), ns2=Side((0, 2)),
             # addr_nr_ns2=2: dead:beef:3::2 and 4::2 (our paths 2 and 3)
             steps=(Step("ns2", "add", "ns2:6:2 subflow"), Step("ns2", "add", "ns2:6:3 subflow")),
             join=(2, 2, 2), slow=True),
    Scenario("add multiple addresses IPv6", "add_tests", "ns1:6:1",
             ns1=Side((0, 2)), ns2=Side((2, 2)),
             steps=(Step("ns1", "add", "ns1:6:2 signal"), Step("ns1", "add", "ns1:6:3 signal")),
             join=(2, 2, 2), add=(2, 2), slow=True),
    Scenario("single subflow IPv6", "ipv6_tests", "ns1:6:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:6:3 subflow",)), join=(1, 1, 1)),
    Scenario("unused signal address IPv6", "ipv6_tests", "ns1:6:1",
             ns1=Side(None, ("ns1:6:2 signal",)), join=(0, 0, 0), add=(1, 1),
             ours_codes={"listener": ("add-addr-ignored",)}),
    Scenario("single address IPv6", "ipv6_tests", "ns1:6:1",
             ns1=Side((0, 1), ("ns1:6:2 signal",)), ns2=Side((1, 1)),
             join=(1, 1, 1), add=(1, 1)),
    Scenario("remove single address IPv6", "ipv6_tests", "ns1:6:1",
             ns1=Side((0, 1), ("ns1:6:2 signal",)), ns2=Side((1, 1)),
             steps=(Step("ns1", "del"),),
             join=(1, 1, 1), add=(1, 1), rm=(1, 1, True), slow=True),
    Scenario("remove subflow and signal IPv6", "ipv6_tests", "ns1:6:1",
             ns1=Side((0, 2), ("ns1:6:2 signal",)), ns2=Side((1, 2), ("ns2:6:3 subflow",)),
             steps=(Step("ns1", "del"), Step("ns2", "del")),
             join=(2, 2, 2), add=(1, 1), rm=(1, 1, False), slow=True),
    Scenario("single subflow IPv4-mapped", "v4mapped_tests", "ns1:m:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:m:3 subflow",)), join=(1, 1, 1)),
    Scenario("signal address IPv4-mapped", "v4mapped_tests", "ns1:m:1",
             ns1=Side((0, 1), ("ns1:m:2 signal",)), ns2=Side((1, 1)),
             join=(1, 1, 1), add=(1, 1)),
    Scenario("single subflow v4-map-v6", "v4mapped_tests", "ns1:m:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:4:3 subflow",)), join=(1, 1, 1)),
    Scenario("signal address v4-map-v6", "v4mapped_tests", "ns1:m:1",
             ns1=Side((0, 1), ("ns1:4:2 signal",)), ns2=Side((1, 1)),
             join=(1, 1, 1), add=(1, 1)),
    Scenario("single subflow v6-map-v4", "v4mapped_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:m:3 subflow",)), join=(1, 1, 1)),
    Scenario("signal address v6-map-v4", "v4mapped_tests", "ns1:4:1",
             ns1=Side((0, 1), ("ns1:m:2 signal",)), ns2=Side((1, 1)),
             join=(1, 1, 1), add=(1, 1)),
    Scenario("no JOIN with diff families v4-v6", "v4mapped_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:6:2 subflow",)), join=(0, 0, 0),
             ours_codes={"connector": ("join-not-opened",)}),
    Scenario("no JOIN with diff families v4-v6-2", "v4mapped_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("fd00:2::10.0.3.1 subflow",)),
             join=(0, 0, 0), roles=("listener",),
             not_ours="its ns2 endpoint is an IPv6 address no interface has (the kernel "
                      "takes any address as an endpoint; our endpoints are our own "
                      "addresses); 'v4-v6' is the same case with our address"),
    Scenario("no JOIN with diff families v6-v4", "v4mapped_tests", "ns1:6:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:4:3 subflow",)), join=(0, 0, 0),
             ours_codes={"connector": ("join-not-opened",)}),
    Scenario("IPv4 sockets do not use IPv6 addresses", "mixed_tests", "ns1:4:1",
             ns1=Side((0, 1), ("ns1:6:2 signal",)), ns2=Side((1, 1)), join=(0, 0, 0),
             ours_codes={"connector": ("add-addr-other-family",),
                         "listener": ("add-addr-ignored",)}),
    Scenario("simult IPv4 and IPv6 subflows", "mixed_tests", "ns1:6:2",
             ns1=Side((0, 1), ("ns1:4:1 signal",)), ns2=Side((1, 1)), join=(1, 1, 1)),
    Scenario("simult IPv4 and IPv6 subflows, fullmesh 1x1", "mixed_tests", "ns1:6:2",
             ns1=Side((0, 4), ("ns1:4:1 signal",)),
             # the script: `chk_join_nr 0 0 0` where the kernel has
             # mptcp_pm_get_endp_fullmesh_max (after 6.18), else 1 1 1: 6.18 joins
             # from the address routed towards the IPv4 one
             ns2=Side((1, 4), ("ns2:6:2 subflow,fullmesh",)), join=(1, 1, 1)),
    Scenario("simult IPv4 and IPv6 subflows, fullmesh 2x2", "mixed_tests", "ns1:6:1",
             ns1=Side((0, 4), ("ns1:4:2 signal", "ns1:6:2 signal")), ns2=Side((2, 4)),
             # fullmesh=1: addr_nr_ns2=1, a `subflow,fullmesh` endpoint dead:beef:3::2
             steps=(Step("ns2", "add", "ns2:6:3 subflow,fullmesh"),),
             join=(4, 4, 4), slow=True),
    Scenario("bind main address v6, no join v6", "bind_tests", "ns1:6:1",
             ns1=Side((0, 2), ("ns1:6:2 signal",)), ns2=Side((2, 2)), bind="ns1:6:1",
             join=(0, 0, 0), join_syn_tx=1, add=(1, 1),
             ours_codes={"connector": ("join-refused",), "listener": ("add-addr-ignored",)}),
    Scenario("multiple bind to allow joins v6", "bind_tests", "ns1:6:1",
             ns1=Side((0, 2), ("ns1:6:2 signal",)), ns2=Side((2, 2)), bind="ns1:6:1",
             extra_listener="ns1:6:2", join=(1, 1, 1), add=(1, 1)),
]

IPV6.append(
    Scenario("signal address, ADD_ADDR6 timeout", "add_addr_timeout_tests", "ns1:6:1",
             ns1=Side((0, 1), ("ns1:6:2 signal",)), ns2=Side((1, 1)),
             add_addr_timeout=1, drop_add_addr_from_ns2=True,
             join=(1, 1, 1), add=(4, 0), slow=True,
             ours_codes={"listener": ("add-addr-not-echoed",)}))

# The two link-local bind tests need fe80:: addresses on an interface of ours: a TUN
# has none. (title, group, reason), as catalogue_ipv4.LISTED
IPV6_LISTED: list[tuple[str, str, str]] = [
    (title, "bind_tests", "an fe80:: address on an interface of ours (a TUN device has "
                          "no link-local address)")
    for title in ("multiple bind to allow joins v6 link-local routing",
                  "multiple bind to allow joins v6 link-local laminar")]
