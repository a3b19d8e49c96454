#!/usr/bin/env bash
# FurryGAN's GPU figures in one run sized for a short device lease (about 12 minutes in all):
#   1. paper-256 training throughput (bench_furrygan.py): fp32 / tf32 / bf16, both modulated-conv
#      formulations, channels-last; the issue's target is >= 150 images/s on an H100;
#   2. small-64 trained on procedural scenes for MINUTES minutes (tf32), then its masks scored
#      against the 64 px pseudo-GT segmenter (mIoU at psi 1 and 0.7) and a sample sheet.
# Everything goes to $OUT (default runs/gpu): gpu.txt, bench.md, small-64/, eval_psi*.md, samples/.
#
#     OUT=runs/gpu bash benchmarks/gpu_checks.sh [MINUTES]      # MINUTES default 5
#
# It needs only PyTorch, accelerate, click, scipy, torchmetrics, safetensors, tqdm, Pillow and
# psd-tools (lamina itself runs from src/ through PYTHONPATH). Where psd-tools is missing, carry
# its wheel, fetched beforehand on a machine with the registry:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 -d .whl psd-tools==1.26.0
# and this script installs it from .whl/ into a temporary folder.
#
# Settings (environment): PYTHON, DEVICE (cuda), BENCH_PRESETS (paper-256), BENCH_STEPS (10),
# PRECISIONS (fp32,tf32,bf16), TRAIN_PRESET (small-64), WORKERS (8), EVAL_N (1000). A CPU
# rehearsal of the whole script, to catch mistakes before spending device time (2 minutes here):
#     DEVICE=cpu BENCH_PRESETS=tiny-32 BENCH_STEPS=1 PRECISIONS=fp32 TRAIN_PRESET=tiny-32 WORKERS=1 \
#         EVAL_N=20 PYTHON=.venv/bin/python OUT=/tmp/gpu-rehearsal bash benchmarks/gpu_checks.sh 0.05
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu}
minutes=${1:-5}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
train_preset=${TRAIN_PRESET:-small-64}
eval_n=${EVAL_N:-1000}
mkdir -p "$out"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 LAMINA_PROGRESS=0
if ! "$py" -c "import psd_tools" 2>/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --target /tmp/lamina-site .whl/psd_tools-*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/lamina-site"
fi
lamina() { "$py" -m lamina.cli "$@"; }

if [ "$device" != cpu ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
"$py" -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu.txt"

echo "== 1. training throughput"
"$py" benchmarks/bench_furrygan.py --device "$device" --presets "${BENCH_PRESETS:-paper-256}" \
    --precision "${PRECISIONS:-fp32,tf32,bf16}" --layouts nhwc --steps "${BENCH_STEPS:-10}" | tee "$out/bench.md"

echo "== 2. $train_preset for $minutes minutes"
run="$out/$train_preset"
lamina furrygan train --data synth --preset "$train_preset" --set train.precision=tf32 --set train.checkpoint_every=1000 \
    --out "$run" --workers "${WORKERS:-8}" --max-minutes "$minutes" | tail -n 3
tail -n 1 "$run/log.jsonl"
for psi in 1.0 0.7; do
    lamina furrygan eval --checkpoint "$run" --n "$eval_n" --real none --truncation "$psi" --device "$device" \
        | tee "$out/eval_psi$psi.md"
done
lamina furrygan generate --checkpoint "$run" --n 8 --truncation 0.7 --out "$out/samples"
rm -f "$run/training-state.pt"  # large, and of no use once the lease ends
