"""Cost of one ALUM pre-training step (time and peak memory) against a standard MLM step.

On one megatron-core BERT MLM (alum.models.BertMLM, built as alum-pretrain builds it) and
one synthetic batch, in one process, this runs four steps, each from zero gradients to
the parameter gradients of one micro-batch:

  (a) standard   the standard MLM step: forward, backward
                 (alum.pretrain.mlm_step.mlm_micro_batch without ALUM, .backward()).
  (b) fast       our ALUM step, fast order (mlm_micro_batch with ALUM, .backward()): the
                 clean graph stays alive; the K ascent passes take ∇δ only
                 (torch.autograd.grad w.r.t. δ, parameters frozen so that megatron's
                 linears skip their weight gradients, see docs/alum_cost.md); one
                 backward of MLM + α·symmetric KL at the end, through both graphs.
  (c) lean       our ALUM step, lean order (alum.pretrain.lean_order.lean_micro_batch):
                 one graph at a time: clean forward without a graph, the ascent with the
                 parameters frozen, the perturbed forward+backward of its KL term, then
                 the clean forward+backward of MLM + the other KL term.
  (d) naive      written here, the cost model's strawman: the fast order's structure, but
                 the ascent backward is an ordinary ``.backward()`` that also fills the
                 parameters' .grad (thrown away: zeroed before the real backward),
                 and both graphs alive at the end.

and the cheaper variants (AlumConfig.direction / .fraction on the same preset; docs/
algorithm.md, "Cheaper variants"), each through the loop's own code:

  (e) rdrop      direction "none" (δ = 0, two dropout passes), fast order.
  (f) random     direction "random" (the random start in the ball, no ascent), fast order.
  (g) free       direction "free" (δ from the clean backward's gradient; its two passes,
                 alum.pretrain.alum_variants.free_micro_batch).
  (h) half       fraction 0.5 (Algorithm 1 on the first half of the sequences), fast order.

Timing: a warm-up of every variant, then ``--repeats`` rounds that run the variants
round-robin (the starting variant rotates every round), so that machine noise hits all of
them alike; the median per variant. Memory: one separate run per variant after the
timings. On CUDA, ``torch.cuda.max_memory_allocated`` reset before the step, minus
``memory_allocated`` before it. On CPU, benchmarks/memory_tracker.py's AllocatorPeak:
the running sum of the CPU allocator's allocations and frees during the step, which the
PyTorch profiler records (profile_memory=True), and its maximum; that is every tensor the
step allocates (activations saved for backward, gradients, temporaries, kernels' scratch
tensors). ``--cpu-memory tensors`` uses the TorchDispatchMode tracker instead (peak bytes
of live tensors by storage), which over-counts backward passes (see memory_tracker.py).
Both are the step's peak *above* its resting state: the parameters, the batch, and (by
default, ``--grads resting``) the gradient buffers, allocated once and zeroed before each
step, as a training loop keeps them (DeepSpeed's ZeRO gradient buffers are persistent);
the step then accumulates into them. ``--grads step`` sets them to None before each step
instead, so the gradient tensors the step creates count in its peak.

Targets (docs/alum_cost.md; the cost model of docs/algorithm.md plus a margin): fast
≤ 2.8× the standard step's time (floor ≈ 2.67×) at ≤ 2.1× its peak memory; lean ≤ 1.3×
the peak memory at ≤ 3.1× the time.

    python benchmarks/alum_step_cost.py --check                      # CPU, fp32, small
    python benchmarks/alum_step_cost.py --device cuda --dtype bf16 --size base --check

docs/alum_cost.md has the measured tables and how to read them.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory_tracker import AllocatorPeak, LiveTensorTracker  # noqa: E402
from pass_floors import measure_passes, print_floors  # noqa: E402

RUN_SEED = 17
VARIANTS = ("standard", "fast", "lean", "naive", "rdrop", "random", "free", "half")
LABELS = {
    "standard": "(a) standard MLM step",
    "fast": "(b) ALUM fast order",
    "lean": "(c) ALUM lean order",
    "naive": "(d) naive (weight grads in ascent)",
    "rdrop": "(e) direction none (R-Drop), fast",
    "random": "(f) direction random, fast",
    "free": "(g) direction free",
    "half": "(h) fraction 0.5, fast",
}
# The cheaper variants: the AlumConfig fields each changes.
CHEAPER = {"rdrop": dict(direction="none"), "random": dict(direction="random"),
           "free": dict(direction="free"), "half": dict(fraction=0.5)}


def cost_model(name: str, k: int) -> float:
    """docs/algorithm.md's cost model in units of the standard step (3F), K ascent steps."""
    f = CHEAPER.get(name, {}).get("fraction", 1.0)
    forms = {"fast": 6 + 2 * k, "lean": 7 + 2 * k, "naive": 6 + 3 * k, "rdrop": 6,
             "random": 6, "free": 6, "half": 3 + f * (3 + 2 * k)}
    return forms[name] / 3
# (time ratio limit, memory ratio limit) per variant; None: no target.
TARGETS = {"fast": (2.8, 2.1), "lean": (3.1, 1.3)}
TIME_FLOOR = {"fast": "≈ 2.67×", "lean": "≈ 3.0×", "naive": "≈ 3.0×"}


# ---------------------------------------------------------------- model and batch
def build(args) -> torch.nn.Module:
    from alum.parallel import initialize_parallel
    from alum.pretrain.config import ModelChoice
    from alum.pretrain.model_builder import build_megatron_bert

    initialize_parallel(1, 1, seed=args.seed)
    choice = ModelChoice(model_size=args.size, hidden_size=args.hidden, num_layers=args.layers,
                         dropout=args.dropout)
    model = build_megatron_bert(choice, vocab_size=args.vocab, pad_token_id=0,
                                seq_length=args.seq)
    return model.to(device=args.device, dtype=DTYPES[args.dtype]).train()


def make_batch(args) -> Dict[str, torch.Tensor]:
    """Random tokens, no padding, ``--mask-rate`` of the positions predicted (≥ 1 per row)."""
    g = torch.Generator().manual_seed(args.seed)
    b, s = args.batch, args.seq
    ids = torch.randint(5, args.vocab, (b, s), generator=g)
    labels = torch.full((b, s), -100)
    chosen = torch.rand(b, s, generator=g) < args.mask_rate
    chosen[:, 1] = True
    labels[chosen] = ids[chosen]
    batch = {"input_ids": ids, "attention_mask": torch.ones(b, s, dtype=torch.long),
             "token_type_ids": torch.zeros_like(ids), "labels": labels,
             "sample_index": torch.arange(b)}
    return {k: v.to(args.device) for k, v in batch.items()}


# ---------------------------------------------------------------- the four steps
def naive_step(model, batch, alum, positions: str, resting_grads: bool = True) -> None:
    """(d): ALUM with weight gradients in the ascent and both graphs alive at the end.

    Same random start, update rule and divergences as our fast order (so ``--check`` can
    compare gradients), but the ascent's backward is a plain ``.backward()``: autograd
    computes every parameter's gradient along with δ's, and they are discarded.
    """
    from alum.perturbation import embedding_scale, adv_project
    from alum.pretrain.alum_layout import build_alum_step
    from alum.pretrain.mlm_step import clean_head_rows, clean_objective, kl_positions

    mask = batch["attention_mask"]
    alum_at = kl_positions(batch, positions)
    embeds = model.embed(batch["input_ids"], batch.get("token_type_ids"))
    logits = model.forward_from_embeddings(embeds, mask,            # clean graph: kept
                                           clean_head_rows(batch, alum_at))
    objective = clean_objective(model, logits, batch, alum_at)
    mlm, clean = objective.mlm, objective.alum_logits
    # Only the fast order's random start, δ mask and divergences are taken from the step.
    step = build_alum_step(model, batch, embeds, alum, alum_at.kl_weights, RUN_SEED)
    scale = embedding_scale(embeds, alum, step.mask)
    base = embeds.detach()
    delta = step.init_noise
    for _ in range(alum.steps):
        delta = delta.detach().requires_grad_(True)
        adv = model.forward_from_embeddings(base + delta, mask, alum_at.head_rows)
        step.divergences.ascent(adv, clean.detach(),
                                step.row_weights).backward()     # + weight grads
        delta = adv_project(delta.detach(), delta.grad, alum, step.mask, scale)
        reset_grads(model, resting_grads)                         # thrown away
    start = base if alum.detach_embeddings else embeds
    adv = model.forward_from_embeddings(start + delta.detach(), mask, alum_at.head_rows)
    term = step.divergences.final(adv, clean, step.row_weights)  # both graphs alive
    (mlm + step.weighted(term)).backward()


def step_functions(model, batch, alum, positions: str,
                   resting_grads: bool = True) -> Dict[str, Callable[[], None]]:
    from alum.pretrain.lean_order import lean_micro_batch
    from alum.pretrain.mlm_step import module_runner
    from alum.pretrain.mlm_step import mlm_micro_batch

    runner = module_runner(model)

    def standard():
        mlm_micro_batch(model, batch, None, False, positions).loss.backward()

    def fast():
        result = mlm_micro_batch(model, batch, alum, True, positions, run_seed=RUN_SEED)
        assert not result.adv.skipped
        result.loss.backward()

    def lean():
        result = lean_micro_batch(runner, batch, alum, True, positions, run_seed=RUN_SEED)
        assert not result.adv.skipped

    def naive():
        naive_step(model, batch, alum, positions, resting_grads)

    fns = {"standard": standard, "fast": fast, "lean": lean, "naive": naive}
    for name, fields in CHEAPER.items():
        fns[name] = cheaper_step(model, batch, alum.replace(**fields), positions)
    return fns


def cheaper_step(model, batch, alum, positions: str) -> Callable[[], None]:
    """One of the cheaper variants as the loop runs it (the fast order; the free direction's
    own two passes)."""
    from alum.pretrain.alum_variants import free_micro_batch
    from alum.pretrain.mlm_step import kl_positions, mlm_micro_batch, module_runner

    runner = module_runner(model)

    def step():
        if alum.direction == "free":
            result = free_micro_batch(runner, batch, alum, kl_positions(batch, positions),
                                      run_seed=RUN_SEED)
        else:
            result = mlm_micro_batch(model, batch, alum, True, positions, run_seed=RUN_SEED)
            result.loss.backward()
        assert not result.adv.skipped
    return step


# ---------------------------------------------------------------- measurement
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_grads(model, resting: bool) -> None:
    """Gradients to zero: allocated buffers zeroed in place (``resting``), or None."""
    if not resting:
        model.zero_grad(set_to_none=True)
        return
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            else:
                p.grad.zero_()


def timed(fn: Callable[[], None], model, device: str,
          resting_grads: bool = True) -> Tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one step from zero gradients."""
    reset_grads(model, resting_grads)
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def peak_memory(fn: Callable[[], None], model, device: str, cpu_memory: str = "allocator",
                resting_grads: bool = True) -> Dict[str, object]:
    """The step's peak bytes above its resting state (see the module doc)."""
    reset_grads(model, resting_grads)
    gc.collect()
    if device.startswith("cuda"):
        sync(device)
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        sync(device)
        return {"peak": torch.cuda.max_memory_allocated() - before,
                "after": torch.cuda.memory_allocated() - before, "by_op": {}}
    tracker = AllocatorPeak() if cpu_memory == "allocator" else LiveTensorTracker()
    with tracker as mem:
        fn()
        gc.collect()
    return {"peak": mem.peak_bytes, "after": mem.live_bytes, "by_op": mem.peak_by_op}


def grads_of(model) -> Dict[str, torch.Tensor]:
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters()
            if p.grad is not None}


def rel_err(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    """max over parameters of ‖a − b‖ / ‖b‖ (inf when the sets differ)."""
    if set(a) != set(b):
        return float("inf")
    return max(float((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-30)) for k in b)


# ---------------------------------------------------------------- self-checks
def check_trackers() -> None:
    """Both CPU trackers against hand-computed bytes (tests/benchmarks has more cases)."""
    def region():
        a = torch.ones(1000)                            # 4,000 bytes
        b = torch.zeros(500, dtype=torch.float64)       # 4,000
        v = a.view(10, 100)                             # a view: no new memory
        a.mul_(2)                                       # in place: no new memory
        del a
        c = torch.empty(250)                            # 1,000 (v keeps a's storage alive)
        del v, b, c                                     # peak so far 9,000; live 0
        x = torch.randn(256, requires_grad=True)        # 1,024
        y = x * 3                                       # 1,024
        y.sum().backward()                              # 4 + 4, then x.grad 1,024
        return x, y                                     # live at the end: 3,072

    for tracker in (AllocatorPeak(), LiveTensorTracker()):
        with tracker as mem:
            kept = region()
        got = (mem.peak_bytes, mem.live_bytes)
        del kept
        if got != (9_000, 3_072):
            raise SystemExit(f"memory tracker self-check failed ({type(tracker).__name__}): "
                             f"(peak, live) = {got}, expected (9000, 3072)")
    print("memory trackers self-check: ok (allocations, views, in-place ops, frees, backward)")


def check_gradients(model, batch, args) -> None:
    """fast, lean and naive give the same parameter gradients (dropout off); ALUM matters."""
    from alum import AlumConfig

    # A perturbation large enough for the term to change the gradients visibly.
    alum = AlumConfig.from_preset("relative", alpha=10.0, steps=args.steps)
    fns = step_functions(model, batch, alum, args.positions, args.grads == "resting")
    model.eval()  # dropout off (nn.Dropout and the attention's dropout_p)
    grads = {}
    try:
        for name in VARIANTS:
            reset_grads(model, args.grads == "resting")
            fns[name]()
            grads[name] = grads_of(model)
    finally:
        model.train()
        model.zero_grad(set_to_none=True)
    tol = 1e-4 if args.dtype == "fp32" else 3e-2
    lean_err = rel_err(grads["lean"], grads["fast"])
    naive_err = rel_err(grads["naive"], grads["fast"])
    effect = rel_err(grads["standard"], grads["fast"])
    print(f"gradient check (preset relative, alpha 10, dropout off; max over parameters of "
          f"|g - g_fast| / |g_fast|, tolerance {tol:g}):")
    print(f"  lean {lean_err:.2e}   naive {naive_err:.2e}   "
          f"(standard step, without ALUM's term: {effect:.2e})")
    if not (lean_err <= tol and naive_err <= tol):
        raise SystemExit("gradient check failed: the variants do not compute the same thing")
    if not effect > 10 * tol:
        raise SystemExit("gradient check inconclusive: ALUM's term does not change the "
                         "gradients at this setting")


# ---------------------------------------------------------------- report
def verdict(name: str, t: float, m: float) -> str:
    if name not in TARGETS:
        return ""
    tl, ml = TARGETS[name]
    time_verdict = "not timed" if t != t else ("PASS" if t <= tl else "MISS")
    return (f"time ≤ {tl}×: {time_verdict}; "
            f"memory ≤ {ml}×: {'PASS' if m <= ml else 'MISS'}")


def describe(args, model) -> List[str]:
    n_params = sum(p.numel() for p in model.parameters())
    bytes_per = torch.finfo(DTYPES[args.dtype]).bits // 8
    cfg = model.config
    rows = args.batch * args.seq
    lines = [
        f"model: BertMLM h{cfg.hidden_size} L{cfg.num_layers} heads {cfg.num_attention_heads}"
        f" ffn {cfg.ffn_hidden_size}, vocab {cfg.vocab_size} (padded {model.padded_vocab}),"
        f" {n_params / 1e6:.1f}M parameters ({n_params * bytes_per / 2**20:.0f} MB {args.dtype}),"
        f" dropout {args.dropout}",
        f"batch {args.batch} x seq {args.seq} = {rows} tokens, {args.mask_rate:.0%} predicted,"
        f" KL positions: {args.positions}; ALUM preset {args.preset}, K = {args.steps};"
        f" gradient buffers: {args.grads}",
        f"full logits [b, s, V]: {rows * model.padded_vocab * bytes_per / 2**20:.0f} MB "
        f"({args.dtype}); device {device_name(args.device)}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)",
    ]
    return lines


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def print_table(times: Dict[str, List[float]], mems: Dict[str, Dict], args) -> List[dict]:
    def med(name):
        return statistics.median(times[name]) if times[name] else float("nan")

    base_t = med("standard")
    base_m = mems["standard"]["peak"]
    unit = ("peak MB (allocator)" if args.device.startswith("cuda") or
            args.cpu_memory == "allocator" else "peak MB (live tensors)")
    clock = "ms/step" if args.clock == "wall" else "CPU ms/step"
    print(f"\n| variant | {clock} | × standard | {unit} | × standard | target |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name in VARIANTS:
        t = med(name)
        m = mems[name]["peak"]
        rt, rm = t / base_t, m / base_m
        target = verdict(name, rt, rm)
        if name == "fast":
            target += f" (time floor {TIME_FLOOR[name]})"
        elif name == "naive":
            target = f"no target (cost model {TIME_FLOOR[name]} time)"
        elif name in CHEAPER:
            target = f"no target (cost model {cost_model(name, args.steps):.2f}× time)"
        timing = f"{t * 1e3:.0f} | {rt:.2f}×" if t == t else "– | –"
        print(f"| {LABELS[name]} | {timing} | {m / 2**20:.0f} | {rm:.2f}× | {target} |")
        rows.append(dict(variant=name, ms=t * 1e3, time_ratio=rt, peak_mb=m / 2**20,
                         mem_ratio=rm, times_ms=[x * 1e3 for x in times[name]]))
    if times["standard"]:
        spread = {n: (min(times[n]) * 1e3, max(times[n]) * 1e3) for n in VARIANTS}
        print("\nper-variant min/max ms over the repeats: "
              + ", ".join(f"{n} {lo:.0f}/{hi:.0f}" for n, (lo, hi) in spread.items()))
    return rows


def print_breakdown(mems: Dict[str, Dict], top: int = 8) -> None:
    print("\nallocated at each variant's peak, by the op (and autograd node) that "
          "allocated it, MB:")
    for name in VARIANTS:
        by_op = sorted(mems[name]["by_op"].items(), key=lambda kv: -kv[1])
        parts = ", ".join(f"{op} {b / 2**20:.0f}" for op, b in by_op[:top] if b >= 2**20)
        print(f"  {name}: {parts}")


# ---------------------------------------------------------------- main
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(parser: argparse.ArgumentParser, args) -> bool:
    """``args.device`` (default: cuda where there is one; cuda refused where there is none)
    and ``args.dtype`` (default: bf16 on CUDA, fp32 on CPU); True on CUDA."""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    return cuda


def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small", choices=("tiny", "small", "base", "large"),
                   help="named size of alum.models (small: h512, 4 layers, 8 heads)")
    p.add_argument("--hidden", type=int, default=None, help="override the hidden width")
    p.add_argument("--layers", type=int, default=None, help="override the layer count")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=30522, help="vocabulary (BERT's: 30522)")
    p.add_argument("--mask-rate", type=float, default=0.15, help="share of predicted tokens")
    p.add_argument("--positions", default="masked", choices=("masked", "all"),
                   help="ALUM's KL at the predicted positions (authors' code) or all")
    p.add_argument("--preset", default="paper-pretrain", help="AlumConfig preset for timing")
    p.add_argument("--steps", type=int, default=1, help="ascent steps K")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=5,
                   help="interleaved timed rounds (0: memory only)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each variant")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=tuple(DTYPES),
                   help="parameter dtype (default: fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="time the table reports: wall clock, or this process's CPU time "
                        "(CPU only: robust on a shared machine with one thread)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true",
                   help="before timing: the memory tracker's self-check and the gradient "
                        "equality of fast, lean and naive (dropout off)")
    p.add_argument("--cpu-memory", default="allocator", choices=("allocator", "tensors"),
                   help="CPU peak memory from the allocator's events (profiler) or from the "
                        "TorchDispatchMode tensor tracker (over-counts backward)")
    p.add_argument("--grads", default="resting", choices=("resting", "step"),
                   help="gradient buffers before each step: allocated and zeroed (part of "
                        "the resting state, as in a training loop) or None (the step's "
                        "peak then includes the gradients it creates)")
    p.add_argument("--breakdown", action="store_true",
                   help="CPU: print which ops' outputs are live at each variant's peak")
    p.add_argument("--floors", action="store_true",
                   help="also time each kind of pass (forward, backward, the ascent's, "
                        "a forward without graph) and print this machine's floors for the "
                        "two orders (benchmarks/pass_floors.py)")
    p.add_argument("--kl-block-bytes", type=int, default=None,
                   help="bytes of one fp32 row-block buffer of the symmetric KL's PyTorch "
                        "passes on this device (alum.kernels.sym_kl.CHUNK_BYTES; default: "
                        "the library's, 2 MiB on CPU; 1099511627776: all rows in one block)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    if resolve_device(p, args) and args.clock == "cpu":
        p.error("--clock cpu times CPU steps only")
    return args


def main(argv: Optional[List[str]] = None) -> List[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.kl_block_bytes is not None:
        from alum.kernels import sym_kl
        sym_kl.CHUNK_BYTES[torch.device(args.device).type] = args.kl_block_bytes
    from alum import AlumConfig

    torch.manual_seed(args.seed)
    model = build(args)
    batch = make_batch(args)
    for line in describe(args, model):
        print(line)
    if args.check:
        if not args.device.startswith("cuda"):
            check_trackers()
        check_gradients(model, batch, args)
    alum = AlumConfig.from_preset(args.preset, steps=args.steps)
    resting = args.grads == "resting"
    fns = step_functions(model, batch, alum, args.positions, resting)

    t_start = time.perf_counter()
    for name in VARIANTS:
        for _ in range(args.warmup):
            timed(fns[name], model, args.device, resting)
    walls: Dict[str, List[float]] = {n: [] for n in VARIANTS}
    cpus: Dict[str, List[float]] = {n: [] for n in VARIANTS}
    for r in range(args.repeats):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        for name in order:
            wall, cpu = timed(fns[name], model, args.device, resting)
            walls[name].append(wall)
            cpus[name].append(cpu)
    times = cpus if args.clock == "cpu" else walls
    mems = {name: peak_memory(fns[name], model, args.device, args.cpu_memory, resting)
            for name in VARIANTS}
    model.zero_grad(set_to_none=True)
    print(f"\n{args.repeats} interleaved rounds after {args.warmup} warm-up run(s) each, "
          f"medians of {'wall' if args.clock == 'wall' else 'process CPU'} time; "
          f"{time.perf_counter() - t_start:.0f} s")
    rows = print_table(times, mems, args)
    if not args.device.startswith("cuda") and walls["standard"]:
        other = walls if args.clock == "cpu" else cpus
        base = statistics.median(other["standard"])
        print(f"{'wall' if args.clock == 'cpu' else 'process CPU'} time, medians: " + ", ".join(
            f"{n} {statistics.median(other[n]) * 1e3:.0f} ms "
            f"({statistics.median(other[n]) / base:.2f}×)" for n in VARIANTS))
        for row in rows:
            row["wall_ms"] = [x * 1e3 for x in walls[row["variant"]]]
            row["cpu_ms"] = [x * 1e3 for x in cpus[row["variant"]]]
    if args.breakdown and not args.device.startswith("cuda"):
        print_breakdown(mems)
    passes, machine_floors = {}, {}
    if args.floors:
        passes = measure_passes(model, batch, args.device, args.clock, args.repeats)
        machine_floors = print_floors(passes)
        if args.positions == "all":
            print("(the passes above run the head at the predicted rows; with --positions all "
                  "ALUM's passes run it at every position, so these floors are lower bounds)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "setup": describe(args, model), "rows": rows,
                       "peak_by_op": {n: mems[n]["by_op"] for n in VARIANTS},
                       "passes_ms": {k: v * 1e3 for k, v in passes.items()},
                       "floors": machine_floors}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
