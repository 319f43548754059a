"""The kernel's userspace path-manager commands (generic netlink family `mptcp_pm`), as
the selftests' `pm_nl_ctl ann|rem|csf|dsf` sends them; iproute2 6.1 has none of them.

Run in the kernel's namespace: `python3 tests/interop/mptcp_pm_nl.py CMD ...`:

    ann ADDR id ID token TOKEN                      ADD_ADDR ADDR as ID (MPTCP_PM_CMD_ANNOUNCE)
    rem id ID token TOKEN                           REMOVE_ADDR ID (MPTCP_PM_CMD_REMOVE)
    csf lip ADDR lid ID rip ADDR rport PORT token TOKEN
                                                    open a join (MPTCP_PM_CMD_SUBFLOW_CREATE)
    dsf lip ADDR lport PORT rip ADDR rport PORT token TOKEN
                                                    close a subflow (..._SUBFLOW_DESTROY)

TOKEN is hex, as `ip mptcp monitor` prints it. Exit status 0, or 1 with the kernel's
error (errno and extended ack message) on stderr. Standard library only: it runs with
the system python3 in the peer namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import sys

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
NLMSGERR_ATTR_MSG = 1

# include/uapi/linux/mptcp_pm.h
CMD = {"ann": 8, "rem": 9, "csf": 10, "dsf": 11}
ATTR_ADDR, ATTR_TOKEN, ATTR_LOC_ID, ATTR_ADDR_REMOTE = 1, 4, 5, 6
ADDR_FAMILY, ADDR_ID, ADDR_ADDR4, ADDR_ADDR6, ADDR_PORT, ADDR_FLAGS = 1, 2, 3, 4, 5, 6
FLAG_SIGNAL = 1


def nla(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def address(addr: str, *, ident: int | None = None, port: int | None = None,
            flags: int | None = None) -> bytes:
    """An MPTCP_PM_ATTR_ADDR body: family, address, and the fields given."""
    ip = ipaddress.ip_address(addr)
    out = nla(ADDR_FAMILY, struct.pack("=H", socket.AF_INET if ip.version == 4
                                       else socket.AF_INET6))
    out += nla(ADDR_ADDR4 if ip.version == 4 else ADDR_ADDR6, ip.packed)
    if ident is not None:
        out += nla(ADDR_ID, struct.pack("=B", ident))
    if port is not None:
        out += nla(ADDR_PORT, struct.pack("=H", port))
    if flags is not None:
        out += nla(ADDR_FLAGS, struct.pack("=I", flags))
    return out


class GenlError(OSError):
    pass


def request(sock: socket.socket, family: int, cmd: int, attrs: bytes, seq: int) -> bytes:
    body = struct.pack("=BBH", cmd, 1, 0) + attrs
    sock.send(struct.pack("=IHHII", 16 + len(body), family, NLM_F_REQUEST | NLM_F_ACK,
                          seq, os.getpid()) + body)
    reply = b""
    while True:
        data = sock.recv(65536)
        off = 0
        while off + 16 <= len(data):
            length, kind, _, _, _ = struct.unpack_from("=IHHII", data, off)
            msg = data[off + 16:off + length]
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", msg)
                if code:
                    raise GenlError(-code, f"{errno.errorcode.get(-code, -code)}"
                                           f"{_ext_ack(msg)}")
                return reply
            reply = msg
            off += (length + 3) & ~3


def _ext_ack(msg: bytes) -> str:
    """The extended ack's message, if the kernel sent one (after the echoed header)."""
    (hdr_len,) = struct.unpack_from("=I", msg, 4)
    off = 4 + hdr_len if len(msg) > 4 + hdr_len else 4 + 16
    while off + 4 <= len(msg):
        n, kind = struct.unpack_from("=HH", msg, off)
        if n < 4:
            break
        if kind & 0x3FFF == NLMSGERR_ATTR_MSG:
            return ": " + msg[off + 4:off + n].rstrip(b"\0").decode(errors="replace")
        off += (n + 3) & ~3
    return ""


def family_id(sock: socket.socket, name: str) -> int:
    reply = request(sock, GENL_ID_CTRL, CTRL_CMD_GETFAMILY,
                    nla(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"), 1)
    off = 4
    while off + 4 <= len(reply):
        n, kind = struct.unpack_from("=HH", reply, off)
        if kind == CTRL_ATTR_FAMILY_ID:
            return struct.unpack_from("=H", reply, off + 4)[0]  # type: ignore[no-any-return]
        off += (n + 3) & ~3
    raise GenlError(errno.ENOENT, f"no generic netlink family {name!r}")


def attributes(argv: list[str]) -> tuple[int, bytes]:
    """(command, attributes) for `pm_nl_ctl`-style words."""
    cmd, rest = argv[0], argv[1:]
    if cmd == "ann":  # ann ADDR id ID token TOKEN
        addr, rest = rest[0], rest[1:]
    words = dict(zip(rest[::2], rest[1::2], strict=True))
    token = nla(ATTR_TOKEN, struct.pack("=I", int(words["token"], 16)))
    if cmd == "ann":
        local = address(addr, ident=int(words["id"]), flags=FLAG_SIGNAL)
        return CMD[cmd], nla(ATTR_ADDR | NLA_F_NESTED, local) + token
    if cmd == "rem":
        return CMD[cmd], nla(ATTR_LOC_ID, struct.pack("=B", int(words["id"]))) + token
    if cmd == "csf":
        local = address(words["lip"], ident=int(words["lid"]))
    elif cmd == "dsf":
        local = address(words["lip"], port=int(words["lport"]))
    else:
        raise SystemExit(f"unknown command {cmd!r}\n{__doc__}")
    remote = address(words["rip"], port=int(words["rport"]))
    return CMD[cmd], (nla(ATTR_ADDR | NLA_F_NESTED, local)
                      + nla(ATTR_ADDR_REMOTE | NLA_F_NESTED, remote) + token)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, attrs = attributes(argv)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC) as sock:
        sock.setsockopt(270, 11, 1)  # SOL_NETLINK, NETLINK_EXT_ACK
        try:
            request(sock, family_id(sock, "mptcp_pm"), cmd, attrs, 2)
        except GenlError as e:
            print(f"mptcp_pm {argv[0]}: {e.strerror}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
