"""Worker of tests/tools/convert/test_distributed.py: four gloo processes, one launch.

``deepspeed --num_gpus 4 dist_worker.py OUT CACHE`` runs, one after the other:

1. ``tp2pp2_<family>`` (BERT and RoBERTa): the tiny model built at TP=2 x PP=2
   (``alum.parallel.build_model``), every weight perturbed (replicated ones equally on
   the TP ranks, split ones independently), saved by DeepSpeed (ZeRO-1, fp32) through
   the loop's ``CheckpointManager``; the logits of the distributed model (stage 0 ->
   p2p -> stage 1, vocabulary shards gathered) on ``OUT/batch_<family>.pt``;
   each rank checks that DeepSpeed's ``mp_rank`` is ``sharding.mp_rank(tp, pp)``;
2. rank 0: ``alum-convert reshape`` of the BERT one to TP=1 x PP=1, then to TP=2 x PP=1;
3. ``tp2pp1``: that last checkpoint loaded at TP=2 (DP=2) by the loop's ``--init-from``
   loader (``model_builder.load_init_weights``), its logits;
4. ``zero3_tp2``: the real training loop (``Trainer``) at TP=2, ZeRO-3, DP=2, a few steps,
   then the logits of the trained engine on a validation batch;
5. ``tp2pp2v2``: the real loop at TP=2 x PP=2 with the interleaved schedule (two chunks
   per stage, ZeRO-1); rank 0 exports it with to-hf and computes the HF model's MLM loss
   on the loop's validation batches.

Rank 0 writes ``OUT/results.json`` and the logits as ``OUT/<name>_logits.pt``.
"""
import json
import os
import sys
import zlib

import torch
import torch.distributed as dist

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, ROOT)   # the tests package (tiny_config, the shared batch)

VOCAB = 1030


def perturb(model, tp_rank: int, pp_rank: int) -> None:
    """Replicated parameters: the same noise on every TP rank; split ones: their own."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            split = getattr(p, "tensor_model_parallel", False)
            key = "shared" if getattr(p, "shared_embedding", False) else f"{pp_rank}.{name}"
            seed = zlib.crc32(key.encode()) + (1000 * tp_rank if split else 0)
            g = torch.Generator().manual_seed(seed)
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def gather_vocab(logits: torch.Tensor) -> torch.Tensor:
    from megatron.core import parallel_state as ps

    group = ps.get_tensor_model_parallel_group()
    parts = [torch.empty_like(logits) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, logits.contiguous(), group=group)
    return torch.cat(parts, dim=-1)


def pipeline_logits(model, ids, mask, types) -> torch.Tensor:
    """Full-vocabulary logits on the last stage (None elsewhere), two stages."""
    from megatron.core import parallel_state as ps

    with torch.no_grad():
        if ps.is_pipeline_first_stage():
            hidden = model(ids, mask, types)
            dist.send(hidden.contiguous(), ps.get_pipeline_model_parallel_next_rank())
            return None
        hidden = torch.empty(ids.shape[1], ids.shape[0], model.config.hidden_size)
        dist.recv(hidden, ps.get_pipeline_model_parallel_prev_rank())
        model.set_input_tensor(hidden)
        return gather_vocab(model(None, mask))


def ds_engine(model):
    import deepspeed

    from alum.parallel import mpu

    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
              "zero_optimization": {"stage": 1}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                      config=config, mpu=mpu)
    return engine


def family_batch(family: str):
    from tests.tools.convert.conftest import batch

    return batch(family, VOCAB)


def tp2pp2(out: str, family: str, results: dict) -> None:
    from megatron.core import parallel_state as ps

    from alum.models import ModelConfig
    from alum.parallel import ParallelConfig, build_model, destroy_parallel, initialize_parallel
    from alum.parallel import mpu
    from alum.pretrain.checkpoint import CheckpointManager
    from alum.tools.convert.sharding import mp_rank

    initialize_parallel(2, 2, seed=11)
    tp_rank, pp_rank = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    cfg = ModelConfig.named("tiny", family, vocab_size=VOCAB, hidden_dropout=0.0,
                            attention_dropout=0.0, max_position_embeddings=40)
    (model,) = build_model(cfg, ParallelConfig(tensor_parallel_size=2, pipeline_parallel_size=2))
    perturb(model, tp_rank, pp_rank)
    model.eval()
    ok = mpu.get_model_parallel_rank() == mp_rank(tp_rank, pp_rank, 2)
    flags = [None] * dist.get_world_size()
    dist.all_gather_object(flags, ok)
    results[f"mp_rank_formula_{family}"] = all(flags)
    run = os.path.join(out, f"tp2pp2_{family}")
    engine = ds_engine(model)
    CheckpointManager(os.path.join(run, "checkpoints")).save(engine, 0, {"step": 0})
    if dist.get_rank() == 0:
        with open(os.path.join(run, "config.json"), "w") as f:
            json.dump({"model_config": cfg.to_dict()}, f)
    ids, mask, types = family_batch(family)
    logits = pipeline_logits(model, ids, mask, types)
    if logits is not None and tp_rank == 0 and ps.get_data_parallel_rank() == 0:
        torch.save(logits[..., :VOCAB], os.path.join(out, f"tp2pp2_{family}_logits.pt"))
    dist.barrier()
    destroy_parallel(destroy_process_group=False)


def reshapes(out: str) -> None:
    from alum.tools.convert.reshape import reshape

    if dist.get_rank() == 0:
        reshape(os.path.join(out, "tp2pp2_bert"), os.path.join(out, "tp1pp1"), tp=1, pp=1)
        reshape(os.path.join(out, "tp1pp1"), os.path.join(out, "tp2pp1"), tp=2, pp=1)
    dist.barrier()


def tp2pp1(out: str) -> None:
    from alum.parallel import ParallelConfig, build_model, destroy_parallel, initialize_parallel
    from alum.pretrain.model_builder import load_init_weights
    from alum.tools.convert.our_checkpoint import OurCheckpoint

    initialize_parallel(2, 1, seed=11)
    ckpt = OurCheckpoint.open(os.path.join(out, "tp2pp1"))
    (model,) = build_model(ckpt.model_config, ParallelConfig(tensor_parallel_size=2))
    load_init_weights(model, ckpt)
    model.eval()
    ids, mask, types = family_batch("bert")
    with torch.no_grad():
        logits = gather_vocab(model(ids, mask, types))
    if dist.get_rank() == 0:
        torch.save(logits[..., :VOCAB], os.path.join(out, "tp2pp1_logits.pt"))
    dist.barrier()
    destroy_parallel(destroy_process_group=False)


def zero3_tp2(out: str, cache: str, results: dict) -> None:
    from alum.pretrain import Trainer
    from alum.pretrain.data import valid_batches
    from tests.pretrain.conftest import tiny_config

    cfg = tiny_config(os.path.join(out, "zero3_tp2"), cache, steps=2, layers=2, hidden=64,
                      ds_config="zero3", tensor_parallel_size=2)
    trainer = Trainer(cfg)
    trainer.train()
    batch = next(iter(valid_batches(trainer.data.valid, 4, 1, 0, 1)))
    module = trainer.engine.module
    module.eval()
    with torch.no_grad():
        logits = gather_vocab(module(batch["input_ids"], batch["attention_mask"]))
    results["zero3_tp2"] = {"dp_size": trainer.dp_size,
                            "vocab": len(trainer.data.tokenizer)}
    if dist.get_rank() == 0:
        torch.save({"logits": logits[..., :len(trainer.data.tokenizer)], "batch": batch},
                   os.path.join(out, "zero3_tp2_logits.pt"))


def interleaved(out: str, cache: str, results: dict) -> None:
    """The loop at TP=2 x PP=2 with two chunks per stage; its export's validation loss."""
    import torch.nn.functional as F
    from transformers import AutoModelForMaskedLM

    from alum.pretrain import Trainer
    from alum.pretrain.data import valid_batches
    from alum.tools.convert.to_hf import to_hf
    from tests.pretrain.conftest import tiny_config

    run = os.path.join(out, "tp2pp2v2")
    cfg = tiny_config(run, cache, steps=2, layers=4, hidden=64, grad_accum=2,
                      tensor_parallel_size=2, pipeline_parallel_size=2,
                      virtual_pipeline_size=2)
    trainer = Trainer(cfg)
    summary = trainer.train()
    if dist.get_rank() == 0:
        to_hf(run, os.path.join(out, "tp2pp2v2_hf"))
        hf = AutoModelForMaskedLM.from_pretrained(os.path.join(out, "tp2pp2v2_hf")).eval()
        loss_sum = count = 0.0
        for batch in valid_batches(trainer.data.valid, cfg.train.micro_batch_size,
                                   cfg.train.eval_batches, 0, 1):
            with torch.no_grad():
                logits = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            token_type_ids=batch.get("token_type_ids")).logits
            sel = batch["labels"].ne(-100)
            n = float(sel.sum())
            loss_sum += float(F.cross_entropy(logits[sel].float(), batch["labels"][sel])) * n
            count += n
        results["interleaved"] = {"loop_valid_loss": summary.evals[-1]["loss"],
                                  "hf_valid_loss": loss_sum / count, "dp_size": trainer.dp_size}
    dist.barrier()


def main(out: str, cache: str) -> None:
    from alum.parallel import skip_shm_comm_build

    skip_shm_comm_build()
    results: dict = {}
    for family in ("bert", "roberta"):
        tp2pp2(out, family, results)
    reshapes(out)
    tp2pp1(out)
    zero3_tp2(out, cache, results)
    interleaved(out, cache, results)
    if dist.get_rank() == 0:
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    main(args[0], args[1])
