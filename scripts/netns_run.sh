#!/usr/bin/env bash
# Runs "$@" inside a fresh network namespace, as scripts/test.sh runs the netns:: tests: `lo` up and a
# veth pair avs0=10.99.0.1/24, avs1=10.99.0.2/24 with both ends inside (libwebrtc ignores loopback),
# with AVS_NETNS=1 and AVS_NETNS_ADDRS set (and PostgreSQL and NATS for the tests with several
# nodes, see below); the namespace is deleted afterwards. Nothing touches the
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
# The tests with several nodes need PostgreSQL and NATS, whose 127.0.0.1 is outside: PostgreSQL is
# reached through its unix socket (the file system is shared, the network is not), and NATS is a
# nats-server of the namespace's own at its 127.0.0.1:4222. Either missing only fails those tests.
outside_db=${AVS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
inside_db=
if command -v psql >/dev/null 2>&1; then
    socket=$(psql "$outside_db" -Atqc 'SHOW unix_socket_directories' 2>/dev/null | cut -d, -f1 | tr -d ' ' || true)
    [ -z "$socket" ] || inside_db="postgres://postgres@${socket//\//%2F}/postgres"
fi
nats_pid=
if command -v nats-server >/dev/null 2>&1; then
    ip netns exec "$ns" nats-server -a 127.0.0.1 -p 4222 -l "${TMPDIR:-/tmp}/avs-netns-nats-$$.log" >/dev/null 2>&1 &
    nats_pid=$!
fi
cleanup() {
    [ -z "$nats_pid" ] || kill "$nats_pid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
}
status=0
AVS_NETNS=1 AVS_NETNS_ADDRS=10.99.0.1,10.99.0.2 AVS_TEST_DATABASE_URL=${inside_db:-$outside_db} \
    ip netns exec "$ns" "$@" || status=$?
exit $status
