"""Every counter the stack keeps, named once: the kernel's SNMP/MIB names (`nstat`
without the `Ip`/`Tcp`/`TcpExt`/`MPTcpExt` prefixes; the kernel's `net/mptcp/mib.c`
for MPTCP), plus ours where the kernel has none (marked). Counters are
`collections.Counter`s keyed by these members; a `Mib` member is a `str` equal to its
name, so `--stats` prints the names as before and tests may index with plain strings.

Two families are open-ended and keyed by prefix + tag: `Drop:<reason>` (a frame or
segment dropped: a `DropReason` below, or a codec's `MalformedPacket.reason`) and
`OptionIgnored:<reason>` (an MPTCP option the parser ignored, `parse_received`'s tags).
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum, unique


@unique
class Mib(StrEnum):
    # ---- IP and the host (Ip*, Icmp*) ----
    InReceives = "InReceives"
    InDelivers = "InDelivers"
    InHdrErrors = "InHdrErrors"
    InCsumErrors = "InCsumErrors"
    InUnknownProtos = "InUnknownProtos"
    OutRequests = "OutRequests"
    ReasmFails = "ReasmFails"
    IcmpInMsgs = "IcmpInMsgs"
    IcmpInEchos = "IcmpInEchos"
    IcmpInDestUnreachs = "IcmpInDestUnreachs"
    IcmpOutEchoReps = "IcmpOutEchoReps"
    IcmpOutDestUnreachs = "IcmpOutDestUnreachs"
    IcmpOutRateLimitHost = "IcmpOutRateLimitHost"
    IcmpOutRateLimitGlobal = "IcmpOutRateLimitGlobal"
    Ip6InHdrErrors = "Ip6InHdrErrors"
    Ip6ReasmFails = "Ip6ReasmFails"
    Ip6InUnknownProtos = "Ip6InUnknownProtos"
    Icmp6InMsgs = "Icmp6InMsgs"
    Icmp6InDestUnreachs = "Icmp6InDestUnreachs"
    Icmp6InPktTooBigs = "Icmp6InPktTooBigs"
    Icmp6OutEchoReplies = "Icmp6OutEchoReplies"
    Icmp6OutParmProblems = "Icmp6OutParmProblems"
    Icmp6OutRateLimitHost = "Icmp6OutRateLimitHost"
    InIcmpErrors = "InIcmpErrors"
    ListenDrops = "ListenDrops"          # SYNs a listener dropped (its backlog full)
    SyncookiesSent = "SyncookiesSent"    # SYN cookies (net.ipv4.tcp_syncookies)
    SyncookiesRecv = "SyncookiesRecv"
    SyncookiesFailed = "SyncookiesFailed"
    TCPReqQFullDoCookies = "TCPReqQFullDoCookies"  # the SYN backlog was full: a cookie
    TCPReqQFullDrop = "TCPReqQFullDrop"            # ... and no cookies: dropped
    TunReadErrors = "TunReadErrors"      # ours: the shell's device reads that failed
    TunWriteErrors = "TunWriteErrors"    # ours: ... and writes
    # ---- TCP (Tcp*, TcpExt*) ----
    ActiveOpens = "ActiveOpens"
    PassiveOpens = "PassiveOpens"
    AttemptFails = "AttemptFails"
    EstabResets = "EstabResets"
    InSegs = "InSegs"
    OutSegs = "OutSegs"
    RetransSegs = "RetransSegs"
    OutRsts = "OutRsts"
    OutAcks = "OutAcks"                  # ours: pure ACKs sent
    DelayedACKs = "DelayedACKs"
    PAWSEstab = "PAWSEstab"
    TCPTimeouts = "TCPTimeouts"
    TCPAckCoalesced = "TCPAckCoalesced"  # ours: pure ACKs a later one in the batch superseded
    TCPPMTUReduced = "TCPPMTUReduced"  # ours: the send MSS shrank to a reported path MTU
    TCPSynRetrans = "TCPSynRetrans"
    TCPAttemptFails = "TCPAttemptFails"  # ours: SYN-SENT given up after retransmissions
    TCPAbortOnTimeout = "TCPAbortOnTimeout"
    TCPLostRetransmit = "TCPLostRetransmit"
    TCPFastRetrans = "TCPFastRetrans"
    TCPLossRetrans = "TCPLossRetrans"
    TCPSackRecovery = "TCPSackRecovery"
    TCPHystartDelayDetect = "TCPHystartDelayDetect"  # slow start ended by HyStart
    TCPRenoRecovery = "TCPRenoRecovery"
    TCPDupAcks = "TCPDupAcks"            # ours
    TCPDupData = "TCPDupData"            # ours
    TCPOFOQueue = "TCPOFOQueue"
    TCPOFODrop = "TCPOFODrop"
    TCPRcvTrimmed = "TCPRcvTrimmed"      # ours: segments trimmed to the window
    TCPZeroWindowDrop = "TCPZeroWindowDrop"
    TCPWinProbe = "TCPWinProbe"
    TCPKeepAlive = "TCPKeepAlive"        # ours
    TCPKeepAliveTimeout = "TCPKeepAliveTimeout"  # ours
    TCPSimultaneousOpen = "TCPSimultaneousOpen"  # ours
    TCPChallengeACK = "TCPChallengeACK"
    TCPSYNChallenge = "TCPSYNChallenge"
    TCPChallengeACKLimit = "TCPChallengeACKLimit"  # ours: challenge ACKs not sent (limit)
    # ---- MPTCP (MPTcpExt*, net/mptcp/mib.c) ----
    MPCapableSYNRX = "MPCapableSYNRX"
    MPCapableSYNTX = "MPCapableSYNTX"
    MPCapableSYNACKRX = "MPCapableSYNACKRX"
    MPCapableACKRX = "MPCapableACKRX"
    MPCapableFallbackACK = "MPCapableFallbackACK"
    MPCapableFallbackSYNACK = "MPCapableFallbackSYNACK"
    MPCapableDataFallback = "MPCapableDataFallback"
    MPCapableKeyMismatch = "MPCapableKeyMismatch"  # ours: the third ACK echoed a wrong key
    MPCapableSYNTXDrop = "MPCapableSYNTXDrop"  # our MP_CAPABLE SYNs unanswered: plain SYN next
    MPCapableSYNTXDisabled = "MPCapableSYNTXDisabled"  # an active open while MPTCP's disabled
    Blackhole = "Blackhole"                # MP_CAPABLE SYNs dropped, plain ones answered
    MPFallbackTokenInit = "MPFallbackTokenInit"
    MPTCPRetrans = "MPTCPRetrans"
    MPTCPRetransBytes = "MPTCPRetransBytes"  # ours
    WinProbe = "WinProbe"  # a 1-byte data-level zero-window probe mapped (Linux 6.x)
    MPJoinNoTokenFound = "MPJoinNoTokenFound"
    MPJoinSynRx = "MPJoinSynRx"
    MPJoinSynTx = "MPJoinSynTx"
    MPJoinSynTxAttempts = "MPJoinSynTxAttempts"  # ours: joins we opened
    MPJoinSynTxConnectErr = "MPJoinSynTxConnectErr"  # a join's connect() failed at once
    MPJoinSynAckRx = "MPJoinSynAckRx"
    MPJoinSynAckHMacFailure = "MPJoinSynAckHMacFailure"
    MPJoinSynAckMissing = "MPJoinSynAckMissing"  # ours: a join's SYN/ACK without MP_JOIN
    MPJoinAckRx = "MPJoinAckRx"
    MPJoinAckHMacFailure = "MPJoinAckHMacFailure"
    MPJoinAckMissing = "MPJoinAckMissing"  # ours: a join's third ACK without MP_JOIN
    MPJoinRejected = "MPJoinRejected"
    MPJoinSynBackupRx = "MPJoinSynBackupRx"        # a join SYN with the B flag
    MPJoinSynAckBackupRx = "MPJoinSynAckBackupRx"  # a join SYN/ACK with the B flag
    MPJoinPortSynRx = "MPJoinPortSynRx"        # joins to an announced port of ours ...
    MPJoinPortSynAckRx = "MPJoinPortSynAckRx"  # ... our joins to the peer's, answered
    MPJoinPortAckRx = "MPJoinPortAckRx"
    MismatchPortSynRx = "MismatchPortSynRx"    # a join to a port of ours not announced
    MismatchPortAckRx = "MismatchPortAckRx"
    MPCapableEndpAttempt = "MPCapableEndpAttempt"  # an MP_CAPABLE SYN to a join-only port
    PortAdd = "PortAdd"                        # ADD_ADDR (or its echo) with a port
    JoinNotOpened = "JoinNotOpened"        # ours: a join the path manager could not open
    JoinInitialDenied = "JoinInitialDenied"  # ours: a join not opened: the peer's C flag
    DSSNotMatching = "DSSNotMatching"
    DSSNoMatchTCP = "DSSNoMatchTCP"
    DSSChecksumMismatch = "DSSChecksumMismatch"  # ours: checksum presence not negotiated
    DSSFallback = "DSSFallback"
    DataCsumErr = "DataCsumErr"
    DataAckBeyondSent = "DataAckBeyondSent"  # ours: a data ACK for data never sent
    OFOQueue = "OFOQueue"
    OFODrop = "OFODrop"
    NoDSSInWindow = "NoDSSInWindow"  # data mapped beyond our data-level receive window
    DuplicateData = "DuplicateData"
    AddAddr = "AddAddr"
    AddAddrTx = "AddAddrTx"
    AddAddrTxDrop = "AddAddrTxDrop"
    AddAddrDrop = "AddAddrDrop"  # an ADD_ADDR received while too many echoes wait
    EchoAddTxDrop = "EchoAddTxDrop"
    AddAddrHMacFailure = "AddAddrHMacFailure"  # ours (the kernel ignores them silently)
    AddAddrWrongVersion = "AddAddrWrongVersion"  # ours: a v0 ADD_ADDR on v1, or v1 on v0
    AddAddrRepeated = "AddAddrRepeated"        # ours: an ADD_ADDR we had already echoed
    AddAddrNotAccepted = "AddAddrNotAccepted"  # ours: over add_addr_accepted_max
    EchoAdd = "EchoAdd"
    RmAddr = "RmAddr"
    RmAddrTx = "RmAddrTx"
    RmSubflow = "RmSubflow"
    MPPrioTx = "MPPrioTx"
    MPPrioRx = "MPPrioRx"
    MPFailTx = "MPFailTx"
    MPFailRx = "MPFailRx"
    MPFastcloseTx = "MPFastcloseTx"
    MPFastcloseRx = "MPFastcloseRx"
    MPFastcloseBadKey = "MPFastcloseBadKey"  # ours: an MP_FASTCLOSE with a wrong key
    MPRstTx = "MPRstTx"
    MPRstRx = "MPRstRx"
    InfiniteMapTx = "InfiniteMapTx"
    InfiniteMapRx = "InfiniteMapRx"
    Fallback = "Fallback"                  # ours: connections that fell back to TCP
    InfiniteFallback = "InfiniteFallback"  # ours: ... through an infinite mapping
    SubflowStale = "SubflowStale"
    SubflowRecover = "SubflowRecover"
    Reinjected = "Reinjected"              # ours: bytes sent again after a subflow died
    HolReinjections = "HolReinjections"    # ours: a silent subflow held up the data level
    RedundantTx = "RedundantTx"            # ours: chunks the redundant scheduler duplicated


@unique
class DropReason(StrEnum):
    """Why the host or a TCP engine dropped a frame or segment it could parse
    (counted as `Drop:<reason>`; malformed frames use the codec's reason instead)."""

    # the host
    NOT_OUR_ADDRESS = "not-our-address"
    IP_BAD_VERSION = "ip-bad-version"
    IPV4_FRAGMENT = "ipv4-fragment"
    IPV6_FRAGMENT = "ipv6-fragment"
    IPV6_NO_NEXT_HEADER = "ipv6-no-next-header"
    UNKNOWN_PROTOCOL = "unknown-protocol"
    NO_SOCKET = "no-socket"
    SYN_BACKLOG_FULL = "syn-backlog-full"
    SYNCOOKIE_BAD = "syncookie-bad"  # an ACK for no connection, not a cookie of ours
    SYNCOOKIE_JOIN_LOST = "syncookie-join-lost"  # a join's cookie state is gone
    SYNCOOKIE_TOKEN_IN_USE = "syncookie-token-in-use"  # the echoed key's token is taken
    ENDPOINT_PORT_NOT_JOIN = "endpoint-port-not-join"  # a port-based endpoint takes joins only
    JOIN_PORT_MISMATCH = "join-port-mismatch"  # a join to a port not announced to its peer
    JOIN_UNKNOWN_TOKEN = "join-unknown-token"
    JOIN_OVER_LIMIT = "join-over-limit"
    ICMP_UNHANDLED_TYPE = "icmp-unhandled-type"
    ICMP_ERROR_UNUSABLE = "icmp-error-unusable"
    ICMP_ERROR_NO_SOCKET = "icmp-error-no-socket"
    ICMP_ERROR_BAD_SEQ = "icmp-error-bad-seq"
    # a TCP engine (RFC 9293 3.10.7, RFC 5961, RFC 7323)
    CLOSED = "closed"
    BAD_ACK_SYN_SENT = "bad-ack-syn-sent"
    RST_WITHOUT_ACK_SYN_SENT = "rst-without-ack-syn-sent"
    NO_SYN_SYN_SENT = "no-syn-syn-sent"
    ULP = "ulp"                          # the MPTCP layer refused the segment's options
    PAWS = "paws"
    RST_OUT_OF_WINDOW = "rst-out-of-window"
    OUT_OF_WINDOW = "out-of-window"
    RST_IN_WINDOW = "rst-in-window"
    SYN_IN_WINDOW = "syn-in-window"
    NO_ACK = "no-ack"
    BAD_ACK_SYN_RECEIVED = "bad-ack-syn-received"
    ACK_UNSENT = "ack-unsent"
    ACK_TOO_OLD = "ack-too-old"
    DATA_AFTER_FIN = "data-after-fin"
    BEYOND_WINDOW = "beyond-window"
    OFO_FULL = "ofo-full"


def drop_key(reason: str) -> str:
    """The counter a drop is kept under (`Drop:<reason>`)."""
    return "Drop:" + reason


def format_counters(counters: Counter[str], prefix: str = "") -> str:
    """One `name value` per line, sorted, zero counters left out (like `nstat`)."""
    return "\n".join(f"{prefix}{k:<32} {v}" for k, v in sorted(counters.items()) if v)
