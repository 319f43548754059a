"""MPTCP keys, tokens, IDSNs, HMACs and the DSS checksum (RFC 8684 sections 3.1, 3.2,
3.3.1, 3.4.1; RFC 6824 sections 3.1, 3.2, 3.3 for v0).

Mirrors the kernel's `net/mptcp/crypto.c` (`mptcp_crypto_key_sha`,
`mptcp_crypto_hmac_sha`), `subflow.c` (`subflow_generate_hmac`), `options.c`
(`add_addr_generate_hmac`, `__mptcp_make_csum`) and `subflow.c` (`validate_data_csum`).

Which library does what, and why:
- Plain digests (token and IDSN of a key) use `hashlib`: only a digest is needed, and
  SHA-256 of 8 bytes costs ~0.4 us there against ~1.2 us through `cryptography`
  (docs/interop.md, "Cost of Python pieces"). Token lookups for MP_JOIN and key generation call it.
- HMACs use `cryptography` (`hazmat.primitives.hmac`): keyed MACs go through the
  vetted primitive; they run once per MP_JOIN or ADD_ADDR, so its cost does not matter.
- The DSS checksum is the Internet checksum (`stack.wire.checksum`), the one MPTCP
  computation that runs per segment (when checksums are negotiated): `int.from_bytes`
  and one modulo in C, no per-byte Python loop.

Keys are 64-bit integers, sent big-endian; every HMAC key is `Key1 || Key2` as two
8-byte big-endian values and every nonce a 4-byte big-endian value.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac

from stack.wire.checksum import Buffer, internet_checksum, ones_sum

MPTCP_VERSION_0 = 0  # RFC 6824: SHA-1
MPTCP_VERSION_1 = 1  # RFC 8684: SHA-256
KEY_MASK = (1 << 64) - 1
MPTCPOPT_HMAC_LEN = 20  # bytes of HMAC in the MP_JOIN third ACK (both versions)
MPTCPOPT_THMAC_LEN = 8  # bytes of truncated HMAC in the MP_JOIN SYN/ACK
# The kernel gives up on a unique token after this many fresh keys and falls back to
# plain TCP (subflow_check_req, counter MPTCP_MIB_TOKENFALLBACKINIT).
MPTCP_TOKEN_MAX_RETRIES = 4

_KEYS = struct.Struct("!QQ")
_NONCES = struct.Struct("!II")
_CSUM_PSEUDO = struct.Struct("!QIHH")  # struct csum_pseudo_header: dsn, ssn, len, csum


def _check_version(version: int) -> None:
    if version not in (MPTCP_VERSION_0, MPTCP_VERSION_1):
        raise ValueError(f"MPTCP version {version}: only 0 (RFC 6824) and 1 (RFC 8684)")


# --- keys, tokens, IDSN --------------------------------------------------------------
def generate_key(randbytes: Callable[[int], bytes]) -> int:
    """A fresh 64-bit key from the injected CSPRNG (`os.urandom` in the shell, a seeded
    generator in tests). Zero is never used, as in the kernel (`subflow_check_req`
    loops until the key is non-zero; a zero sender key in a cookie ACK is refused)."""
    for _ in range(64):
        raw = randbytes(8)
        if len(raw) != 8:
            raise ValueError(f"randbytes(8) returned {len(raw)} bytes")
        key = int.from_bytes(raw, "big")
        if key:
            return key
    raise ValueError("randbytes keeps returning zeros")


def generate_unique_key(randbytes: Callable[[int], bytes], token_in_use: Callable[[int], bool],
                        version: int = MPTCP_VERSION_1,
                        retries: int = MPTCP_TOKEN_MAX_RETRIES) -> int | None:
    """A key whose token is not in use locally (`token_in_use(token)` is the caller's
    token table), or None after `retries` + 1 colliding keys: the kernel then falls back
    to plain TCP and counts MPFallbackTokenInit (`subflow_check_req`,
    `mptcp_token_new_request`)."""
    for _ in range(retries + 1):
        key = generate_key(randbytes)
        if not token_in_use(key_token_idsn(key, version)[0]):
            return key
    return None


def key_token_idsn(key: int, version: int = MPTCP_VERSION_1) -> tuple[int, int]:
    """(token, IDSN) of a 64-bit key (`mptcp_crypto_key_sha`). v1 (RFC 8684 3.1/3.2):
    token = the most significant 32 bits of SHA-256(key, 8 bytes big-endian), IDSN =
    the least significant 64 bits. v0 (RFC 6824 3.1/3.2): the same with SHA-1. The
    first data byte has DSN = IDSN + 1 (the SYN takes the IDSN, RFC 8684 3.3)."""
    _check_version(version)
    data = (key & KEY_MASK).to_bytes(8, "big")
    digest = (hashlib.sha256(data) if version else hashlib.sha1(data)).digest()
    return int.from_bytes(digest[:4], "big"), int.from_bytes(digest[-8:], "big")


def key_token(key: int, version: int = MPTCP_VERSION_1) -> int:
    """The 32-bit token of a key (see `key_token_idsn`)."""
    return key_token_idsn(key, version)[0]


def key_idsn(key: int, version: int = MPTCP_VERSION_1) -> int:
    """The 64-bit initial data sequence number of a key (see `key_token_idsn`)."""
    return key_token_idsn(key, version)[1]


# --- HMACs ---------------------------------------------------------------------------
def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) of `msg` under `key`: the 32-byte MAC."""
    h = _hmac.HMAC(key, hashes.SHA256())
    h.update(msg)
    return h.finalize()


def hmac_sha1(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA1 (RFC 2104), the v0 (RFC 6824) MAC: 20 bytes."""
    h = _hmac.HMAC(key, hashes.SHA1())
    h.update(msg)
    return h.finalize()


def mptcp_hmac(key1: int, key2: int, msg: bytes, version: int = MPTCP_VERSION_1) -> bytes:
    """HMAC(Key = key1 || key2, msg) with the version's hash: the kernel's
    `mptcp_crypto_hmac_sha(key1, key2, msg, len, hmac)` (SHA-256), or HMAC-SHA1 for v0."""
    _check_version(version)
    k = _KEYS.pack(key1 & KEY_MASK, key2 & KEY_MASK)
    return hmac_sha256(k, msg) if version else hmac_sha1(k, msg)


def join_synack_hmac(key_b: int, key_a: int, nonce_b: int, nonce_a: int,
                     version: int = MPTCP_VERSION_1) -> int:
    """The truncated HMAC a join responder B puts in its MP_JOIN SYN/ACK (RFC 8684 3.2;
    RFC 6824 3.2 with SHA-1): the leftmost 64 bits of HMAC(Key_B || Key_A, R_B || R_A),
    big-endian (`subflow_req_create_thmac`; the joiner checks it in
    `subflow_thmac_valid` with the same arguments seen from its side)."""
    mac = mptcp_hmac(key_b, key_a, _NONCES.pack(nonce_b, nonce_a), version)
    return int.from_bytes(mac[:MPTCPOPT_THMAC_LEN], "big")


def join_ack_hmac(key_a: int, key_b: int, nonce_a: int, nonce_b: int,
                  version: int = MPTCP_VERSION_1) -> bytes:
    """The HMAC the joiner A puts in its MP_JOIN third ACK (RFC 8684 3.2; RFC 6824 3.2):
    the leftmost 160 bits of HMAC(Key_A || Key_B, R_A || R_B) (all of HMAC-SHA1 in v0)
    (`subflow_finish_connect`; checked by the responder in `subflow_hmac_valid`)."""
    mac = mptcp_hmac(key_a, key_b, _NONCES.pack(nonce_a, nonce_b), version)
    return mac[:MPTCPOPT_HMAC_LEN]


def add_addr_hmac(key_sender: int, key_receiver: int, addr_id: int, addr: bytes,
                  port: int | None = None) -> int:
    """The 64-bit HMAC of a v1 ADD_ADDR (RFC 8684 3.4.1; `add_addr_generate_hmac`): the
    rightmost 64 bits of HMAC-SHA256(Key_sender || Key_receiver, address id (1 byte) ||
    address (4 or 16 bytes) || port (2 bytes, 0 when absent)). The receiver checks it
    with the keys in the same order: sender's key first (`add_addr_hmac_valid`).
    v0 (RFC 6824) ADD_ADDR carries no HMAC."""
    if len(addr) not in (4, 16):
        raise ValueError(f"address of {len(addr)} bytes: 4 (IPv4) or 16 (IPv6)")
    msg = bytes((addr_id,)) + bytes(addr) + (port or 0).to_bytes(2, "big")
    return int.from_bytes(mptcp_hmac(key_sender, key_receiver, msg)[-8:], "big")


# --- DSS checksum --------------------------------------------------------------------
def dss_checksum(dsn64: int, ssn: int, data_len: int, payload: Buffer) -> int:
    """The DSS checksum field (RFC 8684 3.3.1; RFC 6824 3.3): the Internet checksum of a
    pseudo-header -- the 64-bit DSN (even when the option carries 32 bits), the 32-bit
    relative subflow sequence number, the 16-bit data-level length (DATA_FIN included)
    and 16 zero bits -- followed by the mapping's payload (`__mptcp_make_csum`).
    `payload` is the whole mapping's data (the engine joins a mapping spread over
    several segments); a mapping with only a DATA_FIN has none."""
    pseudo = _CSUM_PSEUDO.pack(dsn64 & KEY_MASK, ssn & 0xFFFFFFFF, data_len & 0xFFFF, 0)
    return internet_checksum(payload, ones_sum(pseudo))


def dss_checksum_ok(dsn64: int, ssn: int, data_len: int, payload: Buffer, checksum: int) -> bool:
    """True when `checksum` (as received) verifies: the ones'-complement sum of the
    pseudo-header with the checksum in its last 16 bits, plus the payload, is 0xffff
    (the kernel's `validate_data_csum` folds the same sum and requires zero)."""
    pseudo = _CSUM_PSEUDO.pack(dsn64 & KEY_MASK, ssn & 0xFFFFFFFF, data_len & 0xFFFF,
                               checksum & 0xFFFF)
    return internet_checksum(payload, ones_sum(pseudo)) == 0
