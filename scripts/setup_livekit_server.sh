#!/usr/bin/env bash
# LiveKit's own server, built from its Go module (scripts/setup.sh calls this; it also runs on its
# own), idempotently: a second run checks the binary's version and does nothing else.
#
#   .setup/livekit-server/livekit-server   livekit-server, pinned (LKS_VERSION), CGO off
#   .setup/livekit-server/VERSION          the version and the module's go.sum hash it was built from
#
# The Go module proxy serves the module; `go` checks its content against the checksum database, and
# here against the pinned hash too. v1.13.5 is the newest tag whose go.mod has no `replace`
# directives: later tags replace pion's webrtc, ice and dtls with LiveKit forks the proxy does not
# serve. Without Go this warns and goes on: `make run` does not need it; the LiveKit tests do, and
# say so.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DEST=$ROOT/.setup/livekit-server
say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

LKS_MODULE=github.com/livekit/livekit-server
LKS_VERSION=v1.13.5
LKS_SUM=h1:HWfxfKvi5k1czMVqLV/htGmPgEBhrqHMxpfyMvfhyVo=
stamp="$LKS_VERSION ($LKS_SUM)"

mkdir -p "$DEST"
if [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$stamp" ] && [ -x "$DEST/livekit-server" ] \
    && "$DEST/livekit-server" --version >/dev/null 2>&1; then
    say "ok: livekit-server $LKS_VERSION present (.setup/livekit-server/livekit-server)"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    say "warning: no Go toolchain: livekit-server is not built (the LiveKit tests need it; install Go and rerun make setup)"
    exit 0
fi

say "building livekit-server $LKS_VERSION from its Go module (a few minutes the first time)"
started=$(date +%s)
sum=$(go mod download -json "$LKS_MODULE@$LKS_VERSION" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p')
[ "$sum" = "$LKS_SUM" ] || die "the Go module proxy's $LKS_MODULE@$LKS_VERSION has go.sum hash '$sum', expected $LKS_SUM"
tmp=$(mktemp -d "$DEST/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
CGO_ENABLED=0 GOBIN=$tmp GOFLAGS=-trimpath go install "$LKS_MODULE/cmd/server@$LKS_VERSION" >"$tmp/build.log" 2>&1 \
    || { tail -n 20 "$tmp/build.log" >&2; die "go install $LKS_MODULE/cmd/server@$LKS_VERSION failed"; }
"$tmp/server" --version >/dev/null 2>&1 || die "the built livekit-server does not run"
mv -f "$tmp/server" "$DEST/livekit-server"
echo "$stamp" >"$DEST/VERSION"
say "ok: built .setup/livekit-server/livekit-server ($("$DEST/livekit-server" --version 2>&1 | head -n 1)) in $(( $(date +%s) - started )) s"
