#!/usr/bin/env bash
# netns-setup.sh - build the test topology of docs/architecture.md ("The test topology").
#
#   <P>-user : holds the persistent TUN mptun0 that our stack opens; its kernel only
#              routes (and answers proxy ARP for our addresses 10.0.i.2).
#   <P>-peer : the Linux kernel MPTCP peer, 10.0.i.1/24 on path<i>.
#
#            <P>-peer                          <P>-user
#   10.0.i.1/24 [path<i>] ==== veth ==== [path<i>] 10.0.i.254/24, proxy_arp
#                                                  |  10.0.i.2/32 dev mptun0
#                                                  |  from 10.0.i.2 -> table 100+i:
#                                                  |     default via 10.0.i.1 dev path<i>
#                                               [mptun0]  <-> our stack (10.0.i.2)
#
# Every packet to or from 10.0.i.2 crosses path<i> in both directions: the peer's only
# route to 10.0.i.0/24 is path<i>, and a policy rule in <P>-user sends everything our
# stack emits from 10.0.i.2 out of path<i> (even towards 10.0.j.1, j != i).
set -euo pipefail

PROG=netns-setup.sh
TUN=mptun0
TUN_TXQLEN=10000
VETH_TXQLEN=1000
RULE_PRIO_BASE=1000   # ip rule priority 1000+i
TABLE_BASE=100        # routing table 100+i
MAX_PATHS=32

usage() {
    cat <<EOF
Usage: $PROG up [--paths N] [--prefix P]
       $PROG down [--prefix P]
       $PROG status [--prefix P]

Builds the two-namespace test topology (root required):
  P-user  persistent TUN $TUN (MTU 1500, our stack's addresses 10.0.i.2 behind it),
          path<i> with 10.0.i.254/24 + proxy ARP, forwarding on, rp_filter off
  P-peer  Linux MPTCP peer: 10.0.i.1/24 on path<i>, net.mptcp.enabled=1,
          limits subflows 8 add_addr_accepted 8, no endpoints
Options:
  --paths N   number of paths (veth pairs path1..pathN), default 2, 1..$MAX_PATHS
  --prefix P  namespace prefix, default "mptcp" (namespaces mptcp-user, mptcp-peer)

'up' is idempotent: run again with the same N it changes nothing (it re-asserts every
setting and flushes the peer's MPTCP endpoints); with a different N it adds or removes
paths so that exactly path1..pathN remain, leaving the TUN and the other paths alone.
'down' deletes both namespaces (the TUN and veths go with them); it is a no-op if they
do not exist. 'status' prints the topology and exits 1 if it is not (fully) up.
EOF
}

die() { echo "$PROG: $*" >&2; exit 1; }

need_tools() {
    local t pkg
    for t in "ip:iproute2" "sysctl:procps"; do
        pkg=${t#*:}; t=${t%%:*}
        command -v "$t" >/dev/null 2>&1 \
            || die "required tool '$t' not found (install the Debian package $pkg)"
    done
}

need_root() {
    [ "${EUID:-$(id -u)}" -eq 0 ] || die "must run as root (try: sudo ./$PROG up)"
}

ns_exists() { [ -e "/run/netns/$1" ]; }

# Run sysctl -w in a namespace, quietly, many keys at once.
ns_sysctl() { local ns=$1; shift; ip netns exec "$ns" sysctl -q -w "$@" >/dev/null; }

link_exists() { ip -n "$1" link show dev "$2" >/dev/null 2>&1; }

# Number of path<i> links currently present in the user namespace (highest index).
current_paths() {
    ip -n "$USER_NS" -o link show 2>/dev/null \
        | sed -n 's/^[0-9]*: path\([0-9]*\)[@:].*/\1/p' | sort -n | tail -1
}

setup_path() {
    local i=$1
    local dev=path$i peer_addr=10.0.$i.1 router_addr=10.0.$i.254 our_addr=10.0.$i.2
    local table=$((TABLE_BASE + i)) prio=$((RULE_PRIO_BASE + i))

    if ! link_exists "$USER_NS" "$dev" || ! link_exists "$PEER_NS" "$dev"; then
        ip -n "$USER_NS" link del "$dev" 2>/dev/null || true
        ip -n "$PEER_NS" link del "$dev" 2>/dev/null || true
        # Created directly in the target namespaces under their final names: no
        # temporary name ever exists in the caller's namespace, so concurrent setups
        # with different prefixes cannot collide.
        ip link add "$dev" netns "$USER_NS" txqueuelen "$VETH_TXQLEN" type veth \
            peer name "$dev" netns "$PEER_NS" txqueuelen "$VETH_TXQLEN"
    fi
    # Peer side.
    ip -n "$PEER_NS" link set dev "$dev" mtu 1500 txqueuelen "$VETH_TXQLEN" up
    ip -n "$PEER_NS" addr replace "$peer_addr/24" dev "$dev"
    # User (router) side.
    ip -n "$USER_NS" link set dev "$dev" mtu 1500 txqueuelen "$VETH_TXQLEN" up
    ip -n "$USER_NS" addr replace "$router_addr/24" dev "$dev"
    # proxy_delay=0: Linux delays proxy ARP replies by up to 0.8 s by default (so a real
    # owner of the address can answer first); here there is none, and the delay would
    # stall the first SYN/ACK towards our stack.
    ns_sysctl "$USER_NS" "net.ipv4.conf.$dev.proxy_arp=1" "net.ipv4.conf.$dev.rp_filter=0" \
        "net.ipv4.conf.$dev.send_redirects=0" "net.ipv4.conf.$dev.forwarding=1" \
        "net.ipv4.neigh.$dev.proxy_delay=0"
    ns_sysctl "$PEER_NS" "net.ipv4.conf.$dev.rp_filter=0"
    # Our stack's address lives behind the TUN. The TUN has no carrier until the stack
    # opens it; the route is still installed (flagged "linkdown") and still used, since
    # ignore_routes_with_linkdown is 0, so proxy ARP answers for 10.0.i.2 regardless.
    ip -n "$USER_NS" route replace "$our_addr/32" dev "$TUN"
    # Whatever our stack sends from 10.0.i.2 leaves through path<i>.
    ip -n "$USER_NS" route replace default via "$peer_addr" dev "$dev" table "$table"
    ip -n "$USER_NS" route replace "10.0.$i.0/24" dev "$dev" table "$table"
    while ip -n "$USER_NS" rule del priority "$prio" 2>/dev/null; do :; done
    ip -n "$USER_NS" rule add priority "$prio" from "$our_addr/32" lookup "$table"
}

remove_path() {
    local i=$1
    ip -n "$USER_NS" link del "path$i" 2>/dev/null || true   # deletes both ends
    ip -n "$PEER_NS" link del "path$i" 2>/dev/null || true
    ip -n "$USER_NS" route del "10.0.$i.2/32" 2>/dev/null || true
    ip -n "$USER_NS" route flush table $((TABLE_BASE + i)) 2>/dev/null || true
    while ip -n "$USER_NS" rule del priority $((RULE_PRIO_BASE + i)) 2>/dev/null; do :; done
}

cmd_up() {
    local ns
    for ns in "$USER_NS" "$PEER_NS"; do
        ns_exists "$ns" || ip netns add "$ns"
        ip -n "$ns" link set dev lo up
    done

    # User namespace: a router with the TUN.
    ns_sysctl "$USER_NS" net.ipv4.ip_forward=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv4.conf.lo.rp_filter=0 \
        net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 \
        net.ipv4.conf.all.accept_redirects=0
    if ! link_exists "$USER_NS" "$TUN"; then
        # Persistent, no owner/group restriction; the stack opens it IFF_TUN|IFF_NO_PI.
        ip -n "$USER_NS" tuntap add dev "$TUN" mode tun
    fi
    ip -n "$USER_NS" link set dev "$TUN" mtu 1500 txqueuelen "$TUN_TXQLEN" up
    # No IPv6 on the TUN: keeps router solicitations and MLD reports out of the stack.
    ns_sysctl "$USER_NS" "net.ipv6.conf.$TUN.disable_ipv6=1" "net.ipv4.conf.$TUN.rp_filter=0"

    # Peer namespace: the kernel MPTCP peer.
    ns_sysctl "$PEER_NS" net.mptcp.enabled=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0

    local i have
    have=$(current_paths); have=${have:-0}
    for ((i = PATHS + 1; i <= have; i++)); do remove_path "$i"; done
    for ((i = 1; i <= PATHS; i++)); do setup_path "$i"; done

    ip -n "$PEER_NS" mptcp endpoint flush
    ip -n "$PEER_NS" mptcp limits set subflows 8 add_addr_accepted 8

    echo "$PROG: up: $USER_NS (TUN $TUN, 10.0.1..$PATHS.2 behind it) <-> $PEER_NS," \
         "$PATHS path(s)"
}

cmd_down() {
    local ns gone=0
    for ns in "$USER_NS" "$PEER_NS"; do
        if ns_exists "$ns"; then ip netns del "$ns"; gone=$((gone + 1)); fi
    done
    echo "$PROG: down: removed $gone namespace(s) with prefix $PREFIX"
}

cmd_status() {
    local ok=0 ns
    echo "== namespaces"
    for ns in "$USER_NS" "$PEER_NS"; do
        if ns_exists "$ns"; then echo "$ns"; else echo "$ns: MISSING"; ok=1; fi
    done
    [ "$ok" -eq 0 ] || { echo "$PROG: topology with prefix $PREFIX is not up" >&2; exit 1; }
    echo "== $USER_NS links"
    ip -n "$USER_NS" -br link
    echo "== $USER_NS addresses"
    ip -n "$USER_NS" -br -4 addr
    echo "== $USER_NS routes"
    ip -n "$USER_NS" route
    echo "== $USER_NS rules / per-path tables"
    ip -n "$USER_NS" rule | grep -v -e '^0:' -e '^3276[67]:' || true
    local t
    for t in $(ip -n "$USER_NS" rule | sed -n 's/.*lookup \([0-9][0-9]*\).*/\1/p'); do
        ip -n "$USER_NS" route show table "$t" | sed "s/^/table $t: /"
    done
    echo "== $PEER_NS addresses"
    ip -n "$PEER_NS" -br -4 addr
    echo "== $PEER_NS routes"
    ip -n "$PEER_NS" route
    echo "== $PEER_NS mptcp"
    echo "enabled $(ip netns exec "$PEER_NS" sysctl -n net.mptcp.enabled)"
    ip -n "$PEER_NS" mptcp limits show
    echo "endpoints:"
    ip -n "$PEER_NS" mptcp endpoint show

    link_exists "$USER_NS" "$TUN" || { echo "$PROG: $TUN missing in $USER_NS" >&2; ok=1; }
    local n
    n=$(current_paths); n=${n:-0}
    if [ "$n" -lt 1 ]; then echo "$PROG: no path links" >&2; ok=1; fi
    for ((t = 1; t <= n; t++)); do
        link_exists "$PEER_NS" "path$t" || { echo "$PROG: path$t missing in $PEER_NS" >&2; ok=1; }
        link_exists "$USER_NS" "path$t" || { echo "$PROG: path$t missing in $USER_NS" >&2; ok=1; }
    done
    [ "$ok" -eq 0 ] || { echo "$PROG: topology with prefix $PREFIX is not fully up" >&2; exit 1; }
    echo "== up: $n path(s)"
}

main() {
    local cmd=${1:-}
    case "$cmd" in
        -h|--help|help) usage; exit 0 ;;
        up|down|status) shift ;;
        "") usage >&2; exit 2 ;;
        *) echo "$PROG: unknown command '$cmd' (try --help)" >&2; exit 2 ;;
    esac
    PATHS=2
    PREFIX=mptcp
    while [ $# -gt 0 ]; do
        case "$1" in
            --paths) [ $# -ge 2 ] || die "--paths needs a value"; PATHS=$2; shift 2 ;;
            --paths=*) PATHS=${1#*=}; shift ;;
            --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; PREFIX=$2; shift 2 ;;
            --prefix=*) PREFIX=${1#*=}; shift ;;
            -h|--help) usage; exit 0 ;;
            *) echo "$PROG: unknown option '$1' (try --help)" >&2; exit 2 ;;
        esac
    done
    [[ "$PATHS" =~ ^[0-9]+$ ]] && [ "$PATHS" -ge 1 ] && [ "$PATHS" -le "$MAX_PATHS" ] \
        || die "--paths must be an integer in 1..$MAX_PATHS (got '$PATHS')"
    [[ "$PREFIX" =~ ^[A-Za-z0-9_.-]{1,40}$ ]] \
        || die "--prefix must be 1-40 characters of [A-Za-z0-9_.-] (got '$PREFIX')"
    need_root
    need_tools
    USER_NS=$PREFIX-user
    PEER_NS=$PREFIX-peer
    "cmd_$cmd"
}

main "$@"
