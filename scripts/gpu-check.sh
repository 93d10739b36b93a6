#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in about 8 minutes on one H100: the CUDA tests, a short end-to-end run on
# Shapes and on a COCO-layout split of real photographs, then bench/gpu.py (speed, memory, the learning check).
# Run it whenever a GPU is at hand, before and after a change. Figures go to $OUT (default runs/gpu-check).
#   PYTHON=python3 bash scripts/gpu-check.sh     # with an environment other than .venv
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT="${OUT:-runs/gpu-check}"
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA GPU here')"
"$PY" -c "import torch; print('gpu-check on', torch.cuda.get_device_name(), 'torch', torch.__version__)"
step() { echo; echo "== $1 ($(date +%T))"; }

step "CUDA tests"
"$PY" -m pytest -q tests/test_cuda.py

step "Shapes end to end: the demo, 2 training minutes on the GPU"
"$PY" -m omni_gpt2o demo --out "$OUT/demo" --minutes 2 --curve-points 2

step "COCO layout, real photographs, the real architecture (random weights): precompute, train, generate"
photos="$OUT/photos"
"$PY" -m omni_gpt2o.data.photos --out "$photos"
"$PY" -m omni_gpt2o prepare-coco --annotations "$photos/captions.json" --images "$photos/images" --out "$photos/split"
"$PY" -m omni_gpt2o precompute --data "$photos/split" --cache-dir "$photos/cache" --preset gpt2-vit-b-random \
  --device cuda
"$PY" -m omni_gpt2o train --data "$photos/split" --out "$photos/run" --preset gpt2-vit-b-random --device cuda \
  --cache-dir "$photos/cache" --align-weight 0.1 --batch-size 8 --max-steps 20 --log-every 5 --save-interval 1000
"$PY" -m omni_gpt2o generate --checkpoint "$photos/run/checkpoints/last" --out-dir "$photos/pictures" \
  --prompt "a cup of coffee on a red table" "Космический кот на Марсе" --device cuda

step "bench/gpu.py: speed, memory, and the learning check (8,000 Shapes samples at 224 px)"
"$PY" bench/gpu.py --learning-check 8000 | tee "$OUT/gpu.jsonl"
echo; echo "gpu-check passed; figures in $OUT/gpu.jsonl"
