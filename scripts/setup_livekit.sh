#!/usr/bin/env bash
# LiveKit media, idempotently (scripts/setup.sh calls this; it also runs on its own). Every step
# checks its stamp first, so a second run does nothing slow. Everything lands in .setup/:
#
#   .setup/livekit/livekit-<ver>-….whl    the pinned PyPI wheel `livekit` (sha256 checked)
#   .setup/livekit/liblivekit_ffi.so     LiveKit's FFI library (libwebrtc inside), loaded at run time
#   .setup/livekit/ffi.fds               its protobuf schema as a FileDescriptorSet, for the test that
#                                        checks the hand-written Rust messages against it
#   .setup/venv/                         + aiortc, livekit-protocol, aiohttp for tests/support/fake_livekit.py
#                                        + the pinned wheel itself (the `livekit` Python SDK, livekit.rtc)
#                                          for tests/support/lk_peer.py, the peer of the real-server tests
#
# The wheel is pinned by version and hash: the Rust messages are written for exactly this library's
# schema (package livekit.proto, proto2), so another version is a deliberate change, not a fallback.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SETUP=$ROOT/.setup
VENV=$SETUP/venv
LK=$SETUP/livekit
PYTHON=${PYTHON:-python3}
say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
mkdir -p "$LK"

LK_VERSION=1.2.1
LK_WHEEL=livekit-$LK_VERSION-py3-none-manylinux_2_28_x86_64.whl
LK_SHA256=c9a0269cc23a889e20f716405a59fbae375a0248ea3d2d043da103cfb0b71711
# The fake LiveKit server's packages (binary wheels on PyPI; aiortc brings av, aioice, pylibsrtp).
FAKE_REQS=(aiortc==1.16.0 livekit-protocol==1.1.29 aiohttp==3.14.5)

if [ "$(uname -s)/$(uname -m)" != Linux/x86_64 ]; then
    say "warning: the pinned $LK_WHEEL is for Linux x86_64 only (this is $(uname -s)/$(uname -m)); no LiveKit media here (continuing without it)"
    exit 0
fi

# 0. The virtualenv normally exists already (setup.sh step 2); made here when this runs on its own.
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || die "could not create a virtualenv with $PYTHON (on Debian: apt-get install python3-venv)"
fi
pip=("$VENV/bin/pip" --disable-pip-version-check)
py=$VENV/bin/python

# 1. The wheel, verified. A file with another hash (truncated download, tampering) is removed.
wheel=$LK/$LK_WHEEL
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$LK_SHA256" ]; }
if sha_ok "$wheel"; then
    say "ok: livekit $LK_VERSION wheel present (sha256 checked)"
else
    rm -f "$wheel"
    say "downloading livekit==$LK_VERSION (PyPI wheel, $LK_WHEEL)"
    "${pip[@]}" download -q --no-deps --only-binary :all: --dest "$LK" "livekit==$LK_VERSION" \
        || die "pip could not download livekit==$LK_VERSION; PyPI must serve it for Linux x86_64"
    [ -f "$wheel" ] || die "pip downloaded another file than $LK_WHEEL: $(ls "$LK"/*.whl 2>/dev/null | tr '\n' ' ')"
    sha_ok "$wheel" || { got=$(sha256sum "$wheel" | cut -d' ' -f1); rm -f "$wheel"; die "sha256 of $LK_WHEEL is $got, expected $LK_SHA256"; }
    say "ok: livekit $LK_VERSION wheel downloaded, sha256 $LK_SHA256"
fi

# 2. The library out of the wheel (stamp: the wheel's hash), written under a temporary name first so
#    an interrupted run never leaves a truncated .so behind.
lib_stamp=$LK/.lib-${LK_SHA256:0:16}
if [ -f "$lib_stamp" ] && [ -s "$LK/liblivekit_ffi.so" ]; then
    say "ok: .setup/livekit/liblivekit_ffi.so present"
else
    "$py" - "$wheel" "$LK/liblivekit_ffi.so.tmp" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf, zf.open("livekit/rtc/resources/liblivekit_ffi.so") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    mv -f "$LK/liblivekit_ffi.so.tmp" "$LK/liblivekit_ffi.so"
    rm -f "$LK"/.lib-*
    touch "$lib_stamp"
    say "ok: unpacked .setup/livekit/liblivekit_ffi.so ($(( $(stat -c %s "$LK/liblivekit_ffi.so") / 1048576 )) MB)"
fi

# 3. The fake LiveKit's packages. The stamp lives in the venv (it goes when the venv is remade) and
#    is not a .setup/.pip-* file: setup.sh owns those and removes them all when it reinstalls.
pip_stamp=$VENV/.livekit-fake-$(printf '%s' "${FAKE_REQS[*]}" | sha256sum | cut -c1-16)
if [ -f "$pip_stamp" ]; then
    say "ok: fake LiveKit packages present (${FAKE_REQS[*]})"
else
    say "installing ${FAKE_REQS[*]} into $VENV"
    "${pip[@]}" install -q "${FAKE_REQS[@]}"
    rm -f "$VENV"/.livekit-fake-*
    "${pip[@]}" freeze >"$pip_stamp"  # the stamp records what was installed
    say "ok: fake LiveKit packages installed"
fi

# 3b. The Python SDK from the same pinned wheel (its own copy of the library inside), with its
#     dependencies, for the peer the tests against the real livekit-server run
#     (crates/livekit-ffi/tests/support/lk_peer.py). Stamped by the wheel's hash, in the venv.
sdk_stamp=$VENV/.livekit-sdk-${LK_SHA256:0:16}
if [ -f "$sdk_stamp" ] && "$py" -c 'import livekit.rtc' 2>/dev/null; then
    say "ok: livekit $LK_VERSION Python SDK present in .setup/venv"
else
    say "installing the livekit $LK_VERSION Python SDK ($LK_WHEEL, with its dependencies) into $VENV"
    "${pip[@]}" install -q "$wheel"
    "$py" -c 'import livekit.rtc' || die "livekit.rtc does not import after installing $LK_WHEEL"
    rm -f "$VENV"/.livekit-sdk-*
    "${pip[@]}" freeze >"$sdk_stamp"
    say "ok: livekit $LK_VERSION Python SDK installed"
fi

# 4. The library's schema (needs google.protobuf, which step 3 guarantees). Redone when the wheel or
#    the extraction script changes.
fds_stamp=$LK/.fds-$(printf '%s' "$LK_SHA256" | cat - "$ROOT/scripts/livekit_fds.py" | sha256sum | cut -c1-16)
if [ -f "$fds_stamp" ] && [ -s "$LK/ffi.fds" ]; then
    say "ok: .setup/livekit/ffi.fds present"
else
    "$py" "$ROOT/scripts/livekit_fds.py" "$wheel" "$LK/ffi.fds.tmp" >/dev/null
    mv -f "$LK/ffi.fds.tmp" "$LK/ffi.fds"
    rm -f "$LK"/.fds-*
    touch "$fds_stamp"
    say "ok: wrote .setup/livekit/ffi.fds ($(stat -c %s "$LK/ffi.fds") bytes)"
fi
