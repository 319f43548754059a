"""Addresses of both families, as the stack keeps them: `bytes` of 4 (IPv4) or 16 (IPv6).

Text forms are the usual ones, with a port as `10.0.2.2:10100` / `[fd00:2::2]:10100`
(RFC 3986); an IPv4-mapped IPv6 address (`::ffff:10.0.1.2`) is the IPv4 address it
maps, as Linux's dual-stack sockets treat it.
"""

from __future__ import annotations

import socket

Addr = bytes  # 4 bytes (IPv4) or 16 (IPv6)

_V4_MAPPED = bytes(10) + b"\xff\xff"


def ip(text: str) -> Addr:
    """'10.0.1.2' -> 4 bytes, 'fd00:1::2' -> 16 (raises OSError on a bad address).
    Strict: '10.1' is not an IPv4 address here (inet_aton would take it)."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    try:
        return socket.inet_pton(socket.AF_INET, t)
    except OSError:
        pass
    try:
        a = socket.inet_pton(socket.AF_INET6, t)
    except OSError:
        raise OSError(f"not an IPv4 or IPv6 address: {text!r}") from None
    return a[12:] if a.startswith(_V4_MAPPED) else a


def unmap(addr: Addr) -> Addr:
    """An IPv4-mapped IPv6 address (16 bytes, ::ffff:A.B.C.D) as the IPv4 address it
    maps (4 bytes); any other address as it is. (Linux announces a v4-mapped endpoint
    as an ADD_ADDR with a 16-byte address, and joins it over IPv4.)"""
    return addr[12:] if len(addr) == 16 and addr.startswith(_V4_MAPPED) else addr


def ntoa(addr: Addr) -> str:
    """4 bytes -> '10.0.1.2', 16 -> 'fd00:1::2' (compressed, as `ip` prints it)."""
    if len(addr) == 4:
        return socket.inet_ntoa(addr)
    return socket.inet_ntop(socket.AF_INET6, addr)


def is_v6(addr: Addr) -> bool:
    return len(addr) == 16


def fmt(addr: Addr, port: int) -> str:
    """'10.0.1.2:5000' or '[fd00:1::2]:5000'."""
    return f"[{ntoa(addr)}]:{port}" if len(addr) == 16 else f"{ntoa(addr)}:{port}"


def parse_addr_port(text: str) -> tuple[Addr, int | None]:
    """'10.0.2.2', '10.0.2.2:10100', 'fd00:2::2', '[fd00:2::2]:10100' -> (address,
    port or None). A bare IPv6 address has no port (its colons are the address's)."""
    t = text.strip()
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise OSError(f"no closing ']' in {text!r}")
        rest = t[end + 1:]
        if rest and not rest.startswith(":"):
            raise OSError(f"not an address with a port: {text!r}")
        return ip(t[1:end]), _port(rest[1:], text) if rest else None
    if t.count(":") == 1:
        host, port = t.split(":")
        return ip(host), _port(port, text)
    return ip(t), None


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise OSError(f"not a port (1-65535) in {whole!r}")
    return int(text)


def family_name(addr: Addr) -> str:
    return "IPv6" if len(addr) == 16 else "IPv4"
