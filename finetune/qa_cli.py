"""``alum-finetune --task qa``: extractive QA (SQuAD v1.1 / v2.0) with ALUM.

The Trainer fine-tunes on windows of question + context (``qa_features``); ALUM's
term is KL over the start distribution plus KL over the end distribution
(``trainer.head_logits``). Evaluation runs after training, outside the Trainer: the
windows' logits are postprocessed into text answers (``qa_postprocess``) and scored
with the official EM/F1 (``qa_metrics``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from typing import Any, Dict, Optional

from .task_data import TaskDataError


def add_qa_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("extractive QA (--task qa; SQuAD JSON files)")
    g.add_argument("--squad-v2", action="store_true",
                   help="SQuAD 2.0: questions may be unanswerable (is_impossible); the model "
                        "predicts no answer when the null score wins")
    g.add_argument("--doc-stride", type=int, default=128,
                   help="overlap in tokens between the windows of a context longer than "
                        "--max-length (default: 128; below half of --max-length)")
    g.add_argument("--max-query-length", type=int, default=64,
                   help="questions are cut to this many tokens (default: 64)")
    g.add_argument("--max-answer-length", type=int, default=30,
                   help="longest answer span, in tokens, the postprocessing considers "
                        "(default: 30)")
    g.add_argument("--n-best", type=int, default=20,
                   help="start and end candidates per window in the postprocessing "
                        "(default: 20)")
    g.add_argument("--null-score-threshold", type=float, default=0.0,
                   help="SQuAD 2.0: predict no answer when null score - best span score "
                        "exceeds this (default: 0.0; tune it on dev)")


def qa_eval_options(args: argparse.Namespace) -> Dict[str, Any]:
    return dict(version_2=args.squad_v2, n_best=args.n_best,
                max_answer_length=args.max_answer_length,
                null_score_threshold=args.null_score_threshold)


def qa_feature_options(args: argparse.Namespace) -> Dict[str, Any]:
    return dict(max_length=args.max_length, doc_stride=args.doc_stride,
                max_query_length=args.max_query_length)


def evaluate_qa(model, tokenizer, data, args: argparse.Namespace, attack=None,
                predictions_out: Optional[str] = None) -> Dict[str, float]:
    """EM/F1 (percent) of ``model`` on ``data`` (a QAData), optionally under ``attack``."""
    from transformers import DataCollatorWithPadding

    from .inference import predict
    from .qa_features import build_qa_features, qa_dataset
    from .qa_metrics import squad_scores
    from .qa_postprocess import postprocess_qa

    # The attack needs gold spans; clean evaluation does not look at them.
    features = build_qa_features(data.examples, tokenizer, with_positions=True,
                                 **qa_feature_options(args))
    dataset = qa_dataset(features, with_positions=attack is not None)
    out = predict(model, dataset, DataCollatorWithPadding(tokenizer),
                  batch_size=args.eval_batch_size, attack=attack)
    preds, null_diff = postprocess_qa(data.examples, features, out["start_logits"],
                                      out["end_logits"], **qa_eval_options(args))
    if predictions_out:
        with open(predictions_out, "w") as fh:
            json.dump(preds, fh, indent=1, ensure_ascii=False)
    return squad_scores(preds, {ex.qid: ex.answers for ex in data.examples})


def run_qa(args: argparse.Namespace, alum_config) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, DataCollatorWithPadding

    from .qa_data import load_squad_file
    from .qa_features import build_qa_features, qa_dataset
    from .run_common import (fail, save_atomically, train_resumable, training_arguments,
                             training_summary)
    from .trainer import AlumTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    try:
        train = load_squad_file(args.train, version_2=args.squad_v2,
                                max_examples=args.max_train_examples,
                                encoding_errors=args.encoding_errors)
        evaluation = load_squad_file(args.eval, version_2=args.squad_v2,
                                     max_examples=args.max_eval_examples,
                                     encoding_errors=args.encoding_errors) if args.eval else None
        features = build_qa_features(train.examples, tokenizer, **qa_feature_options(args))
    except TaskDataError as err:
        fail(str(err))
    # A directory whose saved head has another shape gets a fresh one (HF warns).
    model = AutoModelForQuestionAnswering.from_pretrained(args.model, ignore_mismatched_sizes=True)
    work_dir = args.output.rstrip("/") + ".work"
    trainer = AlumTrainer(
        model=model, args=training_arguments(args, work_dir, evaluate=False),
        train_dataset=qa_dataset(features), data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer, alum_config=alum_config)
    started = time.time()
    train_resumable(trainer, args, work_dir)
    train_seconds = time.time() - started
    final = None
    if evaluation is not None:
        scores = evaluate_qa(trainer.model, tokenizer, evaluation, args)
        final = {f"eval_{k}": v for k, v in scores.items()}
        final["epoch"] = trainer.state.epoch
    summary = {
        "model": os.path.abspath(args.model), "train": os.path.abspath(args.train),
        "eval": os.path.abspath(args.eval) if args.eval else None, "task": "qa",
        "squad_v2": args.squad_v2, "train_examples": len(train),
        "train_features": len(features), "train_misaligned": train.num_misaligned,
        "eval_examples": len(evaluation) if evaluation is not None else 0,
        "alum": alum_config.to_dict() if alum_config is not None else None,
        "train_seconds": round(train_seconds, 2), "steps": trainer.state.global_step,
        **training_summary(trainer), "output": os.path.abspath(args.output),
        "eval_history": [final] if final else [], "final_eval": final,
        "qa": {**qa_feature_options(args), **qa_eval_options(args)}, "seed": args.seed,
    }
    save_atomically(trainer, tokenizer, args.output, summary, args.overwrite)
    if not args.save_checkpoints and os.path.isdir(work_dir):
        shutil.rmtree(work_dir, ignore_errors=True)
    return summary
