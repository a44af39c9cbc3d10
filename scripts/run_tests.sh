#!/usr/bin/env bash
# The test suite: sets up the environment, then runs pytest (pass -m "not slow" for the
# fast set). Exits non-zero if no test ran (pytest's exit code 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export TOKENIZERS_PARALLELISM=false
exec python3 -m pytest -q "$@" tests
