#!/usr/bin/env bash
# The whole test suite: unit tests, and the integration suite against the real server on SQLite and
# on PostgreSQL (127.0.0.1:5432, trust auth; started here if it is down).
set -euo pipefail
cd "$(dirname "$0")/.."

export AVS_TEST_DATABASE_URL=${AVS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export AVS_TEST_ASSETS=${AVS_TEST_ASSETS:-$PWD/.setup}

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "test: PostgreSQL is down; starting it"
    cluster=$(ls /etc/postgresql 2>/dev/null | head -n 1)
    if [ -n "$cluster" ] && command -v pg_ctlcluster >/dev/null; then
        pg_ctlcluster --skip-systemctl-redirect "$cluster" main start || true
    fi
    for _ in $(seq 1 30); do
        pg_isready -q -h 127.0.0.1 -p 5432 && break
        sleep 1
    done
    pg_isready -q -h 127.0.0.1 -p 5432 || { echo "test: PostgreSQL is not reachable at 127.0.0.1:5432"; exit 1; }
fi

# Each test makes its own database; drop the ones earlier runs left.
stale=$(psql "$AVS_TEST_DATABASE_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'avs_test_%'" 2>/dev/null || true)
for db in $stale; do
    psql "$AVS_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true
done

cargo test --locked --workspace --all-targets -- --test-threads="${TEST_THREADS:-4}"
