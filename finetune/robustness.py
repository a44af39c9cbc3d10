"""``alum-robustness``: clean accuracy and accuracy under an embedding-space PGD attack.

Given fine-tuned Hugging Face model directories (sequence classification, extractive
QA or multiple choice; several --model are evaluated in turn on the same files) and an
evaluation file, reports the clean metric and the metric
under PGD in the embedding space (``embedding_attack``: the perturbation ALUM trains
against, with the gold label as the attack's target) at one or several radii, as a
table and as JSON. Further files (Adversarial SQuAD, ANLI rounds, HANS, ...) are
evaluated clean through the same readers with ``--adv-eval NAME=PATH``. A
word-substitution attack runs only when TextAttack is installed (``--word-attack``).
``--plot FILE.png`` draws the metric against the radius, one curve per model.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional

from .label_maps import NAMED_MAPS
from .mc_cli import add_mc_arguments
from .qa_cli import add_qa_arguments
from .run_common import add_task_file_arguments, fail
from .task_data import TaskDataError

PROG = "alum-robustness"

EXAMPLES = """examples:
  # SST-2 model: clean accuracy and L2 attacks at 1%, 5% and 10% of each token's norm
  alum-robustness --model runs/sst2-alum --eval SST-2/dev.tsv --text-field sentence \\
      --radius 0.01 --radius 0.05 --radius 0.1 --norm l2 --relative --json sst2.json
  # standard vs ALUM fine-tuning: accuracy against the radius, one curve per model
  alum-robustness --model runs/sst2-standard --model runs/sst2-alum --eval SST-2/dev.tsv \\
      --radius 0.01 --radius 0.05 --radius 0.1 --norm l2 --relative --plot sst2.png
  # MNLI model: matched dev under attack, ANLI rounds evaluated clean
  alum-robustness --model runs/mnli --eval MNLI/dev_matched.jsonl --text-field sentence1 \\
      --text-pair-field sentence2 --label-field gold_label --ignore-label - \\
      --radius 1e-3 --norm inf --adv-eval anli-r1=anli/R1/dev.jsonl ...
  # SQuAD model: EM/F1 under attack, and on Adversarial SQuAD (AddSent)
  alum-robustness --model runs/squad --eval dev-v1.1.json --radius 0.05 --relative \\
      --adv-eval addsent=sample1k-HCVerifyAll.json
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("model and data")
    io.add_argument("--model", required=True, action="append",
                    help="fine-tuned local HF model directory (with its tokenizer), e.g. the "
                         "output of alum-finetune; repeatable: each model is evaluated on "
                         "the same files in turn")
    io.add_argument("--eval", required=True, help="evaluation file, attacked at every radius "
                    "(classification: .tsv/.csv/.jsonl/.parquet; qa: SQuAD .json; "
                    "multiple-choice: SWAG .csv / HellaSwag .jsonl)")
    io.add_argument("--adv-eval", action="append", default=[], metavar="NAME=PATH",
                    help="a user-supplied adversarial dataset (e.g. Adversarial SQuAD, an "
                         "ANLI round), evaluated clean with the same options (repeatable)")
    io.add_argument("--task", default="auto",
                    choices=("auto", "classification", "qa", "multiple-choice"),
                    help="head type; auto reads it from the model's config (default)")
    add_task_file_arguments(io)
    io.add_argument("--eval-label-map", default=None, metavar="MAP",
                    help="rename/merge the file's labels into the model's: SRC=DST,... or "
                         "one of " + ", ".join(sorted(NAMED_MAPS)))
    io.add_argument("--prediction-map", default=None, metavar="MAP",
                    help="merge the model's classes into the file's labels (e.g. "
                         "mnli-to-2way for a 3-way model on SciTail)")
    io.add_argument("--max-eval-examples", type=int, default=None,
                    help="use only the first N examples of each file")
    io.add_argument("--max-length", type=int, default=128,
                    help="truncate inputs to this many tokens (default: 128)")
    add_qa_arguments(p)
    add_mc_arguments(p)

    at = p.add_argument_group("embedding-space PGD attack")
    at.add_argument("--radius", type=float, action="append", default=[], metavar="EPS",
                    help="attack radius per token (repeatable; several radii in one run); "
                         "0 gives the clean result exactly; none: clean evaluation only")
    at.add_argument("--norm", choices=("inf", "l2"), default="inf",
                    help="the ball's norm, per token over the hidden size (default: inf)")
    at.add_argument("--steps", type=int, default=10, help="PGD steps (default: 10)")
    at.add_argument("--step-size", type=float, default=None,
                    help="PGD step size η, in the radius' units (default: 2.5·radius/steps)")
    at.add_argument("--relative", action="store_true",
                    help="radius and step size are fractions of each token's embedding norm "
                         "(like --adv-epsilon-scale relative) instead of absolute units")
    at.add_argument("--random-start", action="store_true",
                    help="start PGD from a uniform point in the ball instead of zero")
    at.add_argument("--seed", type=int, default=0, help="seed of the random start")
    at.add_argument("--word-attack", nargs="?", const="deepwordbug", default=None,
                    metavar="RECIPE",
                    help="also run a word-level attack through TextAttack on classification: "
                         "'deepwordbug' (the default when the flag has no value; character "
                         "edits of the most important words, runs offline) or a TextAttack "
                         "recipe class name such as TextFoolerJin2019 (needs its resources "
                         "in TextAttack's cache); needs the 'attack' extra")
    at.add_argument("--word-attack-examples", type=int, default=100,
                    help="examples attacked by --word-attack (default: 100)")

    rn = p.add_argument_group("run")
    rn.add_argument("--batch-size", dest="eval_batch_size", type=int, default=32,
                    help="evaluation batch size (default: 32)")
    rn.add_argument("--json", dest="json_out", default=None, metavar="PATH",
                    help="write the results as JSON here (one model: its result object; "
                         "several: a list of them, in --model order)")
    rn.add_argument("--plot", default=None, metavar="FILE.png",
                    help="draw the metric (accuracy; F1 for QA) against the attack radius to "
                         "this PNG, one curve per --model; needs a --radius > 0")
    rn.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU exists")
    rn.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def detect_task(config: Any) -> str:
    names = " ".join(getattr(config, "architectures", None) or [])
    if "QuestionAnswering" in names:
        return "qa"
    if "MultipleChoice" in names:
        return "multiple-choice"
    return "classification"


def _check_args(args: argparse.Namespace) -> None:
    for model in args.model:
        if not os.path.isfile(os.path.join(model, "config.json")):
            fail(f"--model {model!r} is not a HF model directory with config.json", PROG)
    if args.plot is not None:
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not args.plot.lower().endswith(".png") or not os.path.isdir(folder):
            fail(f"--plot {args.plot!r}: needs a .png path in an existing folder", PROG)
        if not any(r > 0 for r in args.radius):
            fail("--plot draws the metric against the radius: give at least one --radius > 0",
                 PROG)
    if any(not r >= 0 for r in args.radius):
        fail("--radius must be >= 0", PROG)
    if args.steps < 0 or args.eval_batch_size < 1 or args.max_length < 1:
        fail("--steps must be >= 0, --batch-size and --max-length >= 1", PROG)
    if args.step_size is not None and not args.step_size >= 0:
        fail("--step-size must be >= 0", PROG)
    from . import word_attack

    if args.word_attack and not word_attack.available():
        fail(f"--word-attack needs the optional library {word_attack.LIBRARY!r}, which is not "
             f"installed; the embedding-space attack needs nothing extra", PROG)


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Evaluates each --model as ``args`` say; returns one result per model (also written
    to --json, and drawn to --plot)."""
    _check_args(args)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results = [evaluate_model(args, model_dir) for model_dir in args.model]
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(results[0] if len(results) == 1 else results, fh, indent=2)
    if args.plot:
        from .robustness_plot import plot_robustness

        plot_robustness(results, args.plot)
    return results


def evaluate_model(args: argparse.Namespace, model_dir: str) -> Dict[str, Any]:
    """The result of one model: the clean and attacked rows of every file."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from .embedding_attack import AttackConfig
    from .robustness_tasks import TASK_EVALUATORS

    config = AutoConfig.from_pretrained(model_dir)
    task = detect_task(config) if args.task == "auto" else args.task
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    evaluator = TASK_EVALUATORS[task](args, tokenizer)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    model = evaluator.load_model(model_dir).to(device).eval()
    attacks: List[Optional[AttackConfig]] = [None]
    for radius in args.radius:
        attacks.append(AttackConfig(radius=radius, norm=args.norm, steps=args.steps,
                                    step_size=args.step_size, relative=args.relative,
                                    random_start=args.random_start, seed=args.seed))
    files = [("eval", args.eval)]
    for spec in args.adv_eval:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path:
            fail(f"--adv-eval {spec!r}: expected NAME=PATH", PROG)
        files.append((name.strip(), path))
    rows: List[Dict[str, Any]] = []
    try:
        datasets = [(name, evaluator.load(path)) for name, path in files]
        for name, data in datasets:
            for attack in (attacks if name == "eval" else [None]):
                scores = evaluator.evaluate(model, data, attack)
                rows.append({"dataset": name, "file": os.path.abspath(dict(files)[name]),
                             "attack": _attack_name(attack),
                             "radius": attack.radius if attack else 0.0, **scores})
        if args.word_attack:
            scores = evaluator.word_attack(model, datasets[0][1], args.word_attack,
                                           args.word_attack_examples, args.seed)
            rows.append({"dataset": "eval", "file": os.path.abspath(args.eval),
                         "attack": f"textattack:{args.word_attack}", "radius": None, **scores})
    except (TaskDataError, RuntimeError) as err:
        fail(str(err), PROG)
    return {"model": os.path.abspath(model_dir), "task": task,
            "metric": evaluator.metric,
            "attack": {"norm": args.norm, "steps": args.steps, "step_size": args.step_size,
                       "relative": args.relative, "random_start": args.random_start,
                       "radii": list(args.radius)},
            "results": rows}


def _attack_name(attack) -> str:
    if attack is None:
        return "clean"
    unit = "×‖e‖" if attack.relative else ""
    return f"pgd-{attack.norm} eps={attack.radius:g}{unit} steps={attack.steps}"


def format_table(result: Dict[str, Any]) -> str:
    metric_keys = [k for k in ("accuracy", "exact_match", "f1")
                   if any(k in r for r in result["results"])]
    header = ["dataset", "attack", *metric_keys, "examples"]
    lines = [header]
    for r in result["results"]:
        vals = [f"{r[k]:.4f}" if isinstance(r.get(k), float) else "-" for k in metric_keys]
        lines.append([r["dataset"], r["attack"], *vals, f"{int(r.get('examples', 0))}"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import datasets
    import transformers

    # The table is the output: no per-file tokenizing/loading progress bars around it.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    results = run(args)
    for result in results:
        if len(results) > 1:
            print(f"model: {result['model']}")
        print(format_table(result))
    if args.json_out:
        print(f"{PROG}: results written to {args.json_out}")
    if args.plot:
        print(f"{PROG}: figure written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
