#!/usr/bin/env bash
# The main job on a CPU machine: a tiny Llama trained on 4 gloo processes at TP2 x PP2.
# Run through `make quickstart` (which sets up .venv first). Artefacts go under runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${QUICKSTART_DIR:-runs/quickstart}
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== training a tiny Llama (TP2 x PP2, 4 CPU processes) =="
PYTHON=$PYTHON NPROC_PER_NODE=${NPROC_PER_NODE:-4} launch/torchrun.sh configs/tiny/pretrain.yaml \
  checkpoint.dir="$OUT/checkpoints" logging.dir="$OUT/tensorboard" "$@" 2>&1 \
  | grep -v -E "Warning|warnings.warn|^\s*$|return func" | tee "$OUT/train.log"

latest=$(cat "$OUT/checkpoints/latest_checkpointed_iteration.txt")
echo
echo "checkpoint:       $OUT/checkpoints/iter_$(printf %07d "$latest")  (step $latest)"
echo "tensorboard logs: $OUT/tensorboard   (tensorboard --logdir $OUT/tensorboard)"
echo "training log:     $OUT/train.log"
