#!/usr/bin/env bash
# What the room page and the browser tests need, installed idempotently (scripts/setup.sh calls
# this; a second run does nothing slow). Nothing here is fetched at run time.
#
#   .setup/web/livekit-client.umd.js              livekit-client's browser bundle, which the server
#                                                 serves to room pages when LiveKit is configured
#   .setup/web/node_modules/playwright-core/      drives Chromium in the browser tests
#   chromium, chromium-driver                     Debian packages (headless, for the tests)
#
# npm packages are pinned and their tarballs checked against the registry's sha512 integrity
# written here, so a changed package is refused rather than installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
WEB=$ROOT/.setup/web
say() { printf 'setup-web: %s\n' "$*"; }
die() { printf 'setup-web: error: %s\n' "$*" >&2; exit 1; }
mkdir -p "$WEB/node_modules"

# name version integrity
NPM_PACKAGES=(
    "livekit-client 2.23.0 sha512-j9Kg86nJjBjNFUD+ukp2jwMCGa0k+YD5gU//RzAM+ZY3pbG631QCte7fQjwqWMmtBzhDJL9nKYuOLMv/9IbAxg=="
    "playwright-core 1.65.1 sha512-hqPpz7blSMPxWVdoeE1yiBSzXsKiVOd2k+kjCvmUywD2GPO2Dd9HfcWnq9NN0GHbNZDFgZ9JfBFr+X5/BLo0qw=="
)

# 1. Debian packages: Chromium for the browser tests. `apt-get update` only when the install fails
#    without it, as scripts/setup.sh does for espeak-ng.
apt_packages() {  # apt_packages PKG...: installs them, or warns why not
    local sudo=
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            if [ -t 0 ]; then sudo=sudo; else sudo="sudo -n"; fi
        else
            say "warning: $* missing; this user is not root and has no sudo: apt-get install $* (continuing)"
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "warning: $* missing and this is not a Debian-like system; install them yourself (continuing)"
        return 0
    fi
    local log=$WEB/apt.log
    : >"$log"
    install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1; }
    say "installing $* (apt-get)"
    if install "$@" || { $sudo apt-get update -q >>"$log" 2>&1 && install "$@"; }; then
        rm -f "$log"
        say "ok: $* installed"
    else
        say "warning: installing $* failed (see $log; the browser tests will say what is missing)"
    fi
}
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    say "ok: chromium present ($(command -v chromium))"
else
    apt_packages chromium chromium-driver
fi

# 2. npm packages, pinned and checked. `npm pack` fetches the tarball through npm's own client
#    and cache; the integrity is checked here before anything is unpacked.
if ! command -v npm >/dev/null 2>&1; then
    say "warning: npm is missing (install Node.js 20 or newer); without it LiveKit rooms cannot be played and the browser tests cannot run (continuing)"
    exit 0
fi
for entry in "${NPM_PACKAGES[@]}"; do
    read -r name version integrity <<<"$entry"
    dest=$WEB/node_modules/$name
    stamp=$dest/.avs-$version-$(printf '%s' "$integrity" | sha256sum | cut -c1-16)
    if [ -f "$stamp" ]; then
        say "ok: $name $version present"
        continue
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    say "fetching $name@$version (npm pack)"
    (cd "$tmp" && npm pack --silent "$name@$version" >/dev/null 2>"$tmp/npm.log") \
        || die "npm pack $name@$version failed: $(tail -n 5 "$tmp/npm.log")"
    tarball=$tmp/$name-$version.tgz
    [ -f "$tarball" ] || die "npm pack $name@$version wrote no $name-$version.tgz"
    got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
    [ "$got" = "$integrity" ] || die "$name@$version: integrity $got is not the pinned $integrity"
    rm -rf "$dest"
    mkdir -p "$dest"
    tar -xzf "$tarball" -C "$dest" --strip-components=1 --no-same-owner
    touch "$stamp"
    rm -rf "$tmp"
    trap - EXIT
    say "ok: $name $version installed in .setup/web/node_modules/$name"
done

# 3. The bundle the server serves (web.livekit_client's default path).
bundle=$WEB/node_modules/livekit-client/dist/livekit-client.umd.js
[ -s "$bundle" ] || die "livekit-client ships no dist/livekit-client.umd.js"
cmp -s "$bundle" "$WEB/livekit-client.umd.js" 2>/dev/null || cp "$bundle" "$WEB/livekit-client.umd.js"
say "ok: .setup/web/livekit-client.umd.js"
