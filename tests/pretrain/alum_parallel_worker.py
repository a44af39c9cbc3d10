"""Worker of tests/pretrain/test_alum_parallel.py, run by ``deepspeed --num_gpus 2`` (gloo).

Trains the same tiny ALUM run under several layouts one after the other in the same two
processes — TP=2 (fast order), TP=2 with sequence parallel (lean order, ZeRO-2), DP=2
(fast, ZeRO-1), DP=2 (lean, ZeRO-2), PP=2 (the pipeline's lean passes, ZeRO-1) — and
TP=2 with sequence parallel where the ascent gradient of one step is poisoned with NaN on
tensor-parallel rank 1 only (both ranks must skip that term together), and PP=2 where the
last stage's perturbed logits of one micro-batch are NaN (the first stage's δ gradient
becomes NaN: both stages must skip). Runs named ``*_all`` take the KL at every position.
Rank 0 writes each run's losses and ALUM statistics. (The cheaper variants under each
layout: test_alum_variants_layouts.py, through tp_worker.py.)
"""
import json
import sys

import torch

import alum.adversarial as adversarial
from alum.pretrain import Trainer
from alum.pretrain.config import PretrainConfig

RUNS = (  # name, tp, sequence parallel, pp, accumulation, ds_config, order
    ("tp2", 2, False, 1, 2, "zero1", "fast"),
    ("tp2_sp_lean", 2, True, 1, 2, "zero2", "lean"),
    ("dp2", 1, False, 1, 1, "zero1", "fast"),
    ("dp2_lean", 1, False, 1, 1, "zero2", "lean"),
    ("pp2", 1, False, 2, 2, "zero1", "auto"),
    ("tp2_sp_nan", 2, True, 1, 2, "zero1", "fast"),
    ("pp2_nan", 1, False, 2, 2, "zero1", "auto"),
    ("tp2_sp_all", 2, True, 1, 2, "zero1", "fast"),   # KL at every position
    ("pp2_all", 1, False, 2, 2, "zero1", "auto"),
)


def poison_rank1_once():
    """NaN in the ascent gradient on TP rank 1 at its 3rd call (one micro-batch)."""
    from megatron.core import parallel_state as ps

    real = adversarial.ascent_gradient
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        g, adv = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3 and ps.get_tensor_model_parallel_rank() == 1:
            g = g * float("nan")
        return g, adv

    adversarial.ascent_gradient = poisoned
    return lambda: setattr(adversarial, "ascent_gradient", real)


def poison_pipeline_once():
    """NaN in the perturbed logits of the last stage at the 3rd ALUM micro-batch (PP)."""
    import alum.pretrain.pipeline_alum as pipeline_alum

    real = pipeline_alum.PipelineAlumStep._ascent_forward
    calls = {"n": 0}

    def poisoned(self, m, batch, model):
        out, loss_func = real(self, m, batch, model)
        if not self.last:
            return out, loss_func
        calls["n"] += 1
        if calls["n"] != 3:
            return out, loss_func
        return out, lambda logits: loss_func(logits * float("nan"))

    pipeline_alum.PipelineAlumStep._ascent_forward = poisoned
    return lambda: setattr(pipeline_alum.PipelineAlumStep, "_ascent_forward", real)


def main(config_json: str, out_json: str) -> None:
    base = json.load(open(config_json))
    results = {}
    for name, tp, sp, pp, accum, stage, order in RUNS:
        values = json.loads(json.dumps(base))
        values["train"].update(tensor_parallel_size=tp, sequence_parallel=sp,
                               pipeline_parallel_size=pp, grad_accum_steps=accum,
                               ds_config=stage)
        values["alum_order"] = order
        if name.endswith("_all"):
            values["alum_positions"] = "all"
        values["checkpoint"]["output_dir"] += "_" + name
        undo = None
        if name.endswith("_nan"):
            undo = poison_pipeline_once() if pp > 1 else poison_rank1_once()
        try:
            trainer = Trainer(PretrainConfig.from_dict(values))
            summary = trainer.train()
        finally:
            if undo is not None:
                undo()
        results[name] = {"losses": summary.losses, "adv": summary.adv_means,
                         "adv_skipped": summary.adv_skipped, "dp_size": trainer.dp_size,
                         "world": trainer.world, "valid": summary.evals[-1]}
        torch.distributed.barrier()
    if trainer.rank == 0:
        json.dump(results, open(out_json, "w"))


if __name__ == "__main__":
    paths = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    main(paths[0], paths[1])
