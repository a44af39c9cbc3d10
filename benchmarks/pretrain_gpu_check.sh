#!/usr/bin/env bash
# Run on a machine with a CUDA GPU, from a copy of the repository that holds the .whl/ and
# .gpu_carry/ folders made by benchmarks/prepare_gpu_carry.sh (run where the package
# registry is reachable, then copied over). Installs those wheels and alum into /tmp,
# indexes the sample corpus with a 30522-token WordPiece tokenizer, and pre-trains a
# base-size BERT (768/12/12) in bf16 under DeepSpeed ZeRO-1 for STEPS steps, standard MLM
# then ALUM (K=1; preset paper-pretrain, as in docs/pretrain.md's table: ALUM_PRESET=relative
# for alum-pretrain's default: the same passes) from half-way; prints tokens/s, TFLOP/s and MFU.
# COMPILE=true trains with --compile true (compiled encoder layers).
# Then (unless ALUM_COST=0) the ALUM cost table: benchmarks/alum_step_cost.py in bf16 at
# the base size, standard vs fast vs lean vs naive, with this GPU's pass floors.
# Then (unless THROUGHPUT=0) benchmarks/step_throughput.py: tokens/s, MFU and peak memory
# of our standard, ALUM fast and lean steps (eager and compiled) and HF's BertForMaskedLM
# (SDPA), BERT-base and -large at 128 and 512 tokens, bf16, and adv_project against copy
# bandwidth (THROUGHPUT_ARGS adds options, e.g. "--compile on --size large --seq 512").
# PRETRAIN=0 skips the training run (the throughput table alone:
#   PRETRAIN=0 ALUM_COST=0 bash benchmarks/pretrain_gpu_check.sh).
#   SIZE=base SEQ=512 MBS=32 STEPS=300 bash benchmarks/pretrain_gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-base}; SEQ=${SEQ:-512}; MBS=${MBS:-32}; STEPS=${STEPS:-300}
PEAK=${PEAK_TFLOPS:-989}   # dense bf16 of an H100/H200 SXM by the datasheet
OUT=${OUT:-/tmp/alum_gpu_out}
REPO=$(pwd)
if [ -z "${SKIP_INSTALL:-}" ]; then   # SKIP_INSTALL=1: a dry run where alum is installed
  [ -n "${SKIP_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  # alum itself: the layout setup.py installs (folders mapped into the alum namespace),
  # laid out by copying, so no build step depends on the machine's setuptools.
  rm -rf /tmp/alum_site && mkdir -p /tmp/alum_site && cp -r alum /tmp/alum_site/alum
  for folder in finetune tools pretrain kernels; do
    [ -f "$folder/__init__.py" ] && cp -r "$folder" "/tmp/alum_site/alum/$folder"
  done
  cp -r ds_configs /tmp/alum_site/alum/pretrain/ds_configs
  export PYTHONPATH=/tmp/alum_site:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, deepspeed, megatron.core, transformers; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
mkdir -p "$OUT" /tmp/alum_work
# Run from outside the repository: with `python -c` the current directory comes first on
# sys.path, and the repo's own alum/ (without the mapped folders) would shadow the layout.
cd /tmp/alum_work
if [ "${PRETRAIN:-1}" != "0" ]; then
SAMPLE=$(python3 -c "from alum.data.sample import sample_corpus_path; print(sample_corpus_path('wiki'))")
python3 -c "import sys; from alum.tools.preprocess import main; sys.exit(main(sys.argv[1:]))" \
  --input "$SAMPLE" --tokenizer "$REPO/.gpu_carry/tokenizer" --output-prefix /tmp/alum_data/kjv \
  --no-progress
python3 "$REPO/pretrain/run_pretrain.py" --data-path /tmp/alum_data/kjv \
  --tokenizer "$REPO/.gpu_carry/tokenizer" \
  --seq-length "$SEQ" --model-size "$SIZE" --micro-batch-size "$MBS" --train-steps "$STEPS" \
  --warmup-steps 20 --lr 1e-4 --precision bf16 --ds-config zero1 --eval-interval "$STEPS" \
  --eval-batches 2 --log-interval 50 --save-at-end false --progress-bar false \
  --tensorboard false --peak-tflops "$PEAK" --compile "${COMPILE:-false}" \
  --alum-preset "${ALUM_PRESET:-paper-pretrain}" --output-dir "$OUT/run" 2>&1 | \
  tee "$OUT/pretrain.log" | grep -v -E "^\[|Warning|warn" | tail -40
fi
if [ "${ALUM_COST:-1}" != "0" ]; then
  echo "== ALUM step cost: bf16, $SIZE, batch 8 x 128, then $MBS x $SEQ"
  python3 "$REPO/benchmarks/alum_step_cost.py" --device cuda --dtype bf16 --size "$SIZE" \
    --check --floors --json "$OUT/alum_cost_b8s128.json" 2>&1 | grep -v -E "Warning|warn" | tail -30
  python3 "$REPO/benchmarks/alum_step_cost.py" --device cuda --dtype bf16 --size "$SIZE" \
    --seq "$SEQ" --batch "$MBS" --repeats 10 --floors --json "$OUT/alum_cost_pretrain.json" \
    2>&1 | grep -v -E "Warning|warn" | tail -30
fi
if [ "${THROUGHPUT:-1}" != "0" ]; then
  echo "== step throughput: ours (eager, compiled) vs HF BertForMaskedLM (SDPA), bf16; adv_project"
  # shellcheck disable=SC2086
  python3 "$REPO/benchmarks/step_throughput.py" --device cuda --dtype bf16 \
    --peak-tflops "$PEAK" --json "$OUT/step_throughput.json" ${THROUGHPUT_ARGS:-} 2>&1 | \
    tee "$OUT/step_throughput.log" | grep -v -E "Warning|warn" | tail -60
fi
