#!/usr/bin/env bash
# The main job: sets up the environment, then runs `alum-pretrain` with no arguments:
# ALUM pre-training of a tiny BERT on the embedded sample corpus, on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec alum-pretrain "$@"
