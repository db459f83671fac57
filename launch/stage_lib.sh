# Code Llama recipe stages: what the per-stage launch scripts share (sourced, not run).
#
# Used by launch/stage*.sh (torchrun, one node) and launch/slurm/stage*.sbatch (SLURM). A stage
# run is named by FLAVOR (7b 13b 34b 70b, or tiny for the CPU configs) and STAGE; it gets
#   config        configs/codellama-FLAVOR/STAGE.yaml        (configs/tiny/STAGE.yaml for tiny)
#   run dir       $RUNS/codellama-FLAVOR/$NAME/{checkpoints,tensorboard}   (NAME defaults to STAGE)
#   starts from   $RUNS/codellama-FLAVOR/$FROM/checkpoints, weights only (FROM defaults per stage:
#                 stage1 <- llama2 (the HF import), stage2 <- stage1, stage3 <- stage1, stage4 <- stage3)
# and these are passed as overrides, so the printed command is the whole truth. RUNS defaults to
# `runs`, where the YAML files point too. Resumption: once the run dir holds a checkpoint (a
# requeued or restarted job), the stage resumes from it with its optimizer and schedule instead of
# starting over from FROM.
#
# Default nodes per (flavor, stage) for 8 x H100 nodes; `python tools/plan_run.py --config ...
# --nodes N` prints what each layout needs in memory and GPU-hours.

RECIPE_FLAVORS="7b 13b 34b 70b"
RECIPE_STAGES="stage1_code stage2_python stage3_long_context stage4_instruct"

recipe_nodes() {  # FLAVOR STAGE -> nodes of 8 GPUs
  case "$1:$2" in
    7b:stage1_code|7b:stage2_python) echo 16 ;;
    7b:stage3_long_context) echo 8 ;;
    7b:stage4_instruct) echo 4 ;;
    13b:stage1_code|13b:stage2_python) echo 32 ;;
    13b:stage3_long_context) echo 16 ;;
    13b:stage4_instruct) echo 8 ;;
    34b:stage1_code|34b:stage2_python) echo 64 ;;
    34b:stage3_long_context|34b:stage4_instruct) echo 16 ;;
    70b:stage1_code|70b:stage2_python) echo 128 ;;
    70b:stage3_long_context|70b:stage4_instruct) echo 16 ;;
    tiny:*) echo 1 ;;
    *) echo "stage_lib: no default node count for flavor '$1' stage '$2'" >&2; return 1 ;;
  esac
}

recipe_from() {  # STAGE -> run the stage starts from
  case "$1" in
    stage1_code) echo llama2 ;;
    stage2_python|stage3_long_context) echo stage1_code ;;
    stage4_instruct) echo stage3_long_context ;;
    *) echo "stage_lib: unknown stage '$1'" >&2; return 1 ;;
  esac
}

flavor_dir() {  # FLAVOR -> config/run directory name
  case "$1" in
    7b|13b|34b|70b) echo "codellama-$1" ;;
    codellama-7b|codellama-13b|codellama-34b|codellama-70b|tiny) echo "$1" ;;
    *) echo "stage_lib: unknown flavor '$1' (one of $RECIPE_FLAVORS tiny)" >&2; return 1 ;;
  esac
}

# stage_command STAGE FLAVOR: sets STAGE_CONFIG and the array STAGE_OVERRIDES (run dirs, start
# point or resumption) for this stage run. Env: RUNS, NAME, FROM.
stage_command() {
  local stage=$1 flavor=$2 dir runs name from ckpt
  dir=$(flavor_dir "$flavor") || return 1
  runs=${RUNS:-runs}
  name=${NAME:-$stage}
  from=${FROM:-$(recipe_from "$stage")} || return 1
  STAGE_CONFIG="configs/$dir/$stage.yaml"
  if [ ! -f "$STAGE_CONFIG" ]; then  # scripts run from the checkout root
    echo "stage_lib: no config $STAGE_CONFIG for flavor '$flavor'" >&2
    return 1
  fi
  ckpt="$runs/$dir/$name/checkpoints"
  STAGE_OVERRIDES=("checkpoint.dir=$ckpt" "logging.dir=$runs/$dir/$name/tensorboard")
  if [ -f "$ckpt/latest_checkpointed_iteration.txt" ]; then
    # Restarted (requeue, crash): resume this stage with its optimizer, schedule and data position.
    STAGE_OVERRIDES+=("checkpoint.load=null" "checkpoint.finetune=false")
  else
    STAGE_OVERRIDES+=("checkpoint.load=$runs/$dir/$from/checkpoints" "checkpoint.finetune=true")
  fi
}

# stage_torchrun [key=value ...]: one node under launch/torchrun.sh (DRY_RUN=1: print it only).
stage_torchrun() {
  local cmd=(launch/torchrun.sh "$STAGE_CONFIG" "${STAGE_OVERRIDES[@]}" "$@")
  if [ -n "${DRY_RUN:-}" ]; then
    printf '%q ' "${cmd[@]}"; echo
    return 0
  fi
  exec "${cmd[@]}"
}

# stage_slurm STAGE FLAVOR [key=value ...]: inside a SLURM allocation, hand over to
# launch/slurm/train.sbatch (srun + torchrun per node, requeue on the trainer's requeue code).
stage_slurm() {
  local stage=$1 flavor=$2 want
  shift 2
  want=$(recipe_nodes "$flavor" "$stage") || return 1
  if [ -n "${SLURM_NNODES:-}" ] && [ "$SLURM_NNODES" != "$want" ]; then
    echo "stage_lib: note: $SLURM_NNODES nodes; the recipe's layout for $flavor $stage is planned for $want" >&2
  fi
  exec bash launch/slurm/train.sbatch "$STAGE_CONFIG" "${STAGE_OVERRIDES[@]}" "$@"
}
