#!/usr/bin/env bash
# netns-setup.sh - build the test topology of docs/architecture.md ("The test topology").
#
#   <P>-user : holds the persistent TUN mptun0 that our stack opens; its kernel only
#              routes (and answers proxy ARP / proxy NDP for our addresses 10.0.i.2,
#              fd00:i::2).
#   <P>-peer : the Linux kernel MPTCP peer, 10.0.i.1/24 and fd00:i::1/64 on path<i>.
#
# IPv6 mirrors IPv4 with fd00:i::/64 (i in hex, as `printf %x` prints it):
#
#            <P>-peer                          <P>-user
#   10.0.i.1/24 [path<i>] ==== veth ==== [path<i>] 10.0.i.254/24, proxy_arp
#   fd00:i::1/64                                   fd00:i::fe/64, proxy_ndp (fd00:i::2)
#                                                  |  10.0.i.2/32, fd00:i::2/128 dev mptun0
#                                                  |  from 10.0.i.2 -> table 100+i:
#                                                  |     default via 10.0.i.1 dev path<i>
#                                                  |  from fd00:i::2 -> table 100+i:
#                                                  |     default via fd00:i::1 dev path<i>
#                                               [mptun0]  <-> our stack (10.0.i.2, fd00:i::2)
#
# Every packet to or from 10.0.i.2 (fd00:i::2) crosses path<i> in both directions: the
# peer's only route to 10.0.i.0/24 (fd00:i::/64) is path<i>, and a policy rule in <P>-user
# sends everything our stack emits from 10.0.i.2 (fd00:i::2) out of path<i> (even towards
# 10.0.j.1 / fd00:j::1, j != i).
#
# IPv6 is kept quiet: no DAD (addresses are added `nodad`, accept_dad=0), no router
# solicitations or autoconfiguration (accept_ra=0, autoconf=0) on any link, and addresses
# survive a link down/up (keep_addr_on_down=1) as IPv4 ones do; mptun0 has no
# link-local address (addr_gen_mode=1) and does not act as a router interface
# (forwarding=0 on it: it joins no all-routers group), so the kernel sends nothing of its
# own accord into the TUN: no RS, no DAD, no MLD reports.
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
  P-user  persistent TUN $TUN (MTU 1500, our stack's addresses 10.0.i.2 and fd00:i::2
          behind it), path<i> with 10.0.i.254/24 + proxy ARP and fd00:i::fe/64 + proxy
          NDP, forwarding on, rp_filter off
  P-peer  Linux MPTCP peer: 10.0.i.1/24 and fd00:i::1/64 on path<i>,
          net.mptcp.enabled=1, limits subflows 8 add_addr_accepted 8, no endpoints
  (IPv6 prefixes are fd00:i::/64 with i in hex: path 10 is fd00:a::/64.)
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

# Like ns_sysctl, but writes only the keys whose value differs: for keys whose write has
# side effects even when the value does not change (net.ipv6.conf.all.forwarding resets
# every link's forwarding, mptun0's included).
ns_sysctl_changed() {
    local ns=$1 kv
    shift
    for kv in "$@"; do
        [ "$(ip netns exec "$ns" sysctl -n "${kv%%=*}")" = "${kv#*=}" ] || ns_sysctl "$ns" "$kv"
    done
}

# IPv6 settings that keep a link quiet: no DAD, no router solicitation, no SLAAC; and
# keep_addr_on_down=1 so that, as with IPv4, a link set down and up again (tests do that
# to path<i>) keeps its addresses and their routes.
v6_quiet() {
    local dev=$1
    echo "net.ipv6.conf.$dev.accept_dad=0" "net.ipv6.conf.$dev.accept_ra=0" \
         "net.ipv6.conf.$dev.autoconf=0" "net.ipv6.conf.$dev.router_solicitations=0" \
         "net.ipv6.conf.$dev.keep_addr_on_down=1"
}

# The IPv6 prefix of path i without the trailing "::/64": fd00:<i in hex>.
v6_net() { printf 'fd00:%x' "$1"; }

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
    local net6 peer_addr6 router_addr6 our_addr6
    net6=$(v6_net "$i")
    peer_addr6=$net6::1 router_addr6=$net6::fe our_addr6=$net6::2

    if ! link_exists "$USER_NS" "$dev" || ! link_exists "$PEER_NS" "$dev"; then
        ip -n "$USER_NS" link del "$dev" 2>/dev/null || true
        ip -n "$PEER_NS" link del "$dev" 2>/dev/null || true
        # Created directly in the target namespaces under their final names: no
        # temporary name ever exists in the caller's namespace, so concurrent setups
        # with different prefixes cannot collide.
        ip link add "$dev" netns "$USER_NS" txqueuelen "$VETH_TXQLEN" type veth \
            peer name "$dev" netns "$PEER_NS" txqueuelen "$VETH_TXQLEN"
    fi
    # Sysctls first, while a new link is still down: it comes up without DAD or RS.
    # proxy_delay=0: Linux delays proxy ARP replies and proxy NDP answers to multicast
    # solicitations by up to 0.8 s by default (so a real owner of the address can answer
    # first); here there is none, and the delay would stall the first SYN/ACK towards
    # our stack.
    # shellcheck disable=SC2046  # v6_quiet prints several words on purpose
    ns_sysctl "$USER_NS" "net.ipv4.conf.$dev.proxy_arp=1" "net.ipv4.conf.$dev.rp_filter=0" \
        "net.ipv4.conf.$dev.send_redirects=0" "net.ipv4.conf.$dev.forwarding=1" \
        "net.ipv4.neigh.$dev.proxy_delay=0" \
        "net.ipv6.conf.$dev.disable_ipv6=0" $(v6_quiet "$dev") \
        "net.ipv6.conf.$dev.forwarding=1" "net.ipv6.conf.$dev.proxy_ndp=1" \
        "net.ipv6.neigh.$dev.proxy_delay=0"
    # shellcheck disable=SC2046
    ns_sysctl "$PEER_NS" "net.ipv4.conf.$dev.rp_filter=0" \
        "net.ipv6.conf.$dev.disable_ipv6=0" $(v6_quiet "$dev")
    # Peer side.
    ip -n "$PEER_NS" link set dev "$dev" mtu 1500 txqueuelen "$VETH_TXQLEN" up
    ip -n "$PEER_NS" addr replace "$peer_addr/24" dev "$dev"
    ip -n "$PEER_NS" -6 addr replace "$peer_addr6/64" dev "$dev" nodad
    # User (router) side.
    ip -n "$USER_NS" link set dev "$dev" mtu 1500 txqueuelen "$VETH_TXQLEN" up
    ip -n "$USER_NS" addr replace "$router_addr/24" dev "$dev"
    ip -n "$USER_NS" -6 addr replace "$router_addr6/64" dev "$dev" nodad
    # Our stack's address lives behind the TUN. The TUN has no carrier until the stack
    # opens it; the route is still installed (flagged "linkdown") and still used, since
    # ignore_routes_with_linkdown is 0, so proxy ARP answers for 10.0.i.2 regardless.
    ip -n "$USER_NS" route replace "$our_addr/32" dev "$TUN"
    # Whatever our stack sends from 10.0.i.2 leaves through path<i>.
    ip -n "$USER_NS" route replace default via "$peer_addr" dev "$dev" table "$table"
    ip -n "$USER_NS" route replace "10.0.$i.0/24" dev "$dev" table "$table"
    while ip -n "$USER_NS" rule del priority "$prio" 2>/dev/null; do :; done
    ip -n "$USER_NS" rule add priority "$prio" from "$our_addr/32" lookup "$table"
    # The same for IPv6: fd00:i::2 behind the TUN (the /128 beats path<i>'s /64), proxy
    # NDP on path<i> answers the peer's neighbour solicitations for it (the entry also
    # joins its solicited-node group), and what our stack sends from fd00:i::2 leaves
    # through path<i>.
    ip -n "$USER_NS" -6 route replace "$our_addr6/128" dev "$TUN"
    ip -n "$USER_NS" -6 neigh replace proxy "$our_addr6" dev "$dev"
    ip -n "$USER_NS" -6 route replace default via "$peer_addr6" dev "$dev" table "$table"
    ip -n "$USER_NS" -6 route replace "$net6::/64" dev "$dev" table "$table"
    while ip -n "$USER_NS" -6 rule del priority "$prio" 2>/dev/null; do :; done
    ip -n "$USER_NS" -6 rule add priority "$prio" from "$our_addr6/128" lookup "$table"
}

remove_path() {
    local i=$1
    ip -n "$USER_NS" link del "path$i" 2>/dev/null || true   # deletes both ends
    ip -n "$PEER_NS" link del "path$i" 2>/dev/null || true
    ip -n "$USER_NS" route del "10.0.$i.2/32" 2>/dev/null || true
    ip -n "$USER_NS" route flush table $((TABLE_BASE + i)) 2>/dev/null || true
    while ip -n "$USER_NS" rule del priority $((RULE_PRIO_BASE + i)) 2>/dev/null; do :; done
    ip -n "$USER_NS" -6 route del "$(v6_net "$i")::2/128" 2>/dev/null || true
    ip -n "$USER_NS" -6 route flush table $((TABLE_BASE + i)) 2>/dev/null || true
    while ip -n "$USER_NS" -6 rule del priority $((RULE_PRIO_BASE + i)) 2>/dev/null; do :; done
}

cmd_up() {
    local ns
    for ns in "$USER_NS" "$PEER_NS"; do
        ns_exists "$ns" || ip netns add "$ns"
        ip -n "$ns" link set dev lo up
    done

    # Both namespaces: links created from now on start with IPv6 quiet (no DAD, RS or
    # SLAAC); all.accept_dad=0 because the kernel uses the larger of 'all' and the link's.
    # shellcheck disable=SC2046
    for ns in "$USER_NS" "$PEER_NS"; do
        ns_sysctl "$ns" net.ipv6.conf.all.accept_dad=0 $(v6_quiet default) $(v6_quiet lo)
    done

    # User namespace: a router with the TUN. IPv6: forwarding on (written only when off:
    # writing it resets every link's forwarding, see mptun0 below); all.proxy_ndp=1 on
    # top of path<i>'s own: the peer's unicast reachability probes (NS to fd00:i::2
    # itself) are answered only with 'all' set, else its neighbour entry stays in PROBE.
    ns_sysctl "$USER_NS" net.ipv4.ip_forward=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv4.conf.lo.rp_filter=0 \
        net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 \
        net.ipv4.conf.all.accept_redirects=0 \
        net.ipv6.conf.all.proxy_ndp=1 net.ipv6.conf.all.accept_redirects=0
    ns_sysctl_changed "$USER_NS" net.ipv6.conf.all.forwarding=1
    # ... which also set default.forwarding=1: a TUN created now would join the
    # all-routers group (an MLD report queued until our stack first opens it, then a
    # second one when forwarding=0 below makes it leave). New links start without it;
    # path<i> turn it on for themselves.
    ns_sysctl "$USER_NS" net.ipv6.conf.default.forwarding=0
    if ! link_exists "$USER_NS" "$TUN"; then
        # Persistent, no owner/group restriction; the stack opens it IFF_TUN|IFF_NO_PI.
        ip -n "$USER_NS" tuntap add dev "$TUN" mode tun
    fi
    # IPv6 on the TUN (routes to fd00:i::2 need it), but silent, set before it comes up:
    # no link-local address (addr_gen_mode=1: so no DAD, no RS, no solicited-node group)
    # and forwarding=0 (so it joins no all-routers group; forwarding through it only
    # needs all.forwarding): the kernel has no MLD report to send on it.
    # shellcheck disable=SC2046
    ns_sysctl "$USER_NS" "net.ipv4.conf.$TUN.rp_filter=0" \
        "net.ipv6.conf.$TUN.addr_gen_mode=1" $(v6_quiet "$TUN") \
        "net.ipv6.conf.$TUN.forwarding=0" "net.ipv6.conf.$TUN.disable_ipv6=0"
    ip -n "$USER_NS" link set dev "$TUN" mtu 1500 txqueuelen "$TUN_TXQLEN" up

    # Peer namespace: the kernel MPTCP peer.
    ns_sysctl "$PEER_NS" net.mptcp.enabled=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0

    local i have
    have=$(current_paths); have=${have:-0}
    for ((i = PATHS + 1; i <= have; i++)); do remove_path "$i"; done
    for ((i = 1; i <= PATHS; i++)); do setup_path "$i"; done

    ip -n "$PEER_NS" mptcp endpoint flush
    ip -n "$PEER_NS" mptcp limits set subflows 8 add_addr_accepted 8

    echo "$PROG: up: $USER_NS (TUN $TUN, 10.0.1..$PATHS.2 and fd00:1..$(printf %x "$PATHS")::2" \
         "behind it) <-> $PEER_NS, $PATHS path(s)"
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
    echo "== $USER_NS IPv6 addresses (global)"
    ip -n "$USER_NS" -o -6 addr show scope global | awk '{printf "%-16s %s\n", $2, $4}'
    echo "== $USER_NS IPv6 routes"
    ip -n "$USER_NS" -6 route | grep -v '^fe80::/64 ' || true
    echo "== $USER_NS IPv6 rules / per-path tables"
    ip -n "$USER_NS" -6 rule | grep -v -e '^0:' -e '^32766:' || true
    for t in $(ip -n "$USER_NS" -6 rule | sed -n 's/.*lookup \([0-9][0-9]*\).*/\1/p'); do
        ip -n "$USER_NS" -6 route show table "$t" | sed "s/^/table $t: /"
    done
    echo "== $USER_NS IPv6 proxy NDP"
    ip -n "$USER_NS" -6 neigh show proxy
    echo "== $PEER_NS addresses"
    ip -n "$PEER_NS" -br -4 addr
    echo "== $PEER_NS routes"
    ip -n "$PEER_NS" route
    echo "== $PEER_NS IPv6 addresses (global)"
    ip -n "$PEER_NS" -o -6 addr show scope global | awk '{printf "%-16s %s\n", $2, $4}'
    echo "== $PEER_NS IPv6 routes"
    ip -n "$PEER_NS" -6 route | grep -v '^fe80::/64 ' || true
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
    if ! [[ "$PATHS" =~ ^[0-9]+$ ]] || [ "$PATHS" -lt 1 ] || [ "$PATHS" -gt "$MAX_PATHS" ]; then
        die "--paths must be an integer in 1..$MAX_PATHS (got '$PATHS')"
    fi
    [[ "$PREFIX" =~ ^[A-Za-z0-9_.-]{1,40}$ ]] \
        || die "--prefix must be 1-40 characters of [A-Za-z0-9_.-] (got '$PREFIX')"
    need_root
    need_tools
    USER_NS=$PREFIX-user
    PEER_NS=$PREFIX-peer
    "cmd_$cmd"
}

main "$@"
