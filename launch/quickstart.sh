#!/usr/bin/env bash
# The main job on a CPU machine: the whole Code Llama recipe on a tiny model, from nothing.
#
#   make quickstart                       # sets up .venv, then runs this
#   QUICK=1 launch/quickstart.sh          # fewer steps per stage (the end-to-end test uses it)
#   ASSETS_ONLY=1 launch/quickstart.sh    # steps 1-4 without the import: data, tokenizer, HF Llama 2
#
# 1. a small code corpus from the Python standard library (code, NL about code, NL, Python)
# 2. a Llama 2-style tokenizer (496 pieces) extended with Code Llama's infilling pieces (512)
# 3. preprocessing into Megatron indexed datasets; instruct dialogs with answer-only loss masks
# 4. a random tiny "Llama 2" in Hugging Face format, imported at TP2 x PP2
# 5. four stages on 4 CPU processes (TP2 x PP2, sequence parallel): code training with FIM,
#    Python specialisation, long-context fine-tuning (RoPE θ 10,000 -> 1,000,000, 4x sequence),
#    instruction tuning (+ rehearsal)
# 6. export to Hugging Face format, load with transformers, print an infilling completion.
# Artefacts live under runs/tiny/ (the tiny stage configs point there).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHON NPROC_PER_NODE=${NPROC_PER_NODE:-4} PYTHONWARNINGS=ignore
RUN=runs/tiny
rm -rf "$RUN"
mkdir -p "$RUN/data" "$RUN/hf"
start=$(date +%s)
step() { echo; echo "== $* ($(($(date +%s) - start)) s)"; }
quiet() { grep -v -E "Warning|warnings.warn|^\s*$|return func|OMP_NUM_THREADS" || true; }
overrides=()
[ -n "${QUICK:-}" ] && overrides=("train.iters=${QUICK_ITERS:-10}" "logging.interval=1")

step "corpus from the standard library"
$PYTHON tools/quickstart_assets.py corpus --out "$RUN/corpus" --files "${CORPUS_FILES:-400}"

step "tokenizer: Llama 2-style BPE + Code Llama infilling pieces"
$PYTHON tools/quickstart_assets.py tokenizer --corpus "$RUN/corpus" --out "$RUN/tokenizer/llama2.model"
$PYTHON tools/build_codellama_tokenizer.py --input "$RUN/tokenizer/llama2.model" \
  --output "$RUN/tokenizer/tokenizer.model" --allow-non-llama-base

step "preprocessing into indexed datasets"
for name in code code_nl nl python; do
  $PYTHON tools/preprocess_data.py --input "$RUN/corpus/$name.jsonl" --json-keys text \
    --output-prefix "$RUN/data/$name" --tokenizer-model "$RUN/tokenizer/tokenizer.model" \
    --append-eod --workers 2 --log-interval 100000 2>&1 | tail -n 2
done
$PYTHON tools/quickstart_assets.py dialogs --out "$RUN/corpus/dialogs.jsonl"
mkdir -p "$RUN/data/instruct"
$PYTHON tools/prepare_instruct.py --input "$RUN/corpus/dialogs.jsonl" \
  --tokenizer-model "$RUN/tokenizer/tokenizer.model" --output-prefix "$RUN/data/instruct/dialogs"

step "a tiny Llama 2 in Hugging Face format, imported at TP2 x PP2"
$PYTHON tools/quickstart_assets.py tiny-hf --tokenizer-model "$RUN/tokenizer/llama2.model" --out "$RUN/hf/llama2-tiny"
if [ -n "${ASSETS_ONLY:-}" ]; then  # the inputs of the stages only (the SLURM recipe test imports itself)
  echo "assets in $RUN ($(($(date +%s) - start)) s)"
  exit 0
fi
$PYTHON tools/convert_checkpoint.py hf-to-megacode --input "$RUN/hf/llama2-tiny" \
  --output "$RUN/llama2/checkpoints" --tp 2 --pp 2 --flavor tiny 2>&1 | quiet | tail -n 3

for stage in stage1_code stage2_python stage3_long_context stage4_instruct; do
  step "$stage (4 processes, TP2 x PP2)"
  launch/$stage.sh tiny "${overrides[@]}" 2>&1 | quiet | tee "$RUN/$stage.log" | grep -E "train step|valid|saved|loaded|error" || true
  [ -f "$RUN/$stage/checkpoints/latest_checkpointed_iteration.txt" ] || { echo "$stage failed: see $RUN/$stage.log"; exit 1; }
done

step "export to Hugging Face format"
for stage in stage3_long_context:codellama-tiny stage4_instruct:codellama-tiny-instruct; do
  $PYTHON tools/convert_checkpoint.py megacode-to-hf --input "$RUN/${stage%%:*}/checkpoints" \
    --output "$RUN/hf/${stage##*:}" 2>&1 | quiet | tail -n 1
done

step "infilling with the exported model (transformers)"
$PYTHON tools/quickstart_assets.py infill --model "$RUN/hf/codellama-tiny"

echo
echo "done in $(($(date +%s) - start)) s. Artefacts:"
echo "  corpus           $RUN/corpus/*.jsonl"
echo "  tokenizer        $RUN/tokenizer/tokenizer.model (512 pieces, infilling ids 503-506)"
echo "  datasets         $RUN/data/*_text_document.{bin,idx}, $RUN/data/instruct/dialogs"
echo "  Llama 2 import   $RUN/llama2/checkpoints"
for stage in stage1_code stage2_python stage3_long_context stage4_instruct; do
  echo "  $stage $(printf '%*s' $((20 - ${#stage})) '')$RUN/$stage/checkpoints, TensorBoard $RUN/$stage/tensorboard, log $RUN/$stage.log"
done
echo "  Hugging Face     $RUN/hf/codellama-tiny, $RUN/hf/codellama-tiny-instruct"
echo "  tensorboard --logdir $RUN"
