"""The kernel's own MPTCP scenarios (tools/testing/selftests/net/mptcp/mptcp_join.sh,
Linux 6.18) with our stack in place of one of its two ends.

`catalogue.py` holds the scenarios as the script states them: the title, the limits and
endpoints of each namespace (ns1 listens, ns2 connects), what happens during the
transfer, and the counters its `chk_*` helpers expect. `runner.py` plays one with our
stack as ns1 (`listener`) or ns2 (`connector`) and the kernel in the peer namespace as
the other, and checks the same counters, each read on the side the script reads it
(ours from `--stats`, the kernel's from nstat), plus the bytes both ways by sha256."""
