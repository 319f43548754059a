"""MPTCP suboption codec (stack.mptcp.options): golden options captured from the Linux
kernel, exact round trips for every layout (v1 and the RFC 6824 v0 ones), every wrong
length and truncated prefix rejected, property round trips, and the kernel's
per-segment acceptance rules (`parse_received`).

How the golden packets were produced (kernel 6.18.44-fc-v595, this machine; throwaway
scripts, not in the repo): `./netns-setup.sh up --paths 2 --prefix moptcap` (then
`moptcap2`), `ethtool -K path1/path2 tx off tso off gso off gro off` on both ends,
`ip -n moptcap-user mptcp limits set subflows 2 add_addr_accepted 2`; a kernel MPTCP
client (socket(AF_INET, SOCK_STREAM, 262), bound to 10.0.1.254) in moptcap-user and a
kernel MPTCP server in moptcap-peer; every IPv4 packet on the peer's path1 and path2
captured with an AF_PACKET socket (link header stripped); `ip mptcp monitor` in both
namespaces for the tokens. Connections:
  A  port 7100: 100 bytes echoed, then both sides close (handshake, DSS, DATA_FIN);
  B  port 7101: peer endpoint `10.0.2.1 dev path2 id 5 signal` -> ADD_ADDR, echo, join
     from 10.0.2.254; then `endpoint change id 5 backup` (MP_PRIO), `endpoint delete
     id 5` (REMOVE_ADDR); the client closes with unread data (MP_FASTCLOSE + MP_TCPRST);
  C  port 7102: `net.mptcp.checksum_enabled=1` in the peer (A flag, DSS checksums);
  D  port 7103: endpoint `10.0.2.1 dev path2 id 6 port 10100 signal` (ADD_ADDR + port);
  E  port 7200: a raw SYN with MP_JOIN for an unknown token -> RST with MP_TCPRST 1;
  F  port 7201: client endpoint `10.0.2.254 dev path2 id 7 subflow backup` (B=1 join);
  G  port 7202: checksums on, 20000 bytes written at once: one mapping, 14 segments.
The keys, tokens, HMACs and checksums in these packets are checked against
stack.mptcp.crypto in tests/unit/test_mptcp_crypto.py.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.mptcp import options as mo
from stack.mptcp.crypto import key_token
from stack.mptcp.options import (
    OPTION_MPTCP_ADD_ADDR,
    OPTION_MPTCP_CSUMREQD,
    OPTION_MPTCP_DSS,
    OPTION_MPTCP_FAIL,
    OPTION_MPTCP_FASTCLOSE,
    OPTION_MPTCP_MPC_ACK,
    OPTION_MPTCP_MPC_SYN,
    OPTION_MPTCP_MPC_SYNACK,
    OPTION_MPTCP_MPJ_ACK,
    OPTION_MPTCP_MPJ_SYN,
    OPTION_MPTCP_MPJ_SYNACK,
    OPTION_MPTCP_PRIO,
    OPTION_MPTCP_RM_ADDR,
    OPTION_MPTCP_RST,
    MptcpSuboption,
    parse_received,
)
from stack.wire import MalformedPacket, ipv4, tcp
from stack.wire import mptcp as wm
from stack.wire.mptcp import (
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MptcpOption,
    MpTcpRst,
    RemoveAddr,
    UnknownMptcp,
    describe,
    emit_option,
    option_len,
    parse_option,
    parse_tcp_option,
    to_tcp_option,
)
from tests.unit import golden

S, A, R, F, P = tcp.SYN, tcp.ACK, tcp.RST, tcp.FIN, tcp.PSH

# --- golden packets (generated from the captures; do not edit by hand) ------------------
# client SYN, MP_CAPABLE v1 without key (4 bytes)
MPC_SYN = bytes.fromhex(
    "4500004059b240004006ca070a0001fe0a000101ae871bbc87b0c60d00000000b002faf0325b0000020405b4"
    "0402080a09aeb2f9000000000103030a1e040101"
)
# server SYN/ACK, MP_CAPABLE with the server key (12 bytes)
MPC_SYNACK = bytes.fromhex(
    "4500004800004000400623b20a0001010a0001fe1bbcae87ef60613887b0c60ed012fe88ac550000020405b4"
    "0402080a242956f909aeb2f90103030a1e0c0101fcf0ebfe672e4672"
)
# client third ACK, MP_CAPABLE with both keys (20 bytes)
MPC_ACK = bytes.fromhex(
    "4500004859b340004006c9fe0a0001fe0a000101ae871bbc87b0c60eef606139d010003f4cbf00000101080a"
    "09aeb2fa242956f91e140101873fab7e38b3012dfcf0ebfe672e4672"
)
# client's first data (100 bytes), MP_CAPABLE + data-level length (22 bytes, then 2 NOPs)
MPC_ACK_DATA = bytes.fromhex(
    "450000b059b440004006c9950a0001fe0a000101ae871bbc87b0c60eef606139e018003f9f1a00000101080a"
    "09aeb2fa242956f91e160101873fab7e38b3012dfcf0ebfe672e467200640101000102030405060708090a0b"
    "0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637"
    "38393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60616263"
)
# server pure ACK: DSS with a 64-bit data ACK only
DSS_ACK64 = bytes.fromhex(
    "4500004029af40004006fa0a0a0001010a0001fe1bbcae87ef60613987b0c672b010003f04c200000101080a"
    "242956f909aeb2fa1e0c2003b9638d5449f4bb29"
)
# server data (100 bytes echoed): DSS data ACK 64 + 64-bit mapping
DSS_MAP = bytes.fromhex(
    "450000b429b040004006f9950a0001010a0001fe1bbcae87ef60613987b0c672f018003f084100000101080a"
    "242956f909aeb2fa1e1a200fb9638d5449f4bb291ded68248bbb0cea00000001006401010001020304050607"
    "08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f30313233"
    "3435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "60616263"
)
# client DATA_FIN on a pure ACK: DSS A a M m F, ssn 0, data_len 1
DSS_DATA_FIN = bytes.fromhex(
    "4500005059b640004006c9f30a0001fe0a000101ae871bbc87b0c672ef60619df010003fa40600000101080a"
    "09aeb2fa242956f91e1a201f1ded68248bbb0d4eb9638d5449f4bb290000000000010101"
)
# server ADD_ADDR id 5 10.0.2.1 with HMAC (16 bytes), from a `signal` endpoint
ADD_ADDR = bytes.fromhex(
    "45000044005e4000400623580a0001010a0001fe1bbdc885f57f643aeb835cbfc010003f1f4500000101080a"
    "cd0e5fc2aaf2f3b11e1030050a000201cbf5027dacb0d93a"
)
# client MP_JOIN SYN on path2 (addr id 1, server token, nonce)
MPJ_SYN = bytes.fromhex(
    "450000487d1640004006a49b0a0002fe0a000201a5351bbd2aaff96300000000d002faf0b2e10000020405b4"
    "0402080a93401135000000000103030a1e0c100119f8bad9a5d51ef0"
)
# client ADD_ADDR echo id 5 10.0.2.1 (8 bytes)
ADD_ADDR_ECHO = bytes.fromhex(
    "4500003ce2ee4000400640cf0a0001fe0a000101c8851bbdeb835cbff57f643aa010003f92b300000101080a"
    "aaf2f3b1cd0e5fc21e0831050a000201"
)
# client data: DSS with a 32-bit data ACK + 64-bit mapping
DSS_ACK32_MAP64 = bytes.fromhex(
    "450000b0e2ef40004006405a0a0001fe0a000101c8851bbdeb835cbff57f643ae018003f5b0600000101080a"
    "aaf2f3b2cd0e5fc21e16200d819cce40b70f0cb050ad129d0000000100640101000102030405060708090a0b"
    "0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637"
    "38393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60616263"
)
# server MP_JOIN SYN/ACK (addr id 5, thmac, nonce)
MPJ_SYNACK = bytes.fromhex(
    "4500004c00004000400621ae0a0002010a0002fe1bbda535747d26cc2aaff964e012fe88322c0000020405b4"
    "0402080aba65ad61934011350103030a1e101005b7d47096c7c9d2a15da7e308"
)
# client MP_JOIN third ACK (160-bit HMAC)
MPJ_ACK = bytes.fromhex(
    "4500004c7d1740004006a4960a0002fe0a000201a5351bbd2aaff964747d26cde010003f8f2400000101080a"
    "93401135ba65ad611e181000d983a2b74105d9271e77a1ca0fec6b0a7d4264b9"
)
# server fourth ACK on the join: DSS with a 32-bit data ACK
DSS_ACK32 = bytes.fromhex(
    "4500003c40b040004006e10d0a0002010a0002fe1bbda535747d26cd2aaff964a010003f0f9500000101080a"
    "ba65ad62934011351e08200150ad129d"
)
# server DSS + MP_PRIO backup=1 after `ip mptcp endpoint change id 5 backup`
MP_PRIO = bytes.fromhex(
    "4500004440b140004006e1040a0002010a0002fe1bbda535747d26cd2aaff964c010003fbc5e00000101080a"
    "ba65ad62934011351e0c2003b70f0cb050ad13011e035101"
)
# server DSS + REMOVE_ADDR id 5 after `ip mptcp endpoint delete id 5`
RM_ADDR = bytes.fromhex(
    "4500004400614000400623550a0001010a0001fe1bbdc885f57f649eeb835d23c010003f096900000101080a"
    "cd0e5fc3aaf2f3b21e0c2003b70f0cb050ad13011e044005"
)
# client RST with MP_FASTCLOSE (server key) + MP_TCPRST, closing with unread data
FASTCLOSE = bytes.fromhex(
    "45000044e2f44000400640c10a0001fe0a000101c8851bbdeb835d23f57f7056c014003e8f2e00000101080a"
    "aaf3073acd0e6f631e0c7000d8ebe01306e522e81e048000"
)
# checksums on: server SYN/ACK, MP_CAPABLE flags A|H
CSUM_MPC_SYNACK = bytes.fromhex(
    "4500004800004000400623b20a0001010a0001fe1bbed91f07ac9dbfdacb0654d012fe88db420000020405b4"
    "0402080aad3641e50e01cd490103030a1e0c01817789c8b2e7059a77"
)
# checksums on: client third ACK, flags A|H
CSUM_MPC_ACK = bytes.fromhex(
    "45000048ac684000400677490a0001fe0a000101d91f1bbedacb065407ac9dc0d010003f50ca00000101080a"
    "0e01cd49ad3641e51e140181fd84ba9a620f7d527789c8b2e7059a77"
)
# checksums on: client first data (100 bytes), MP_CAPABLE + length + checksum (24 bytes)
CSUM_MPC_ACK_DATA = bytes.fromhex(
    "450000b0ac694000400676e00a0001fe0a000101d91f1bbedacb065407ac9dc0e018003f7a5c00000101080a"
    "0e01cd4aad3641e51e180181fd84ba9a620f7d527789c8b2e7059a77006429c7000102030405060708090a0b"
    "0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637"
    "38393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60616263"
)
# checksums on: server data (100 bytes), DSS mapping with checksum (28 bytes)
CSUM_DSS_MAP = bytes.fromhex(
    "450000b4f666400040062cdf0a0001010a0001fe1bbed91f07ac9dc0dacb06b8f018003f302b00000101080a"
    "ad3641e60e01cd4a1e1c200f0e0fb139a56ed5b24fbe0d50648f4a12000000010064581d0001020304050607"
    "08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f30313233"
    "3435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "60616263"
)
# checksums on: client DATA_FIN (no payload), DSS with checksum
CSUM_DSS_DATA_FIN = bytes.fromhex(
    "45000050ac6b40004006773e0a0001fe0a000101d91f1bbedacb06b807ac9e24f010003f5e7900000101080a"
    "0e01cd4aad3641e61e1c201f4fbe0d50648f4a760e0fb139a56ed5b2000000000001c594"
)
# checksums on: server DATA_FIN (no payload), DSS with checksum
CSUM_DSS_DATA_FIN_SRV = bytes.fromhex(
    "45000050f668400040062d410a0001010a0001fe1bbed91f07ac9e24dacb06b8f010003f2f5a00000101080a"
    "ad3642ae0e01cd4a1e1c201f0e0fb139a56ed5b34fbe0d50648f4a76000000000001f3ea"
)
# client MP_JOIN SYN to 10.0.2.1 port 10100 (addr id 1)
MPJ_SYN_2 = bytes.fromhex(
    "45000048ff7a4000400622370a0002fe0a00020199992774cc23efa200000000d002faf05e230000020405b4"
    "0402080a374a7085000000000103030a1e0c1001ad3fc087d0b514b0"
)
# server MP_JOIN SYN/ACK from port 10100 (addr id 6)
MPJ_SYNACK_2 = bytes.fromhex(
    "4500004c00004000400621ae0a0002010a0002fe277499996e25269bcc23efa3e012fe8861fe0000020405b4"
    "0402080a666e0325374a70850103030a1e1010066e938cf706a7281f12cf0028"
)
# client MP_JOIN third ACK
MPJ_ACK_2 = bytes.fromhex(
    "4500004cff7b4000400622320a0002fe0a00020199992774cc23efa36e25269ce010003f369700000101080a"
    "374a7085666e03251e181000bc0d31a4aa351f9fb60b7014473a5d425169a231"
)
# server ADD_ADDR id 6 10.0.2.1 port 10100 with HMAC (18 bytes, then 2 NOPs)
ADD_ADDR_PORT = bytes.fromhex(
    "450000487dfc40004006a5b50a0001010a0001fe1bbfcf87fcd77e343039ef55d010003f58a200000101080a"
    "319b2811d6ec11bd1e1230060a0002012774c901121abaabd63a0101"
)
# client ADD_ADDR echo id 6 10.0.2.1 port 10100 (10 bytes)
ADD_ADDR_PORT_ECHO = bytes.fromhex(
    "45000040f9ba4000400629ff0a0001fe0a000101cf871bbf3039ef55fcd77e34b010003fe3b400000101080a"
    "d6ec11bd319b28111e0a31060a00020127740101"
)
# server RST/ACK with MP_TCPRST reason 1 for an MP_JOIN SYN with an unknown token
TCPRST_EMPTCP = bytes.fromhex(
    "4500002c00004000400623ce0a0001010a0001fe1c209c41000000001122334560140000edff00001e048001"
)
# client MP_JOIN SYN with B=1 from a `subflow backup` endpoint (addr id 7)
MPJ_SYN_BACKUP = bytes.fromhex(
    "450000485ee740004006c3ca0a0002fe0a000101d4631c21f82e820e00000000d002faf0b0260000020405b4"
    "0402080a1815ab13000000000103030a1e0c1107a710efe2da948654"
)
# server MP_JOIN SYN/ACK answering it (addr id 0)
MPJ_SYNACK_3 = bytes.fromhex(
    "4500004c00004000400622ae0a0001010a0002fe1c21d4632652b947f82e820fe012fe88f5350000020405b4"
    "0402080aa1939a211815ab130103030a1e101000cf0ca7467b5615843dce3fd8"
)
# client MP_JOIN third ACK
MPJ_ACK_3 = bytes.fromhex(
    "4500004c5ee840004006c3c50a0002fe0a000101d4631c21f82e820f2652b948e010003fc6d100000101080a"
    "1815ab13a1939a211e181000f5fd4be4c268db84e13f95260b33fb31fb316874"
)
# checksums on: client's first of 14 segments of one 20000-byte mapping, MP_CAPABLE
# + length 20000 + checksum
CSUM_MAP_20000 = bytes.fromhex(
    "450005dcd7eb4000400646320a0001fe0a000101d86b1c221adf91b6f8781829e010003f8cb600000101080a"
    "7c54ab0a3d16d2b81e1801810010042c0dcce6068df3461a3831e2044e20acc6000102030405060708090a0b"
    "0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637"
    "38393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60616263"
    "6465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f"
    "909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babb"
    "bcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7"
    "e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fa000102030405060708090a0b0c0d0e0f101112131415161718"
    "191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f4041424344"
    "45464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f70"
    "7172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c"
    "9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8"
    "c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4"
    "f5f6f7f8f9fa000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425"
    "262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f5051"
    "52535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d"
    "7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9"
    "aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5"
    "d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fa00010203040506"
    "0708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132"
    "333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e"
    "5f606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a"
    "8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6"
    "b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2"
    "e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fa000102030405060708090a0b0c0d0e0f10111213"
    "1415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b"
    "6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f9091929394959697"
    "98999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3"
    "c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef"
    "f0f1f2f3f4f5f6f7f8f9fa000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"
    "2122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c"
    "4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f707172737475767778"
    "797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4"
    "a5a6a7a8"
)

IP_10_0_2_1 = bytes([10, 0, 2, 1])
KEY_A_CLI, KEY_A_SRV = 0x873FAB7E38B3012D, 0xFCF0EBFE672E4672
KEY_C_CLI, KEY_C_SRV = 0xFD84BA9A620F7D52, 0x7789C8B2E7059A77

# name -> (the packet's MPTCP options in order, the suboptions parse_received reports)
GOLDEN_OPTIONS: dict[str, tuple[list[MptcpOption], MptcpSuboption]] = {
    "MPC_SYN": ([MpCapable(1, 0x01)], OPTION_MPTCP_MPC_SYN),
    "MPC_SYNACK": ([MpCapable(1, 0x01, KEY_A_SRV)], OPTION_MPTCP_MPC_SYNACK),
    "MPC_ACK": ([MpCapable(1, 0x01, KEY_A_CLI, KEY_A_SRV)], OPTION_MPTCP_MPC_ACK),
    "MPC_ACK_DATA": ([MpCapable(1, 0x01, KEY_A_CLI, KEY_A_SRV, 100)],
                     OPTION_MPTCP_MPC_ACK | OPTION_MPTCP_DSS),
    "DSS_ACK64": ([Dss(0xB9638D5449F4BB29, True)], OPTION_MPTCP_DSS),
    "DSS_MAP": ([Dss(0xB9638D5449F4BB29, True, 0x1DED68248BBB0CEA, True, 1, 100)],
                OPTION_MPTCP_DSS),
    "DSS_DATA_FIN": ([Dss(0x1DED68248BBB0D4E, True, 0xB9638D5449F4BB29, True, 0, 1, None, True)],
                     OPTION_MPTCP_DSS),
    "ADD_ADDR": ([AddAddr(5, IP_10_0_2_1, None, 0xCBF5027DACB0D93A)], OPTION_MPTCP_ADD_ADDR),
    "MPJ_SYN": ([MpJoinSyn(False, 1, 0x19F8BAD9, 0xA5D51EF0)], OPTION_MPTCP_MPJ_SYN),
    "ADD_ADDR_ECHO": ([AddAddr(5, IP_10_0_2_1, echo=True)], OPTION_MPTCP_ADD_ADDR),
    "DSS_ACK32_MAP64": ([Dss(0x819CCE40, False, 0xB70F0CB050AD129D, True, 1, 100)],
                        OPTION_MPTCP_DSS),
    "MPJ_SYNACK": ([MpJoinSynAck(False, 5, 0xB7D47096C7C9D2A1, 0x5DA7E308)],
                   OPTION_MPTCP_MPJ_SYNACK),
    "MPJ_ACK": ([MpJoinAck(bytes.fromhex("d983a2b74105d9271e77a1ca0fec6b0a7d4264b9"))],
                OPTION_MPTCP_MPJ_ACK),
    "DSS_ACK32": ([Dss(0x50AD129D)], OPTION_MPTCP_DSS),
    "MP_PRIO": ([Dss(0xB70F0CB050AD1301, True), MpPrio(True)],
                OPTION_MPTCP_DSS | OPTION_MPTCP_PRIO),
    "RM_ADDR": ([Dss(0xB70F0CB050AD1301, True), RemoveAddr((5,))],
                OPTION_MPTCP_DSS | OPTION_MPTCP_RM_ADDR),
    "FASTCLOSE": ([MpFastclose(0xD8EBE01306E522E8), MpTcpRst(0, 0)],
                  OPTION_MPTCP_FASTCLOSE | OPTION_MPTCP_RST),
    "CSUM_MPC_SYNACK": ([MpCapable(1, 0x81, KEY_C_SRV)],
                        OPTION_MPTCP_MPC_SYNACK | OPTION_MPTCP_CSUMREQD),
    "CSUM_MPC_ACK": ([MpCapable(1, 0x81, KEY_C_CLI, KEY_C_SRV)],
                     OPTION_MPTCP_MPC_ACK | OPTION_MPTCP_CSUMREQD),
    "CSUM_MPC_ACK_DATA": ([MpCapable(1, 0x81, KEY_C_CLI, KEY_C_SRV, 100, 0x29C7)],
                          OPTION_MPTCP_MPC_ACK | OPTION_MPTCP_DSS | OPTION_MPTCP_CSUMREQD),
    "CSUM_DSS_MAP": ([Dss(0x0E0FB139A56ED5B2, True, 0x4FBE0D50648F4A12, True, 1, 100, 0x581D)],
                     OPTION_MPTCP_DSS | OPTION_MPTCP_CSUMREQD),
    "CSUM_DSS_DATA_FIN": ([Dss(0x4FBE0D50648F4A76, True, 0x0E0FB139A56ED5B2, True, 0, 1, 0xC594,
                               True)], OPTION_MPTCP_DSS | OPTION_MPTCP_CSUMREQD),
    "CSUM_DSS_DATA_FIN_SRV": ([Dss(0x0E0FB139A56ED5B3, True, 0x4FBE0D50648F4A76, True, 0, 1,
                                   0xF3EA, True)], OPTION_MPTCP_DSS | OPTION_MPTCP_CSUMREQD),
    "MPJ_SYN_2": ([MpJoinSyn(False, 1, 0xAD3FC087, 0xD0B514B0)], OPTION_MPTCP_MPJ_SYN),
    "MPJ_SYNACK_2": ([MpJoinSynAck(False, 6, 0x6E938CF706A7281F, 0x12CF0028)],
                     OPTION_MPTCP_MPJ_SYNACK),
    "MPJ_ACK_2": ([MpJoinAck(bytes.fromhex("bc0d31a4aa351f9fb60b7014473a5d425169a231"))],
                  OPTION_MPTCP_MPJ_ACK),
    "ADD_ADDR_PORT": ([AddAddr(6, IP_10_0_2_1, 10100, 0xC901121ABAABD63A)],
                      OPTION_MPTCP_ADD_ADDR),
    "ADD_ADDR_PORT_ECHO": ([AddAddr(6, IP_10_0_2_1, 10100, None, True)], OPTION_MPTCP_ADD_ADDR),
    "TCPRST_EMPTCP": ([MpTcpRst(wm.MPTCP_RST_EMPTCP, 0)], OPTION_MPTCP_RST),
    "MPJ_SYN_BACKUP": ([MpJoinSyn(True, 7, 0xA710EFE2, 0xDA948654)], OPTION_MPTCP_MPJ_SYN),
    "MPJ_SYNACK_3": ([MpJoinSynAck(False, 0, 0xCF0CA7467B561584, 0x3DCE3FD8)],
                     OPTION_MPTCP_MPJ_SYNACK),
    "MPJ_ACK_3": ([MpJoinAck(bytes.fromhex("f5fd4be4c268db84e13f95260b33fb31fb316874"))],
                  OPTION_MPTCP_MPJ_ACK),
    "CSUM_MAP_20000": ([MpCapable(1, 0x81, 0x0010042C0DCCE606, 0x8DF3461A3831E204, 20000, 0xACC6)],
                       OPTION_MPTCP_MPC_ACK | OPTION_MPTCP_DSS | OPTION_MPTCP_CSUMREQD),
}
GOLDEN = {name: globals()[name] for name in GOLDEN_OPTIONS}


def segment(pkt: bytes) -> tuple[tcp.TcpHeader, bytes]:
    """(TCP header, payload) of an IPv4 packet, checksums verified."""
    h, end = ipv4.parse(pkt)
    seg = pkt[h.header_len:end]
    assert tcp.verify_checksum_v4(h.src, h.dst, seg)
    th, doff = tcp.parse(seg)
    return th, seg[doff:]


def mptcp_of(th: tcp.TcpHeader) -> list[tcp.UnknownOption]:
    return [o for o in th.options if isinstance(o, tcp.UnknownOption) and o.kind == tcp.OPT_MPTCP]


def whole(o: tcp.UnknownOption) -> bytes:
    return bytes((o.kind, 2 + len(o.data))) + o.data


# --- golden: the kernel's options --------------------------------------------------------
@pytest.mark.parametrize("name", list(GOLDEN_OPTIONS))
def test_golden_parse_and_emit(name: str) -> None:
    th, payload = segment(GOLDEN[name])
    expected, _ = GOLDEN_OPTIONS[name]
    raw = mptcp_of(th)
    syn, ack = bool(th.flags & S), bool(th.flags & A)
    got = [parse_tcp_option(o, syn, ack, bool(payload)) for o in raw]
    assert got == expected
    for o, m in zip(raw, got, strict=True):
        assert parse_option(whole(o)) == m  # context-free parse agrees
        assert emit_option(m) == whole(o)  # byte-exact
        assert to_tcp_option(m) == o
        assert option_len(m) == len(whole(o))


@pytest.mark.parametrize("name", list(GOLDEN_OPTIONS))
def test_golden_parse_received(name: str) -> None:
    th, payload = segment(GOLDEN[name])
    ro, reasons = parse_received(th.options, th.flags, bool(payload))
    assert reasons == []
    assert ro.suboptions == GOLDEN_OPTIONS[name][1]


def test_golden_received_fields() -> None:
    """The kernel's view of a few captured segments, field by field."""
    th, payload = segment(GOLDEN["MPC_ACK_DATA"])
    ro, _ = parse_received(th.options, th.flags, bool(payload))
    assert (ro.sndr_key, ro.rcvr_key, ro.version, ro.mpc_flags) == (KEY_A_CLI, KEY_A_SRV, 1, 1)
    assert (ro.use_map, ro.mpc_map, ro.use_ack, ro.data_len) == (True, True, False, 100)
    assert len(payload) == 100 and not ro.csum_reqd

    th, payload = segment(GOLDEN["DSS_ACK32_MAP64"])
    ro, _ = parse_received(th.options, th.flags, bool(payload))
    assert (ro.use_ack, ro.ack64, ro.data_ack) == (True, False, 0x819CCE40)
    assert (ro.use_map, ro.dsn64, ro.data_seq, ro.subflow_seq, ro.data_len) == \
        (True, True, 0xB70F0CB050AD129D, 1, 100)
    assert not ro.mpc_map and not ro.data_fin

    th, payload = segment(GOLDEN["CSUM_DSS_DATA_FIN"])
    ro, _ = parse_received(th.options, th.flags, bool(payload))
    assert (ro.data_fin, ro.data_len, ro.subflow_seq, ro.csum, ro.csum_reqd) == \
        (True, 1, 0, 0xC594, True)
    assert payload == b""

    th, _ = segment(GOLDEN["ADD_ADDR_PORT"])
    ro, _ = parse_received(th.options, th.flags, False)
    assert ro.addr is not None and (ro.addr.addr_id, ro.addr.address, ro.addr.port) == \
        (6, ipaddress.IPv4Address("10.0.2.1"), 10100)
    assert (ro.echo, ro.ahmac) == (False, 0xC901121ABAABD63A)

    th, _ = segment(GOLDEN["MPJ_SYN_BACKUP"])
    ro, _ = parse_received(th.options, th.flags, False)
    assert (ro.backup, ro.join_id, ro.token, ro.nonce) == (True, 7, 0xA710EFE2, 0xDA948654)

    th, _ = segment(GOLDEN["FASTCLOSE"])
    ro, _ = parse_received(th.options, th.flags, False)
    assert (ro.rcvr_key, ro.reset_reason, ro.reset_transient) == (0xD8EBE01306E522E8, 0, False)

    th, _ = segment(GOLDEN["TCPRST_EMPTCP"])
    ro, _ = parse_received(th.options, th.flags, False)
    assert (ro.reset_reason, ro.reset_transient) == (wm.MPTCP_RST_EMPTCP, False)


def test_golden_story() -> None:
    """The captured values tie together: a join names the server's token, the fast close
    carries the server's key, the first DSS mapping starts at IDSN + 1."""
    assert key_token(0xD8EBE01306E522E8) == 0x19F8BAD9  # B's server key -> MPJ_SYN token
    assert key_token(0x8A50066F9A320EF1) == 0xAD3FC087  # D's server key -> MPJ_SYN_2 token
    (m,), _ = GOLDEN_OPTIONS["CSUM_MPC_ACK_DATA"]
    assert isinstance(m, MpCapable) and m.flags & wm.MPC_FLAG_A and m.flags & wm.MPC_FLAG_H


def test_kernel_layout_details() -> None:
    """What the kernel puts around its options (mptcp_write_options): NOPs after a
    22-byte MP_CAPABLE, after an 18-byte ADD_ADDR and after MP_PRIO, and the option
    always 64-bit DSN on send."""
    for name in ("MPC_ACK_DATA", "ADD_ADDR_PORT"):
        th, _ = segment(GOLDEN[name])
        i = next(i for i, o in enumerate(th.options)
                 if isinstance(o, tcp.UnknownOption) and o.kind == 30)
        assert th.options[i + 1:i + 3] == [tcp.Nop(), tcp.Nop()]
    th, _ = segment(GOLDEN["MP_PRIO"])
    i = next(i for i, o in enumerate(th.options)
             if isinstance(o, tcp.UnknownOption) and o.kind == 30 and o.data[0] >> 4 == 5)
    assert th.options[i + 1] == tcp.Nop()
    for name, (opts, _) in GOLDEN_OPTIONS.items():
        for m in opts:
            if isinstance(m, Dss) and m.dsn is not None:
                assert m.dsn64, name


def test_golden_py_mptcp_packets() -> None:
    """tests/unit/golden.py (tools/capture.py's recipe, another capture): every MPTCP
    option parses, round-trips byte for byte and is accepted by parse_received."""
    seen = 0
    for name, pkt in golden.GOLDEN.items():
        if not name.startswith("MPTCP_"):
            continue
        th, payload = segment(pkt)
        syn, ack = bool(th.flags & S), bool(th.flags & A)
        for o in mptcp_of(th):
            m = parse_tcp_option(o, syn, ack, bool(payload))
            assert to_tcp_option(m) == o
            seen += 1
        ro, reasons = parse_received(th.options, th.flags, bool(payload))
        assert ro.suboptions and reasons == [], name
    assert seen >= 5


def test_describe_golden() -> None:
    (m,), _ = GOLDEN_OPTIONS["MPC_ACK"]
    assert describe(m) == (
        "MP_CAPABLE v1 flags=H(0x01)"
        " sender_key=0x873fab7e38b3012d (token d2d773b7, idsn 0xb9638d5449f4bac4)"
        " receiver_key=0xfcf0ebfe672e4672 (token 3d3dff70, idsn 0x1ded68248bbb0ce9)")
    (m,), _ = GOLDEN_OPTIONS["CSUM_DSS_DATA_FIN"]
    assert describe(m) == ("DSS flags=FmMaA data_ack=0x4fbe0d50648f4a76 dsn=0x0e0fb139a56ed5b2"
                           " ssn=0 data_len=1 csum=0xc594 DATA_FIN")
    (m,), _ = GOLDEN_OPTIONS["DSS_ACK32"]
    assert describe(m) == "DSS flags=A data_ack=0x50ad129d"
    (m,), _ = GOLDEN_OPTIONS["MPJ_SYN_BACKUP"]
    assert describe(m) == "MP_JOIN SYN backup=1 addr_id=7 token=a710efe2 nonce=0xda948654"
    (m,), _ = GOLDEN_OPTIONS["MPJ_SYNACK"]
    assert describe(m) == ("MP_JOIN SYN/ACK backup=0 addr_id=5 thmac=0xb7d47096c7c9d2a1"
                           " nonce=0x5da7e308")
    (m,), _ = GOLDEN_OPTIONS["ADD_ADDR_PORT"]
    assert describe(m) == "ADD_ADDR addr_id=6 10.0.2.1 port=10100 hmac=0xc901121abaabd63a"
    (m,), _ = GOLDEN_OPTIONS["ADD_ADDR_ECHO"]
    assert describe(m) == "ADD_ADDR echo addr_id=5 10.0.2.1"
    (m,), _ = GOLDEN_OPTIONS["TCPRST_EMPTCP"]
    assert describe(m) == "MP_TCPRST reason=1 (MPTCP error) flags=-(0x0)"
    fc, rst = GOLDEN_OPTIONS["FASTCLOSE"][0]
    assert describe(fc) == "MP_FASTCLOSE receiver_key=0xd8ebe01306e522e8"
    assert describe(rst) == "MP_TCPRST reason=0 (unspecified) flags=-(0x0)"
    th, payload = segment(GOLDEN["CSUM_MPC_ACK_DATA"])
    ro, _ = parse_received(th.options, th.flags, bool(payload))
    assert ro.describe() == ("MPC_ACK,DSS,CSUMREQD v1 flags=0x81 sndr_key=0xfd84ba9a620f7d52"
                             " rcvr_key=0x7789c8b2e7059a77 mpc_map data_len=100 csum=0x29c7")


# --- every layout, by hand from RFC 8684 / RFC 6824 --------------------------------------
K1, K2 = "0102030405060708", "f1f2f3f4f5f6f7f8"
V4 = bytes([192, 0, 2, 1])
V6 = ipaddress.IPv6Address("2001:db8::1").packed
V6H = V6.hex()
SAMPLES: list[tuple[MptcpOption, str]] = [
    # MP_CAPABLE v1: SYN, SYN with a future version, SYN/ACK, ACK, ACK + data, + checksum
    (MpCapable(1, 0x01), "1e040101"),
    (MpCapable(2, 0x01), "1e040201"),
    (MpCapable(1, 0x81, int(K1, 16)), "1e0c0181" + K1),
    (MpCapable(1, 0x21, int(K1, 16), int(K2, 16)), "1e140121" + K1 + K2),
    (MpCapable(1, 0x01, int(K1, 16), int(K2, 16), 1500), "1e160101" + K1 + K2 + "05dc"),
    (MpCapable(1, 0x81, int(K1, 16), int(K2, 16), 1500, 0xBEEF),
     "1e180181" + K1 + K2 + "05dcbeef"),
    # MP_CAPABLE v0 (RFC 6824): SYN and SYN/ACK with the sender key, ACK with both
    (MpCapable(0, 0x81, int(K1, 16)), "1e0c0081" + K1),
    (MpCapable(0, 0x01, int(K1, 16), int(K2, 16)), "1e140001" + K1 + K2),
    # MP_JOIN
    (MpJoinSyn(True, 3, 0x01020304, 0xA0B0C0D0), "1e0c110301020304a0b0c0d0"),
    (MpJoinSyn(False, 255, 0xFFFFFFFF, 0), "1e0c10ffffffffff00000000"),
    (MpJoinSynAck(False, 9, 0x1122334455667788, 0xDEADBEEF), "1e1010091122334455667788deadbeef"),
    (MpJoinSynAck(True, 0, 0, 1), "1e101100" + "00" * 8 + "00000001"),
    (MpJoinAck(bytes(range(20))), "1e181000" + bytes(range(20)).hex()),
    # DSS: a few by hand (all flag combinations are checked by formula below)
    (Dss(), "1e042000"),
    (Dss(0x11223344), "1e08200111223344"),
    (Dss(0x1122334455667788, True), "1e0c20031122334455667788"),
    (Dss(None, False, 0xAABBCCDD, False, 7, 1000), "1e0e2004aabbccdd0000000703e8"),
    (Dss(1, False, 2, True, 3, 4, 0x5566),
     "1e18200d" + "00000001" + "0000000000000002" + "00000003" + "0004" + "5566"),
    (Dss(None, False, 2, True, 0, 1, None, True), "1e12201c0000000000000002000000000001"),
    # ADD_ADDR v1: IPv4/IPv6, with/without port, announce (HMAC) / echo
    (AddAddr(1, V4, None, 0x0102030405060708), "1e103001c00002010102030405060708"),
    (AddAddr(1, V4, 8080, 0x0102030405060708), "1e123001c00002011f900102030405060708"),
    (AddAddr(1, V4, echo=True), "1e083101c0000201"),
    (AddAddr(1, V4, 8080, echo=True), "1e0a3101c00002011f90"),
    (AddAddr(2, V6, None, 0x0102030405060708), "1e1c3002" + V6H + "0102030405060708"),
    (AddAddr(2, V6, 443, 0x0102030405060708), "1e1e3002" + V6H + "01bb0102030405060708"),
    (AddAddr(2, V6, echo=True), "1e143102" + V6H),
    (AddAddr(2, V6, 443, echo=True), "1e163102" + V6H + "01bb"),
    # ADD_ADDR v0 (RFC 6824): the low nibble is IPVer, no HMAC, no echo
    (AddAddr(3, V4, version=0), "1e083403c0000201"),
    (AddAddr(3, V4, 8080, version=0), "1e0a3403c00002011f90"),
    (AddAddr(4, V6, version=0), "1e143604" + V6H),
    (AddAddr(4, V6, 443, version=0), "1e163604" + V6H + "01bb"),
    # REMOVE_ADDR 1..8 ids
    (RemoveAddr((1,)), "1e044001"),
    (RemoveAddr((0, 1, 2, 3, 4, 5, 6, 255)), "1e0b4000010203040506ff"),
    # MP_PRIO v1 (3 bytes) and v0 (4, with an address id)
    (MpPrio(True), "1e0351"),
    (MpPrio(False), "1e0350"),
    (MpPrio(True, 4), "1e045104"),
    # MP_FAIL, MP_FASTCLOSE, MP_TCPRST
    (MpFail(int(K1, 16)), "1e0c6000" + K1),
    (MpFastclose(int(K2, 16)), "1e0c7000" + K2),
    (MpTcpRst(wm.MPTCP_RST_EMIDDLEBOX, wm.MPTCP_RST_TRANSIENT), "1e048106"),
    (MpTcpRst(0xFF, 0x0F), "1e048fff"),
    # unassigned subtypes
    (UnknownMptcp(9, bytes.fromhex("9abc")), "1e049abc"),
    (UnknownMptcp(15, b"\xf0"), "1e03f0"),
]


@pytest.mark.parametrize("value,hexstr", SAMPLES, ids=[h for _, h in SAMPLES])
def test_layout_round_trip(value: MptcpOption, hexstr: str) -> None:
    raw = bytes.fromhex(hexstr)
    assert raw[1] == len(raw)
    assert emit_option(value) == raw
    assert parse_option(raw) == value
    assert option_len(value) == len(raw)
    assert parse_tcp_option(to_tcp_option(value)) == value
    text = describe(value)
    assert "\n" not in text and text.split()[0] in (
        "MP_CAPABLE", "MP_JOIN", "DSS", "ADD_ADDR", "REMOVE_ADDR", "MP_PRIO", "MP_FAIL",
        "MP_FASTCLOSE", "MP_TCPRST", "MPTCP")


@pytest.mark.parametrize("value,hexstr", SAMPLES, ids=[h for _, h in SAMPLES])
def test_every_truncated_prefix_rejected(value: MptcpOption, hexstr: str) -> None:
    raw = bytes.fromhex(hexstr)
    for i in range(len(raw)):
        with pytest.raises(MalformedPacket):
            parse_option(raw[:i])


@pytest.mark.parametrize("value,hexstr", SAMPLES, ids=[h for _, h in SAMPLES])
def test_shortened_options(value: MptcpOption, hexstr: str) -> None:
    """The option cut short with its length byte fixed up: either rejected, or (where the
    shorter length is itself a layout, e.g. a DSS without its checksum) read as that."""
    raw = bytes.fromhex(hexstr)
    for n in range(2, len(raw)):
        cut = bytes((30, n)) + raw[2:n]
        try:
            m = parse_option(cut)
        except MalformedPacket:
            continue
        again = emit_option(m)  # equal up to reserved bits
        assert len(again) == n and parse_option(again) == m, (n, m)


def _expected_dss(flags: int, csum: bool) -> tuple[Dss, bytes]:
    """A DSS for flags (A a M m F) built independently with struct."""
    out = struct.pack("!BBBB", 30, 0, 0x20, flags)
    data_ack = dsn = None
    ssn = data_len = 0
    if flags & 0x01:
        data_ack = 0x0102030405060708 if flags & 0x02 else 0x01020304
        out += struct.pack("!Q" if flags & 0x02 else "!I", data_ack)
    if flags & 0x04:
        dsn = 0x1112131415161718 if flags & 0x08 else 0x11121314
        ssn, data_len = 0x21222324, 0x3132
        out += struct.pack("!Q" if flags & 0x08 else "!I", dsn) + struct.pack("!IH", ssn, data_len)
    if csum:
        out += b"\x41\x42"
    out = out[:1] + bytes((len(out),)) + out[2:]
    return Dss(data_ack, bool(flags & 0x02), dsn, bool(flags & 0x08), ssn, data_len,
               0x4142 if csum else None, bool(flags & 0x10)), out


@pytest.mark.parametrize("flags", range(32))
@pytest.mark.parametrize("csum", [False, True])
def test_dss_every_flag_combination(flags: int, csum: bool) -> None:
    value, raw = _expected_dss(flags, csum)
    length = 4 + (((8 if flags & 2 else 4) if flags & 1 else 0)
                  + ((14 if flags & 8 else 10) if flags & 4 else 0) + (2 if csum else 0))
    assert len(raw) == length
    assert parse_option(raw) == value
    assert emit_option(value) == raw
    assert value.flags == flags
    # every other length is rejected (the kernel accepts only expected and expected + 2)
    for n in range(3, 41):
        if n in (length, length - 2 if csum else length + 2):
            continue
        bad = bytes((30, n)) + (raw[2:] + bytes(40))[:n - 2]
        with pytest.raises(MalformedPacket, match="mptcp-dss-length"):
            parse_option(bad)


# --- wrong lengths, subtype by subtype (mirrors the kernel's checks) ---------------------
def _body(second: int, n: int) -> bytes:
    """An option of n bytes whose subtype byte is `second` (zeros after it)."""
    return bytes((30, n, second)) + bytes(n - 3)


WRONG_LENGTHS = [
    # (subtype byte, the valid lengths, reason tag)
    (0x01, {4, 12, 20, 22, 24}, "mptcp-mpc-"),  # MP_CAPABLE v1
    (0x00, {12, 20}, "mptcp-mpc-"),  # MP_CAPABLE v0
    (0x02, {4}, "mptcp-mpc-"),  # a future version: 4-byte SYN form only
    (0x10, {12, 16, 24}, "mptcp-mpj-length"),
    (0x30, {16, 18, 28, 30}, "mptcp-add-addr-length"),  # v1 announce
    (0x31, {8, 10, 20, 22}, "mptcp-add-addr-length"),  # v1 echo
    (0x34, {8, 10, 16, 18, 28, 30}, "mptcp-add-addr-length"),  # v0 IPv4 or v1 (rsvd bit)
    (0x36, {20, 22, 16, 18, 28, 30}, "mptcp-add-addr-length"),  # v0 IPv6 or v1 (rsvd bits)
    (0x40, set(range(4, 12)), "mptcp-rm-addr-length"),
    (0x50, {3, 4}, "mptcp-prio-length"),
    (0x60, {12}, "mptcp-fail-length"),
    (0x70, {12}, "mptcp-fastclose-length"),
    (0x80, {4}, "mptcp-tcprst-length"),
]


@pytest.mark.parametrize("second,valid,reason", WRONG_LENGTHS,
                         ids=[f"{s:02x}" for s, _, _ in WRONG_LENGTHS])
def test_wrong_lengths_rejected(second: int, valid: set[int], reason: str) -> None:
    for n in range(3, 41):
        opt = _body(second, n)
        if n in valid:
            m = parse_option(opt)
            again = emit_option(m)  # equal up to reserved bits
            assert len(again) == n and parse_option(again) == m
        else:
            with pytest.raises(MalformedPacket) as e:
                parse_option(opt)
            assert e.value.reason.startswith(reason), (n, e.value.reason)


def test_unknown_subtypes_any_length() -> None:
    for sub in range(9, 16):
        for n in range(3, 41):
            opt = _body(sub << 4 | 5, n)
            m = parse_option(opt)
            assert m == UnknownMptcp(sub, opt[2:])
            assert emit_option(m) == opt


def test_malformed_framing() -> None:
    with pytest.raises(MalformedPacket, match="mptcp-truncated"):
        parse_option(b"\x1e\x02")  # no subtype byte
    with pytest.raises(MalformedPacket, match="mptcp-truncated"):
        parse_tcp_option(tcp.UnknownOption(30, b""))
    with pytest.raises(MalformedPacket, match="mptcp-not-mptcp"):
        parse_option(b"\x1d\x04\x01\x01")
    with pytest.raises(MalformedPacket, match="mptcp-not-mptcp"):
        parse_tcp_option(tcp.UnknownOption(29, b"\x01\x01"))
    with pytest.raises(MalformedPacket, match="mptcp-option-length"):
        parse_option(b"\x1e\x04\x01\x01\x00")  # trailing byte beyond the length
    with pytest.raises(MalformedPacket, match="mptcp-truncated"):
        parse_option(b"\x1e\x0c\x01\x01\x00")


def mpc(opt: bytes, syn: bool | None = None, ack: bool = False,
        has_data: bool | None = None) -> MpCapable:
    m = parse_option(opt, syn, ack, has_data)
    assert isinstance(m, MpCapable)
    return m


def test_mpc_versions() -> None:
    # 4 bytes (the SYN): any version >= 1, "gentle vs future versions on the initial syn"
    assert parse_option(bytes.fromhex("1e040f01")) == MpCapable(15, 1)
    with pytest.raises(MalformedPacket, match="mptcp-mpc-version"):
        parse_option(bytes.fromhex("1e040001"))  # v0 has no 4-byte form
    # 12 and 20 bytes: v0 or v1 only; 22 and 24: v1 only
    for n, ok in ((12, {0, 1}), (20, {0, 1}), (22, {1}), (24, {1})):
        for v in range(16):
            opt = bytes((30, n, v, 1)) + bytes(n - 4)
            if v in ok:
                assert mpc(opt).version == v
            else:
                with pytest.raises(MalformedPacket, match="mptcp-mpc-version"):
                    parse_option(opt)


def test_add_addr_v0_v1_disambiguation() -> None:
    # nibble 4 with 16 bytes is a v1 announce with a reserved bit set (the kernel reads
    # the E bit only); with 8 bytes it is a v0 IPv4 ADD_ADDR
    m = parse_option(bytes.fromhex("1e103405c00002010102030405060708"))
    assert m == AddAddr(5, V4, None, 0x0102030405060708)
    assert parse_option(bytes.fromhex("1e083405c0000201")) == AddAddr(5, V4, version=0)
    # an IPv4 address with IPVer 6 (or the reverse) is no v0 layout
    with pytest.raises(MalformedPacket):
        parse_option(bytes.fromhex("1e083605c0000201"))
    with pytest.raises(MalformedPacket):
        parse_option(bytes.fromhex("1e143405") + V6)
    # a reserved bit next to E: still an echo (reserved bits are ignored)
    assert parse_option(bytes.fromhex("1e083305c0000201")) == AddAddr(5, V4, echo=True)


def test_reserved_bits_ignored() -> None:
    """RFC 8684: reserved bits are ignored on receipt (and emitted as zero)."""
    cases = [
        ("1e0c1e0301020304a0b0c0d0", MpJoinSyn(False, 3, 0x01020304, 0xA0B0C0D0)),
        ("1e18" + "1fff" + "00" * 20, MpJoinAck(bytes(20))),
        ("1e082fe111223344", Dss(0x11223344)),  # reserved nibble and top 3 flag bits
        ("1e044f01", RemoveAddr((1,))),
        ("1e035f", MpPrio(True)),
        ("1e0c6fff" + K1, MpFail(int(K1, 16))),
        ("1e0c7abc" + K2, MpFastclose(int(K2, 16))),
    ]
    for hexstr, value in cases:
        raw = bytes.fromhex(hexstr)
        assert parse_option(raw) == value
        assert len(emit_option(value)) == len(raw)


# --- MP_CAPABLE in context: the kernel's expected size per segment -----------------------
MPC = {n: bytes((30, n, 1, 1)) + bytes(n - 4) for n in (4, 12, 20, 22, 24)}
MPC0 = {n: bytes((30, n, 0, 1)) + bytes(n - 4) for n in (12, 20)}


@pytest.mark.parametrize("syn,ack,has_data,ok", [
    (True, False, None, {4}),  # SYN
    (True, False, True, {4}),  # SYN with data (TFO): still 4
    (True, True, None, {12}),  # SYN/ACK
    (False, True, None, {20, 22, 24}),  # unknown payload: any ACK layout
    (False, True, False, {20}),  # third ACK, no payload
    (False, True, True, {22, 24}),  # first data
])
def test_mpc_size_per_segment(syn: bool, ack: bool, has_data: bool | None, ok: set[int]) -> None:
    for n, opt in MPC.items():
        if n in ok:
            assert parse_option(opt, syn, ack, has_data) == parse_option(opt)
        else:
            with pytest.raises(MalformedPacket, match="mptcp-mpc-length"):
                parse_option(opt, syn, ack, has_data)
    # v0: 12 on SYN and SYN/ACK, 20 after (with or without payload)
    for n, opt in MPC0.items():
        if n == (12 if syn else 20):
            assert mpc(opt, syn, ack, has_data).version == 0
        else:
            with pytest.raises(MalformedPacket, match="mptcp-mpc-length"):
                parse_option(opt, syn, ack, has_data)


# --- emit refuses values no valid option has ----------------------------------------------
@pytest.mark.parametrize("value", [
    MpCapable(0, 1),  # v0 has no keyless form
    MpCapable(16, 1),
    MpCapable(1, 256),
    MpCapable(1, 1, 2**64),
    MpCapable(1, 1, None, 5),
    MpCapable(1, 1, 5, None, 100),
    MpCapable(1, 1, 5, 6, None, 7),
    MpCapable(0, 1, 5, 6, 100),  # v0 has no data-level length
    MpCapable(2, 1, 5),  # future versions only in the SYN form
    MpJoinSyn(False, 256, 1, 1),
    MpJoinSyn(False, 1, 2**32, 1),
    MpJoinSynAck(False, 1, 2**64, 1),
    MpJoinAck(bytes(19)),
    Dss(2**32),  # a 64-bit value without the a flag
    Dss(None, False, 2**32),
    Dss(None, False, None, False, 5),  # ssn without a mapping
    Dss(None, False, None, False, 0, 5),
    Dss(None, False, 1, False, 0, 2**16),
    Dss(None, False, 1, False, 0, 1, 2**16),
    AddAddr(1, bytes(5), None, 1),
    AddAddr(1, V4, None, None),  # a v1 announce needs its HMAC
    AddAddr(1, V4, None, 1, echo=True),  # an echo has none
    AddAddr(1, V4, None, 1, version=0),  # v0 has none
    AddAddr(1, V4, echo=True, version=0),
    AddAddr(1, V4, 2**16, 1),
    AddAddr(1, V4, None, 1, version=2),
    RemoveAddr(()),
    RemoveAddr(tuple(range(9))),
    RemoveAddr((256,)),
    MpPrio(True, 256),
    MpFail(-1),
    MpFastclose(2**64),
    MpTcpRst(256),
    MpTcpRst(1, 16),
    UnknownMptcp(9, b""),
    UnknownMptcp(9, b"\xa0"),  # data says subtype 10
    UnknownMptcp(2, b"\x20"),  # an assigned subtype
])
def test_emit_rejects_invalid_values(value: MptcpOption) -> None:
    with pytest.raises(ValueError):
        emit_option(value)


def test_emit_rejects_non_options() -> None:
    with pytest.raises(TypeError):
        emit_option(tcp.Nop())  # type: ignore[arg-type]


def test_to_tcp_option_through_the_tcp_codec() -> None:
    opts: list[tcp.TcpOption] = [tcp.Nop(), tcp.Nop(), tcp.Timestamps(1, 2),
                                 to_tcp_option(Dss(5, False, 7, True, 1, 100)),
                                 to_tcp_option(MpPrio(True)), tcp.Nop()]
    raw = tcp.emit_options(opts)
    back = tcp.parse_options(raw)
    assert back[:len(opts)] == opts
    ro, reasons = parse_received(back, A)
    assert reasons == [] and ro.suboptions == OPTION_MPTCP_DSS | OPTION_MPTCP_PRIO
    assert (ro.data_ack, ro.data_seq, ro.data_len, ro.backup) == (5, 7, 100, True)


# --- properties -------------------------------------------------------------------------
u8, u16 = st.integers(0, 2**8 - 1), st.integers(0, 2**16 - 1)
u32, u64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
addrs = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16))


@st.composite
def dss_values(draw: Any) -> Dss:
    ack64, dsn64 = draw(st.booleans()), draw(st.booleans())
    data_ack = draw(st.none() | (u64 if ack64 else u32))
    dsn = draw(st.none() | (u64 if dsn64 else u32))
    ssn, data_len = (draw(u32), draw(u16)) if dsn is not None else (0, 0)
    return Dss(data_ack, ack64, dsn, dsn64, ssn, data_len, draw(st.none() | u16),
               draw(st.booleans()))


@st.composite
def add_addr_values(draw: Any) -> AddAddr:
    version = draw(st.sampled_from([0, 1]))
    echo = draw(st.booleans()) if version else False
    hmac = draw(u64) if version and not echo else None
    return AddAddr(draw(u8), draw(addrs), draw(st.none() | u16), hmac, echo, version)


@st.composite
def unknown_values(draw: Any) -> UnknownMptcp:
    sub = draw(st.integers(9, 15))
    return UnknownMptcp(sub, bytes((sub << 4 | draw(st.integers(0, 15)),))
                        + draw(st.binary(max_size=30)))


options_st = st.one_of(
    st.builds(MpCapable, st.integers(1, 15), u8),
    st.builds(MpCapable, st.integers(0, 1), u8, u64),
    st.builds(MpCapable, st.integers(0, 1), u8, u64, u64),
    st.builds(MpCapable, st.just(1), u8, u64, u64, u16),
    st.builds(MpCapable, st.just(1), u8, u64, u64, u16, u16),
    st.builds(MpJoinSyn, st.booleans(), u8, u32, u32),
    st.builds(MpJoinSynAck, st.booleans(), u8, u64, u32),
    st.builds(MpJoinAck, st.binary(min_size=20, max_size=20)),
    dss_values(),
    add_addr_values(),
    st.builds(RemoveAddr, st.lists(u8, min_size=1, max_size=8).map(tuple)),
    st.builds(MpPrio, st.booleans(), st.none() | u8),
    st.builds(MpFail, u64),
    st.builds(MpFastclose, u64),
    st.builds(MpTcpRst, u8, st.integers(0, 15)),
    unknown_values(),
)


@given(options_st)
def test_property_emit_parse(value: MptcpOption) -> None:
    raw = emit_option(value)
    assert raw[0] == 30 and raw[1] == len(raw) == option_len(value)
    assert parse_option(raw) == value
    for i in range(len(raw)):
        with pytest.raises(MalformedPacket):
            parse_option(raw[:i])


@given(st.binary(min_size=1, max_size=38))
def test_property_any_bytes(body: bytes) -> None:
    """Arbitrary option bodies: rejected with MalformedPacket, or read as a value that
    re-emits to an option of the same length and reads back the same."""
    opt = bytes((30, 2 + len(body))) + body
    try:
        m = parse_option(opt)
    except MalformedPacket:
        return
    again = emit_option(m)
    assert len(again) == len(opt)
    assert parse_option(again) == m
    if isinstance(m, (MpCapable, MpTcpRst, UnknownMptcp)) or (
            isinstance(m, AddAddr) and m.version == 0):
        assert again == opt  # no reserved bits in these layouts


@given(st.lists(st.tuples(st.integers(0, 15), st.binary(max_size=36)), max_size=4),
       st.integers(0, 255), st.none() | st.booleans(), st.booleans())
def test_property_parse_received_never_raises(opts: list[tuple[int, bytes]], flags: int,
                                              has_data: bool | None, accept_v0: bool) -> None:
    tcp_opts: list[tcp.TcpOption] = [
        tcp.UnknownOption(30, bytes((sub << 4 | (b[0] & 15 if b else 0),)) + b[1:])
        for sub, b in opts]
    ro, reasons = parse_received(tcp_opts, flags, has_data, accept_v0=accept_v0)
    assert len(reasons) <= len(opts) + 1
    assert isinstance(ro.describe(), str)


@given(st.binary(max_size=30), st.booleans())
def test_property_dss_fast_path_agrees(rest: bytes, with_flags: bool) -> None:
    """parse_received reads DSS without building a Dss (the per-segment path): it must
    agree with parse_option on every input."""
    body = bytes((0x20,)) + (rest if with_flags else b"")
    ro, reasons = parse_received([tcp.UnknownOption(30, body)], A)
    try:
        m = parse_option(bytes((30, 2 + len(body))) + body)
    except MalformedPacket as e:
        assert reasons == [e.reason] and not ro.suboptions
        return
    assert isinstance(m, Dss) and reasons == []
    assert ro.use_ack == (m.data_ack is not None) and ro.ack64 == m.data_ack64
    assert ro.use_map == (m.dsn is not None) and ro.dsn64 == m.dsn64
    assert ro.data_fin == m.data_fin and not ro.mpc_map
    if m.data_ack is not None:
        assert ro.data_ack == m.data_ack
    if m.dsn is not None:
        assert (ro.data_seq, ro.subflow_seq, ro.data_len) == (m.dsn, m.ssn, m.data_len)
    with_csum = m.dsn is not None and m.checksum is not None
    assert ro.csum_reqd == with_csum
    if with_csum:
        assert ro.csum == m.checksum


# --- parse_received: the kernel's per-segment rules --------------------------------------
def opts_of(*values: MptcpOption) -> list[tcp.TcpOption]:
    out: list[tcp.TcpOption] = [tcp.Nop(), tcp.Mss(1460)]
    return out + [to_tcp_option(v) for v in values]


def test_tcprst_only_with_rst() -> None:
    rst = MpTcpRst(wm.MPTCP_RST_EPROHIBIT, wm.MPTCP_RST_TRANSIENT)
    ro, reasons = parse_received(opts_of(rst), A)
    assert not ro.suboptions and reasons == ["mptcp-tcprst-without-rst"]
    ro, reasons = parse_received(opts_of(rst), R | A)
    assert ro.suboptions == OPTION_MPTCP_RST and reasons == []
    assert (ro.reset_reason, ro.reset_transient) == (3, True)


def test_syn_with_mpc_and_mpj_is_neither() -> None:
    ro, reasons = parse_received(opts_of(MpCapable(1, 0x81), MpJoinSyn(False, 1, 2, 3)), S)
    assert not ro.suboptions & (mo.OPTIONS_MPTCP_MPC | mo.OPTIONS_MPTCP_MPJ)
    assert not ro.csum_reqd
    assert reasons == ["mptcp-syn-mpc-and-mpj"]
    # either alone is fine
    assert parse_received(opts_of(MpCapable(1, 1)), S)[0].suboptions == OPTION_MPTCP_MPC_SYN
    assert parse_received(opts_of(MpJoinSyn(False, 1, 2, 3)), S)[0].suboptions == \
        OPTION_MPTCP_MPJ_SYN
    # on a SYN/ACK the kernel checks the one it asked for: both bits stay
    ro, reasons = parse_received(opts_of(MpCapable(1, 1, 5), MpJoinSynAck(False, 1, 2, 3)), S | A)
    assert ro.suboptions == OPTION_MPTCP_MPC_SYNACK | OPTION_MPTCP_MPJ_SYNACK and reasons == []


def test_mpc_bits_follow_the_segment() -> None:
    assert parse_received(opts_of(MpCapable(1, 1)), S)[0].suboptions == OPTION_MPTCP_MPC_SYN
    assert parse_received(opts_of(MpCapable(1, 1, 5)), S | A)[0].suboptions == \
        OPTION_MPTCP_MPC_SYNACK
    assert parse_received(opts_of(MpCapable(1, 1, 5, 6)), A, False)[0].suboptions == \
        OPTION_MPTCP_MPC_ACK
    # the wrong size for the segment is ignored, as the kernel ignores it
    for value, flags, has_data in [
        (MpCapable(1, 1), S | A, None),  # keyless on a SYN/ACK
        (MpCapable(1, 1, 5), S, None),  # a v1 12-byte option on a SYN
        (MpCapable(1, 1, 5), A, None),  # 12 bytes after the handshake
        (MpCapable(1, 1, 5, 6, 100), A, False),  # data length without payload
        (MpCapable(1, 1, 5, 6), A | P, True),  # no data length with payload
    ]:
        ro, reasons = parse_received(opts_of(value), flags, has_data)
        assert not ro.suboptions and reasons == ["mptcp-mpc-length"], value


@pytest.mark.parametrize("flags,ok", [
    (0x01, True), (0x81, True), (0x21, True), (0xA1, True),  # H, A, C
    (0x00, False),  # no crypto algorithm
    (0x41, False),  # B (extensibility)
    (0x03, False), (0x11, False), (0x02, False),  # other crypto bits
])
def test_mpc_flags(flags: int, ok: bool) -> None:
    ro, reasons = parse_received(opts_of(MpCapable(1, flags, 5)), S | A)
    if ok:
        assert ro.suboptions & OPTION_MPTCP_MPC_SYNACK and reasons == []
        assert ro.csum_reqd == bool(flags & 0x80)
        assert ro.deny_join_id0 == bool(flags & 0x20)
        assert ro.sndr_key == 5 and ro.mpc_flags == flags
    else:
        assert not ro.suboptions and reasons == ["mptcp-mpc-flags"]


def test_mpc_v0() -> None:
    syn = opts_of(MpCapable(0, 0x81, 0xAB))
    ro, reasons = parse_received(syn, S)
    assert ro.suboptions == OPTION_MPTCP_MPC_SYN | OPTION_MPTCP_CSUMREQD and reasons == []
    assert (ro.version, ro.sndr_key) == (0, 0xAB)
    ro, reasons = parse_received(syn, S, accept_v0=False)  # the v1-only kernel
    assert not ro.suboptions and reasons == ["mptcp-mpc-version"]
    ro, reasons = parse_received(opts_of(MpCapable(0, 0x01, 1, 2)), A, True)
    assert ro.suboptions == OPTION_MPTCP_MPC_ACK and (ro.sndr_key, ro.rcvr_key) == (1, 2)
    assert not ro.use_map  # v0 maps the first data with a DSS, not in MP_CAPABLE
    # in v0, C is a crypto bit: only H may be set among C..H
    ro, reasons = parse_received(opts_of(MpCapable(0, 0x21, 1)), S)
    assert not ro.suboptions and reasons == ["mptcp-mpc-flags"]
    # a future version on the SYN is answered (as v1) by the kernel
    ro, reasons = parse_received(opts_of(MpCapable(3, 0x01)), S)
    assert ro.suboptions == OPTION_MPTCP_MPC_SYN and ro.version == 3


def test_v0_add_addr_and_prio() -> None:
    add0, prio0 = AddAddr(3, V4, 80, version=0), MpPrio(True, 3)
    ro, reasons = parse_received(opts_of(add0, prio0), A)
    assert ro.suboptions == OPTION_MPTCP_ADD_ADDR | OPTION_MPTCP_PRIO and reasons == []
    assert ro.addr == add0 and (ro.backup, ro.prio_addr_id) == (True, 3)
    ro, reasons = parse_received(opts_of(add0, prio0), A, accept_v0=False)
    assert not ro.suboptions and reasons == ["mptcp-add-addr-v0", "mptcp-prio-v0"]


def test_dss_checksum_only_with_a_mapping() -> None:
    ro, reasons = parse_received(opts_of(Dss(7, checksum=0x1234)), A)
    assert ro.suboptions == OPTION_MPTCP_DSS and reasons == []
    assert ro.use_ack and not ro.use_map and not ro.csum_reqd
    ro, _ = parse_received(opts_of(Dss(7, False, 9, False, 1, 10, 0x1234)), A)
    assert ro.csum_reqd and ro.csum == 0x1234


def test_malformed_and_unknown_are_ignored_alone() -> None:
    bad_dss = tcp.UnknownOption(30, bytes.fromhex("2001112233"))  # 7 bytes, A: wants 8
    unknown = to_tcp_option(UnknownMptcp(12, b"\xc0\x01"))
    opts: list[tcp.TcpOption] = [bad_dss, unknown, to_tcp_option(MpFail(99)), tcp.SackPermitted()]
    ro, reasons = parse_received(opts, A)
    assert ro.suboptions == OPTION_MPTCP_FAIL and ro.fail_seq == 99
    assert reasons == ["mptcp-dss-length", "mptcp-unknown-subtype"]


def test_later_option_overwrites() -> None:
    ro, _ = parse_received(opts_of(Dss(1), Dss(2, True)), A)
    assert (ro.data_ack, ro.ack64) == (2, True)
    # MP_CAPABLE with data, then a DSS: the DSS's mapping (and mpc_map cleared)
    ro, _ = parse_received(opts_of(MpCapable(1, 1, 5, 6, 10), Dss(None, False, 9, True, 1, 10)),
                           A, True)
    assert ro.use_map and not ro.mpc_map and ro.data_seq == 9
    assert ro.suboptions == OPTION_MPTCP_MPC_ACK | OPTION_MPTCP_DSS


def test_fastclose_uses_rcvr_key() -> None:
    ro, _ = parse_received(opts_of(MpFastclose(0x77)), A)
    assert ro.suboptions == OPTION_MPTCP_FASTCLOSE and ro.rcvr_key == 0x77


def test_no_mptcp_options() -> None:
    ro, reasons = parse_received([tcp.Nop(), tcp.Timestamps(1, 2)], A)
    assert not ro.suboptions and reasons == []
    assert ro.describe() == "no MPTCP options"


def test_received_describe_every_suboption() -> None:
    values: list[MptcpOption] = [MpJoinSyn(True, 2, 0x0A0B0C0D, 5), AddAddr(1, V6, 443, 9),
                                 RemoveAddr((1, 2)), MpPrio(False), MpFail(3),
                                 MpFastclose(4), MpTcpRst(2, 1), Dss(1, False, 2, False, 3, 4, 5)]
    ro, reasons = parse_received(opts_of(*values), R | A)
    assert reasons == []
    text = ro.describe()
    for part in ("MPJ_SYN", "token=0a0b0c0d", "2001:db8::1", "rm_list=1,2", "fail_seq=",
                 "fastclose key=", "reset_reason=2 transient=1", "data_seq=0x00000002",
                 "csum=0x0005"):
        assert part in text, part
