"""Throughput of one training step: tokens/s, MFU and peak memory, ours against HF's model.

For each model size and sequence length (default BERT-base and BERT-large, 128 and 512
tokens, bf16 on CUDA), on one synthetic batch of ``--tokens`` tokens without padding
(packed pre-training sequences, 15% predicted), in one process:

  standard        our standard MLM step (alum.models.BertMLM as alum-pretrain builds it,
                  forward + backward; the step benchmarks/alum_step_cost.py times)
  fast, lean      our ALUM steps, both orders (paper-pretrain preset, K = 1), as
                  alum_step_cost.py builds them
  ... +compile    the same three with the encoder layers compiled (alum.pretrain.compile,
                  what ``--compile true`` does in training)
  hf-sdpa         transformers' BertForMaskedLM with attn_implementation="sdpa" on the
                  same shapes, weights and dtype: forward with labels, backward

then (``--adv-project``, on by default on CUDA) benchmarks/kernels_bench.py's adv_project
table against this device's copy bandwidth.

Each step runs from zeroed, allocated gradient buffers (a training loop's resting state);
no optimizer step. Time: the median of ``--steps`` timed steps after ``--warmup`` untimed
ones (compilation happens in the warm-up). MFU: model FLOPs (alum.pretrain.flops: the head
at the rows it runs on, i.e. the predicted ones for our model and every position for HF's,
which computes full logits; backward 2F; ALUM (6 + 2K)F, the lean order's extra forward
not counted) per second over the device's dense bf16 peak (``--peak-tflops`` or
alum.pretrain.flops.PEAK_TFLOPS). Peak memory: the step's allocator peak above its
resting state (alum_step_cost.peak_memory). Targets (printed PASS/MISS on CUDA only):
standard step MFU >= 40% for BERT-large at 512 tokens; the standard step faster than
hf-sdpa at every shape; an ALUM step <= 2.7x the standard step (same compile mode);
adv_project >= 80% of copy bandwidth (kernels_bench's own verdict lines).

    python benchmarks/step_throughput.py                                   # CUDA, the full table
    python benchmarks/step_throughput.py --device cpu --size tiny --steps 2   # smoke run
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alum_step_cost as cost  # noqa: E402

MFU_TARGET = 0.40           # standard step, BERT-large, seq 512
ALUM_TIME_TARGET = 2.7      # an ALUM step over the standard step
OUR_VARIANTS = ("standard", "fast", "lean")


@dataclass
class Row:
    size: str
    seq: int
    batch: int
    variant: str
    ms: float
    tokens_per_s: float
    tflops: float
    mfu: Optional[float]
    peak_mb: float
    x_standard: Optional[float] = None


def cost_args(args, size: str, seq: int) -> argparse.Namespace:
    """alum_step_cost's own arguments for this shape (its defaults for the rest)."""
    batch = max(1, args.tokens // seq)
    argv = ["--size", size, "--seq", str(seq), "--batch", str(batch), "--device", args.device,
            "--dtype", args.dtype, "--dropout", str(args.dropout), "--vocab", str(args.vocab),
            "--seed", str(args.seed)]
    return cost.parse_args(argv)


def measure(fn: Callable[[], None], model, args) -> Dict[str, float]:
    """Median step time over ``--steps`` after ``--warmup``, and the step's peak memory."""
    for _ in range(args.warmup):
        cost.timed(fn, model, args.device)
    times = [cost.timed(fn, model, args.device)[0] for _ in range(args.steps)]
    mem = cost.peak_memory(fn, model, args.device)
    model.zero_grad(set_to_none=False)
    return {"s": statistics.median(times), "peak": float(mem["peak"])}


def make_row(size, seq, batch, variant, m, flops, peak_tflops) -> Row:
    tflops = flops / m["s"] / 1e12
    return Row(size, seq, batch, variant, m["s"] * 1e3, batch * seq / m["s"], tflops,
               tflops / peak_tflops if peak_tflops else None, m["peak"] / 2**20)


def our_rows(args, size: str, seq: int, peak_tflops: Optional[float]) -> List[Row]:
    from alum import AlumConfig
    from alum.pretrain.compile import compile_layers
    from alum.pretrain.flops import model_dims, step_flops

    ca = cost_args(args, size, seq)
    torch.manual_seed(args.seed)
    model = cost.build(ca)
    batch = cost.make_batch(ca)
    predicted = int(batch["labels"].ne(-100).sum())
    alum = AlumConfig.from_preset("paper-pretrain", steps=1)
    fns = cost.step_functions(model, batch, alum, "masked")
    dims = model_dims(model)
    rows: List[Row] = []
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    for compiled in modes:
        if compiled and not compile_layers(model, torch.device(args.device)):
            print(f"  {size}/{seq}: torch.compile unavailable here; compiled rows skipped")
            break
        for name in OUR_VARIANTS:
            if name not in args.variants:
                continue
            m = measure(fns[name], model, args)
            flops = step_flops(ca.batch, seq, predicted, dims, alum_active=name != "standard",
                               alum_steps=1)
            label = name + ("+compile" if compiled else "")
            rows.append(make_row(size, seq, ca.batch, label, m, flops, peak_tflops))
            print(f"  {size}/{seq} {label}: {rows[-1].ms:.1f} ms", flush=True)
    del model, fns, batch
    release(args.device)
    return rows


def hf_row(args, size: str, seq: int, peak_tflops: Optional[float]) -> Row:
    """transformers' BertForMaskedLM (SDPA attention) on the same shapes and batch."""
    from transformers import BertConfig, BertForMaskedLM

    from alum.models import NAMED_SIZES
    from alum.pretrain.flops import step_flops

    ca = cost_args(args, size, seq)
    dims = NAMED_SIZES[size]
    config = BertConfig(vocab_size=args.vocab, hidden_size=dims["hidden_size"],
                        num_hidden_layers=dims["num_layers"],
                        num_attention_heads=dims["num_attention_heads"],
                        intermediate_size=dims["ffn_hidden_size"],
                        max_position_embeddings=max(512, seq),
                        hidden_dropout_prob=args.dropout,
                        attention_probs_dropout_prob=args.dropout,
                        attn_implementation="sdpa")
    torch.manual_seed(args.seed)
    model = BertForMaskedLM(config).to(device=args.device, dtype=cost.DTYPES[args.dtype]).train()
    batch = cost.make_batch(ca)

    def step():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"], labels=batch["labels"])
        out.loss.backward()

    m = measure(step, model, args)
    # HF's head computes the logits at every position: its own model FLOPs.
    flops = step_flops(ca.batch, seq, ca.batch * seq,
                       dict(hidden=dims["hidden_size"], layers=dims["num_layers"],
                            ffn=dims["ffn_hidden_size"], vocab=args.vocab))
    row = make_row(size, seq, ca.batch, "hf-sdpa", m, flops, peak_tflops)
    print(f"  {size}/{seq} hf-sdpa: {row.ms:.1f} ms", flush=True)
    del model, batch
    release(args.device)
    return row


def release(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def ratios(rows: List[Row]) -> None:
    """Each row's time over the standard step of its shape and compile mode."""
    base = {(r.size, r.seq, r.variant.endswith("+compile")): r.ms for r in rows
            if r.variant.split("+")[0] == "standard"}
    for r in rows:
        key = (r.size, r.seq, r.variant.endswith("+compile"))
        if r.variant == "hf-sdpa":
            key = (r.size, r.seq, False)
        if key in base:
            r.x_standard = r.ms / base[key]


def print_table(rows: List[Row]) -> None:
    print("\n| size | seq | batch | step | ms/step | tokens/s | TFLOP/s | MFU | peak MB "
          "| x standard |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "–"
        x = f"{r.x_standard:.2f}×" if r.x_standard is not None else "–"
        print(f"| {r.size} | {r.seq} | {r.batch} | {r.variant} | {r.ms:.1f} | "
              f"{r.tokens_per_s:,.0f} | {r.tflops:.3g} | {mfu} | {r.peak_mb:,.0f} | {x} |")


def verdicts(rows: List[Row]) -> List[str]:
    """PASS/MISS against the targets in the module docstring."""
    lines = []
    by = {(r.size, r.seq, r.variant): r for r in rows}
    for (size, seq, variant), r in by.items():
        std = variant.split("+")[0] == "standard"
        if std and size == "large" and seq == 512 and r.mfu is not None:
            lines.append(f"{'PASS' if r.mfu >= MFU_TARGET else 'MISS'} {variant} large/512 MFU "
                         f"{100 * r.mfu:.1f}% (target >= {100 * MFU_TARGET:.0f}%)")
        hf = by.get((size, seq, "hf-sdpa"))
        if std and hf is not None:
            lines.append(f"{'PASS' if r.tokens_per_s > hf.tokens_per_s else 'MISS'} {variant} "
                         f"{size}/{seq}: {r.tokens_per_s:,.0f} vs HF {hf.tokens_per_s:,.0f} "
                         f"tokens/s (target: faster)")
        if variant.split("+")[0] in ("fast", "lean") and r.x_standard is not None:
            lines.append(f"{'PASS' if r.x_standard <= ALUM_TIME_TARGET else 'MISS'} {variant} "
                         f"{size}/{seq}: {r.x_standard:.2f}× the standard step "
                         f"(target <= {ALUM_TIME_TARGET}×)")
    return lines


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", dest="sizes", nargs="+", default=["base", "large"],
                   choices=("tiny", "small", "base", "large"))
    p.add_argument("--seq", dest="seqs", nargs="+", type=int, default=[128, 512])
    p.add_argument("--tokens", type=int, default=None,
                   help="tokens per step (batch = tokens // seq); default 16384 on CUDA, "
                        "256 on CPU")
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (and compilation)")
    p.add_argument("--variants", nargs="+", default=list(OUR_VARIANTS) + ["hf-sdpa"],
                   choices=list(OUR_VARIANTS) + ["hf-sdpa"])
    p.add_argument("--compile", default="both", choices=("off", "on", "both"),
                   help="our steps with eager layers, compiled layers, or both")
    p.add_argument("--adv-project", default=None, choices=("on", "off"),
                   help="kernels_bench's adv_project table (default: on with CUDA)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=tuple(cost.DTYPES),
                   help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense peak for MFU (default: the known GPUs' table)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    cuda = cost.resolve_device(p, args)
    args.tokens = args.tokens or (16384 if cuda else 256)
    args.adv_project = args.adv_project or ("on" if cuda else "off")
    if args.steps < 1 or args.warmup < 0 or args.tokens < 1:
        p.error("--steps >= 1, --warmup >= 0 and --tokens >= 1")
    return args


def main(argv: Optional[List[str]] = None) -> List[Row]:
    from alum.pretrain.flops import device_peak_tflops

    args = parse_args(argv)
    peak = args.peak_tflops or (device_peak_tflops() if args.device.startswith("cuda") else None)
    print(f"device {cost.device_name(args.device)}, torch {torch.__version__}, {args.dtype}, "
          f"{args.tokens} tokens per step, peak {peak or '–'} TFLOP/s; sizes {args.sizes}, "
          f"seqs {args.seqs}, compile {args.compile}", flush=True)
    rows: List[Row] = []
    for size in args.sizes:
        for seq in args.seqs:
            rows += our_rows(args, size, seq, peak)
            if "hf-sdpa" in args.variants:
                rows.append(hf_row(args, size, seq, peak))
            if args.compile != "off":
                torch._dynamo.reset()   # each shape compiles afresh
    ratios(rows)
    print_table(rows)
    if args.device.startswith("cuda"):
        for line in verdicts(rows):
            print(line)
    else:
        print("(CPU run: targets are for an H100/H200 and are not judged here)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "peak_tflops": peak,
                       "rows": [asdict(r) for r in rows]}, f, indent=1)
    if args.adv_project == "on":
        import kernels_bench

        print("\n== adv_project against copy bandwidth (benchmarks/kernels_bench.py)", flush=True)
        kernels_bench.main(["--ops", "adv_project", "--no-compile"]
                           + ([] if args.device.startswith("cuda") else ["--cpu-smoke"]))
    return rows


if __name__ == "__main__":
    main()
