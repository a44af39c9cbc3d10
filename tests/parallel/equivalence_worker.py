"""Worker of the 2-process equivalence launch (tests/parallel/test_equivalence.py).

One launch runs every check, since each launch costs seconds: the TP=1/PP=1
reference, then TP=2, TP=2 with sequence parallel, PP=2 (1F1B) and PP=2
interleaved, each re-initialising megatron's groups over the same two processes.
Rank 0 writes ``{check: "ok" | error text}`` as JSON.
"""
from __future__ import annotations

import json
import os
import traceback
from typing import Callable, Dict, List

import torch
import torch.distributed as dist

TOL = dict(rtol=1e-5, atol=1e-5)
MICRO_BATCHES, BATCH, SEQ = 2, 2, 16


def _config():
    from alum.models import ModelConfig

    # 4 layers so that PP=2 interleaved (2 chunks per stage) has one layer a chunk;
    # vocab 1000 pads to 1024 for TP=1 and TP=2 alike.
    return ModelConfig.named("tiny", "bert", vocab_size=1000, num_layers=4,
                             hidden_dropout=0.0, attention_dropout=0.0)


def _batches(cfg) -> List[Dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(42)
    out = []
    for _ in range(MICRO_BATCHES):
        ids = torch.randint(1, cfg.vocab_size, (BATCH, SEQ), generator=g)
        mask = torch.ones(BATCH, SEQ, dtype=torch.long)
        mask[1, 11:] = 0
        ids[mask == 0] = 0
        types = torch.zeros_like(ids)
        types[:, SEQ // 2:] = 1
        labels = torch.full_like(ids, -100)
        pick = torch.rand(BATCH, SEQ, generator=g) < 0.3
        pick &= mask.bool()
        pick[0, 0] = True
        labels[pick] = ids[pick]
        out.append(dict(input_ids=ids, attention_mask=mask, token_type_ids=types,
                        labels=labels))
    return out


def _train_pass(model, batches):
    """Loss averaged over micro-batches (as megatron's schedules do), backward; logits."""
    losses, logits = [], []
    for mb in batches:
        out = model(mb["input_ids"], mb["attention_mask"], token_type_ids=mb["token_type_ids"])
        loss = model.mlm_loss(out, mb["labels"]) / len(batches)
        loss.backward()
        losses.append(loss.detach() * len(batches))
        logits.append(out.detach())
    return torch.stack(losses).mean(), logits


def _full_grads(model) -> Dict[str, torch.Tensor]:
    """Each parameter's gradient, gathered over the TP group where it is split."""
    from megatron.core import parallel_state as ps

    group, tp = ps.get_tensor_model_parallel_group(), ps.get_tensor_model_parallel_world_size()
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad
        if tp > 1 and getattr(p, "tensor_model_parallel", False):
            parts = [torch.empty_like(g) for _ in range(tp)]
            dist.all_gather(parts, g.contiguous(), group=group)
            g = torch.cat(parts, dim=p.partition_dim)
        grads[name] = g.clone()
    return grads


def _gather_vocab(logits: torch.Tensor) -> torch.Tensor:
    from megatron.core import parallel_state as ps

    tp = ps.get_tensor_model_parallel_world_size()
    if tp == 1:
        return logits
    parts = [torch.empty_like(logits) for _ in range(tp)]
    dist.all_gather(parts, logits.contiguous(), group=ps.get_tensor_model_parallel_group())
    return torch.cat(parts, dim=-1)


def _compare_grads(grads, ref, rename: Callable[[str], str] = lambda n: n):
    assert grads, "no gradients"
    for name, g in grads.items():
        torch.testing.assert_close(g, ref[rename(name)], msg=lambda m: f"{name}: {m}", **TOL)


def _reference(cfg, batches):
    from alum.parallel import ParallelConfig, build_model, initialize_parallel

    # A short collective timeout: a check failing on one rank must not hang the other.
    initialize_parallel(tp=1, pp=1, seed=7, timeout_minutes=1.0)
    model, = build_model(cfg, ParallelConfig())
    loss, logits = _train_pass(model, batches)
    return dict(loss=loss, logits=logits, grads=_full_grads(model))


def _check_tp(cfg, batches, ref, sequence_parallel: bool):
    from alum.parallel import (ParallelConfig, build_model, finalize_model_parallel_grads,
                               initialize_parallel)

    initialize_parallel(tp=2, pp=1, seed=7)
    model, = build_model(cfg, ParallelConfig(tensor_parallel_size=2,
                                             sequence_parallel=sequence_parallel))
    loss, logits = _train_pass(model, batches)
    finalize_model_parallel_grads(model)
    torch.testing.assert_close(loss, ref["loss"], **TOL)
    for mine, theirs in zip(logits, ref["logits"]):
        torch.testing.assert_close(_gather_vocab(mine), theirs, **TOL)
    _compare_grads(_full_grads(model), ref["grads"])
    if sequence_parallel:
        marked = [n for n, p in model.named_parameters() if getattr(p, "sequence_parallel", 0)]
        assert "embeddings.layer_norm.weight" in marked and "head.dense.weight" in marked


def _check_tp_state_and_rng():
    """The mpu adapter, per-rank tracker streams and broadcast_data under TP=2."""
    from megatron.core import tensor_parallel

    from alum.parallel import initialize_parallel, mpu

    initialize_parallel(tp=2, pp=1, seed=7)
    assert mpu.get_tensor_model_parallel_world_size() == 2
    assert mpu.get_model_parallel_world_size() == 2
    assert mpu.get_data_parallel_world_size() == 1
    assert mpu.get_pipe_parallel_world_size() == 1
    assert mpu.get_model_parallel_rank() == dist.get_rank()
    default = torch.rand(4)
    with tensor_parallel.get_cuda_rng_tracker().fork():
        forked = torch.rand(4)
    both = [torch.empty(8) for _ in range(2)]
    dist.all_gather(both, torch.cat([default, forked]))
    assert torch.equal(both[0][:4], both[1][:4]), "default stream must agree across TP"
    assert not torch.equal(both[0][4:], both[1][4:]), "tracker streams must differ across TP"
    data = {"ids": torch.arange(6).view(2, 3)} if dist.get_rank() == 0 else None
    got = tensor_parallel.broadcast_data(["ids"], data, torch.int64)
    assert torch.equal(got["ids"], torch.arange(6).view(2, 3))


def _check_pp(cfg, batches, ref, virtual: int = 1):
    from megatron.core import parallel_state as ps

    from alum.parallel import (ParallelConfig, build_model, finalize_model_parallel_grads,
                               initialize_parallel)
    from alum.parallel.pipeline import run_schedule

    initialize_parallel(tp=1, pp=2, seed=7, virtual_pp=virtual if virtual > 1 else None)
    parallel = ParallelConfig(pipeline_parallel_size=2,
                              virtual_pipeline_size=virtual if virtual > 1 else None)
    chunks = build_model(cfg, parallel)
    data = [iter(batches) for _ in chunks] if virtual > 1 else iter(batches)
    out = run_schedule(chunks, parallel, model=cfg, data_iterator=data,
                       num_microbatches=MICRO_BATCHES, seq_length=SEQ,
                       micro_batch_size=BATCH)
    for chunk in chunks:
        finalize_model_parallel_grads(chunk)
    if ps.is_pipeline_last_stage(ignore_virtual=True):
        loss = torch.stack([d["mlm_loss"] for d in out]).mean()
        torch.testing.assert_close(loss, ref["loss"], **TOL)
    for chunk in chunks:
        offset = chunk.layer_range[0]

        def rename(name: str) -> str:
            if name.startswith("layers."):
                i = int(name.split(".")[1])
                return name.replace(f"layers.{i}.", f"layers.{i + offset}.", 1)
            return name.replace("output_word_embeddings.", "embeddings.word_embeddings.")

        _compare_grads(_full_grads(chunk), ref["grads"], rename)


def run(rank: int, world: int, port: int, out_path: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import warnings

    warnings.filterwarnings("ignore")
    from alum.parallel import destroy_parallel

    cfg = _config()
    batches = _batches(cfg)
    results: Dict[str, str] = {}
    ref = _reference(cfg, batches)
    destroy_parallel(destroy_process_group=False)
    checks = {
        "tp2": lambda: _check_tp(cfg, batches, ref, sequence_parallel=False),
        "tp2_sequence_parallel": lambda: _check_tp(cfg, batches, ref, sequence_parallel=True),
        "tp2_state_and_rng": _check_tp_state_and_rng,
        "pp2": lambda: _check_pp(cfg, batches, ref),
        "pp2_interleaved": lambda: _check_pp(cfg, batches, ref, virtual=2),
    }
    for name, check in checks.items():
        if os.environ.get("ALUM_TEST_VERBOSE"):
            print(f"[rank {rank}] {name}", flush=True)
        try:
            check()
            status = "ok"
        except Exception:  # reported per check; the other checks still run
            status = traceback.format_exc()
        finally:
            destroy_parallel(destroy_process_group=False)
        # Every rank's verdict matters: gather them on rank 0.
        verdicts = [None] * world
        dist.all_gather_object(verdicts, status)
        bad = [f"rank {r}: {v}" for r, v in enumerate(verdicts) if v != "ok"]
        results[name] = "ok" if not bad else "\n".join(bad)
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()
