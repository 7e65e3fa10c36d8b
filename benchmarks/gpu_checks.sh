#!/usr/bin/env bash
# The GPU checks of the developers' brief, prepared for the `device` tool's `run` (one NVIDIA GPU,
# its image's python3 with a CUDA torch; nothing can be downloaded there; 15 minutes of device
# time a session, each call at most 10 minutes, the working tree plus carried paths at most 64 MiB).
#
# Here, first: the wheels the GPU image lacks (PyAV, soundfile, OpenCLIP, ...: 39 MiB) as one tar
# cut into parts of 15 MiB in .whl-1, .whl-2, ... (the tree itself is about 48 MiB):
#     bash benchmarks/gpu_checks.sh --wheels
# Then the calls back to back (a warm machine keeps what earlier calls carried and is given back
# after 30 s idle), one part each, the checks with the last:
#     run(command="bash benchmarks/gpu_checks.sh part", carry=[".whl-1"], timeout_s=60)
#     run(command="bash benchmarks/gpu_checks.sh part", carry=[".whl-2"], timeout_s=60)
#     run(command="bash benchmarks/gpu_checks.sh tests-bench", carry=[".whl-3"], timeout_s=560)
#     run(command="bash benchmarks/gpu_checks.sh train", timeout_s=560)
# `tests-bench`: the requires_cuda tests, `vjapp bench --device cuda` on the embedded default and a
# random 1024 px config-f generator at 256/512/1024 px (fps, per-stage ms, sound-to-frame latency),
# `vjapp-train recipe tiny --device cuda --amp`. `train`: the default's generator at 256 px, trained
# for five minutes, back as $OUT/generator-256.safetensors + .json. Logs: $OUT/*.log.
# VJAPP_CHECK_DEVICE=cpu runs the same steps at smoke size with this machine's python (to check
# this script here).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(soundfile cffi pycparser soxr python-osc mido python-rtmidi open_clip_torch ftfy wcwidth pyqtgraph av==19.0.2)
PY_TAGS=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
         --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
PART=14M

if [[ "${1:-}" == "--wheels" ]]; then
    rm -rf .whl-[0-9] /tmp/vjapp-wheels && mkdir -p /tmp/vjapp-wheels
    python3 -m pip download -q --no-deps "${PY_TAGS[@]}" -d /tmp/vjapp-wheels "${WHEELS[@]}" || exit 1
    tar -C /tmp/vjapp-wheels -cf /tmp/vjapp-wheels.tar . || exit 1
    split -b "$PART" -d -a 1 /tmp/vjapp-wheels.tar /tmp/vjapp-wheels.tar.part-
    for part in /tmp/vjapp-wheels.tar.part-*; do
        d=.whl-$(( ${part##*-} + 1 ))
        mkdir -p "$d" && mv "$part" "$d/"
        grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
    done
    sha256sum /tmp/vjapp-wheels.tar | cut -d' ' -f1 > "$d/wheels.sha256"  # with the last part
    du -sh .whl-[0-9]
    exit 0
fi

DEVICE=${VJAPP_CHECK_DEVICE:-cuda}
OUT=${OUT:-/tmp/vjapp-gpu-checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 QT_QPA_PLATFORM=offscreen VJAPP_IMPORT_DIR=/tmp/vjapp-imported
PY=${VJAPP_CHECK_PYTHON:-python3}

install_wheels() {  # every part carried (now or by an earlier call on this warm machine)
    [[ "$DEVICE" == cpu ]] && return 0  # the CPU smoke check uses this machine's python
    if [[ ! -d /tmp/site/av ]]; then
        cat .whl-[0-9]/vjapp-wheels.tar.part-* > /tmp/vjapp-wheels.tar || return 1
        [[ "$(sha256sum /tmp/vjapp-wheels.tar | cut -d' ' -f1)" == "$(cat .whl-[0-9]/wheels.sha256)" ]] \
            || { echo "the wheels' parts do not join up: carry each .whl-N once, in a row"; return 1; }
        mkdir -p /tmp/wheels && tar -C /tmp/wheels -xf /tmp/vjapp-wheels.tar || return 1
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            /tmp/wheels/*.whl || return 1
    fi
    export PYTHONPATH=/tmp/site:$PWD
}

step() {  # step NAME SECONDS COMMAND...: run, log to $OUT/NAME.log, say how it ended
    local name=$1 limit=$2; shift 2
    echo "== $name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
}

case "${1:-}" in
part)  # one part of the wheels travels with this call and stays on the warm machine
    ls -la .whl-[0-9]
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c "import torch; print(torch.__version__, torch.cuda.is_available())"
    ;;
tests-bench)
    install_wheels || exit 1
    export PYTHONPATH=${PYTHONPATH:-$PWD}
    if [[ "$DEVICE" == cpu ]]; then sizes=(64); bench=(--frames 5 --warmup 2 --latency-bursts 2); r=random:64
    else sizes=(256 512 1024); bench=(--frames 300 --warmup 30 --latency-bursts 12 --latency-fps 60); r=random:1024; fi
    step cuda-tests 240 $PY -m pytest -q -p no:cacheprovider -p no:pytest-qt -m requires_cuda \
        tests/test_fast_synthesis.py tests/test_stylegan2.py tests/test_bundle.py tests/test_aspect.py \
        tests/test_audio_features.py tests/test_interp.py tests/test_train_generator.py
    step bench-default 120 $PY -m vjapp bench --device "$DEVICE" --sizes "${sizes[@]}" "${bench[@]}"
    step bench-1024 240 $PY -m vjapp bench --device "$DEVICE" --bundle "$r" --atlas-samples 512 \
        --sizes "${sizes[@]}" "${bench[@]}"
    step recipe-tiny 240 $PY -m training.cli recipe tiny --out /tmp/vjapp-tiny --device "$DEVICE" --amp
    ;;
train)  # the default's generator at 256 px (channel_base 8192: the default's widths, one block more)
    install_wheels || exit 1
    export PYTHONPATH=${PYTHONPATH:-$PWD}
    if [[ "$DEVICE" == cpu ]]; then clips=18; res=32; base=256; minutes=0.3; batch=4
    else clips=270; res=256; base=8192; minutes=5; batch=32; fi
    step synthscapes 120 $PY -m training.cli synthscapes --out /tmp/vjapp-data --clips "$clips" --seconds 4 \
        --size "$res" --workers "$(nproc)" --no-progress
    step generator-256 $(( ${minutes%.*} * 60 + 60 )) $PY -m training.cli generator --data /tmp/vjapp-data \
        --out /tmp/vjapp-gen256 --resolution "$res" --channel-base "$base" --channel-max 64 --w-dim 256 \
        --mapping-layers 8 --batch-size "$batch" --steps 1000000 --max-minutes "$minutes" --device "$DEVICE" --amp \
        --kid-samples 256 --no-tensorboard
    cp /tmp/vjapp-gen256/generator.safetensors "$OUT/generator-256.safetensors" 2>/dev/null
    cp /tmp/vjapp-gen256/generator.json "$OUT/generator-256.json" 2>/dev/null
    ls -la "$OUT"
    ;;
*)
    echo "usage: bash benchmarks/gpu_checks.sh --wheels | part | tests-bench | train" >&2
    exit 2
    ;;
esac
