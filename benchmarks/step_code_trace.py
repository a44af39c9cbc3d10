"""Which files and lines one ALUM pre-training step runs: the code a newcomer must read.

A tiny ``Trainer`` run (megatron-core BERT, hidden 32, one layer, sequence 32, the sample
corpus) trains four optimizer steps with ALUM on; the third step, from the loop's call of
``MicroBatchSteps.optimizer_step`` to its return, runs under ``sys.settrace``. Every line
it executes in the project's own step code is counted, file by file. Left out, because a
reader of the step does not need them to follow ALUM: the model and its layers
(``alum/models``), the parallel layers and process groups (``alum/parallel``,
``pretrain/tensor_parallel.py``, ``pretrain/model_builder.py``), the kernels
(``kernels/``) and the data pipeline (``alum/data``, ``pretrain/data.py``); the libraries
(torch, deepspeed, megatron-core) are not the project's code. A function's ``def`` line
counts once when the function is called.

    python benchmarks/step_code_trace.py --order fast
    python benchmarks/step_code_trace.py --order lean --show-lines

prints one row per file (lines run in that file), the total, and with ``--show-lines``
the lines themselves. docs/algorithm.md's opening says what each of these files holds.
"""
from __future__ import annotations

import argparse
import linecache
import os
import sys
import tempfile
import warnings
from typing import Dict, List, Set

os.environ.setdefault("OMP_NUM_THREADS", "1")

# The project's step code is everything under these two folders of the repository...
STEP_ROOTS = ("alum", "pretrain")
# ...except the parts a reader follows as black boxes (see the module docstring).
OUTSIDE_THE_STEP = ("alum/models/", "alum/parallel/", "alum/data/", "pretrain/data.py",
                    "pretrain/tensor_parallel.py", "pretrain/model_builder.py")
TRACED_STEP = 3


def repository_root() -> str:
    """The checkout whose ``alum`` package is imported (an editable install)."""
    import alum
    return os.path.dirname(os.path.dirname(os.path.realpath(alum.__file__)))


def step_file(path: str, root: str) -> str:
    """``path`` relative to ``root`` when it is step code, else ''."""
    rel = os.path.relpath(os.path.realpath(path), root).replace(os.sep, "/")
    if rel.split("/")[0] not in STEP_ROOTS or rel.startswith(OUTSIDE_THE_STEP):
        return ""
    return rel


def build_config(workdir: str, order: str):
    """The tiny run: ALUM on from step 1 in ``order`` (``fast`` or ``lean``)."""
    from alum import AlumConfig
    from alum.pretrain.config import (CheckpointConfig, DataConfig, LoggingConfig,
                                      ModelChoice, OptimConfig, PretrainConfig, TrainConfig)
    # No data path: the run prepares the sample corpus into this cache itself.
    cache = os.path.join(workdir, "corpus")
    # A relative ball, K = 1 (the presets' structure), on the masked positions.
    alum = AlumConfig(alpha=10.0, noise_std=1e-3, step_size=0.1, epsilon=0.1, steps=1,
                      norm="l2")
    return PretrainConfig(
        data=DataConfig(cache_dir=cache, seq_length=32),
        model=ModelChoice(hidden_size=32, num_layers=1, dropout=0.0),
        optim=OptimConfig(lr=2e-3, warmup_steps=2, clip_grad=1.0, weight_decay=0.01),
        train=TrainConfig(train_steps=TRACED_STEP + 1, micro_batch_size=4,
                          ds_config="zero1", precision="fp32", eval_interval=0,
                          eval_batches=1, log_interval=1000),
        checkpoint=CheckpointConfig(output_dir=os.path.join(workdir, "run"), resume="never",
                                    save_interval=0),
        logging=LoggingConfig(tensorboard=False, progress_bar=False),
        alum=alum, alum_order=order)


def trace_step(order: str, workdir: str) -> Dict[str, Set[int]]:
    """{file: line numbers} that optimizer step ``TRACED_STEP`` of the tiny run executes."""
    from alum.pretrain import Trainer
    from alum.pretrain.mlm_step import MicroBatchSteps

    root = repository_root()
    lines: Dict[str, Set[int]] = {}

    def tracer(frame, event, arg):
        rel = step_file(frame.f_code.co_filename, root)
        if not rel:
            return None  # nor the lines of this frame

        def local(frame, event, arg):
            if event == "line":
                lines.setdefault(rel, set()).add(frame.f_lineno)
            return local
        lines.setdefault(rel, set()).add(frame.f_code.co_firstlineno)
        return local

    original = MicroBatchSteps.optimizer_step
    calls = [0]

    def traced(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] != TRACED_STEP:
            return original(self, *args, **kwargs)
        sys.settrace(tracer)
        try:
            return original(self, *args, **kwargs)
        finally:
            sys.settrace(None)

    MicroBatchSteps.optimizer_step = traced
    try:
        Trainer(build_config(workdir, order)).train()
    finally:
        MicroBatchSteps.optimizer_step = original
    if calls[0] < TRACED_STEP:
        raise RuntimeError(f"the run made {calls[0]} optimizer steps, fewer than "
                           f"{TRACED_STEP}: nothing traced")
    return lines


def table(lines: Dict[str, Set[int]]) -> List[str]:
    rows = sorted(lines.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    out = ["| file | lines run |", "|---|---|"]
    out += [f"| {name} | {len(ls)} |" for name, ls in rows]
    out.append(f"| **{len(rows)} files** | **{sum(len(ls) for _, ls in rows)}** |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--order", choices=("fast", "lean"), default="fast",
                   help="ALUM's order of passes in the traced step (default: fast)")
    p.add_argument("--show-lines", action="store_true",
                   help="also print every line that ran, file by file")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*Transformer Engine.*")
    with tempfile.TemporaryDirectory() as workdir:
        lines = trace_step(args.order, workdir)
    print(f"\nOne ALUM pre-training step, {args.order} order (step {TRACED_STEP} of a tiny run)")
    print("\n".join(table(lines)))
    if args.show_lines:
        root = repository_root()
        for name in sorted(lines):
            print(f"\n{name}")
            for n in sorted(lines[name]):
                print(f"{n:5d}  {linecache.getline(os.path.join(root, name), n).rstrip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
