#!/usr/bin/env bash
# One prepared check of ALUM's fused kernels on a CUDA machine, a few minutes:
#   1. environment (CUDA torch, nvcc, ninja, triton; installs alum editable, no deps, if needed)
#   2. builds the adv_project CUDA extension just in time (alum-kernels --check --strict)
#   3. runs the GPU tests:  pytest -m gpu tests/kernels
#   4. runs benchmarks/kernels_bench.py and prints its table LAST, with PASS/MISS lines
#      against the targets of docs/kernels.md.
# Usage (repository root, on an H100/H200):
#   bash benchmarks/kernels_gpu_check.sh            # full run (torch.compile baselines too)
#   QUICK=1 bash benchmarks/kernels_gpu_check.sh    # no torch.compile baselines (faster)
# Results are also written under ${OUT:-/tmp/alum_kernels_gpu} (build log, pytest log,
# benchmark JSON/text). It installs nothing from the network: the machine has no access;
# a CUDA build of torch (with triton), nvcc, ninja and pytest must already be there.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-/tmp/alum_kernels_gpu}"
mkdir -p "$OUT_DIR"
export OMP_NUM_THREADS=1 MAX_JOBS="${MAX_JOBS:-16}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
status=0
PY=${PYTHON:-python3}   # the GPU image has python3 (with torch), not always `python`

echo "== 1. environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'PY' || { echo "FATAL: needs a CUDA build of torch with a visible GPU"; exit 2; }
import shutil, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
print("nvcc", shutil.which("nvcc"), "ninja", shutil.which("ninja"))
try:
    import triton; print("triton", triton.__version__)
except Exception as exc:
    print("triton missing:", exc)
assert torch.version.cuda is not None and torch.cuda.is_available()
PY
if ! "$PY" -c "import alum.kernels" 2>/dev/null; then
  # No install (an editable install needs the network for its build backend there):
  # run from a copy of this checkout with the mapped folders linked into alum/.
  echo "alum.kernels not importable: running from a copy with finetune/ tools/ pretrain/ kernels/python/ linked into alum/"
  rm -rf /tmp/alum_gpu_repo && cp -r . /tmp/alum_gpu_repo && cd /tmp/alum_gpu_repo
  for f in finetune tools pretrain; do
    [ -f "$f/__init__.py" ] && ln -sfn "../$f" "alum/$f"
  done
  ln -sfn ../kernels/python alum/kernels   # its CUDA sources: kernels/csrc/ beside it
  ln -sfn ../ds_configs pretrain/ds_configs
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c "import alum.kernels" || { echo "FATAL: alum.kernels still not importable"; exit 2; }
fi

echo "== 2. build the CUDA extension (JIT, cached under ~/.cache/torch_extensions)"
start=$(date +%s)
if ALUM_KERNELS_VERBOSE=1 timeout 420 "$PY" -m alum.kernels --check --strict 2>&1 | tee "$OUT_DIR/build.log"; then
  echo "build+load: $(( $(date +%s) - start )) s"
else
  echo "WARNING: a kernel path is not active (see above); the tests will say which"; status=1
fi

echo "== 3. GPU tests"
timeout 360 "$PY" -m pytest -q -m gpu tests/kernels -p no:cacheprovider -rs 2>&1 \
  | tee "$OUT_DIR/pytest_gpu.log" | tail -40
test_rc=${PIPESTATUS[0]}
[ "$test_rc" -eq 0 ] || status=1

echo "== 4. benchmark"
bench_args=(--json "$OUT_DIR/kernels_bench.json")
[ "${QUICK:-0}" = "1" ] && bench_args+=(--no-compile)
timeout 420 "$PY" benchmarks/kernels_bench.py "${bench_args[@]}" >"$OUT_DIR/kernels_bench.txt" 2>"$OUT_DIR/kernels_bench.err"
bench_rc=$?
[ "$bench_rc" -eq 0 ] || { status=1; tail -20 "$OUT_DIR/kernels_bench.err"; }

echo
echo "== summary (GPU tests: $(tail -1 "$OUT_DIR/pytest_gpu.log"))"
cat "$OUT_DIR/kernels_bench.txt"
exit $status
