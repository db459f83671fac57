#!/usr/bin/env bash
# Code Llama stage 3, long-context fine-tuning (16,384 tokens, RoPE θ 1e6)
# on one node under torchrun: a thin wrapper over launch/torchrun.sh.
#
#   launch/stage3_long_context.sh FLAVOR [key=value ...]      # FLAVOR: 7b 13b 34b 70b, or tiny (CPU runs)
#   DRY_RUN=1 launch/stage3_long_context.sh 7b                # print the command only
#
# Config configs/codellama-FLAVOR/stage3_long_context.yaml; run directories, start point and resumption as in
# launch/stage_lib.sh (env RUNS, NAME, FROM); processes and ports as in launch/torchrun.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/stage_lib.sh
FLAVOR=${1:?usage: launch/stage3_long_context.sh FLAVOR [key=value ...]}
shift
stage_command stage3_long_context "$FLAVOR"
stage_torchrun "$@"
