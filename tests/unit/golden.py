"""Golden vectors: IPv4 packets captured from the Linux kernel in the test topology.

Produced by `tools/capture.py golden -o tests/unit/golden.py` (root): a private
netns-setup.sh topology (--paths 1), checksum/segmentation offloads off on both ends
of path1, kernel-to-kernel traffic captured with an AF_PACKET socket on the
peer's path1 (link-layer header stripped). Every packet is exactly as the kernel sent
it, checksums included. Do not edit by hand; regenerate.
"""

KERNEL = '6.18.44-fc-v595'

# MPTCP tokens of the MPTCP_* connection, from the kernel (getsockopt MPTCP_INFO):
# token = first 4 bytes of SHA-256(key), the client key is in MPTCP_ACK.
MPTCP_CLIENT_TOKEN = '11984015'
MPTCP_SERVER_TOKEN = '39c00771'

# SYN; kernel 6.18.44-fc-v595 TCP client (10.0.1.254, user ns) -> kernel server 10.0.1.1:7000
# (peer ns), offloads off, captured on the peer's path1
TCP_SYN = bytes.fromhex(
    "4500003cca7d4000400659400a0001fe0a000101dd6f1b5814e2c76d00000000a002faf057c20000"
    "020405b40402080a100bf928000000000103030a"
)

# SYN/ACK; kernel 6.18.44-fc-v595 TCP client (10.0.1.254, user ns) -> kernel server
# 10.0.1.1:7000 (peer ns), offloads off, captured on the peer's path1
TCP_SYNACK = bytes.fromhex(
    "4500003c00004000400623be0a0001010a0001fe1b58dd6f7bdea24e14e2c76ea012fe88219b0000"
    "020405b40402080ad7883cc8100bf9280103030a"
)

# pure ACK (third ACK, timestamps); kernel 6.18.44-fc-v595 TCP client (10.0.1.254, user ns) ->
# kernel server 10.0.1.1:7000 (peer ns), offloads off, captured on the peer's path1
TCP_ACK = bytes.fromhex(
    "45000034ca7e4000400659470a0001fe0a000101dd6f1b5814e2c76e7bdea24f8010003f4eb40000"
    "0101080a100bf928d7883cc8"
)

# data segment (39 bytes, PSH/ACK); kernel 6.18.44-fc-v595 TCP client (10.0.1.254, user ns) ->
# kernel server 10.0.1.1:7000 (peer ns), offloads off, captured on the peer's path1
TCP_DATA = bytes.fromhex(
    "4500005bca7f40004006591f0a0001fe0a000101dd6f1b5814e2c76e7bdea24f8018003f5f800000"
    "0101080a100bf929d7883cc8676f6c64656e20766563746f723a206b65726e656c20544350206461"
    "7461207365676d656e740a"
)

# FIN/ACK from the client after its data; kernel 6.18.44-fc-v595 TCP client (10.0.1.254, user
# ns) -> kernel server 10.0.1.1:7000 (peer ns), offloads off, captured on the peer's path1
TCP_FIN = bytes.fromhex(
    "45000034ca804000400659450a0001fe0a000101dd6f1b5814e2c7957bdea24f8011003f4e8a0000"
    "0101080a100bf929d7883cc9"
)

# RST/ACK from kernel 6.18.44-fc-v595 peer 10.0.1.1 for a SYN to closed port 7001, captured on
# the peer's path1
TCP_RST = bytes.fromhex(
    "4500002800004000400623d20a0001010a0001fe1b59dc9d000000001feba30b50140000dde40000"
)

# ACK with a SACK block from kernel 6.18.44-fc-v595 server 10.0.1.1:7002 after its nft input
# hook dropped the client's 2nd data segment once (20000 bytes sent), captured on the peer's
# path1
TCP_SACK = bytes.fromhex(
    "450000406ab440004006b9050a0001010a0001fe1b5aad9995146c337d77e268b01000463f430000"
    "0101080af492d1547a81aee00101050a7d77e8107d77edb8"
)

# SYN with MP_CAPABLE; kernel 6.18.44-fc-v595 MPTCP client socket(AF_INET, SOCK_STREAM, 262)
# 10.0.1.254 -> kernel MPTCP server 10.0.1.1:7003; client token 11984015, server token 39c00771
# (MPTCP_INFO); captured on the peer's path1
MPTCP_SYN = bytes.fromhex(
    "450000400d164000400616a40a0001fe0a000101b9591b5b1e1bbc5400000000b002faf090ca0000"
    "020405b40402080a210ba60a000000000103030a1e040101"
)

# SYN/ACK with MP_CAPABLE (server key); kernel 6.18.44-fc-v595 MPTCP client socket(AF_INET,
# SOCK_STREAM, 262) 10.0.1.254 -> kernel MPTCP server 10.0.1.1:7003; client token 11984015,
# server token 39c00771 (MPTCP_INFO); captured on the peer's path1
MPTCP_SYNACK = bytes.fromhex(
    "4500004800004000400623b20a0001010a0001fe1b5bb959791cf23e1e1bbc55d012fe8832ec0000"
    "020405b40402080a01327dc1210ba60a0103030a1e0c0101cb915b4abd686b91"
)

# third ACK with MP_CAPABLE (both keys); kernel 6.18.44-fc-v595 MPTCP client socket(AF_INET,
# SOCK_STREAM, 262) 10.0.1.254 -> kernel MPTCP server 10.0.1.1:7003; client token 11984015,
# server token 39c00771 (MPTCP_INFO); captured on the peer's path1
MPTCP_ACK = bytes.fromhex(
    "450000480d1740004006169b0a0001fe0a000101b9591b5b1e1bbc55791cf23fd010003fca800000"
    "0101080a210ba60a01327dc11e14010122ff96b96ac650f5cb915b4abd686b91"
)

# client's first data segment (100 bytes), MP_CAPABLE with data length; kernel 6.18.44-fc-v595
# MPTCP client socket(AF_INET, SOCK_STREAM, 262) 10.0.1.254 -> kernel MPTCP server
# 10.0.1.1:7003; client token 11984015, server token 39c00771 (MPTCP_INFO); captured on the
# peer's path1
MPTCP_DATA_MPC = bytes.fromhex(
    "450000b00d184000400616320a0001fe0a000101b9591b5b1e1bbc55791cf23fe018003f98420000"
    "0101080a210ba60a01327dc11e16010122ff96b96ac650f5cb915b4abd686b9100640101811d881a"
    "10d36c5aab8ca9abf86bcf10e938396d88e26f0ce5524263d4452e66e26661a0f56e798f0270f013"
    "806547b732183fadf3df8e6421452ab0b218b88cdfb5d851bc097660af7b80c072b329b99938fa45"
    "ac81120b49f3f4fcb84068687ccd3a7d"
)

# server's data segment (the 100 bytes echoed) with DSS; kernel 6.18.44-fc-v595 MPTCP client
# socket(AF_INET, SOCK_STREAM, 262) 10.0.1.254 -> kernel MPTCP server 10.0.1.1:7003; client
# token 11984015, server token 39c00771 (MPTCP_INFO); captured on the peer's path1
MPTCP_DATA_DSS = bytes.fromhex(
    "450000b4b1aa40004006719b0a0001010a0001fe1b5bb959791cf23f1e1bbcb9f018003ff5470000"
    "0101080a01327dc1210ba60a1e1a200fb3f1aaa98533e0510a1a1a4bf9fb56480000000100640101"
    "811d881a10d36c5aab8ca9abf86bcf10e938396d88e26f0ce5524263d4452e66e26661a0f56e798f"
    "0270f013806547b732183fadf3df8e6421452ab0b218b88cdfb5d851bc097660af7b80c072b329b9"
    "9938fa45ac81120b49f3f4fcb84068687ccd3a7d"
)

# echo request; `ping -c 1 -p a5 10.0.1.1` from the user ns, kernel 6.18.44-fc-v595, peer's
# path1
ICMP_ECHO_REQUEST = bytes.fromhex(
    "45000054688340004001bb270a0001fe0a00010108008ce923f300011ba8056b00000000341e0100"
    "00000000a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"
    "a5a5a5a5"
)

# echo reply from the peer's kernel; `ping -c 1 -p a5 10.0.1.1` from the user ns, kernel
# 6.18.44-fc-v595, peer's path1
ICMP_ECHO_REPLY = bytes.fromhex(
    "45000054a62500004001bd850a0001010a0001fe000094e923f300011ba8056b00000000341e0100"
    "00000000a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"
    "a5a5a5a5"
)

# port unreachable from kernel 6.18.44-fc-v595 peer 10.0.1.1 for a UDP datagram 10.0.1.254:40000
# -> 10.0.1.1:7999 (closed), captured on the peer's path1
ICMP_PORT_UNREACH = bytes.fromhex(
    "45c00048a67800004001bc7e0a0001010a0001fe03031425000000004500002c97d1400040118bf1"
    "0a0001fe0a0001019c401f3f001879d3676f6c64656e207564702070726f6265"
)

GOLDEN: dict[str, bytes] = {
    "TCP_SYN": TCP_SYN,
    "TCP_SYNACK": TCP_SYNACK,
    "TCP_ACK": TCP_ACK,
    "TCP_DATA": TCP_DATA,
    "TCP_FIN": TCP_FIN,
    "TCP_RST": TCP_RST,
    "TCP_SACK": TCP_SACK,
    "MPTCP_SYN": MPTCP_SYN,
    "MPTCP_SYNACK": MPTCP_SYNACK,
    "MPTCP_ACK": MPTCP_ACK,
    "MPTCP_DATA_MPC": MPTCP_DATA_MPC,
    "MPTCP_DATA_DSS": MPTCP_DATA_DSS,
    "ICMP_ECHO_REQUEST": ICMP_ECHO_REQUEST,
    "ICMP_ECHO_REPLY": ICMP_ECHO_REPLY,
    "ICMP_PORT_UNREACH": ICMP_PORT_UNREACH,
}
