#!/usr/bin/env bash
# Set up vjapp on a fresh Debian machine: system libraries, a virtual environment in .venv,
# and the package with its extras. Safe to run again (it skips what is already there).
#   bash setup.sh           app + OpenCLIP + training + MIDI extras
#   bash setup.sh --dev     the same plus the test tools
set -euo pipefail
cd "$(dirname "$0")"

DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    *) echo "usage: bash setup.sh [--dev]" >&2; exit 2 ;;
  esac
done

# PortAudio for sounddevice; the Qt xcb platform libraries; Xvfb and PulseAudio so the app and
# its tests run without a display or sound card; jackd2 for a userspace JACK server (dummy driver)
# that gives the MIDI tests real virtual ports without a sound card (see ../shared/ENVIRONMENT.md).
DEB_PACKAGES=(
  libportaudio2 libsndfile1
  libgl1 libegl1 libfontconfig1 libglib2.0-0 libdbus-1-3 libx11-xcb1 libxcb-cursor0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0
  libxcb-xkb1 libxkbcommon0 libxkbcommon-x11-0
  xvfb xauth pulseaudio libasound2-plugins
  jackd2
)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
# torch first and pinned: the constraints keep any later dependency from replacing it with a
# multi-GB CUDA build (open_clip_torch -> newest torchvision -> newest torch).
"${PIP[@]}" install torch==2.13.0
EXTRAS="clip,train,midi"
[ "$DEV" -eq 1 ] && EXTRAS="$EXTRAS,dev"
"${PIP[@]}" install -c constraints.txt -e ".[$EXTRAS]"
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "setup: done (.venv, extras: $EXTRAS)"
