"""``alum-finetune --task multiple-choice``: SWAG / HellaSwag with ALUM.

Each example is ``num_choices`` (context, continuation) pairs scored by one head; the
softmax runs over the choices, and ALUM's term is the KL over that distribution
(docs/algorithm.md, "Divergences"). The embedding output is ``[B·C, T, H]``;
``trainer.embedding_mask`` reshapes the padding mask to match.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time

from .task_data import TaskDataError


def add_mc_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("multiple choice (--task multiple-choice)")
    g.add_argument("--mc-format", default="auto", choices=("auto", "swag", "hellaswag"),
                   help="SWAG CSV (sent1, sent2, ending0..3, label) or HellaSwag jsonl "
                        "(ctx_a, ctx_b, endings, label); auto: .csv is SWAG, .jsonl "
                        "HellaSwag (default)")


def run_multiple_choice(args: argparse.Namespace, alum_config) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    from .metrics import compute_metrics
    from .multiple_choice_data import build_mc_dataset, load_multiple_choice_file, mc_collator
    from .run_common import (fail, save_atomically, train_resumable, training_arguments,
                             training_summary)
    from .trainer import AlumTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.set_seed(args.seed)
    try:
        train = load_multiple_choice_file(args.train, args.mc_format, args.max_train_examples,
                                          encoding_errors=args.encoding_errors)
        evaluation = load_multiple_choice_file(
            args.eval, args.mc_format, args.max_eval_examples,
            encoding_errors=args.encoding_errors) if args.eval else None
        if evaluation is not None and evaluation.num_choices != train.num_choices:
            raise TaskDataError(f"{args.eval} has {evaluation.num_choices} choices per "
                                f"example, {args.train} has {train.num_choices}")
    except TaskDataError as err:
        fail(str(err))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    # A directory whose saved head has another shape (e.g. a classifier) gets a fresh one.
    model = AutoModelForMultipleChoice.from_pretrained(args.model, ignore_mismatched_sizes=True)
    work_dir = args.output.rstrip("/") + ".work"

    def metrics_fn(prediction):
        return compute_metrics("classification", prediction.predictions,
                               prediction.label_ids)

    trainer = AlumTrainer(
        model=model, args=training_arguments(args, work_dir, evaluate=evaluation is not None),
        train_dataset=build_mc_dataset(train, tokenizer, args.max_length),
        eval_dataset=build_mc_dataset(evaluation, tokenizer, args.max_length)
        if evaluation is not None else None,
        data_collator=mc_collator(tokenizer), processing_class=tokenizer,
        compute_metrics=metrics_fn if evaluation is not None else None,
        alum_config=alum_config)
    started = time.time()
    train_resumable(trainer, args, work_dir)
    train_seconds = time.time() - started
    evals = [h for h in trainer.state.log_history if any(k.startswith("eval_") for k in h)]
    summary = {
        "model": os.path.abspath(args.model), "train": os.path.abspath(args.train),
        "eval": os.path.abspath(args.eval) if args.eval else None,
        "task": "multiple-choice", "format": train.fmt, "num_choices": train.num_choices,
        "train_examples": len(train),
        "eval_examples": len(evaluation) if evaluation is not None else 0,
        "alum": alum_config.to_dict() if alum_config is not None else None,
        "train_seconds": round(train_seconds, 2), "steps": trainer.state.global_step,
        **training_summary(trainer), "output": os.path.abspath(args.output),
        "eval_history": evals, "final_eval": evals[-1] if evals else None, "seed": args.seed,
    }
    save_atomically(trainer, tokenizer, args.output, summary, args.overwrite)
    if not args.save_checkpoints and os.path.isdir(work_dir):
        shutil.rmtree(work_dir, ignore_errors=True)
    return summary
