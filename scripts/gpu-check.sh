#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in about 8 minutes on one H100: the CUDA tests, a short end-to-end run on
# Shapes and on a COCO-layout split of real photographs, then bench/gpu.py (speed, memory, the learning check).
# Run it whenever a GPU is at hand, before and after a change. Figures go to $OUT (default runs/gpu-check).
# A failing step does not stop the others (GPU time is scarce: one pass should say everything it can); the
# summary at the end names each step's outcome, and the script exits 1 if any failed.
#   PYTHON=python3 bash scripts/gpu-check.sh     # with an environment other than .venv
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT="${OUT:-runs/gpu-check}"
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA GPU here')" || exit 1
"$PY" -c "import torch; print('gpu-check on', torch.cuda.get_device_name(), 'torch', torch.__version__)"
summary=()
step() {  # step NAME COMMAND...: run one step, note its outcome and time, go on either way
  local name=$1 started=$SECONDS; shift
  echo; echo "== $name ($(date +%T))"
  if "$@"; then summary+=("passed  $name ($((SECONDS - started)) s)")
  else summary+=("FAILED  $name ($((SECONDS - started)) s)"); fi
}
photos() {
  local p="$OUT/photos"
  "$PY" -m omni_gpt2o.data.photos --out "$p" &&
  "$PY" -m omni_gpt2o prepare-coco --annotations "$p/captions.json" --images "$p/images" --out "$p/split" &&
  "$PY" -m omni_gpt2o precompute --data "$p/split" --cache-dir "$p/cache" --preset gpt2-vit-b-random \
    --device cuda &&
  "$PY" -m omni_gpt2o train --data "$p/split" --out "$p/run" --preset gpt2-vit-b-random --device cuda \
    --cache-dir "$p/cache" --align-weight 0.1 --batch-size 8 --max-steps 20 --log-every 5 --save-interval 1000 \
    --overwrite &&
  "$PY" -m omni_gpt2o generate --checkpoint "$p/run/checkpoints/last" --out-dir "$p/pictures" \
    --prompt "a cup of coffee on a red table" "Космический кот на Марсе" --device cuda
}
bench() { "$PY" bench/gpu.py --learning-check 8000 | tee "$OUT/gpu.jsonl"; }

step "CUDA tests" "$PY" -m pytest -q tests/test_cuda.py
step "Shapes end to end: the demo, 2 training minutes on the GPU" \
  "$PY" -m omni_gpt2o demo --out "$OUT/demo" --minutes 2 --curve-points 2
step "COCO layout, real photographs, the real architecture (random weights): precompute, train, generate" photos
step "bench/gpu.py: speed, memory, and the learning check (8,000 Shapes samples at 224 px)" bench

echo; echo "gpu-check summary (figures in $OUT/gpu.jsonl):"
printf '  %s\n' "${summary[@]}"
! printf '%s\n' "${summary[@]}" | grep -q '^FAILED'
