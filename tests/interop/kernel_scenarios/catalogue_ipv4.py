"""mptcp_join.sh's IPv4 scenarios (Linux 6.18), as data: `IPV4` those this runner plays,
`LISTED` every other one with what it would need (see catalogue.py for the notation).

The script's links 1-4 are our paths 1-4: test_mptcp_join_ipv4.py brings the
topology's fourth path up for them (netns-setup.sh up --paths 4). Translations made
for all scenarios, not repeated below:
- `dev nsXethN` on an endpoint is dropped (Play.kernel_endpoint_add says why);
- an endpoint's `id N` is dropped: the ids only order the deletions, and the checks
  count every deleted endpoint alike;
- `speed=slow` / `speed=10` / `speed=20` (the script's rate-limited writes) are
  `slow=True`: a longer transfer, long enough for what happens during it, or, for the
  8 ADD_ADDRs of two timed-out announcements, `kernel_pause` as well;
- checks the runner does not make: chk_add_tx_nr, chk_rm_tx_nr, chk_cestab_nr, and
  chk_rst_nr 0 0 where the scenario removes something (Play.run lets a removed
  subflow be reset, as for the IPv6 removals); elsewhere any MP_RST of the kernel's
  fails the scenario, as chk_rst_nr 0 0 would.
"""

from __future__ import annotations

from tests.interop.kernel_scenarios.catalogue import Scenario, Side, Step

NOT_OURS_FOREIGN_SIGNAL = ("ns1 announces addresses no interface has (the kernel announces "
                           "any endpoint; our --announce only our own addresses)")
NOT_OURS_NS2_SIGNAL = ("ns2 has `signal` endpoints: our connector announces nothing "
                       "(connect has no --announce)")
NOT_OURS_LINKS = ("ns2's subflows each on their own link (the script binds its endpoints to "
                  "ns2ethN, with a default route per device): ours as ns1 has one address "
                  "per link and the kernel's joins to it all leave by that one link")
# ours says which subflow died and where its data went
PATH_FAILED = {"connector": ("path-failed",)}
NOT_OURS_USERSPACE = "the scenario's userspace PM (pm_type=1) is this side's: ours has none"
# a gap of our stack, found by these scenarios
IPV4: list[Scenario] = [
    # ---- subflows_tests ---------------------------------------------------------------
    Scenario("no JOIN", "subflows_tests", "ns1:4:1", join=(0, 0, 0)),
    Scenario("single subflow, limited by client", "subflows_tests", "ns1:4:1",
             ns1=Side((0, 0)), ns2=Side((0, 0), ("ns2:4:3 subflow",)), join=(0, 0, 0),
             ours_codes={"connector": ("join-not-opened",)}),
    Scenario("single subflow, limited by server", "subflows_tests", "ns1:4:1",
             ns1=Side((0, 0)), ns2=Side((0, 1), ("ns2:4:3 subflow",)),
             join=(1, 1, 0), join_syn_rej=1, ours_codes={"connector": ("join-refused",)}),
    Scenario("single subflow", "subflows_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:4:3 subflow",)), join=(1, 1, 1)),
    Scenario("multiple subflows", "subflows_tests", "ns1:4:1",
             ns1=Side((0, 2)), ns2=Side((0, 2), ("ns2:4:3 subflow", "ns2:4:2 subflow")),
             join=(2, 2, 2)),
    Scenario("multiple subflows, limited by server", "subflows_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 2), ("ns2:4:3 subflow", "ns2:4:2 subflow")),
             join=(2, 2, 1), join_syn_rej=1, ours_codes={"connector": ("join-refused",)}),
    # `dev ns2eth3` dropped: this is "single subflow" here
    Scenario("single subflow, dev", "subflows_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:4:3 subflow",)), join=(1, 1, 1)),

    # ---- subflows_error_tests -----------------------------------------------------------
    # 10.0.12.2 is nobody's address: binding to it fails (join_bind_err=1)
    Scenario("no MPC reuse with single endpoint", "subflows_error_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:4:1 subflow", "10.0.12.2 subflow")),
             join=(0, 0, 0), join_tx_errs=(0, 1, 0), slow=True, roles=("listener",),
             not_ours="its second ns2 endpoint, 10.0.12.2, is no address of ns2 (the "
                      "kernel takes it and fails to bind; our endpoints are our own "
                      "addresses)"),
    Scenario("multi subflows, with failing subflow", "subflows_error_tests", "ns1:4:1",
             ns1=Side((0, 2)), ns2=Side((0, 2), ("ns2:4:3 subflow", "ns2:4:2 subflow")),
             tcp_filter=("ns1", "ns2:4:3", "reject"),
             join=(1, 1, 1), join_syn_tx=2, slow=True,
             ours_codes={"connector": ("join-refused",)}),
    Scenario("multi subflows, with subflow timeout", "subflows_error_tests", "ns1:4:1",
             ns1=Side((0, 2)), ns2=Side((0, 2), ("ns2:4:3 subflow", "ns2:4:2 subflow")),
             tcp_filter=("ns1", "ns2:4:3", "drop"),
             join=(1, 1, 1), join_syn_tx=2, slow=True,
             ours_codes={"connector": ("join-refused",)}),
    # the script adds the second endpoint once ns2 counted the failed attempt
    # (wait_attempt_fail); the runner adds it 0.5 s after the connection is up, when
    # the REJECT has long answered the first join
    Scenario("multi subflows, fair usage on close", "subflows_error_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:4:3 subflow",)),
             tcp_filter=("ns1", "ns2:4:3", "reject"),
             steps=(Step("ns2", "add", "ns2:4:2 subflow"),),
             join=(1, 1, 1), join_syn_tx=2, slow=True,
             ours_codes={"connector": ("join-refused",)}),

    # ---- signal_address_tests -------------------------------------------------------------
    Scenario("unused signal address", "signal_address_tests", "ns1:4:1",
             ns1=Side(None, ("ns1:4:2 signal",)), join=(0, 0, 0), add=(1, 1),
             ours_codes={"listener": ("add-addr-ignored",)}),
    Scenario("signal address", "signal_address_tests", "ns1:4:1",
             ns1=Side((0, 1), ("ns1:4:2 signal",)), ns2=Side((1, 1)),
             join=(1, 1, 1), add=(1, 1)),
    Scenario("subflow and signal", "signal_address_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal",)), ns2=Side((1, 2), ("ns2:4:3 subflow",)),
             join=(2, 2, 2), add=(1, 1)),
    Scenario("subflow and signal together", "signal_address_tests", "ns1:4:1",
             ns1=Side((0, 2)), ns2=Side((0, 2), ("ns2:4:3 signal,subflow",)),
             join=(1, 1, 1), add=(0, 0), add_invert=(1, 1), roles=("listener",),
             not_ours=NOT_OURS_NS2_SIGNAL),
    Scenario("multiple subflows and signal", "signal_address_tests", "ns1:4:1",
             ns1=Side((0, 3), ("ns1:4:2 signal",)),
             ns2=Side((1, 3), ("ns2:4:3 subflow", "ns2:4:4 subflow")),
             join=(3, 3, 3), add=(1, 1)),
    Scenario("signal addresses", "signal_address_tests", "ns1:4:1",
             ns1=Side((3, 3), ("ns1:4:2 signal", "ns1:4:3 signal", "ns1:4:4 signal")),
             ns2=Side((3, 3)), join=(3, 3, 3), add=(3, 3), slow=True),
    Scenario("signal invalid addresses", "signal_address_tests", "ns1:4:1",
             ns1=Side((3, 3), ("10.0.12.1 signal", "ns1:4:3 signal", "10.0.14.1 signal")),
             ns2=Side((3, 3)), join=(1, 1, 1), join_syn_tx=3, add=(3, 3), slow=True,
             roles=("connector",), not_ours=NOT_OURS_FOREIGN_SIGNAL,
             ours_codes={"connector": ("join-refused",)}),
    # the script's ns1 add_addr_timeout=1: the kernel's when it is ns1 (ours: its own
    # rule, the subflow RTO); chk_add_nr 3 3 (6.18 does not announce the address of
    # the initial subflow)
    Scenario("signal addresses race test", "signal_address_tests", "ns1:4:1",
             ns1=Side((4, 4), ("ns1:4:1 signal", "ns1:4:2 signal", "ns1:4:3 signal",
                               "ns1:4:4 signal")),
             ns2=Side((4, 4), ("ns2:4:1 signal", "ns2:4:2 signal", "ns2:4:3 signal",
                               "ns2:4:4 signal")),
             add_addr_timeout=1, join=(3, 3, 3), add=(3, 3), slow=True,
             roles=("listener",), not_ours=NOT_OURS_NS2_SIGNAL),

    # ---- laminar_endp_tests (the one without a laminar endpoint) ---------------------------
    Scenario("without a laminar endpoint", "laminar_endp_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal",)), ns2=Side((2, 2)),
             tcp_filter=("ns1", "ns2:4:2", "reject"),
             join=(0, 0, 0), join_syn_tx=1, add=(1, 1),
             ours_codes={"connector": ("join-refused",), "listener": ("add-addr-ignored",)}),

    # ---- add_addr_timeout_tests (IPv4) ------------------------------------------------------
    Scenario("signal address, ADD_ADDR timeout", "add_addr_timeout_tests", "ns1:4:1",
             ns1=Side((0, 1), ("ns1:4:2 signal",)), ns2=Side((1, 1)),
             add_addr_timeout=1, drop_add_addr_from_ns2=True,
             join=(1, 1, 1), add=(4, 0), slow=True,
             ours_codes={"listener": ("add-addr-not-echoed",)}),
    Scenario("signal addresses, ADD_ADDR timeout", "add_addr_timeout_tests", "ns1:4:1",
             ns1=Side((2, 2), ("ns1:4:2 signal", "ns1:4:3 signal")), ns2=Side((2, 2)),
             add_addr_timeout=1, drop_add_addr_from_ns2=True, idle=8,
             join=(2, 2, 2), add=(8, 0), slow=True,
             ours_codes={"listener": ("add-addr-not-echoed",)}),
    Scenario("invalid address, ADD_ADDR timeout", "add_addr_timeout_tests", "ns1:4:1",
             ns1=Side((2, 2), ("10.0.12.1 signal", "ns1:4:3 signal")), ns2=Side((2, 2)),
             add_addr_timeout=1, drop_add_addr_from_ns2=True, idle=8,
             join=(1, 1, 1), join_syn_tx=2, add=(8, 0), slow=True,
             roles=("connector",), not_ours=NOT_OURS_FOREIGN_SIGNAL,
             ours_codes={"connector": ("join-refused",)}),

    # ---- remove_tests -----------------------------------------------------------------------
    # `backup` on our endpoints: --backup A as well
    Scenario("remove single subflow", "remove_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:4:3 subflow,backup",)),
             steps=(Step("ns2", "del"),), join=(1, 1, 1), rm=(1, 1, False), slow=True),
    Scenario("remove multiple subflows", "remove_tests", "ns1:4:1",
             ns1=Side((0, 2)),
             ns2=Side((0, 2), ("ns2:4:2 subflow,backup", "ns2:4:3 subflow,backup")),
             steps=(Step("ns2", "del"), Step("ns2", "del")),
             join=(2, 2, 2), rm=(2, 2, False), slow=True),
    Scenario("remove single address", "remove_tests", "ns1:4:1",
             ns1=Side((0, 1), ("ns1:4:2 signal,backup",)), ns2=Side((1, 1)),
             steps=(Step("ns1", "del"),),
             join=(1, 1, 1), add=(1, 1), rm=(1, 1, True), slow=True),
    Scenario("remove subflow and signal", "remove_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal,backup",)),
             ns2=Side((1, 2), ("ns2:4:3 subflow,backup",)),
             steps=(Step("ns1", "del"), Step("ns2", "del")),
             join=(2, 2, 2), add=(1, 1), rm=(1, 1, False), slow=True),
    Scenario("remove subflows and signal", "remove_tests", "ns1:4:1",
             ns1=Side((0, 3), ("ns1:4:2 signal,backup",)),
             ns2=Side((1, 3), ("ns2:4:3 subflow,backup", "ns2:4:4 subflow,backup")),
             steps=(Step("ns1", "del"), Step("ns2", "del"), Step("ns2", "del")),
             join=(3, 3, 3), add=(1, 1), rm=(2, 2, False), slow=True),
    # our listener: `signal,subflow` with subflow limit 0 is `signal` (Play.our_args)
    Scenario("remove signal+subflow with limits", "remove_tests", "ns1:4:1",
             ns1=Side((0, 0), ("ns1:4:2 signal,subflow",)), ns2=Side((0, 0)),
             steps=(Step("ns1", "del"),),
             join=(0, 0, 0), add=(1, 1), rm=(1, 0, True), slow=True,
             ours_codes={"listener": ("add-addr-ignored",)}),
    Scenario("remove addresses", "remove_tests", "ns1:4:1",
             ns1=Side((3, 3), ("ns1:4:2 signal,backup", "ns1:4:3 signal,backup",
                               "ns1:4:4 signal,backup")),
             ns2=Side((3, 3)),
             steps=(Step("ns1", "del"), Step("ns1", "del"), Step("ns1", "del")),
             join=(3, 3, 3), add=(3, 3), rm=(3, 3, True), slow=True),
    Scenario("flush subflows and signal", "remove_tests", "ns1:4:1",
             ns1=Side((0, 3), ("ns1:4:2 signal,backup",)),
             ns2=Side((1, 3), ("ns2:4:3 subflow,backup", "ns2:4:4 subflow,backup")),
             steps=(Step("ns1", "flush"), Step("ns2", "flush")),
             join=(3, 3, 3), add=(1, 1), rm=(1, 3, True), rm_simult=True, slow=True),
    Scenario("flush subflows", "remove_tests", "ns1:4:1",
             ns1=Side((3, 3)),
             ns2=Side((3, 3), ("ns2:4:2 subflow,backup", "ns2:4:3 subflow,backup",
                               "ns2:4:4 subflow,backup")),
             steps=(Step("ns1", "flush"), Step("ns2", "flush")),
             join=(3, 3, 3), rm=(0, 3, False), rm_simult=True, slow=True),
    Scenario("flush addresses", "remove_tests", "ns1:4:1",
             ns1=Side((3, 3), ("ns1:4:2 signal,backup", "ns1:4:3 signal,backup",
                               "ns1:4:4 signal,backup")),
             ns2=Side((3, 3)),
             steps=(Step("ns1", "flush"), Step("ns2", "flush")),
             join=(3, 3, 3), add=(3, 3), rm=(3, 3, True), rm_simult=True, slow=True),
    Scenario("flush invalid addresses", "remove_tests", "ns1:4:1",
             ns1=Side((3, 3), ("10.0.12.1 signal,backup", "ns1:4:3 signal,backup",
                               "10.0.14.1 signal,backup")),
             ns2=Side((3, 3)),
             steps=(Step("ns1", "flush"),),
             join=(1, 1, 1), join_syn_tx=3, add=(3, 3), rm=(3, 1, True), slow=True,
             roles=("connector",), not_ours=NOT_OURS_FOREIGN_SIGNAL,
             ours_codes={"connector": ("join-refused",)}),
    # addr_nr_ns1=-9: `pm_nl_del_endpoint ns1 0 10.0.1.1` (the connect address)
    Scenario("remove id 0 address", "remove_tests", "ns1:4:1",
             ns1=Side((0, 1), ("ns1:4:2 signal",)), ns2=Side((1, 1)),
             steps=(Step("ns1", "del", "ns1:4:1"),),
             join=(1, 1, 1), add=(1, 1), rm=(1, 1, True), slow=True),
    # addr_nr_ns2=-9: `pm_nl_del_endpoint ns2 0 10.0.1.2` while ns2's 10.0.3.2 join runs
    Scenario("remove id 0 subflow", "remove_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:4:3 subflow",)),
             steps=(Step("ns2", "del", "ns2:4:1"),),
             join=(1, 1, 1), rm=(1, 1, False), slow=True),
    # ns1 announces 10.0.12.1 (nobody's), 224.0.0.1 (multicast: ns2's connect() fails,
    # the address takes no place under its limit of 2) and 10.0.3.1, then removes all
    Scenario("remove invalid addresses", "remove_tests", "ns1:4:1",
             ns1=Side((3, 3), ("10.0.12.1 signal", "224.0.0.1 signal", "ns1:4:3 signal")),
             ns2=Side((2, 2)),
             steps=(Step("ns1", "del"), Step("ns1", "del"), Step("ns1", "del")),
             join=(1, 1, 1), join_syn_tx=2, join_tx_errs=(0, 0, 1), add=(3, 3),
             rm=(3, 1, True), slow=True, roles=("connector",), not_ours=NOT_OURS_FOREIGN_SIGNAL,
             ours_codes={"connector": ("join-refused",)}),

    # ---- add_tests (IPv4) ---------------------------------------------------------------------
    # addr_nr_ns2=N: `subflow` endpoints 10.0.3.2, 10.0.4.2, ...; addr_nr_ns1=N:
    # `signal` endpoints 10.0.2.1, 10.0.3.1, ...
    Scenario("add single subflow", "add_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1)),
             steps=(Step("ns2", "add", "ns2:4:3 subflow"),), join=(1, 1, 1), slow=True),
    Scenario("add signal address", "add_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((1, 1)),
             steps=(Step("ns1", "add", "ns1:4:2 signal"),),
             join=(1, 1, 1), add=(1, 1), slow=True),
    Scenario("add multiple subflows", "add_tests", "ns1:4:1",
             ns1=Side((0, 2)), ns2=Side((0, 2)),
             steps=(Step("ns2", "add", "ns2:4:3 subflow"), Step("ns2", "add", "ns2:4:4 subflow")),
             join=(2, 2, 2), slow=True),

    # ---- bind_tests (IPv4) --------------------------------------------------------------------
    Scenario("bind main address v4, no join v4", "bind_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal",)), ns2=Side((2, 2)), bind="ns1:4:1",
             join=(0, 0, 0), join_syn_tx=1, add=(1, 1),
             ours_codes={"connector": ("join-refused",), "listener": ("add-addr-ignored",)}),
    Scenario("multiple bind to allow joins v4", "bind_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal",)), ns2=Side((2, 2)), bind="ns1:4:1",
             extra_listener="ns1:4:2", join=(1, 1, 1), add=(1, 1)),

    # ---- syncookies_tests (reset_with_cookies: the kernel's side only) ------------------------
    Scenario("single subflow with syn cookies", "syncookies_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:4:3 subflow",)), join=(1, 1, 1),
             syncookies=True),
    Scenario("multiple subflows with syn cookies", "syncookies_tests", "ns1:4:1",
             ns1=Side((0, 2)), ns2=Side((0, 2), ("ns2:4:3 subflow", "ns2:4:2 subflow")),
             join=(2, 2, 2), syncookies=True),
    Scenario("subflows limited by server w cookies", "syncookies_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 2), ("ns2:4:3 subflow", "ns2:4:2 subflow")),
             join=(2, 1, 1), join_syn_rej=1, ours_codes={"connector": ("join-refused",)},
             syncookies=True),
    Scenario("signal address with syn cookies", "syncookies_tests", "ns1:4:1",
             ns1=Side((0, 1), ("ns1:4:2 signal",)), ns2=Side((1, 1)),
             join=(1, 1, 1), add=(1, 1),
             syncookies=True),
    Scenario("subflow and signal w cookies", "syncookies_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal",)), ns2=Side((1, 2), ("ns2:4:3 subflow",)),
             join=(2, 2, 2), add=(1, 1),
             syncookies=True),
    Scenario("subflows and signal w. cookies", "syncookies_tests", "ns1:4:1",
             ns1=Side((0, 3), ("ns1:4:2 signal",)),
             ns2=Side((1, 3), ("ns2:4:3 subflow", "ns2:4:4 subflow")),
             join=(3, 3, 3), add=(1, 1),
             syncookies=True),

    # ---- checksum_tests: "checksum test NS1 NS2" (checksum_enabled per namespace) -------
    *[Scenario(f"checksum test {a} {b}", "checksum_tests", "ns1:4:1",
               ns1=Side((0, 1)), ns2=Side((0, 1)), join=(0, 0, 0),
               checksum=(bool(a), bool(b)))
      for a, b in ((0, 0), (1, 1), (0, 1), (1, 0))],

    # ---- deny_join_id0_tests: allow_join_initial_addr_port (ns1, ns2) --------------------
    Scenario("single subflow allow join id0 ns1", "deny_join_id0_tests", "ns1:4:1",
             ns1=Side((1, 1)), ns2=Side((1, 1), ("ns2:4:3 subflow",)),
             allow_join_id0=(True, False), join=(1, 1, 1)),
    Scenario("single subflow allow join id0 ns2", "deny_join_id0_tests", "ns1:4:1",
             ns1=Side((1, 1)), ns2=Side((1, 1), ("ns2:4:3 subflow",)),
             allow_join_id0=(False, True), join=(0, 0, 0),
             ours_codes={"connector": ("join-initial-denied",)}),
    Scenario("signal address allow join id0 ns1", "deny_join_id0_tests", "ns1:4:1",
             ns1=Side((1, 1), ("ns1:4:2 signal",)), ns2=Side((1, 1)),
             allow_join_id0=(True, False), join=(1, 1, 1), add=(1, 1)),
    Scenario("signal address allow join id0 ns2", "deny_join_id0_tests", "ns1:4:1",
             ns1=Side((1, 1), ("ns1:4:2 signal",)), ns2=Side((1, 1)),
             allow_join_id0=(False, True), join=(1, 1, 1), add=(1, 1)),
    Scenario("subflow and address allow join id0 1", "deny_join_id0_tests", "ns1:4:1",
             ns1=Side((2, 2), ("ns1:4:2 signal",)), ns2=Side((2, 2), ("ns2:4:3 subflow",)),
             allow_join_id0=(True, False), join=(2, 2, 2)),
    Scenario("subflow and address allow join id0 2", "deny_join_id0_tests", "ns1:4:1",
             ns1=Side((2, 2), ("ns1:4:2 signal",)), ns2=Side((2, 2), ("ns2:4:3 subflow",)),
             allow_join_id0=(False, True), join=(1, 1, 1),
             ours_codes={"connector": ("join-initial-denied",)}),
    Scenario("default limits, server deny join id 0", "deny_join_id0_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal",)),
             ns2=Side((0, 2), ("ns2:4:3 subflow", "ns2:4:4 subflow")),
             allow_join_id0=(False, True), join=(2, 2, 2)),

    # ---- fullmesh_tests (the four without endpoint flag changes) -----------------------
    Scenario("fullmesh test 2x1", "fullmesh_tests", "ns1:4:1",
             ns1=Side((0, 4)),
             ns2=Side((1, 4), ("ns2:4:2 subflow,fullmesh", "ns2:4:3 subflow,fullmesh")),
             steps=(Step("ns1", "add", "ns1:4:2 signal"),),
             join=(4, 4, 4), add=(1, 1), slow=True),
    # the script adds ns2's 10.0.1.2 endpoint where the kernel has
    # mptcp_pm_subflow_check_next (6.18 has); fullmesh=1: addr_nr_ns2=1 with
    # `subflow,fullmesh`
    Scenario("fullmesh test 1x1", "fullmesh_tests", "ns1:4:1",
             ns1=Side((1, 3), ("ns1:4:2 signal",)),
             ns2=Side((1, 3), ("ns2:4:1 subflow,fullmesh",)),
             steps=(Step("ns2", "add", "ns2:4:3 subflow,fullmesh"),),
             join=(3, 3, 3), add=(1, 1), slow=True),
    Scenario("fullmesh test 1x2", "fullmesh_tests", "ns1:4:1",
             ns1=Side((2, 5), ("ns1:4:2 signal",)), ns2=Side((1, 5)),
             steps=(Step("ns2", "add", "ns2:4:3 subflow,fullmesh"),
                    Step("ns2", "add", "ns2:4:4 subflow,fullmesh")),
             join=(5, 5, 5), add=(1, 1), slow=True),
    Scenario("fullmesh test 1x2, limited", "fullmesh_tests", "ns1:4:1",
             ns1=Side((2, 4), ("ns1:4:2 signal",)), ns2=Side((1, 4)),
             steps=(Step("ns2", "add", "ns2:4:3 subflow,fullmesh"),
                    Step("ns2", "add", "ns2:4:4 subflow,fullmesh")),
             join=(4, 4, 4), add=(1, 1), slow=True),

    # ---- userspace_tests (the PM type only: no daemon, no pm_nl_ctl) ---------------------
    Scenario("userspace pm type prevents add_addr", "userspace_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal",)), ns2=Side((0, 2)), userspace_pm=("ns1",),
             join=(0, 0, 0), add=(0, 0), roles=("connector",), not_ours=NOT_OURS_USERSPACE),
    Scenario("userspace pm no echo w/o daemon", "userspace_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal",)), ns2=Side((0, 2)), userspace_pm=("ns2",),
             join=(0, 0, 0), add=(1, 0), roles=("listener",), not_ours=NOT_OURS_USERSPACE,
             ours_codes={"listener": ("add-addr-not-echoed",)}),
    Scenario("userspace pm type rejects join", "userspace_tests", "ns1:4:1",
             ns1=Side((1, 1)), ns2=Side((1, 1), ("ns2:4:3 subflow",)), userspace_pm=("ns1",),
             join=(1, 1, 0), join_syn_rej=1, roles=("connector",),
             not_ours=NOT_OURS_USERSPACE, ours_codes={"connector": ("join-refused",)}),
    # the join is refused, so ours, switching its join's address to backup, sends no
    # MP_PRIO (the subflow is gone); the kernel's userspace PM changes no endpoint
    Scenario("userspace pm type prevents mp_prio", "userspace_tests", "ns1:4:1",
             ns1=Side((1, 1)), ns2=Side((1, 1), ("ns2:4:3 subflow",)), userspace_pm=("ns1",),
             sflags="backup", join=(1, 1, 0), join_syn_rej=1, prio=(0, 0, 0, 0), slow=True,
             roles=("connector",), not_ours=NOT_OURS_USERSPACE,
             ours_codes={"connector": ("join-refused",)}),
    Scenario("userspace pm type does not send join", "userspace_tests", "ns1:4:1",
             ns1=Side((1, 1)), ns2=Side((1, 1), ("ns2:4:3 subflow",)), userspace_pm=("ns2",),
             join=(0, 0, 0), roles=("listener",), not_ours=NOT_OURS_USERSPACE),
    # the script makes both sides userspace; ns1's PM has nothing to do here (no join
    # reaches it, it has no endpoint), so ours, with no endpoint, plays ns1
    Scenario("userspace pm type prevents rm_addr", "userspace_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:4:3 subflow",)), userspace_pm=("ns2",),
             steps=(Step("ns2", "del"),), join=(0, 0, 0), rm=(0, 0, False), slow=True,
             roles=("listener",), not_ours=NOT_OURS_USERSPACE),
    # ---- userspace_tests with the kernel's userspace PM driven (pm_nl_ctl's commands) ------
    Scenario("userspace pm add & remove address", "userspace_tests", "ns1:4:1",
             ns2=Side((2, 2)), userspace_pm=("ns1",),
             pm_cmds=(("ann", "ns1:4:2", "10"), ("ann", "ns1:4:3", "20"), ("dsf", "ns1:4:2"),
                      ("rem", "20")),
             join=(2, 2, 2), add=(2, 2), rm=(1, 1, True), subflows_total=(1, 1),
             idle=8.0, roles=("connector",), not_ours=NOT_OURS_USERSPACE),
    Scenario("userspace pm create destroy subflow", "userspace_tests", "ns1:4:1",
             ns1=Side((0, 1)), userspace_pm=("ns2",),
             pm_cmds=(("csf", "ns2:4:3", "20"), ("dsf", "ns2:4:3"),
                      ("csf!", "10.0.12.2", "10")),
             join=(1, 1, 1), rm=(0, 1, False), subflows_total=(1, 1),
             idle=8.0, roles=("listener",), not_ours=NOT_OURS_USERSPACE),
    Scenario("userspace pm create id 0 subflow", "userspace_tests", "ns1:4:1",
             ns1=Side((0, 1)), userspace_pm=("ns2",), pm_cmds=(("csf", "ns2:4:3", "0"),),
             join=(1, 1, 1), subflows_total=(2, 2),
             idle=6.0, roles=("listener",), not_ours=NOT_OURS_USERSPACE),
    Scenario("userspace pm remove initial subflow", "userspace_tests", "ns1:4:1",
             ns1=Side((0, 1)), userspace_pm=("ns2",),
             pm_cmds=(("csf", "ns2:4:3", "20"), ("dsf", "ns2:4:1")),
             join=(1, 1, 1), rm=(0, 1, False), no_rst=True, subflows_total=(1, 1),
             idle=8.0, roles=("listener",), not_ours=NOT_OURS_USERSPACE),
    Scenario("userspace pm send RM_ADDR for ID 0", "userspace_tests", "ns1:4:1",
             ns2=Side((1, 1)), userspace_pm=("ns1",),
             pm_cmds=(("ann", "ns1:4:2", "10"), ("rem", "0")),
             join=(1, 1, 1), add=(1, 1), rm=(1, 0, True), no_rst=True, subflows_total=(1, 1),
             idle=8.0, roles=("connector",), not_ours=NOT_OURS_USERSPACE),
    # ---- add_addr_ports_tests: `signal port 10100` endpoints -----------------------------
    Scenario("signal address with port", "add_addr_ports_tests", "ns1:4:1",
             ns1=Side((0, 1), ("ns1:4:2 signal port 10100",)), ns2=Side((1, 1)),
             join=(1, 1, 1), add=(1, 1), add_port=1),
    Scenario("subflow and signal with port", "add_addr_ports_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal port 10100",)),
             ns2=Side((1, 2), ("ns2:4:3 subflow",)),
             join=(2, 2, 2), add=(1, 1), add_port=1),
    # (the script checks ns1's PM listener events here too: the kernel's LISTENER_CREATED
    # and LISTENER_CLOSED for 10.0.2.1:10100; ours has no listener events)
    Scenario("remove single address with port", "add_addr_ports_tests", "ns1:4:1",
             ns1=Side((0, 1), ("ns1:4:2 signal port 10100",)), ns2=Side((1, 1)),
             steps=(Step("ns1", "del"),),
             join=(1, 1, 1), add=(1, 1), add_port=1, rm=(1, 1, True), slow=True),
    Scenario("remove subflow and signal with port", "add_addr_ports_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal port 10100",)),
             ns2=Side((1, 2), ("ns2:4:3 subflow",)),
             steps=(Step("ns1", "del"), Step("ns2", "del")),
             join=(2, 2, 2), add=(1, 1), add_port=1, rm=(1, 1, False), slow=True),
    Scenario("flush subflows and signal with port", "add_addr_ports_tests", "ns1:4:1",
             ns1=Side((0, 3), ("ns1:4:2 signal port 10100",)),
             ns2=Side((1, 3), ("ns2:4:3 subflow", "ns2:4:4 subflow")),
             steps=(Step("ns1", "flush"), Step("ns2", "del"), Step("ns2", "del")),
             join=(3, 3, 3), add=(1, 1), rm=(1, 3, True), rm_simult=True, slow=True),
    Scenario("multiple addresses with port", "add_addr_ports_tests", "ns1:4:1",
             ns1=Side((2, 2), ("ns1:4:2 signal port 10100", "ns1:4:3 signal port 10100")),
             ns2=Side((2, 2)), join=(2, 2, 2), add=(2, 2), add_port=2),
    Scenario("multiple addresses with ports", "add_addr_ports_tests", "ns1:4:1",
             ns1=Side((2, 2), ("ns1:4:2 signal port 10100", "ns1:4:3 signal port 10101")),
             ns2=Side((2, 2)), join=(2, 2, 2), add=(2, 2), add_port=2),
    # ---- backup_tests: endpoint flags changed 1 s in (sflags), MP_PRIO (chk_prio_nr) ---
    Scenario("single subflow, backup", "backup_tests", "ns1:4:1",
             ns1=Side((0, 1)), ns2=Side((0, 1), ("ns2:4:3 subflow,backup",)),
             sflags="nobackup", join=(1, 1, 1), prio=(0, 1, 1, 0), slow=True),
    Scenario("single address, backup", "backup_tests", "ns1:4:1",
             ns1=Side((0, 1), ("ns1:4:2 signal,backup",)), ns2=Side((1, 1)),
             sflags="nobackup", join=(1, 1, 1), add=(1, 1), prio=(1, 0, 0, 1), slow=True),
    Scenario("single address, switch to backup", "backup_tests", "ns1:4:1",
             ns1=Side((0, 1), ("ns1:4:2 signal",)), ns2=Side((1, 1)),
             sflags="backup", join=(1, 1, 1), add=(1, 1), prio=(1, 1, 0, 0), slow=True),
    Scenario("single address with port, backup", "backup_tests", "ns1:4:1",
             ns1=Side((0, 1), ("ns1:4:2 signal,backup port 10100",)), ns2=Side((1, 1)),
             sflags="nobackup", join=(1, 1, 1), add=(1, 1), prio=(1, 0, 0, 1), slow=True),
    Scenario("mpc backup", "backup_tests", "ns1:4:1",
             ns2=Side(None, ("ns2:4:1 subflow,backup",)), prio=(0, 1, 0, 0), slow=True),
    Scenario("mpc switch to backup", "backup_tests", "ns1:4:1",
             ns2=Side(None, ("ns2:4:1 subflow",)), sflags="backup", prio=(0, 1, 0, 0),
             slow=True),
    Scenario("mpc switch to backup both sides", "backup_tests", "ns1:4:1",
             ns1=Side(None, ("ns1:4:1 subflow",)), ns2=Side(None, ("ns2:4:1 subflow",)),
             sflags="backup", prio=(1, 1, 0, 0), slow=True),
    Scenario("mpc backup both sides", "backup_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:1 signal,backup", "ns1:4:2 signal")),
             ns2=Side((1, 2), ("ns2:4:1 subflow,backup", "ns2:4:2 subflow")),
             ns2_routes=(("ns1:4:2", 1),), join=(2, 2, 2), prio=(1, 1, 1, 1), slow=True,
             roles=("listener",),
             not_ours="ns2's join to the announced 10.0.2.1 must leave from its backup "
                      "address 10.0.1.2 (the script routes 10.0.2.1 through link 1); ours "
                      "joins an address from its own address on that address's link"),
    # ---- fastclose_tests -----------------------------------------------------------------
    Scenario("fastclose test", "fastclose_tests", "ns1:4:1", fastclose="client"),
    Scenario("fastclose server test", "fastclose_tests", "ns1:4:1", fastclose="server"),
    Scenario("port-based signal endpoint must not accept mpc", "add_addr_ports_tests",
             "ns1:4:2", ns1=Side(None, ("ns1:4:2 signal port 10102",)),
             mpc_to_endpoint=True),
    # ---- fullmesh_tests with sflags: a fullmesh change closes the endpoint's joins
    # and opens them again (RmSubflow on ns2); speed=slow: the kernel pauses instead
    Scenario("set fullmesh flag test", "fullmesh_tests", "ns1:4:1",
             ns1=Side((4, 4), ("ns1:4:2 subflow",)), ns2=Side((4, 4)),
             steps=(Step("ns2", "add", "ns2:4:3 subflow"),), sflags="fullmesh",
             join=(2, 2, 2), rm=(0, 1, False), kernel_pause=4.0),
    Scenario("set nofullmesh flag test", "fullmesh_tests", "ns1:4:1",
             ns1=Side((4, 4), ("ns1:4:2 subflow,fullmesh",)), ns2=Side((4, 4)),
             steps=(Step("ns2", "add", "ns2:4:3 subflow,fullmesh"),), sflags="nofullmesh",
             join=(2, 2, 2), rm=(0, 1, False), kernel_pause=4.0),
    Scenario("set backup,fullmesh flags test", "fullmesh_tests", "ns1:4:1",
             ns1=Side((4, 4), ("ns1:4:2 subflow",)), ns2=Side((4, 4)),
             steps=(Step("ns2", "add", "ns2:4:3 subflow"),), sflags="backup,fullmesh",
             join=(2, 2, 2), prio=(0, 1, 1, 0), rm=(0, 1, False), kernel_pause=4.0),
    Scenario("set nobackup,nofullmesh flags test", "fullmesh_tests", "ns1:4:1",
             ns1=Side((4, 4)), ns2=Side((4, 4), ("ns2:4:2 subflow,backup,fullmesh",)),
             sflags="nobackup,nofullmesh",
             join=(2, 2, 2), prio=(0, 1, 1, 0), rm=(0, 1, False), kernel_pause=3.0),
    # ---- link_failure_tests (test_linkfail; netem 20 Mbit/s: ours tbf) ---------------------
    Scenario("multiple flows, signal, link failure", "link_failure_tests", "ns1:4:1",
             ns1=Side((0, 3), ("ns1:4:2 signal",)),
             ns2=Side((1, 3), ("ns2:4:3 subflow", "ns2:4:4 subflow")),
             join=(3, 3, 3), add=(1, 1), linkfail=1, stale=(1, 5, 1),
             roles=("connector",), not_ours=NOT_OURS_LINKS,
             ours_codes=PATH_FAILED),
    Scenario("multi flows, signal, bidi, link fail", "link_failure_tests", "ns1:4:1",
             ns1=Side((0, 3), ("ns1:4:2 signal",)),
             ns2=Side((1, 3), ("ns2:4:3 subflow", "ns2:4:4 subflow")),
             join=(3, 3, 3), add=(1, 1), linkfail=2, stale=(1, -1, 1),
             roles=("connector",), not_ours=NOT_OURS_LINKS,
             ours_codes=PATH_FAILED),
    Scenario("backup subflow unused, link failure", "link_failure_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal",)), ns2=Side((1, 2), ("ns2:4:3 subflow,backup",)),
             join=(2, 2, 2), add=(1, 1), linkfail=1, failing_links=(1,), link_usage=(3, 0),
             roles=("connector",), not_ours=NOT_OURS_LINKS,
             ours_codes=PATH_FAILED),
    Scenario("backup flow used, multi links fail", "link_failure_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal",)), ns2=Side((1, 2), ("ns2:4:3 subflow,backup",)),
             join=(2, 2, 2), add=(1, 1), linkfail=1, failing_links=(1, 2), stale=(2, 4, 2),
             link_usage=(3, 50), roles=("connector",), not_ours=NOT_OURS_LINKS,
             ours_codes=PATH_FAILED),
    Scenario("backup flow used, bidi, link failure", "link_failure_tests", "ns1:4:1",
             ns1=Side((0, 2), ("ns1:4:2 signal",)), ns2=Side((1, 3), ("ns2:4:3 subflow,backup",)),
             join=(2, 2, 2), add=(1, 1), linkfail=2, failing_links=(1, 2), stale=(1, -1, 2),
             link_usage=(3, 50), roles=("connector",), not_ours=NOT_OURS_LINKS,
             ours_codes=PATH_FAILED),
]

# ---- every other IPv4 scenario of the script: (title, group, what it needs) -------------
LAMINAR = ("`laminar` endpoints (iproute2 6.1 here has no such flag; our stack has no "
           "laminar endpoint)")
USERSPACE = ("the SUB_CLOSED events of the kernel's userspace PM (pm_nl_ctl events), and "
             "iptables REJECT with tcp-reset on the initial subflow both ways")
ENDPOINT = ("needs a runner feature: endpoint delete/re-add sequences checked by live "
            "subflow counts (ss, mptcp_info), PM events and an RM_ADDR BPF filter")

LISTED: list[tuple[str, str, str]] = [
    # played, found a gap of our stack (connector, its only role): the kernel (ns1)
    # announces 10.0.12.1, 224.0.0.1 and 10.0.3.1 to ns2, which accepts 2
    ("with a laminar endpoint", "laminar_endp_tests", LAMINAR),
    ("with multiple laminar endpoints", "laminar_endp_tests", LAMINAR),
    ("single laminar endpoint", "laminar_endp_tests", LAMINAR),
    ("sublow + laminar endpoints", "laminar_endp_tests", LAMINAR),
    ("Infinite map", "fail_tests",
     "MP_FAIL via checksum corruption (tc pedit on ns2's egress); infinite mapping"),
    ("MP_FAIL MP_RST", "fail_tests",
     "MP_FAIL via checksum corruption (tc pedit on ns2's egress); netem shaping"),
    ("userspace pm no dup close events after error", "userspace_tests", USERSPACE),
    ("implicit EP", "endpoint_tests",
     f"{ENDPOINT}; the `implicit` endpoint flag (iproute2 6.1 has none)"),
    ("delete and re-add", "endpoint_tests", ENDPOINT),
    ("delete re-add signal", "endpoint_tests", ENDPOINT),
    ("flush re-add", "endpoint_tests", ENDPOINT),
]

# ---- what would play the most of LISTED (scenarios each capability alone unlocks) ------
#   1  the kernel's PM events checked (userspace "no dup close events after error")
#   4  `laminar` endpoints (iproute2 >= 6.18 here, and in our stack)
#   4  endpoint delete/re-add sequences checked live (endpoint_tests; +`implicit`)
#   2  MP_FAIL by checksum corruption (tc pedit; fail_tests)
#   (played since: ADD_ADDR with a port, 8; sflags backup/nobackup with chk_prio_nr, 8;
#   fastclose_tests, 2; link_failure_tests, 5; userspace PM commands driven, 5; the
#   fullmesh flag changes (`ctl flags`), 4; "mpc backup both sides" (a host route on
#   the kernel's ns2), 1; SYN cookies on our listener: syncookies_tests as listener;
#   fixed since: a join over the subflow limit refused at the third ACK, "... limited
#   by server" as listener; a removed subflow's data sent again at once, "remove id 0
#   subflow" and "remove id 0 address" as listener; a multicast announcement not joined,
#   "remove invalid addresses")
