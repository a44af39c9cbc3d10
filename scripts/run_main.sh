#!/usr/bin/env bash
# The main job: sets up the environment, then runs the default ALUM demonstration on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec alum-finetune-demo "$@"
