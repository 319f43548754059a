#!/usr/bin/env bash
# demo.sh - the main job on a fresh machine: install, bring up the namespaces, start a
# kernel MPTCP server in mptcp-peer, connect our stack to it from mptcp-user with the
# MPTCP handshake traced (keys, tokens, IDSNs, DSS fields, each derived value checked),
# send 20 MB, print the summary, check the kernel received exactly what we sent
# (sha256) under the token we derived for it, and leave demo.pcap (Wireshark) and
# demo-events.jsonl behind. CHECKSUM=1 adds DSS checksums (--checksum).
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: must run as root (try: sudo ./demo.sh)" >&2; exit 1; }
BYTES=${BYTES:-20M}
PORT=${PORT:-5000}

./tools/install.sh
./netns-setup.sh up
PY=.venv/bin/python
report=$(mktemp)
trap 'kill $srv 2>/dev/null || true; rm -f "$report"' EXIT

echo "==> kernel MPTCP server on 10.0.1.1:$PORT (namespace mptcp-peer)"
ip netns exec mptcp-peer $PY tests/interop/kpeer.py server --port "$PORT" --once --mptcp >"$report" &
srv=$!
for _ in $(seq 100); do
    ip netns exec mptcp-peer ss -Hltn "sport = :$PORT" | grep -q . && break
    sleep 0.05
done

extra=()
[ "${CHECKSUM:-0}" = 1 ] && extra=(--checksum)
echo "==> our stack: mptcp-tun connect 10.0.1.1 $PORT --send-bytes $BYTES --trace ${extra[*]} (namespace mptcp-user)"
ip netns exec mptcp-user .venv/bin/mptcp-tun connect 10.0.1.1 "$PORT" --send-bytes "$BYTES" \
    --trace --pcap demo.pcap --events demo-events.jsonl --json "${extra[@]}" >demo-summary.json
wait "$srv"
$PY - "$report" <<'PYEOF'
import json, sys
ours = json.load(open("demo-summary.json"))
kernel = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")][-1]
ok = ours["clean"] and kernel["rx_bytes"] == ours["sent"] and kernel["rx_sha256"] == ours["sent_sha256"]
mode = ("MPTCP" if ours["mptcp"] else f"fallback TCP ({ours['fallback_reason']})") + \
    (", DSS checksums on" if ours["checksum"] else "")
print(f"==> ours:   sent {ours['sent']} bytes in {ours['seconds']:.3f} s, "
      f"{ours['goodput_mbps']:.1f} Mbit/s over {mode}, sha256 {ours['sent_sha256'][:16]}...")
print(f"==> kernel: received {kernel['rx_bytes']} bytes, sha256 {kernel['rx_sha256'][:16]}..., "
      f"MPTCP fallback={kernel['fallback']}")
tokens = kernel.get("token") == ours.get("remote_token")
print(f"==> tokens: ours {ours['token']}, the kernel's {kernel.get('token')} "
      f"(we derived {ours['remote_token']} from its key: {'verified' if tokens else 'MISMATCH'})")
print("==> " + ("bytes match: the kernel received exactly what we sent" if ok else "MISMATCH"))
ok = ok and tokens and ours["mptcp"]
print("==> left behind: demo.pcap (wireshark demo.pcap), demo-events.jsonl, demo-summary.json")
sys.exit(0 if ok else 1)
PYEOF
