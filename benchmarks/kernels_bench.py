"""Benchmark of ALUM's fused ops against eager PyTorch and torch.compile.

    python benchmarks/kernels_bench.py                 # on a CUDA machine: the full table
    python benchmarks/kernels_bench.py --json out.json # also save the rows
    python benchmarks/kernels_bench.py --cpu-smoke     # tiny shapes on CPU: checks the script

For every op and ALUM-shaped input (16k tokens x hidden 768/1024/4096 for adv_project;
8k masked tokens x vocab 30522/50265 for the symmetric KL, forward + backward) it reports
the median time, the achieved bandwidth over the bytes the op must move at least, that
bandwidth as a fraction of this device's measured device-to-device copy bandwidth, the
peak memory above the inputs, and the speed-up of the fused op over eager. The
targets (docs/kernels.md, "Targets and measured figures"): adv_project >= 80% of copy
bandwidth and >= 3x eager; fused symmetric KL >= 2x eager at <= half its peak memory.
Without CUDA it prints a message and exits (0).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional

import torch

import alum
from alum import AlumConfig
from alum.divergence import adversarial_divergence


@dataclass
class Row:
    op: str
    shape: str
    dtype: str
    impl: str
    ms: Optional[float]
    gbps: Optional[float]
    copy_frac: Optional[float]
    peak_mib: Optional[float]
    speedup: Optional[float] = None
    note: str = ""


# ------------------------------------------------------------------ measuring
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device, warmup: int, repeat: int) -> float:
    """Median wall time of fn in ms (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_mib(fn: Callable[[], object], device) -> Optional[float]:
    """Peak memory allocated during one call, above what was allocated before it."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def copy_bandwidth_gbps(device, nbytes: int, repeat: int) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), the roofline."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, warmup=3, repeat=repeat)
    return 2 * nbytes / (ms * 1e-3) / 1e9


# ------------------------------------------------------------------ the ops
def adv_project_cases(args, device):
    from alum.kernels.adv_project_op import adv_project_op
    from alum.kernels.extension import extension_state
    ext = extension_state(build=device.type == "cuda")
    rows: List[Row] = []
    tokens, seq = (args.tokens, 512) if not args.cpu_smoke else (64, 16)
    hiddens = args.hidden if not args.cpu_smoke else [13, 64]
    cases = [(h, torch.bfloat16, "project", "inf", "token") for h in hiddens]
    cases += [(hiddens[1 if len(hiddens) > 1 else 0], torch.float32, "project", "inf", "token"),
              (hiddens[1 if len(hiddens) > 1 else 0], torch.bfloat16, "project", "l2", "sequence")]
    for hidden, dtype, update, norm, level in cases:
        cfg = AlumConfig(update=update, norm=norm, level=level, step_size=1e-3, epsilon=1e-5)
        gen = torch.Generator(device=device).manual_seed(0)
        shape = (tokens // seq, seq, hidden)
        delta = (torch.randn(shape, generator=gen, device=device) * 1e-5).to(dtype)
        grad = (torch.randn(shape, generator=gen, device=device) * 1e-4).to(dtype)
        mask = torch.ones(shape[:-1], dtype=torch.long, device=device)
        mask[:, -seq // 8:] = 0  # some padding, as real batches have
        ideal_bytes = 3 * delta.numel() * delta.element_size() + mask.numel() * 8
        name = f"{tokens}x{hidden} {update}/{norm}/{level}"
        impls = {"eager": lambda: alum.adv_project(delta, grad, cfg, mask)}
        if not args.no_compile:
            compiled = torch.compile(lambda d, g, m: alum.adv_project(d, g, cfg, m), dynamic=False)
            impls["compile"] = lambda: compiled(delta, grad, mask)
        if ext.loaded:
            impls["fused"] = lambda: adv_project_op(delta, grad, cfg, mask)[0]
        rows += _measure("adv_project", name, dtype, impls, ideal_bytes, args, device)
        if not ext.loaded:
            rows.append(Row("adv_project", name, str(dtype).replace("torch.", ""), "fused", None,
                            None, None, None, note=f"not built: {ext.reason}"))
        elif device.type == "cuda":
            err = (impls["fused"]().float() - impls["eager"]().float()).abs().max().item()
            rows[-1].note = f"max |fused - eager| = {err:.2e}"
    return rows


def sym_kl_cases(args, device):
    from alum.kernels.sym_kl import triton_unusable_reason
    from alum.kernels import fused_symmetric_kl
    rows: List[Row] = []
    n_rows = args.masked_tokens if not args.cpu_smoke else 16
    vocabs = args.vocab if not args.cpu_smoke else [97, 1021]
    reason = triton_unusable_reason(device)
    for vocab in vocabs:
        dtype = torch.bfloat16
        gen = torch.Generator(device=device).manual_seed(1)
        clean = (torch.randn(n_rows, vocab, generator=gen, device=device) * 3).to(dtype)
        adv = (clean.float() + 0.3 * torch.randn(n_rows, vocab, generator=gen,
                                                  device=device)).to(dtype)
        a = adv.clone().requires_grad_()
        c = clean.clone().requires_grad_()
        # Forward reads both logits; backward reads them again and writes both gradients.
        ideal_bytes = 6 * adv.numel() * adv.element_size()

        def fwd_bwd(fn):
            def run():
                a.grad = None
                c.grad = None
                fn(a, c).backward()
            return run

        impls = {"eager": fwd_bwd(lambda x, y: adversarial_divergence("sym_kl", x, y))}
        if not args.no_compile:
            compiled = torch.compile(lambda x, y: adversarial_divergence("sym_kl", x, y),
                                     dynamic=False)
            impls["compile"] = fwd_bwd(compiled)
        if reason is None:
            impls["fused"] = fwd_bwd(fused_symmetric_kl)
        name = f"{n_rows}x{vocab} fwd+bwd"
        rows += _measure("sym_kl", name, dtype, impls, ideal_bytes, args, device)
        if reason is not None:
            rows.append(Row("sym_kl", name, "bfloat16", "fused", None, None, None, None,
                            note=f"not available: {reason}"))
    return rows


def _measure(op, name, dtype, impls, ideal_bytes, args, device) -> List[Row]:
    rows = []
    for impl, fn in impls.items():
        ms = time_ms(fn, device, args.warmup, args.repeat)
        gbps = ideal_bytes / (ms * 1e-3) / 1e9
        rows.append(Row(op, name, str(dtype).replace("torch.", ""), impl, ms, gbps,
                        gbps / args.copy_gbps if args.copy_gbps else None, peak_mib(fn, device)))
    eager = next(r for r in rows if r.impl == "eager")
    for r in rows:
        r.speedup = eager.ms / r.ms
    return rows


# ------------------------------------------------------------------ report
def verdicts(rows: List[Row]) -> List[str]:
    """The targets of docs/kernels.md, checked on every fused row."""
    lines = []
    for r in rows:
        if r.impl != "fused" or r.ms is None:
            continue
        eager = next(e for e in rows if e.op == r.op and e.shape == r.shape and e.impl == "eager")
        if r.op == "adv_project":
            ok = (r.copy_frac or 0) >= 0.8 and r.speedup >= 3.0
            lines.append(f"{'PASS' if ok else 'MISS'} adv_project {r.shape} {r.dtype}: "
                         f"{100 * (r.copy_frac or 0):.0f}% of copy bandwidth (target >= 80%), "
                         f"{r.speedup:.1f}x eager (target >= 3x)")
        else:
            mem_ratio = (r.peak_mib / eager.peak_mib) if r.peak_mib and eager.peak_mib else None
            ok = r.speedup >= 2.0 and mem_ratio is not None and mem_ratio <= 0.5
            mem = f"{mem_ratio:.2f}" if mem_ratio is not None else "n/a"
            lines.append(f"{'PASS' if ok else 'MISS'} sym_kl {r.shape}: {r.speedup:.1f}x eager "
                         f"(target >= 2x), peak memory {mem} of eager (target <= 0.5)")
    return lines


def format_table(rows: List[Row], header: str) -> str:
    def f(v, fmt):
        width = int(fmt.split(".")[0].rstrip("df") or 0)
        return "-".rjust(width) if v is None else format(v, fmt)
    lines = [header,
             f"{'op':12s} {'shape':36s} {'dtype':9s} {'impl':8s} {'ms':>9s} {'GB/s':>8s} "
             f"{'copy%':>6s} {'peakMiB':>9s} {'xEager':>7s}  note"]
    for r in rows:
        lines.append(f"{r.op:12s} {r.shape:36s} {r.dtype:9s} {r.impl:8s} {f(r.ms, '9.3f')} "
                     f"{f(r.gbps, '8.0f')} {f(None if r.copy_frac is None else 100 * r.copy_frac, '6.0f')} "
                     f"{f(r.peak_mib, '9.0f')} {f(r.speedup, '7.2f')}  {r.note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--hidden", type=int, nargs="+", default=[768, 1024, 4096])
    parser.add_argument("--masked-tokens", type=int, default=8192)
    parser.add_argument("--vocab", type=int, nargs="+", default=[30522, 50265])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--ops", nargs="+", default=["adv_project", "sym_kl"])
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny shapes on CPU, to check the script itself (timings meaningless)")
    args = parser.parse_args(argv)

    if args.cpu_smoke:
        device = torch.device("cpu")
        args.warmup, args.repeat = 1, 2
    elif not torch.cuda.is_available():
        print("kernels_bench: no CUDA device here; the benchmark runs only on a GPU "
              "(benchmarks/kernels_gpu_check.sh on a CUDA machine). "
              "Use --cpu-smoke to check the script on CPU.")
        return 0
    else:
        device = torch.device("cuda")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU (smoke run)"
    copy_bytes = 2**30 if device.type == "cuda" else 2**24
    args.copy_gbps = copy_bandwidth_gbps(device, copy_bytes, args.repeat)
    rows: List[Row] = []
    if "adv_project" in args.ops:
        rows += adv_project_cases(args, device)
    if "sym_kl" in args.ops:
        rows += sym_kl_cases(args, device)
    header = (f"device: {name}; torch {torch.__version__}; measured copy bandwidth "
              f"{args.copy_gbps:.0f} GB/s (read + write of a {copy_bytes / 2**20:.0f} MiB "
              f"device-to-device copy)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": name, "copy_gbps": args.copy_gbps,
                       "rows": [asdict(r) for r in rows]}, fh, indent=2)
    print(format_table(rows, header))
    for line in verdicts(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
