#!/usr/bin/env bash
# Single-node launch of megacode.train under torchrun.
#
#   launch/torchrun.sh CONFIG [key=value ...]
#
# Environment overrides: NPROC_PER_NODE (default: GPUs, else 4 CPU processes), PYTHON,
# MASTER_ADDR (127.0.0.1), MASTER_PORT (29500), OMP_NUM_THREADS (1).
# The config is validated for the world size first, so a bad config is one clear line and a
# non-zero exit, before any process group exists.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${1:?usage: launch/torchrun.sh CONFIG [key=value ...]}
shift
PYTHON=${PYTHON:-python}
if [ -z "${NPROC_PER_NODE:-}" ]; then
  NPROC_PER_NODE=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
  [ "$NPROC_PER_NODE" -gt 0 ] 2>/dev/null || NPROC_PER_NODE=4
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}

WORLD_SIZE=$NPROC_PER_NODE "$PYTHON" -m megacode.train --config "$CONFIG" --check-only "$@" >/dev/null

exec "$PYTHON" -m torch.distributed.run \
  --nproc-per-node "$NPROC_PER_NODE" \
  --master-addr "${MASTER_ADDR:-127.0.0.1}" --master-port "${MASTER_PORT:-29500}" \
  -m megacode.train --config "$CONFIG" "$@"
