"""MPTCP crypto (stack.mptcp.crypto) against real kernel values.

How the kernel vectors were produced (kernel 6.18.44-fc-v595, this machine; the scripts
were throwaway and are not in the repo):
- `./netns-setup.sh up --paths 2 --prefix moptcap` (and `moptcap2`), offloads off on
  both ends of path1/path2, `ip -n moptcap-user mptcp limits set subflows 2
  add_addr_accepted 2`;
- `ip -n moptcap-peer mptcp monitor` and `ip -n moptcap-user mptcp monitor` in the
  background: they print each connection's token (the peer's = the server's, the
  user namespace's = the client's);
- a kernel MPTCP client (socket(AF_INET, SOCK_STREAM, 262) bound to 10.0.1.254) in
  moptcap-user talking to a kernel MPTCP server in moptcap-peer; every packet on the
  peer's path1/path2 captured with an AF_PACKET socket. The keys come from the captured
  MP_CAPABLE options (SYN/ACK: server key; third ACK: client key, server key), the
  nonces and HMACs from the captured MP_JOIN options, the ADD_ADDR HMACs from
  `ip -n moptcap-peer mptcp endpoint add 10.0.2.1 dev path2 [port 10100] signal`,
  the DSS checksums from a run with `net.mptcp.checksum_enabled=1` in the peer.
The same captured packets, byte for byte, are in tests/unit/test_mptcp_options.py.
"""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.mptcp import crypto
from stack.mptcp.crypto import (
    add_addr_hmac,
    dss_checksum,
    dss_checksum_ok,
    generate_key,
    generate_unique_key,
    hmac_sha1,
    hmac_sha256,
    join_ack_hmac,
    join_synack_hmac,
    key_idsn,
    key_token,
    key_token_idsn,
    mptcp_hmac,
)
from stack.wire import ipv4, tcp
from tests.unit import golden

# --- docs/interop.md, "HMAC self-test vectors": the kernel's own HMAC self-test ----------
# key and msg are the ASCII bytes of the strings; the kernel splits the key into key1 and
# key2 (8 bytes each, big-endian) and the message into two 32-bit nonces.
HMAC_VECTORS = [
    ("0b0b0b0b0b0b0b0b", "48692054",
     "8385e24fb4235ac37556b6b886db106284a1da671699f46db1f235ec622dcafa"),
    ("aaaaaaaaaaaaaaaa", "dddddddd",
     "2c5e219164ff1dca1c4a92318d847bb6b9d44492984e1eb71aff9022f71046e9"),
    ("0102030405060708", "cdcdcdcd",
     "e73b9ba9969969cefb04aa0d6df18ec2fcc075b6f23b4d8c4da736a5dbbc6e7d"),
]


@pytest.mark.parametrize("key,msg,mac", HMAC_VECTORS)
def test_kernel_hmac_selftest_vectors(key: str, msg: str, mac: str) -> None:
    k, m = key.encode(), msg.encode()
    assert hmac_sha256(k, m).hex() == mac
    key1, key2 = struct.unpack("!QQ", k)
    assert mptcp_hmac(key1, key2, m).hex() == mac
    # as the join code uses it: the message is two 32-bit nonces
    n1, n2 = struct.unpack("!II", m)
    assert join_ack_hmac(key1, key2, n1, n2) == bytes.fromhex(mac)[:20]
    assert join_synack_hmac(key1, key2, n1, n2) == int(mac[:16], 16)


def test_hmac_sha1_rfc2202() -> None:
    # RFC 2202 test case 1 (HMAC-SHA1), the v0 MAC
    assert hmac_sha1(b"\x0b" * 20, b"Hi There").hex() == "b617318655057264e28bc0b6fb378c8ef146be00"
    # RFC 2202 test case 2
    assert hmac_sha1(b"Jefe", b"what do ya want for nothing?").hex() == \
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"


@given(st.binary(max_size=80), st.binary(max_size=80))
def test_hmacs_match_stdlib(key: bytes, msg: bytes) -> None:
    assert hmac_sha256(key, msg) == std_hmac.new(key, msg, hashlib.sha256).digest()
    assert hmac_sha1(key, msg) == std_hmac.new(key, msg, hashlib.sha1).digest()


# --- real kernel keys -> tokens (ip mptcp monitor) and IDSNs (first DSN = IDSN + 1) -----
# (key, token printed by `ip mptcp monitor`, first DSN seen in a DSS/data ACK or None)
KERNEL_KEYS = [
    # connection A (port 7100): client key from the MP_CAPABLE third ACK, server key from
    # the SYN/ACK; the server's first DSS mapping starts at DSN 0x1ded68248bbb0cea, and its
    # data ACK after the client's 100 bytes (implicit first mapping) is 0xb9638d5449f4bb29.
    (0x873FAB7E38B3012D, 0xD2D773B7, 0xB9638D5449F4BB29 - 100),
    (0xFCF0EBFE672E4672, 0x3D3DFF70, 0x1DED68248BBB0CEA),
    # connection B (7101, ADD_ADDR + join): both sides' first DSS mappings
    (0xC7D766EE00879CC6, 0x97DBC088, 0xB70F0CB050AD129D),
    (0xD8EBE01306E522E8, 0x19F8BAD9, 0xDAF2F250819CCE40),
    # connection C (7102, checksums on)
    (0xFD84BA9A620F7D52, 0x0B0575B4, 0x0E0FB139A56ED5B2 - 100),
    (0x7789C8B2E7059A77, 0xDF910EDD, 0x4FBE0D50648F4A12),
    # connection D (7103, ADD_ADDR with port + join)
    (0xE73E0E7265FC014F, 0x6DE1285A, 0x615B199D7ADA6890),
    (0x8A50066F9A320EF1, 0xAD3FC087, 0xEA927F79EB0CD178),
    # connection F (7201, backup join from the client) and G (7202, 20000-byte mapping)
    (0x95623C2587A9FFC4, 0x802CF1A1, 0x062F7F302CBF7F78 - 100),
    (0x6918C4C83E836318, 0xA710EFE2, 0x96B6CC7502BA3B25),
    (0x0010042C0DCCE606, 0xF279EDE2, 0xB733678EDC2B69B1),
    (0x8DF3461A3831E204, 0xC6978820, None),
]


@pytest.mark.parametrize("key,token,first_dsn", KERNEL_KEYS,
                         ids=[f"{k:016x}" for k, _, _ in KERNEL_KEYS])
def test_kernel_key_token_idsn(key: int, token: int, first_dsn: int | None) -> None:
    t, idsn = key_token_idsn(key)
    assert t == token == key_token(key)
    assert idsn == key_idsn(key)
    if first_dsn is not None:
        assert (idsn + 1) & (2**64 - 1) == first_dsn


def test_golden_py_tokens() -> None:
    """tests/unit/golden.py (tools/capture.py) took its tokens from MPTCP_INFO, an
    independent source: the keys in its MP_CAPABLE third ACK must hash to them."""
    h, end = ipv4.parse(golden.MPTCP_ACK)
    th, _ = tcp.parse(golden.MPTCP_ACK[h.header_len:end])
    opt = next(o for o in th.options if isinstance(o, tcp.UnknownOption) and o.kind == 30)
    client_key, server_key = struct.unpack_from("!QQ", opt.data, 2)
    assert f"{key_token(client_key):08x}" == golden.MPTCP_CLIENT_TOKEN
    assert f"{key_token(server_key):08x}" == golden.MPTCP_SERVER_TOKEN


def test_v0_tokens_and_idsn_match_tshark() -> None:
    """v0 (RFC 6824, SHA-1): no kernel here speaks it. Pinned against tshark 4.0.17's
    independent implementation (mptcp.expected_token / mptcp.expected_idsn of a
    synthetic v0 MP_CAPABLE handshake, `-o mptcp.analyze_mptcp:TRUE`), which also gave
    the v1 values below."""
    assert key_token_idsn(0x0123456789ABCDEF, 0) == (212003547, 16419999864004347207)
    assert key_token_idsn(0xFEDCBA9876543210, 0) == (2780719217, 3697387350891206090)
    assert key_token_idsn(0x0123456789ABCDEF, 1) == (1438990173, 6271089639696537624)
    assert key_token_idsn(0xFEDCBA9876543210, 1) == (419002395, 2884582770211283598)


@given(st.integers(0, 2**64 - 1))
def test_token_idsn_definition(key: int) -> None:
    for version, h in ((1, hashlib.sha256), (0, hashlib.sha1)):
        d = h(key.to_bytes(8, "big")).digest()
        assert key_token_idsn(key, version) == (int.from_bytes(d[:4], "big"),
                                                int.from_bytes(d[-8:], "big"))


def test_bad_version() -> None:
    with pytest.raises(ValueError):
        key_token_idsn(1, 2)
    with pytest.raises(ValueError):
        join_ack_hmac(1, 2, 3, 4, version=2)


# --- real kernel MP_JOIN HMACs -----------------------------------------------------------
# (key_a = joiner/client, key_b = responder/server, nonce_a from the MP_JOIN SYN,
#  nonce_b and thmac from the SYN/ACK, hmac from the third ACK)
KERNEL_JOINS = [
    # B: join from 10.0.2.254 to the announced 10.0.2.1
    (0xC7D766EE00879CC6, 0xD8EBE01306E522E8, 0xA5D51EF0, 0x5DA7E308, 0xB7D47096C7C9D2A1,
     "d983a2b74105d9271e77a1ca0fec6b0a7d4264b9"),
    # D: join to 10.0.2.1 port 10100 (announced with a port)
    (0xE73E0E7265FC014F, 0x8A50066F9A320EF1, 0xD0B514B0, 0x12CF0028, 0x6E938CF706A7281F,
     "bc0d31a4aa351f9fb60b7014473a5d425169a231"),
    # F: backup join from a client `subflow backup` endpoint
    (0x95623C2587A9FFC4, 0x6918C4C83E836318, 0xDA948654, 0x3DCE3FD8, 0xCF0CA7467B561584,
     "f5fd4be4c268db84e13f95260b33fb31fb316874"),
]


@pytest.mark.parametrize("key_a,key_b,nonce_a,nonce_b,thmac,mac", KERNEL_JOINS)
def test_kernel_join_hmacs(key_a: int, key_b: int, nonce_a: int, nonce_b: int, thmac: int,
                           mac: str) -> None:
    assert join_synack_hmac(key_b, key_a, nonce_b, nonce_a) == thmac
    assert join_ack_hmac(key_a, key_b, nonce_a, nonce_b).hex() == mac
    # the arguments are not symmetric
    assert join_synack_hmac(key_a, key_b, nonce_a, nonce_b) != thmac


def test_join_hmac_v0_is_hmac_sha1() -> None:
    ka, kb, ra, rb = 0x0123456789ABCDEF, 0xFEDCBA9876543210, 0x11111111, 0x22222222
    full_b = std_hmac.new(struct.pack("!QQ", kb, ka), struct.pack("!II", rb, ra),
                          hashlib.sha1).digest()
    full_a = std_hmac.new(struct.pack("!QQ", ka, kb), struct.pack("!II", ra, rb),
                          hashlib.sha1).digest()
    assert join_synack_hmac(kb, ka, rb, ra, version=0) == int.from_bytes(full_b[:8], "big")
    assert join_ack_hmac(ka, kb, ra, rb, version=0) == full_a  # all 160 bits


# --- real kernel ADD_ADDR HMACs ------------------------------------------------------------
def test_kernel_add_addr_hmac() -> None:
    # B: ADD_ADDR id 5 10.0.2.1 sent by the server: Key_sender = server, Key_receiver = client
    assert add_addr_hmac(0xD8EBE01306E522E8, 0xC7D766EE00879CC6, 5, bytes([10, 0, 2, 1])) \
        == 0xCBF5027DACB0D93A
    # D: ADD_ADDR id 6 10.0.2.1 port 10100
    assert add_addr_hmac(0x8A50066F9A320EF1, 0xE73E0E7265FC014F, 6, bytes([10, 0, 2, 1]),
                         10100) == 0xC901121ABAABD63A
    # the keys' order matters (the receiver checks with the sender's key first)
    assert add_addr_hmac(0xC7D766EE00879CC6, 0xD8EBE01306E522E8, 5, bytes([10, 0, 2, 1])) \
        != 0xCBF5027DACB0D93A


def test_add_addr_hmac_ipv6_and_port_zero() -> None:
    a6 = bytes(range(16))
    mac = std_hmac.new(struct.pack("!QQ", 1, 2), bytes([9]) + a6 + b"\0\0",
                       hashlib.sha256).digest()
    assert add_addr_hmac(1, 2, 9, a6) == int.from_bytes(mac[-8:], "big")
    assert add_addr_hmac(1, 2, 9, a6, 0) == add_addr_hmac(1, 2, 9, a6, None)
    with pytest.raises(ValueError):
        add_addr_hmac(1, 2, 9, bytes(5))


# --- DSS checksum: real kernel packets with net.mptcp.checksum_enabled=1 -----------------
# Connection C: client key 0xfd84ba9a620f7d52 (IDSN + 1 = 0x0e0fb139a56ed54e), server key
# 0x7789c8b2e7059a77; the client sends bytes(range(100)), the server echoes them.
CSUM_MPC_ACK_DATA = bytes.fromhex(  # client's first data: MP_CAPABLE + data_len 100 + csum
    "450000b0ac694000400676e00a0001fe0a000101d91f1bbedacb065407ac9dc0e018003f7a5c0000"
    "0101080a0e01cd4aad3641e51e180181fd84ba9a620f7d527789c8b2e7059a77006429c700010203"
    "0405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b"
    "2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f50515253"
    "5455565758595a5b5c5d5e5f60616263"
)
CSUM_DSS_MAP = bytes.fromhex(  # server's data: DSS mapping with checksum 0x581d
    "450000b4f666400040062cdf0a0001010a0001fe1bbed91f07ac9dc0dacb06b8f018003f302b0000"
    "0101080aad3641e60e01cd4a1e1c200f0e0fb139a56ed5b24fbe0d50648f4a12000000010064581d"
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627"
    "28292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f"
    "505152535455565758595a5b5c5d5e5f60616263"
)


def _seg(pkt: bytes) -> tuple[tcp.TcpHeader, bytes]:
    h, end = ipv4.parse(pkt)
    seg = pkt[h.header_len:end]
    assert tcp.verify_checksum_v4(h.src, h.dst, seg)  # the capture is faithful
    th, doff = tcp.parse(seg)
    return th, seg[doff:]


def _mptcp(th: tcp.TcpHeader) -> bytes:
    return next(o.data for o in th.options if isinstance(o, tcp.UnknownOption) and o.kind == 30)


def test_kernel_dss_checksum_mpc_data() -> None:
    th, payload = _seg(CSUM_MPC_ACK_DATA)
    body = _mptcp(th)
    client_key, data_len, csum = struct.unpack_from("!Q8xHH", body, 2)
    assert (data_len, csum) == (100, 0x29C7)
    # the implicit first mapping: DSN = IDSN + 1 (64 bits), relative ssn 1
    dsn = key_idsn(client_key) + 1
    assert payload == bytes(range(100))
    assert dss_checksum(dsn, 1, data_len, payload) == csum
    assert dss_checksum_ok(dsn, 1, data_len, payload, csum)


def test_kernel_dss_checksum_dss_mapping() -> None:
    th, payload = _seg(CSUM_DSS_MAP)
    body = _mptcp(th)
    assert body[1] == 0x0F  # A a M m
    data_ack, dsn, ssn, data_len, csum = struct.unpack_from("!QQIHH", body, 2)
    assert data_ack == key_idsn(0xFD84BA9A620F7D52) + 1 + 100  # the client's 100 bytes
    assert (dsn, ssn, data_len, csum) == (0x4FBE0D50648F4A12, 1, 100, 0x581D)
    assert dsn == key_idsn(0x7789C8B2E7059A77) + 1
    assert dss_checksum(dsn, ssn, data_len, payload) == csum
    assert dss_checksum_ok(dsn, ssn, data_len, payload, csum)


@pytest.mark.parametrize("dsn,csum", [
    (0x0E0FB139A56ED5B2, 0xC594),  # client's DATA_FIN (after its 100 bytes)
    (0x4FBE0D50648F4A76, 0xF3EA),  # server's DATA_FIN
])
def test_kernel_dss_checksum_data_fin(dsn: int, csum: int) -> None:
    # DATA_FIN on a pure ACK: ssn 0, data-level length 1, no payload
    assert dss_checksum(dsn, 0, 1, b"") == csum
    assert dss_checksum_ok(dsn, 0, 1, b"", csum)


def test_kernel_dss_checksum_across_segments() -> None:
    """Connection G: the client wrote 20000 bytes (byte i = i % 251) at once; the kernel
    sent them as ONE mapping (MP_CAPABLE + data-level length 20000 + checksum 0xacc6) over
    14 segments. The checksum covers the whole mapping."""
    payload = bytes(i % 251 for i in range(20000))
    dsn = key_idsn(0x0010042C0DCCE606) + 1
    assert dss_checksum(dsn, 1, 20000, payload) == 0xACC6
    assert dss_checksum_ok(dsn, 1, 20000, payload, 0xACC6)
    assert not dss_checksum_ok(dsn, 1, 20000, payload[:-1] + b"\0", 0xACC6)


def _ref_sum(data: bytes) -> int:
    """RFC 1071 section 4.1, word by word (the naive reference)."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1),
       st.binary(max_size=300))
def test_dss_checksum_reference(dsn: int, ssn: int, data_len: int, payload: bytes) -> None:
    pseudo = struct.pack("!QIHH", dsn, ssn, data_len, 0)
    csum = dss_checksum(dsn, ssn, data_len, payload)
    assert csum == ~_ref_sum(pseudo + payload) & 0xFFFF
    assert dss_checksum_ok(dsn, ssn, data_len, payload, csum)


@given(st.integers(0, 2**64 - 1), st.binary(min_size=1, max_size=200), st.data())
def test_dss_checksum_detects_single_bit_flips(dsn: int, payload: bytes,
                                               data: st.DataObject) -> None:
    csum = dss_checksum(dsn, 1, len(payload), payload)
    bit = data.draw(st.integers(0, len(payload) * 8 - 1))
    bad = bytearray(payload)
    bad[bit // 8] ^= 1 << (bit % 8)
    assert not dss_checksum_ok(dsn, 1, len(payload), bytes(bad), csum)
    assert not dss_checksum_ok(dsn ^ 1, 1, len(payload), payload, csum)
    assert not dss_checksum_ok(dsn, 2, len(payload), payload, csum)


def test_dss_checksum_accepts_memoryview() -> None:
    p = bytes(range(256)) * 6
    assert dss_checksum(5, 6, len(p), memoryview(p)[10:]) == dss_checksum(5, 6, len(p), p[10:])


# --- key generation ----------------------------------------------------------------------
def test_generate_key_uses_injected_randomness() -> None:
    rng = random.Random(7)
    k1 = generate_key(rng.randbytes)
    assert generate_key(random.Random(7).randbytes) == k1
    assert 0 < k1 < 2**64
    draws = iter([bytes(8), bytes(8), bytes.fromhex("0000000000000001")])
    assert generate_key(lambda n: next(draws)) == 1  # zero keys are skipped
    with pytest.raises(ValueError):
        generate_key(lambda n: b"\x01" * (n - 1))
    with pytest.raises(ValueError):
        generate_key(lambda n: bytes(n))


def test_generate_unique_key() -> None:
    keys = iter(k.to_bytes(8, "big") for k in (11, 22, 33, 44, 55, 66))
    used = {key_token(11), key_token(22)}
    assert generate_unique_key(lambda n: next(keys), used.__contains__) == 33
    # every candidate collides: after MPTCP_TOKEN_MAX_RETRIES + 1 keys, None (fallback)
    calls: list[int] = []

    def always_in_use(token: int) -> bool:
        calls.append(token)
        return True

    assert generate_unique_key(random.Random(1).randbytes, always_in_use) is None
    assert len(calls) == crypto.MPTCP_TOKEN_MAX_RETRIES + 1
    # v0 tokens are SHA-1 based
    keys0 = iter([(11).to_bytes(8, "big"), (22).to_bytes(8, "big")])
    v0 = {key_token(11, 0)}
    assert generate_unique_key(lambda n: next(keys0), v0.__contains__, version=0) == 22
