"""This machine's own time floors for ALUM's two orders, from the cost of each kind of pass.

The cost model (docs/algorithm.md, "Cost model") counts a forward as F, a backward as 2F and the ascent's
δ-only backward as F: a standard step is 3F, the fast order 8F (≈ 2.67×) and the lean
order 9F (3.0×). On a real machine the passes do not keep those proportions: on CPU a
backward costs less than 2F (its elementwise work is cheaper than its matmuls suggest) and
a forward without a graph saves nothing, so the lean order's extra forward passes weigh
more. ``alum_step_cost.py --floors`` measures, on its own model and batch and in the same
process (interleaved rounds, medians), with K = 1:

  F          a forward with a graph, the head at the predicted rows, MLM loss
  B          its backward (weight and input gradients)
  F_frozen   the ascent's forward: parameters frozen, the embedding output a leaf
  B_in       its backward, to that leaf only
  F_nograd   a forward under ``torch.no_grad`` (the lean order's pass 1)

and the floors the two orders would reach if they did nothing but these passes:

  fast  (2F + F_frozen + B_in + 2B) / (F + B)      clean, ascent, perturbed; one backward
                                                    through both graphs (2B)
  lean  (F_nograd + F_frozen + B_in + 2(F + B)) / (F + B)

What a step measures above its floor is ALUM's own work: the divergences, the δ update
and the statistics.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch

PASSES = ("F", "B", "F_frozen", "B_in", "F_nograd")


def _clock(device: str, clock: str) -> Callable[[], float]:
    def now() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.process_time() if clock == "cpu" else time.perf_counter()
    return now


def measure_passes(model, batch: Dict[str, torch.Tensor], device: str, clock: str,
                   repeats: int) -> Dict[str, float]:
    """Median seconds of each pass over ``repeats`` rounds (after one warm-up round)."""
    from alum.adversarial import frozen_parameters

    rows = batch["labels"].ne(-100)
    labels = batch["labels"][rows]
    now = _clock(device, clock)

    def forward(leaf: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        embeds = model.embed(batch["input_ids"], batch.get("token_type_ids"))
        if leaf:
            embeds = embeds.detach().requires_grad_(True)
        logits = model.forward_from_embeddings(embeds, batch["attention_mask"], rows)
        return embeds, model.mlm_loss(logits, labels)

    def one_round() -> Dict[str, float]:
        out = {}
        model.zero_grad(set_to_none=True)
        t0 = now()
        _, loss = forward(False)
        t1 = now()
        loss.backward()
        t2 = now()
        out["F"], out["B"] = t1 - t0, t2 - t1
        with frozen_parameters(model):
            t0 = now()
            leaf, loss = forward(True)
            t1 = now()
            torch.autograd.grad(loss, leaf)
            t2 = now()
        out["F_frozen"], out["B_in"] = t1 - t0, t2 - t1
        with torch.no_grad():
            t0 = now()
            forward(False)
            out["F_nograd"] = now() - t0
        return out

    one_round()
    rounds: List[Dict[str, float]] = [one_round() for _ in range(max(repeats, 1))]
    model.zero_grad(set_to_none=True)
    return {k: statistics.median(r[k] for r in rounds) for k in PASSES}


def floors(p: Dict[str, float]) -> Dict[str, float]:
    """The two orders' floors as multiples of a standard step (F + B)."""
    standard = p["F"] + p["B"]
    return {"fast": (2 * p["F"] + p["F_frozen"] + p["B_in"] + 2 * p["B"]) / standard,
            "lean": (p["F_nograd"] + p["F_frozen"] + p["B_in"] + 2 * standard) / standard}


def print_floors(p: Dict[str, float]) -> Dict[str, float]:
    f = floors(p)
    print("\nthis machine's floors (benchmarks/pass_floors.py; medians, ms):")
    print("| pass | ms | × F | cost model |")
    print("|---|---|---|---|")
    model_ratio = {"F": "1", "B": "2", "F_frozen": "1", "B_in": "1", "F_nograd": "1"}
    for k in PASSES:
        print(f"| {k} | {p[k] * 1e3:.0f} | {p[k] / p['F']:.2f} | {model_ratio[k]} |")
    print(f"floors: fast {f['fast']:.2f}× (cost model 2.67×), "
          f"lean {f['lean']:.2f}× (cost model 3.00×)")
    return f
