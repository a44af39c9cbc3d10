"""Worker of the tensor/pipeline-parallel launches (tests/pretrain/test_tensor_parallel.py,
test_alum_variants_layouts.py).

Run by ``deepspeed --num_gpus N`` (gloo on CPU) with a base config and a plan: a list
of runs, each a name and overrides of config sections (``{"train": {...},
"checkpoint": {...}}``; a field that is not a section, such as ``alum_order``, is
replaced), trained one after the other in the same N processes (a launch costs seconds).
A run with ``"attention_dropout": 0.0`` keeps the run's dropout on the hidden
activations only (see ``hidden_dropout_only``). A run with ``"consolidate": true`` is
then put together with ``alum.pretrain.consolidate`` from its last checkpoint: every
rank checks that the consolidated tensors hold its own live parameters exactly (its
layers at their global indices, its TP shard at its slice), and rank 0 saves the state
dict as ``<out_dir>/<name>.pt`` for the test to compare with the single-rank run. Rank 0
writes each run's losses, final validation, layout and ALUM statistics as
``<out_dir>/results.json``.
"""
import json
import os
import sys
import traceback
from contextlib import contextmanager

import torch
import torch.distributed as dist

from alum.pretrain import Trainer
from alum.pretrain.config import PretrainConfig


def _merge(base: dict, overrides: dict) -> dict:
    values = json.loads(json.dumps(base))
    for section, fields in overrides.items():
        if isinstance(fields, dict) and isinstance(values.get(section), dict):
            values[section].update(fields)
        else:
            values[section] = fields
    return values


@contextmanager
def hidden_dropout_only():
    """Runs built inside have no attention dropout (their hidden dropout is
    ``ModelChoice.dropout``). Without sequence parallelism the hidden activations are
    whole on every TP rank and their dropout draws from the default generator, seeded
    alike on every layout, so TP=2 draws TP=1's masks; the attention probabilities are
    split by heads, and their dropout draws from a per-rank stream."""
    import alum.pretrain.model_builder as builder

    real = builder.megatron_model_config

    def without_attention_dropout(*args, **kwargs):
        return real(*args, **kwargs).replace(attention_dropout=0.0)

    builder.megatron_model_config = without_attention_dropout
    try:
        yield
    finally:
        builder.megatron_model_config = real


def _check_consolidated(trainer: Trainer, state: dict) -> None:
    """This rank's live parameters are where the consolidated dict says (exactly)."""
    from megatron.core import parallel_state as ps

    from alum.parallel.pipeline import model_chunks

    tp_rank = ps.get_tensor_model_parallel_rank()
    for chunk in model_chunks(trainer.engine.module):
        offset = chunk.layer_range[0]
        for name, p in chunk.named_parameters():
            if name.startswith("output_word_embeddings."):  # the tied weight's copy
                target = name.replace("output_word_embeddings.", "embeddings.word_embeddings.")
            elif name.startswith("layers."):
                index = int(name.split(".")[1])
                target = name.replace(f"layers.{index}.", f"layers.{index + offset}.", 1)
            else:
                target = name
            full = state[target]
            if getattr(p, "tensor_model_parallel", False):
                size = p.shape[p.partition_dim]
                full = full.narrow(p.partition_dim, tp_rank * size, size)
            torch.testing.assert_close(full, p.detach().float(), rtol=0, atol=0,
                                       msg=lambda m: f"{name} -> {target}: {m}")


def main(config_json: str, plan_json: str, out_dir: str) -> None:
    from alum.pretrain.consolidate import consolidated_state_dict

    base = json.load(open(config_json))
    results = {}
    for run in json.load(open(plan_json)):
        cfg = PretrainConfig.from_dict(_merge(base, run["overrides"]))
        if run.get("attention_dropout") == 0.0:
            with hidden_dropout_only():
                trainer = Trainer(cfg)
        else:
            trainer = Trainer(cfg)
        summary = trainer.train()
        result = {"losses": summary.losses, "valid": summary.evals[-1],
                  "start_step": summary.start_step, "dp_size": trainer.dp_size,
                  "world": trainer.world, "alum_steps": summary.alum_steps,
                  "adv_loss": summary.adv_means.get("adv_loss"), "adv": summary.adv_means,
                  "adv_skipped": summary.adv_skipped}
        if run.get("consolidate"):
            try:
                ckpt = os.path.join(trainer.cfg.checkpoint.output_dir, "checkpoints")
                state = consolidated_state_dict(ckpt)
                _check_consolidated(trainer, state)
                status = "ok"
                if trainer.rank == 0:
                    torch.save(state, os.path.join(out_dir, run["name"] + ".pt"))
            except Exception:  # reported per rank; the other runs still go on
                status = traceback.format_exc()
            verdicts = [None] * trainer.world
            dist.all_gather_object(verdicts, status)
            bad = [f"rank {r}: {v}" for r, v in enumerate(verdicts) if v != "ok"]
            result["consolidated"] = "ok" if not bad else "\n".join(bad)
        results[run["name"]] = result
    if trainer.rank == 0:
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    paths = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    main(paths[0], paths[1], paths[2])
