#!/usr/bin/env bash
# Submit the whole Code Llama recipe for one flavor as SLURM jobs chained with afterok dependencies.
#
#   launch/slurm/submit_recipe.sh FLAVOR [--skip-python] [--llama2-hf DIR] [--dry-run] [--wait] [-- key=value ...]
#
# FLAVOR: 7b 13b 34b 70b, or tiny (the CPU configs, e.g. on launch/slurm/local_cluster.sh). The chain (Code Llama Fig. 2: the base and the Python model each get
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
# NODES_<label>=... / TIME_<label>=... in the environment override them (e.g. NODES_stage1_code=32),
# OVERRIDES_<label>="key=value ..." adds overrides to that stage only. Resources: GPUS_PER_NODE and
# CPUS_PER_TASK, when set, replace the scripts' 8-GPU-node #SBATCH lines (GPUS_PER_NODE=0: no GRES
# request, for CPU nodes; then NPROC_PER_NODE gives the ranks per node, see train.sbatch).
# RUNS (runs) is the run root the jobs use, LOG_DIR (logs) where SLURM writes each job's output.
# Prints one line per job, "LABEL: job ID"; --dry-run prints the exact sbatch commands instead,
# with placeholder ids dry1, dry2, ... standing for the ids SLURM would return. --wait then waits
# for every job to end and prints "LABEL: job ID STATE exit CODE [reason]" per job (a failed job's
# dependents end CANCELLED, reason DependencyNeverSatisfied); it exits 1 unless all COMPLETED.
set -euo pipefail
cd "$(dirname "$0")/../.."
source launch/stage_lib.sh

usage="usage: launch/slurm/submit_recipe.sh FLAVOR [--skip-python] [--llama2-hf DIR] [--dry-run] [--wait] [-- key=value ...]"
FLAVOR=${1:?$usage}
shift
flavor_dir "$FLAVOR" >/dev/null
case "$FLAVOR" in 7b|13b|34b|70b|tiny) ;; *) echo "submit_recipe: FLAVOR must be one of $RECIPE_FLAVORS tiny" >&2; exit 2 ;; esac
SKIP_PYTHON= DRY= LLAMA2_HF= WAIT=
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-python) SKIP_PYTHON=1 ;;
    --dry-run) DRY=1 ;;
    --wait) WAIT=1 ;;
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
RESOURCES=()  # replaces the scripts' #SBATCH --gpus-per-node/--cpus-per-task when set
[ -n "${GPUS_PER_NODE:-}" ] && RESOURCES+=(--gpus-per-node="$GPUS_PER_NODE")
[ -n "${CPUS_PER_TASK:-}" ] && RESOURCES+=(--cpus-per-task="$CPUS_PER_TASK")
CPU_JOB=(--export="ALL,RUNS=$RUNS")  # import and exports: no GPU
[ -n "${CPUS_PER_TASK:-}" ] && CPU_JOB+=(--cpus-per-task="$CPUS_PER_TASK")
LABELS=() JOBS=()

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
  LABELS+=("$label") JOBS+=("$JOB")
}

# train_stage LABEL STAGE DEPENDENCY [NAME FROM]: one training stage job.
train_stage() {
  local label=$1 stage=$2 dep=$3 name=${4:-} from=${5:-} nodes_var="NODES_$1" time_var="TIME_$1"
  local nodes=${!nodes_var:-$(recipe_nodes "$FLAVOR" "$stage")} overrides_var="OVERRIDES_$1"
  local args=(--nodes="$nodes" ${RESOURCES[@]+"${RESOURCES[@]}"})
  [ -n "${!time_var:-}" ] && args+=(--time="${!time_var}")
  local exports="ALL,RUNS=$RUNS"
  [ -n "$name" ] && exports+=",NAME=$name"
  [ -n "$from" ] && exports+=",FROM=$from"
  args+=(--export="$exports" "launch/slurm/$stage.sbatch" "$FLAVOR")
  local stage_overrides=()
  read -r -a stage_overrides <<< "${!overrides_var:-}"
  submit "$label" "$dep" "${args[@]}" ${EXTRA[@]+"${EXTRA[@]}"} ${stage_overrides[@]+"${stage_overrides[@]}"}
}

# job_field ID FIELD: one field of `scontrol show job` (finished jobs stay for MinJobAge).
job_field() {
  scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# wait_chain: until every submitted job ended; one line per job; status 1 unless all COMPLETED.
wait_chain() {
  local i state ok=0 pending
  while :; do
    pending=0
    for i in "${!JOBS[@]}"; do
      case "$(job_field "${JOBS[$i]}" JobState)" in
        PENDING|RUNNING|REQUEUED|CONFIGURING|COMPLETING|SUSPENDED|RESIZING|"") pending=1 ;;
      esac
    done
    [ "$pending" = 0 ] && break
    sleep "${WAIT_POLL_S:-5}"
  done
  for i in "${!JOBS[@]}"; do
    state=$(job_field "${JOBS[$i]}" JobState)
    [ "$state" = COMPLETED ] || ok=1
    local reason
    reason=$(job_field "${JOBS[$i]}" Reason)
    echo "${LABELS[$i]}: job ${JOBS[$i]} $state exit $(job_field "${JOBS[$i]}" ExitCode)$([ "$reason" != None ] && echo " $reason")"
  done
  return "$ok"
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
  submit import "" "${CPU_JOB[@]}" launch/slurm/stage_import.sbatch "$FLAVOR" "$LLAMA2_HF"
  start=$JOB
fi
train_stage stage1_code stage1_code "$start"
stage1=$JOB
train_stage stage3_long_context stage3_long_context "$stage1"
stage3=$JOB
train_stage stage4_instruct stage4_instruct "$stage3"
stage4=$JOB
submit export_base "$stage3" "${CPU_JOB[@]}" launch/slurm/stage_export.sbatch "$FLAVOR" \
  stage3_long_context "$DIR"
submit export_instruct "$stage4" "${CPU_JOB[@]}" launch/slurm/stage_export.sbatch "$FLAVOR" \
  stage4_instruct "$DIR-instruct"
if [ -z "$SKIP_PYTHON" ]; then
  train_stage stage2_python stage2_python "$stage1"
  stage2=$JOB
  train_stage stage3_long_context_python stage3_long_context "$stage2" stage3_long_context_python stage2_python
  stage3p=$JOB
  submit export_python "$stage3p" "${CPU_JOB[@]}" launch/slurm/stage_export.sbatch "$FLAVOR" \
    stage3_long_context_python "$DIR-python"
fi
if [ -n "$WAIT" ] && [ -z "$DRY" ]; then
  echo "submit_recipe: waiting for ${#JOBS[@]} jobs"
  wait_chain
fi
