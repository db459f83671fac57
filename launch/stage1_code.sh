#!/usr/bin/env bash
# Code Llama stage 1, code training (500B tokens, FIM except 34B)
# on one node under torchrun: a thin wrapper over launch/torchrun.sh.
#
#   launch/stage1_code.sh FLAVOR [key=value ...]      # FLAVOR: 7b 13b 34b 70b, or tiny (CPU runs)
#   DRY_RUN=1 launch/stage1_code.sh 7b                # print the command only
#
# Config configs/codellama-FLAVOR/stage1_code.yaml; run directories, start point and resumption as in
# launch/stage_lib.sh (env RUNS, NAME, FROM); processes and ports as in launch/torchrun.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/stage_lib.sh
FLAVOR=${1:?usage: launch/stage1_code.sh FLAVOR [key=value ...]}
shift
stage_command stage1_code "$FLAVOR"
stage_torchrun "$@"
