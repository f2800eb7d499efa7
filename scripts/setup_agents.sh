#!/usr/bin/env bash
# LiveKit Agents, idempotently (scripts/setup.sh calls this; it also runs on its own): the Python
# side of "Avatar for LiveKit Agents" and its end-to-end tests (tests/agents/).
#
#   .setup/agents-venv/     livekit-agents (pinned, no cloud plugins: the tests bring their own
#                           espeak-ng TTS and a scripted LLM), pytest, and this repository's plugin
#                           plugins/livekit-plugins-avatar-supervisor (installed as a user would,
#                           from its folder; reinstalled when any of its files changes)
#
# Every step checks its stamp first, so a second run does nothing slow. The stamp is named after a
# hash of the requirement list and the plugin's pyproject.toml: change either and it reinstalls.
#
# Run the tests (root; they need the network namespace and .setup/livekit-server):
#   bash scripts/netns_run.sh .setup/agents-venv/bin/python -m pytest -x -q tests/agents
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SETUP=$ROOT/.setup
VENV=$SETUP/agents-venv
PLUGIN=$ROOT/plugins/livekit-plugins-avatar-supervisor
PYTHON=${PYTHON:-python3}
say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# livekit-agents brings the `livekit` wheel (rtc, libwebrtc inside), livekit-api and numpy; the
# rest are pinned so a rerun a month later installs the same thing. hatchling builds the plugin
# (no build isolation: nothing is fetched at build time).
REQS=(
    livekit-agents==1.8.9
    livekit==1.1.21
    livekit-api==1.2.2
    numpy==2.4.6
    aiohttp==3.14.5
    pytest==9.2.0
    hatchling==1.33.0
)

[ -f "$PLUGIN/pyproject.toml" ] || die "$PLUGIN/pyproject.toml is missing"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "livekit-agents needs Python >= 3.10 ($PYTHON is $("$PYTHON" --version 2>&1))"

plugin_files() { find "$PLUGIN" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort; }
stamp_hash=$( { printf '%s\n' "${REQS[@]}"; plugin_files | while read -r f; do printf '%s\n' "${f#"$PLUGIN"/}"; cat "$f"; done; } | sha256sum | cut -c1-16)
stamp=$VENV/.agents-$stamp_hash
if [ -f "$stamp" ] && [ -x "$VENV/bin/python" ]; then
    say "ok: LiveKit Agents present (.setup/agents-venv, ${REQS[0]})"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating .setup/agents-venv"
    "$PYTHON" -m venv "$VENV" || die "could not create a virtualenv with $PYTHON (on Debian: apt-get install python3-venv)"
fi
pip=("$VENV/bin/pip" --disable-pip-version-check)

say "installing ${REQS[*]} into .setup/agents-venv"
"${pip[@]}" install -q "${REQS[@]}" || die "pip could not install ${REQS[*]}"
say "installing plugins/livekit-plugins-avatar-supervisor"
"${pip[@]}" install -q --no-deps --no-build-isolation --force-reinstall "$PLUGIN" \
    || die "pip could not install $PLUGIN"
"$VENV/bin/python" -c 'import livekit.agents, livekit.plugins.avatar_supervisor' \
    || die "livekit.agents or livekit.plugins.avatar_supervisor does not import"

command -v espeak-ng >/dev/null 2>&1 \
    || say "warning: espeak-ng is not installed: tests/agents need it (apt-get install espeak-ng)"

rm -f "$VENV"/.agents-*
"${pip[@]}" freeze >"$stamp"  # the stamp records what was installed
say "ok: LiveKit Agents installed ($("$VENV/bin/python" -c 'import livekit.agents as a; print("livekit-agents", a.__version__)'))"
