#!/usr/bin/env bash
# Runs "$@" inside a fresh network namespace, as scripts/test.sh runs the netns:: tests: `lo` up and a
# veth pair avs0=10.99.0.1/24, avs1=10.99.0.2/24 with both ends inside (libwebrtc ignores loopback),
# with AVS_NETNS=1 and AVS_NETNS_ADDRS set; the namespace is deleted afterwards. Nothing touches the
# machine's other interfaces. Needs root. For example, the LiveKit client's end-to-end tests:
#
#   scripts/netns_run.sh cargo test --offline -p avs-livekit-ffi --test netns -- --test-threads=1 --nocapture
set -euo pipefail
ns=avs-run-$$
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" sh -e -c '
    ip link set lo up
    ip link add avs0 type veth peer name avs1
    ip addr add 10.99.0.1/24 dev avs0
    ip addr add 10.99.0.2/24 dev avs1
    ip link set avs0 up
    ip link set avs1 up'
AVS_NETNS=1 AVS_NETNS_ADDRS=10.99.0.1,10.99.0.2 ip netns exec "$ns" "$@"
