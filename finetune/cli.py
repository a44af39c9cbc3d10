"""``alum-finetune``: ALUM fine-tuning of a local Hugging Face BERT/RoBERTa.

Sequence classification (single sentence or sentence pair) and regression, from
GLUE TSV, jsonl (MNLI/ANLI/SciTail style), CSV or parquet files; extractive QA from
SQuAD v1.1/v2.0 JSON (--task qa); multiple choice from SWAG CSV or HellaSwag jsonl
(--task multiple-choice). The model directory written at the end loads with
``from_pretrained``.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from typing import List, Optional

from alum.cli_args import add_alum_arguments, alum_config_from_args

from .label_maps import (NAMED_MAPS, mapped_predictions, parse_label_map,
                         remap_labels)
from .mc_cli import add_mc_arguments
from .qa_cli import add_qa_arguments
from .run_common import (add_task_file_arguments, fail, save_atomically, train_resumable,
                         training_arguments, training_summary)
from .task_data import TaskDataError, load_task_file

logger = logging.getLogger("alum.finetune")

TASK_CHOICES = ("classification", "regression", "qa", "multiple-choice")

EXAMPLES = """examples:
  # SST-2 from the GLUE TSVs, ALUM's default recipe (the free direction;
  # --alum-preset relative-finetune for Algorithm 1's ascent step)
  alum-finetune --model ./bert-base-uncased --train SST-2/train.tsv --eval SST-2/dev.tsv \\
      --text-field sentence --label-field label --output runs/sst2-alum
  # ANLI jsonl, sentence pairs, an L2 ball of 10%% of each token's embedding norm
  alum-finetune --model ./roberta-large --train anli/R1/train.jsonl --eval anli/R1/dev.jsonl \\
      --text-field premise --text-pair-field hypothesis --label-field label \\
      --alum-preset relative --output runs/anli-r1
  # STS-B regression, standard fine-tuning for comparison
  alum-finetune --model ./bert-base-uncased --task regression --train STS-B/train.tsv \\
      --eval STS-B/dev.tsv --text-field sentence1 --text-pair-field sentence2 \\
      --label-field score --no-alum --output runs/stsb
  # MNLI, evaluated on matched and mismatched dev sets
  alum-finetune --model ./roberta-base --train MNLI/train.jsonl --eval MNLI/dev_matched.jsonl \\
      --extra-eval mismatched=MNLI/dev_mismatched.jsonl --text-field sentence1 \\
      --text-pair-field sentence2 --label-field gold_label --ignore-label - --output runs/mnli
  # SciTail (TSV: premise, hypothesis, label; no header) with MNLI's label names
  alum-finetune --model ./bert-base-uncased --train SciTail/tsv_format/scitail_1.0_train.tsv \\
      --no-header --text-field 0 --text-pair-field 1 --label-field 2 \\
      --label-map scitail-to-mnli --output runs/scitail
  # SQuAD v2.0 with doc stride, ALUM over the start and end distributions
  alum-finetune --model ./bert-base-uncased --task qa --squad-v2 --train train-v2.0.json \\
      --eval dev-v2.0.json --max-length 384 --doc-stride 128 --output runs/squad2
  # SWAG (CSV) or HellaSwag (jsonl) multiple choice
  alum-finetune --model ./roberta-base --task multiple-choice --train swagaf/data/train.csv \\
      --eval swagaf/data/val.csv --output runs/swag
  # Data parallel over 4 processes (--batch-size is per process); or the deepspeed
  # launcher with --deepspeed ds_configs/finetune_zero2.json for ZeRO
  torchrun --nproc_per_node 4 -m alum.finetune.cli --model ./roberta-base \\
      --train SST-2/train.tsv --eval SST-2/dev.tsv --batch-size 8 --output runs/sst2-dp4
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alum-finetune", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    io = p.add_argument_group("model and data")
    io.add_argument("--model", required=True,
                    help="local Hugging Face model directory (BERT or RoBERTa family) with its "
                         "tokenizer; nothing is downloaded")
    io.add_argument("--train", required=True, help="training file (.tsv, .csv, .jsonl, "
                    ".json, .parquet; .gz of the text formats)")
    io.add_argument("--eval", default=None, help="evaluation file, same format options; "
                    "evaluated after each epoch")
    io.add_argument("--output", required=True,
                    help="directory for the fine-tuned model; written under a temporary name "
                         "and renamed when training succeeds")
    io.add_argument("--task", choices=TASK_CHOICES, default="classification",
                    help="head type: sequence classification, regression, extractive QA "
                         "(SQuAD JSON) or multiple choice (SWAG CSV / HellaSwag jsonl) "
                         "(default: classification)")
    add_task_file_arguments(io)
    io.add_argument("--labels", default=None,
                    help="comma-separated class names in index order; default: the sorted "
                         "labels of the training file")
    io.add_argument("--max-train-examples", type=int, default=None,
                    help="use only the first N training rows")
    io.add_argument("--max-eval-examples", type=int, default=None,
                    help="use only the first N evaluation rows")
    io.add_argument("--max-length", type=int, default=128,
                    help="truncate inputs to this many tokens (default: 128)")

    lm = p.add_argument_group(
        "label sets (classification; NLI across MNLI/ANLI/SciTail; see docs/finetune_tasks.md)")
    lm.add_argument("--label-map", default=None, metavar="MAP",
                    help="rename/merge labels of the train and eval files as they are read: "
                         "SRC=DST[,SRC=DST...] or a named map: " + ", ".join(sorted(NAMED_MAPS)))
    lm.add_argument("--eval-label-map", default=None, metavar="MAP",
                    help="label map for the evaluation files instead of --label-map (e.g. "
                         "mnli-to-2way to score a 2-way SciTail model on MNLI)")
    lm.add_argument("--prediction-map", default=None, metavar="MAP",
                    help="merge the model's predicted classes into the evaluation labels "
                         "(e.g. mnli-to-2way: a 3-way model's contradiction counts as "
                         "neutral on SciTail); the eval files then keep their own label set")
    lm.add_argument("--extra-eval", action="append", default=[], metavar="NAME=PATH",
                    help="a further evaluation file (same field options), evaluated after "
                         "training and reported as eval_NAME_* (repeatable; e.g. "
                         "mismatched=dev_mismatched.jsonl, or an ANLI round)")
    add_qa_arguments(p)
    add_mc_arguments(p)

    tr = p.add_argument_group("training")
    tr.add_argument("--epochs", type=float, default=3.0, help="training epochs (default: 3)")
    tr.add_argument("--max-steps", type=int, default=-1,
                    help="stop after this many optimizer steps (overrides --epochs if > 0)")
    tr.add_argument("--batch-size", type=int, default=32, help="per-device train batch size")
    tr.add_argument("--eval-batch-size", type=int, default=64,
                    help="per-device eval batch size")
    tr.add_argument("--grad-accum", type=int, default=1,
                    help="gradient accumulation steps (default: 1)")
    tr.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (AdamW)")
    tr.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    tr.add_argument("--warmup-ratio", type=float, default=0.1,
                    help="fraction of the steps spent in linear warmup (default: 0.1)")
    tr.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm")
    tr.add_argument("--seed", type=int, default=42,
                    help="seed of the head's initialisation, dropout, noise and data order")
    tr.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    tr.add_argument("--fp16", action="store_true", help="fp16 mixed precision (GPU only)")
    tr.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU exists")
    tr.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice)")
    tr.add_argument("--logging-steps", type=int, default=20,
                    help="log the training loss and ALUM statistics every N steps")
    tr.add_argument("--report-to", default="none",
                    help="HF Trainer integrations to log to, e.g. tensorboard (default: none)")
    tr.add_argument("--save-checkpoints", action="store_true",
                    help="save a resumable checkpoint after each epoch in OUTPUT.work/")
    tr.add_argument("--resume", action="store_true",
                    help="resume from the newest checkpoint in OUTPUT.work/ whose files match "
                         "their recorded checksums (a damaged newer one is named in a warning "
                         "and moved to OUTPUT.work/damaged/)")
    tr.add_argument("--resume-damaged", choices=("refuse", "start-fresh"), default="refuse",
                    help="with --resume, when OUTPUT.work/ holds checkpoints and none is "
                         "usable: refuse (an error listing each and its fault; nothing is "
                         "changed) or start-fresh (move them to OUTPUT.work/damaged/ and train "
                         "from step 0) (default: refuse)")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace an existing OUTPUT directory")
    tr.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    tr.add_argument("--deepspeed", default=None, metavar="CONFIG",
                    help="DeepSpeed JSON config (e.g. ds_configs/finetune_zero2.json) for ZeRO "
                         "under the deepspeed launcher; handed to the HF Trainer")
    tr.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=-1,
                    help="set by the deepspeed/torch launchers; do not pass it yourself")
    add_alum_arguments(p, default_preset="free")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if not os.path.isdir(args.model):
        fail(f"--model {args.model!r} is not a directory (a local HF model directory with "
              f"config.json is needed; nothing is downloaded)")
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        fail(f"--model {args.model!r} has no config.json")
    if os.path.exists(args.output) and not args.overwrite:
        fail(f"--output {args.output!r} exists; pass --overwrite to replace it")
    if args.bf16 and args.fp16:
        fail("--bf16 and --fp16 exclude each other")
    if not 0.0 <= args.warmup_ratio < 1.0:
        fail("--warmup-ratio must be in [0, 1)")
    for name in ("max_length", "batch_size", "eval_batch_size", "grad_accum"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1")


def run(args: argparse.Namespace) -> dict:
    """Fine-tunes as ``args`` say; returns the summary written to OUTPUT/alum_finetune.json."""
    _check_args(args)
    try:
        alum_config = alum_config_from_args(
            args, **({"loss": "mse"} if args.task == "regression" else {}))
    except ValueError as err:
        fail(str(err))
    if alum_config is not None and (args.task == "regression") != (alum_config.loss == "mse"):
        fail(f"--adv-loss {alum_config.loss} does not fit --task {args.task}: regression "
              f"heads use mse, classification heads sym_kl or kl")
    if args.task == "qa":
        from .qa_cli import run_qa
        return run_qa(args, alum_config)
    if args.task == "multiple-choice":
        from .mc_cli import run_multiple_choice
        return run_multiple_choice(args, alum_config)

    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .metrics import compute_metrics
    from .task_inputs import build_dataset, build_collator
    from .trainer import AlumTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.set_seed(args.seed)
    read = dict(text_field=args.text_field, text_pair_field=args.text_pair_field,
                label_field=args.label_field, task=args.task, fmt=args.fmt,
                no_header=args.no_header, ignore_labels=args.ignore_label,
                encoding_errors=args.encoding_errors)
    labels = args.labels.split(",") if args.labels else None
    try:
        train_map = parse_label_map(args.label_map)
        eval_map = parse_label_map(args.eval_label_map) if args.eval_label_map else train_map
        pred_map = parse_label_map(args.prediction_map)
        if args.task == "regression" and (train_map or eval_map or pred_map):
            raise TaskDataError("label maps apply to classification, not regression")
        train = load_task_file(args.train, label_list=None if train_map else labels,
                               max_examples=args.max_train_examples, **read)
        if train_map:
            train = remap_labels(train, train_map, labels)

        def load_eval(path):
            if not (eval_map or pred_map):  # unmapped: unknown labels fail with their line
                return load_task_file(path, label_list=train.label_list,
                                      max_examples=args.max_eval_examples, **read)
            data = load_task_file(path, max_examples=args.max_eval_examples, **read)
            return remap_labels(data, eval_map, None if pred_map else train.label_list)

        evaluation = load_eval(args.eval) if args.eval else None
        extra = []
        for spec in args.extra_eval:
            name, sep, path = spec.partition("=")
            if not sep or not name.strip() or not path:
                raise TaskDataError(f"--extra-eval {spec!r}: expected NAME=PATH")
            extra.append((name.strip(), load_eval(path)))
        if pred_map is not None:
            for data in [evaluation] + [d for _, d in extra]:
                if data is not None:  # fails early when a model class has no target
                    mapped_predictions(torch.zeros(1, train.num_labels).numpy(),
                                       train.label_list, data.label_list, pred_map)
    except TaskDataError as err:
        fail(str(err))

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model_kwargs = dict(num_labels=train.num_labels)
    if args.task == "regression":
        model_kwargs["problem_type"] = "regression"
    else:
        model_kwargs["problem_type"] = "single_label_classification"
        model_kwargs["id2label"] = dict(enumerate(train.label_list))
        model_kwargs["label2id"] = {name: i for i, name in enumerate(train.label_list)}
    # A directory whose saved head has another label count gets a fresh head (HF warns).
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, ignore_mismatched_sizes=True, **model_kwargs)

    work_dir = args.output.rstrip("/") + ".work"
    training_args = training_arguments(args, work_dir, evaluate=evaluation is not None)

    def metrics_for(data):
        def metrics_fn(prediction):
            if pred_map is not None:  # the model's classes, merged into the file's labels
                preds = mapped_predictions(prediction.predictions, train.label_list,
                                           data.label_list, pred_map)
                return compute_metrics(args.task, preds, prediction.label_ids,
                                       label_list=data.label_list)
            return compute_metrics(args.task, prediction.predictions, prediction.label_ids,
                                   label_list=train.label_list)
        return metrics_fn

    trainer = AlumTrainer(
        model=model, args=training_args,
        train_dataset=build_dataset(train, tokenizer, args.max_length),
        eval_dataset=build_dataset(evaluation, tokenizer, args.max_length)
        if evaluation is not None else None,
        data_collator=build_collator(tokenizer), processing_class=tokenizer,
        compute_metrics=metrics_for(evaluation) if evaluation is not None else None,
        alum_config=alum_config)
    started, cpu_started = time.time(), time.process_time()
    train_resumable(trainer, args, work_dir)
    train_seconds = time.time() - started
    # CPU time of all this process's threads: a step's cost that other jobs sharing the
    # machine do not inflate, as they do the wall time (benchmarks/study_frontier.py).
    train_cpu_seconds = time.process_time() - cpu_started

    evals = [h for h in trainer.state.log_history if any(k.startswith("eval_") for k in h)]
    extra_results = {}
    for name, data in extra:
        trainer.compute_metrics = metrics_for(data)
        extra_results[name] = trainer.evaluate(
            eval_dataset=build_dataset(data, tokenizer, args.max_length),
            metric_key_prefix=f"eval_{name}")
    adv = training_summary(trainer)
    summary = {
        "model": os.path.abspath(args.model), "train": os.path.abspath(args.train),
        "eval": os.path.abspath(args.eval) if args.eval else None, "task": args.task,
        "label_list": train.label_list, "train_examples": len(train),
        "eval_examples": len(evaluation) if evaluation is not None else 0,
        "alum": alum_config.to_dict() if alum_config is not None else None,
        "train_seconds": round(train_seconds, 2),
        "train_cpu_seconds": round(train_cpu_seconds, 2), "steps": trainer.state.global_step,
        **adv, "output": os.path.abspath(args.output),
        "eval_history": evals, "final_eval": evals[-1] if evals else None,
        "extra_evals": extra_results, "label_maps": {
            "label_map": args.label_map, "eval_label_map": args.eval_label_map,
            "prediction_map": args.prediction_map},
        "seed": args.seed,
    }
    save_atomically(trainer, tokenizer, args.output, summary, args.overwrite)
    if not args.save_checkpoints and os.path.isdir(work_dir):
        shutil.rmtree(work_dir, ignore_errors=True)
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = run(args)
    if int(os.environ.get("RANK", "0")) != 0:  # one line per run, not per process
        return 0
    final = summary["final_eval"] or {}
    shown = {k: round(v, 4) for k, v in final.items()
             if k.startswith("eval_") and isinstance(v, float)}
    for result in (summary.get("extra_evals") or {}).values():
        shown.update({k: round(v, 4) for k, v in result.items()
                      if isinstance(v, float) and not k.endswith(("runtime", "per_second"))})
    print(f"alum-finetune: {summary['steps']} steps in {summary['train_seconds']} s "
          f"(ALUM {'on' if summary['alum'] else 'off'}, {summary['adv_skipped']} adversarial "
          f"terms skipped); final eval {shown}; model saved to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
