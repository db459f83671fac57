#!/usr/bin/env bash
# Submit the whole Code Llama recipe for one flavor as SLURM jobs chained with afterok dependencies.
#
#   launch/slurm/submit_recipe.sh FLAVOR [--skip-python] [--llama2-hf DIR] [--dry-run] [-- key=value ...]
#
# FLAVOR: 7b 13b 34b 70b. The chain (Code Llama Fig. 2: the base and the Python model each get
# long-context fine-tuning; Instruct continues from the base model's):
#
#   [import Llama 2] -> stage1_code -> stage3_long_context -> stage4_instruct -> export codellama-F-instruct
#                         |                               \-> export codellama-F
#                         \-> stage2_python -> stage3_long_context_python -> export codellama-F-python
#
# --skip-python drops the Python branch. --llama2-hf DIR first imports Llama 2 from a Hugging Face
# directory (tools/convert_checkpoint.py hf-to-megacode into $RUNS/codellama-F/llama2/checkpoints);
# without it that import must already be there. Overrides after `--` go to every training stage.
# Nodes and time per job: recipe_nodes (launch/stage_lib.sh) and each stage script's #SBATCH --time;
# NODES_<label>=... / TIME_<label>=... in the environment override them (e.g. NODES_stage1_code=32);
# RUNS (runs) is the run root the jobs use, LOG_DIR (logs) where SLURM writes each job's output.
# Prints one line per job, "LABEL: job ID"; --dry-run prints the exact sbatch commands instead,
# with placeholder ids dry1, dry2, ... standing for the ids SLURM would return.
set -euo pipefail
cd "$(dirname "$0")/../.."
source launch/stage_lib.sh

usage="usage: launch/slurm/submit_recipe.sh FLAVOR [--skip-python] [--llama2-hf DIR] [--dry-run] [-- key=value ...]"
FLAVOR=${1:?$usage}
shift
flavor_dir "$FLAVOR" >/dev/null
case "$FLAVOR" in 7b|13b|34b|70b) ;; *) echo "submit_recipe: FLAVOR must be one of $RECIPE_FLAVORS" >&2; exit 2 ;; esac
SKIP_PYTHON= DRY= LLAMA2_HF=
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-python) SKIP_PYTHON=1 ;;
    --dry-run) DRY=1 ;;
    --llama2-hf) LLAMA2_HF=${2:?--llama2-hf needs a directory}; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "submit_recipe: unknown argument '$1'; $usage" >&2; exit 2 ;;
  esac
  shift
done
RUNS=${RUNS:-runs}
LOG_DIR=${LOG_DIR:-logs}
DIR=$(flavor_dir "$FLAVOR")
dry_count=0

# submit LABEL DEPENDENCY(job id or "") SBATCH_ARGS... -- SCRIPT ARGS...: prints "LABEL: job ID",
# sets JOB to the id.
submit() {
  local label=$1 dep=$2
  shift 2
  local cmd=(sbatch --parsable --job-name="$DIR-$label" --output="$LOG_DIR/%x-%j.out")
  [ -n "$dep" ] && cmd+=(--dependency="afterok:$dep" --kill-on-invalid-dep=yes)
  cmd+=("$@")
  if [ -n "$DRY" ]; then
    dry_count=$((dry_count + 1))
    JOB="dry$dry_count"
    printf '%q ' "${cmd[@]}"; echo
  else
    JOB=$("${cmd[@]}")
    JOB=${JOB%%;*}  # --parsable prints "id[;cluster]"
  fi
  echo "$label: job $JOB"
}

# train_stage LABEL STAGE DEPENDENCY [NAME FROM]: one training stage job.
train_stage() {
  local label=$1 stage=$2 dep=$3 name=${4:-} from=${5:-} nodes_var="NODES_$1" time_var="TIME_$1"
  local nodes=${!nodes_var:-$(recipe_nodes "$FLAVOR" "$stage")}
  local args=(--nodes="$nodes")
  [ -n "${!time_var:-}" ] && args+=(--time="${!time_var}")
  local exports="ALL,RUNS=$RUNS"
  [ -n "$name" ] && exports+=",NAME=$name"
  [ -n "$from" ] && exports+=",FROM=$from"
  args+=(--export="$exports" "launch/slurm/$stage.sbatch" "$FLAVOR")
  submit "$label" "$dep" "${args[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
}

if [ -z "$DRY" ]; then
  if ! command -v sbatch >/dev/null; then
    echo "submit_recipe: sbatch not found (not a SLURM login node?); try --dry-run" >&2
    exit 2
  fi
  mkdir -p "$LOG_DIR"  # SLURM does not create the --output directory
  if [ -z "$LLAMA2_HF" ] && [ ! -f "$RUNS/$DIR/llama2/checkpoints/latest_checkpointed_iteration.txt" ]; then
    echo "submit_recipe: $RUNS/$DIR/llama2/checkpoints holds no checkpoint: pass --llama2-hf DIR to import Llama 2" >&2
    exit 2
  fi
fi

start=""
if [ -n "$LLAMA2_HF" ]; then
  submit import "" --export="ALL,RUNS=$RUNS" launch/slurm/stage_import.sbatch "$FLAVOR" "$LLAMA2_HF"
  start=$JOB
fi
train_stage stage1_code stage1_code "$start"
stage1=$JOB
train_stage stage3_long_context stage3_long_context "$stage1"
stage3=$JOB
train_stage stage4_instruct stage4_instruct "$stage3"
stage4=$JOB
submit export_base "$stage3" --export="ALL,RUNS=$RUNS" launch/slurm/stage_export.sbatch "$FLAVOR" \
  stage3_long_context "$DIR"
submit export_instruct "$stage4" --export="ALL,RUNS=$RUNS" launch/slurm/stage_export.sbatch "$FLAVOR" \
  stage4_instruct "$DIR-instruct"
if [ -z "$SKIP_PYTHON" ]; then
  train_stage stage2_python stage2_python "$stage1"
  stage2=$JOB
  train_stage stage3_long_context_python stage3_long_context "$stage2" stage3_long_context_python stage2_python
  stage3p=$JOB
  submit export_python "$stage3p" --export="ALL,RUNS=$RUNS" launch/slurm/stage_export.sbatch "$FLAVOR" \
    stage3_long_context_python "$DIR-python"
fi
