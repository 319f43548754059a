"""Counters named like the kernel's SNMP/MIB counters (`nstat` names without the
`Ip`/`Tcp`/`TcpExt` prefixes where they are unambiguous). Every dropped frame is counted
under `Drop:<reason>`, the reason being the `MalformedPacket.reason` or a host tag."""

from __future__ import annotations

from collections import Counter


def format_counters(counters: Counter[str], prefix: str = "") -> str:
    """One `name value` per line, sorted, zero counters left out (like `nstat`)."""
    return "\n".join(f"{prefix}{k:<32} {v}" for k, v in sorted(counters.items()) if v)
