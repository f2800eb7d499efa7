#!/usr/bin/env bash
# `make run-livekit`: LiveKit's own server in dev mode (built by make setup into
# .setup/livekit-server/), and this server pointed at it, so the LiveKit path runs in one command.
# Both stop together (Ctrl-C). Extra arguments go to `avatar-supervisor serve`.
#
#   LIVEKIT_PORT (7880)      livekit-server's signalling and API port
#   LIVEKIT_API_KEY/SECRET   the key pair both share (dev defaults below; the secret must be
#                            at least 32 characters for livekit-server to accept it)
#
# livekit-server advertises the machine's first non-loopback IPv4 address for media (set NODE_IP
# to choose another): a browser or agent on this machine or its network reaches the room there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LKS=.setup/livekit-server/livekit-server
[ -x "$LKS" ] || { echo "run-livekit: $LKS is missing: make setup builds it (it needs Go)" >&2; exit 1; }
port=${LIVEKIT_PORT:-7880}
export LIVEKIT_URL=${LIVEKIT_URL:-http://127.0.0.1:$port}
export LIVEKIT_API_KEY=${LIVEKIT_API_KEY:-devkey}
export LIVEKIT_API_SECRET=${LIVEKIT_API_SECRET:-avatar-supervisor-dev-secret-0123456789}
log=${TMPDIR:-/tmp}/avs-livekit-server.log
"$LKS" --dev --port "$port" --keys "$LIVEKIT_API_KEY: $LIVEKIT_API_SECRET" >"$log" 2>&1 &
lks=$!
trap 'kill "$lks" 2>/dev/null || true; wait "$lks" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$lks" 2>/dev/null || { echo "run-livekit: livekit-server exited; see $log:" >&2; tail -n 20 "$log" >&2; exit 1; }
    sleep 0.2
done
echo "run-livekit: livekit-server $("$LKS" --version 2>&1 | awk '{print $NF}') at $LIVEKIT_URL (key $LIVEKIT_API_KEY; log $log)"
cargo run --release --locked --bin avatar-supervisor -- serve "$@"
