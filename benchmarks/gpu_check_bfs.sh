#!/usr/bin/env bash
# BFS at full size on one GPU, no weights (about 3-5 minutes on an H100): a FLUX.1-Fill-dev-shaped
# transformer with random bf16 weights and the BFS joint adapter attached; one 50-step sampling run
# of the [composite; foreground] pair at 512x512 (the same transformer stock as the baseline, same
# process) and one gradient-checkpointed training step of the adapter, with time and peak memory.
# Results: stdout and $OUT/gpu_check_bfs.json (OUT default runs/gpu-bfs).
#
#     OUT=runs/gpu-bfs bash benchmarks/gpu_check_bfs.sh [extra args, e.g. --steps 28 --size 1024]
#
# It needs PyTorch with CUDA and diffusers (>= 0.35; transformers is not used). Where diffusers is
# missing, carry its wheel and huggingface_hub's, fetched beforehand on a machine with the registry:
#     python3 -m pip download --no-deps --only-binary=:all: -d .whl diffusers==0.42.1 huggingface_hub
# and this script installs them from .whl/ into a temporary folder.
# CPU rehearsal of the same code at tiny sizes (seconds):
#     DEVICE=cpu PYTHON=.venv/bin/python bash benchmarks/gpu_check_bfs.sh --steps 2
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu-bfs}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
mkdir -p "$out"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 LAMINA_PROGRESS=0
if ! "$py" -c "import diffusers" 2>/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --target /tmp/lamina-site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/lamina-site"
fi
if [ "$device" = cpu ]; then
    "$py" benchmarks/gpu_check_bfs.py --tiny --device cpu --json "$out/gpu_check_bfs.json" "$@" | tee "$out/gpu_check_bfs.txt"
else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
    "$py" benchmarks/gpu_check_bfs.py --device "$device" --json "$out/gpu_check_bfs.json" "$@" | tee "$out/gpu_check_bfs.txt"
fi
