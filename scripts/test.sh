#!/usr/bin/env bash
# The whole test suite: the Prometheus alert rules (promtool), unit tests, and the integration suite
# against the real server on SQLite and on PostgreSQL (127.0.0.1:5432, trust auth; started here if it
# is down). Exits non-zero if any step failed (the last failing step's code); CI reads cargo's
# "test result:" summary lines. Run `make setup` (or scripts/setup.sh) first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

export AVS_TEST_DATABASE_URL=${AVS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export AVS_TEST_ASSETS=${AVS_TEST_ASSETS:-$ROOT/.setup}
# Also set by the Makefile; here too so that `bash scripts/test.sh` alone behaves the same.
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$ROOT/.setup/libonnxruntime.so}
export AVS_AGENTS__DEFAULT_AVATAR_IMAGE=${AVS_AGENTS__DEFAULT_AVATAR_IMAGE:-$ROOT/.setup/default-avatar.png}
export AVS_MEDIA__FACE_MODEL=${AVS_MEDIA__FACE_MODEL:-$ROOT/.setup/models/centerface.onnx}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
# PostgreSQL's programs: Debian keeps them in /usr/lib/postgresql/<major>/bin, off the PATH.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -z "$pg_bin" ] || PATH=$PATH:$pg_bin
command -v pg_isready >/dev/null 2>&1 || { echo "test: pg_isready not found; install PostgreSQL (make setup does: apt-get install postgresql)" >&2; exit 1; }
if ! pg_up; then
    # A cluster of the tests' own, trust auth on 127.0.0.1:5432 only, made once and kept between runs
    # (the machine's own cluster, if any, is left as it is). PostgreSQL refuses to run as root: then
    # the cluster belongs to the `postgres` user that Debian's package makes.
    command -v initdb >/dev/null 2>&1 || { echo "test: PostgreSQL is down and initdb is missing (make setup installs postgresql)" >&2; exit 1; }
    pgdata=${AVS_TEST_PGDATA:-${TMPDIR:-/tmp}/avs-test-postgres}
    as_pg=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || { echo "test: running as root and there is no postgres user to run PostgreSQL as" >&2; exit 1; }
        as_pg=(runuser -u postgres --)
    fi
    if [ ! -s "$pgdata/PG_VERSION" ]; then
        echo "test: PostgreSQL is down; making a cluster for the tests in $pgdata (trust auth, 127.0.0.1:5432)"
        rm -rf "$pgdata"
        mkdir -p "$pgdata"
        [ ${#as_pg[@]} -eq 0 ] || chown postgres: "$pgdata"
        "${as_pg[@]}" initdb -D "$pgdata" -U postgres -A trust --no-sync >"$pgdata.initdb.log" 2>&1 || { echo "test: initdb failed:" >&2; cat "$pgdata.initdb.log" >&2; exit 1; }
    fi
    echo "test: PostgreSQL is down; starting the tests' cluster ($pgdata)"
    # Throwaway data: no fsync; the socket beside the data, not in /run (which may not exist).
    "${as_pg[@]}" pg_ctl -D "$pgdata" -l "$pgdata/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -c port=5432 -c unix_socket_directories=$pgdata -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start >/dev/null || { echo "test: PostgreSQL did not start; see $pgdata/server.log:" >&2; tail -n 20 "$pgdata/server.log" >&2; exit 1; }
    for _ in $(seq 1 30); do
        pg_up && break
        sleep 1
    done
    pg_up || { echo "test: PostgreSQL is not accepting connections at 127.0.0.1:5432 after 30 s; start it (or set AVS_TEST_DATABASE_URL) and rerun" >&2; exit 1; }
    echo "test: PostgreSQL is up"
fi
psql "$AVS_TEST_DATABASE_URL" -Atqc 'SELECT 1' >/dev/null 2>&1 || {
    echo "test: PostgreSQL answers at 127.0.0.1:5432 but $AVS_TEST_DATABASE_URL cannot log in (the tests want trust auth for postgres on 127.0.0.1; or set AVS_TEST_DATABASE_URL)" >&2
    exit 1
}

# NATS at 127.0.0.1:4222 for the cluster tests: started here (Debian's nats-server, the same command
# line as the machine's own service) if nothing answers there.
nats_up() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }
if ! nats_up; then
    command -v nats-server >/dev/null 2>&1 || { echo "test: nats-server not found (make setup installs it: apt-get install nats-server)" >&2; exit 1; }
    echo "test: NATS is down; starting nats-server on 127.0.0.1:4222"
    nats-server -a 127.0.0.1 -p 4222 -l "${TMPDIR:-/tmp}/avs-test-nats.log" >/dev/null 2>&1 &
    for _ in $(seq 1 30); do
        nats_up && break
        sleep 0.2
    done
    nats_up || { echo "test: NATS is not accepting connections at 127.0.0.1:4222; start it and rerun" >&2; exit 1; }
    echo "test: NATS is up"
fi

# Each test makes its own database (avs_test_*); drop the ones earlier runs left behind.
stale=$(psql "$AVS_TEST_DATABASE_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'avs\_test\_%'" 2>/dev/null || true)
for db in $stale; do
    psql "$AVS_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true
done

status=0

# 0. The alert rules, their unit tests (each alert fires on synthetic series and clears again) and
#    the sample Prometheus configuration, with promtool (the Debian package prometheus; setup.sh).
if command -v promtool >/dev/null 2>&1; then
    promtool check rules prometheus/alerts.yml || status=$?
    promtool test rules prometheus/alerts_test.yml || status=$?
    promtool check config prometheus/prometheus.yml || status=$?
else
    echo "test: promtool not found; run scripts/setup.sh (it installs the Debian package prometheus)" >&2
    status=1
fi

# 1. Everything but the tests that need a network namespace of their own.
cargo test --locked --workspace --all-targets --no-fail-fast -- --skip netns:: --test-threads="${TEST_THREADS:-4}" || status=$?

# 2. Real WebRTC (libwebrtc through LiveKit's FFI library, headless Chromium) inside a network namespace
#    scripts/netns_run.sh makes and removes: `lo` plus a veth pair whose two ends (10.99.0.1,
#    10.99.0.2) stay inside it, because libwebrtc ignores loopback and nothing may reach the machine's
#    own network. PostgreSQL is not reachable from there: these tests run on SQLite. One at a time:
#    the LiveKit library's live handles are counted process-wide.
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1; then
    echo "test: skipping the netns:: tests (real WebRTC): they need root and iproute2 to make a network namespace"
else
    bash scripts/netns_run.sh cargo test --locked --offline -p avs-livekit-ffi --test netns -- --test-threads=1 || status=$?
    bash scripts/netns_run.sh cargo test --locked --offline --test api -- netns:: --test-threads=1 || status=$?
    # 3. LiveKit Agents end to end (pytest): a real AgentSession (livekit-agents, with an espeak-ng
    #    TTS and a scripted LLM) in a room on LiveKit's own server, and this server's avatar started
    #    by the plugin in plugins/ (the debug build step 1 made), against LiveKit's own avatar
    #    side as the reference; plus the plugin's HTTP calls.
    AVS_BIN=$ROOT/target/debug/avatar-supervisor \
        bash scripts/netns_run.sh .setup/agents-venv/bin/python -m pytest -q -p no:cacheprovider tests/agents || status=$?
fi
exit $status
