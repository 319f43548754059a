"""TunShell's choice of protocol (no device needed: it is opened by `start`): MPTCP by
default, as in the CLI, plain TCP when asked, a given config used as given."""

from __future__ import annotations

from stack.host import StackConfig
from stack.mptcp.connection import MptcpConfig
from stack.shell import TunShell

ADDRS = ["10.0.1.2"]


def test_mptcp_is_the_default() -> None:
    assert TunShell("mptun0", ADDRS).stack.config.mptcp == MptcpConfig()


def test_plain_tcp_when_asked() -> None:
    assert TunShell("mptun0", ADDRS, mptcp=False).stack.config.mptcp is None


def test_a_given_config_decides_unless_mptcp_is_said() -> None:
    assert TunShell("mptun0", ADDRS, config=StackConfig()).stack.config.mptcp is None
    mine = MptcpConfig(checksum=True)
    assert TunShell("mptun0", ADDRS, config=StackConfig(mptcp=mine)).stack.config.mptcp is mine
    assert TunShell("mptun0", ADDRS, config=StackConfig(), mptcp=True).stack.config.mptcp \
        == MptcpConfig()
    assert TunShell("mptun0", ADDRS, config=StackConfig(mptcp=mine),
                    mptcp=False).stack.config.mptcp is None
