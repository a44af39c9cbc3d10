"""Per-task pieces of ``alum-robustness``: reading, the attack's target, the metric.

Each evaluator loads the model head, reads files through the same readers as
``alum-finetune`` and scores a model clean or under an ``AttackConfig``.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional

import numpy as np
import torch

from .embedding_attack import AttackConfig
from .inference import predict
from .task_data import TaskDataError


class ClassificationEvaluator:
    metric = "accuracy"

    def __init__(self, args: argparse.Namespace, tokenizer: Any):
        self.args, self.tokenizer = args, tokenizer

    def load_model(self, path: str):
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(path)
        if getattr(model.config, "problem_type", None) == "regression":
            raise TaskDataError("alum-robustness measures accuracy: the model is a "
                                "regression head")
        n = model.config.num_labels
        self.model_labels = [str(model.config.id2label[i]) for i in range(n)]
        return model

    def load(self, path: str):
        from .label_maps import parse_label_map, prediction_index, remap_labels
        from .task_data import load_task_file

        a = self.args
        read = dict(text_field=a.text_field, text_pair_field=a.text_pair_field,
                    label_field=a.label_field, fmt=a.fmt, no_header=a.no_header,
                    ignore_labels=a.ignore_label, encoding_errors=a.encoding_errors,
                    max_examples=a.max_eval_examples)
        eval_map, pred_map = parse_label_map(a.eval_label_map), parse_label_map(a.prediction_map)
        if not (eval_map or pred_map):
            data = load_task_file(path, label_list=self.model_labels, **read)
        else:
            data = remap_labels(load_task_file(path, **read), eval_map,
                                None if pred_map else self.model_labels)
        # P[model class] = evaluation class (the identity without a prediction map).
        data.class_map = prediction_index(self.model_labels, data.label_list, pred_map)
        return data

    def evaluate(self, model, data, attack: Optional[AttackConfig]) -> Dict[str, float]:
        from transformers import DataCollatorWithPadding

        from .task_inputs import build_dataset

        class_map = torch.as_tensor(data.class_map)

        def loss_fn(outputs, batch, mask):
            # −log p(gold), where p(gold) sums the model classes that map onto it: with a
            # prediction map (3-way model, 2-way file) the attack targets the merged class.
            logits = outputs.logits.float()
            members = class_map.to(logits.device)[None, :] == batch["labels"][:, None]
            gold = torch.logsumexp(logits.masked_fill(~members, float("-inf")), dim=-1)
            return (torch.logsumexp(logits, dim=-1) - gold).sum()

        dataset = build_dataset(data, self.tokenizer, self.args.max_length)
        out = predict(model, dataset, DataCollatorWithPadding(self.tokenizer),
                      self.args.eval_batch_size, attack, loss_fn=loss_fn)
        preds = data.class_map[out["logits"].argmax(-1)]
        gold = np.asarray(data.labels)
        return {"accuracy": float((preds == gold).mean()), "examples": float(len(gold))}

    def word_attack(self, model, data, recipe: str, n: int, seed: int = 0) -> Dict[str, float]:
        from .word_attack import run_word_attack

        if not np.array_equal(data.class_map, np.arange(len(data.class_map))):
            raise TaskDataError("--word-attack does not support --prediction-map")
        return run_word_attack(model, self.tokenizer, data.texts, data.text_pairs,
                               data.labels, recipe, n, seed, self.args.max_length)


class MultipleChoiceEvaluator(ClassificationEvaluator):
    def load_model(self, path: str):
        from transformers import AutoModelForMultipleChoice

        return AutoModelForMultipleChoice.from_pretrained(path)

    def load(self, path: str):
        from .multiple_choice_data import load_multiple_choice_file

        return load_multiple_choice_file(path, self.args.mc_format, self.args.max_eval_examples,
                                         encoding_errors=self.args.encoding_errors)

    def evaluate(self, model, data, attack: Optional[AttackConfig]) -> Dict[str, float]:
        from .multiple_choice_data import build_mc_dataset, mc_collator

        dataset = build_mc_dataset(data, self.tokenizer, self.args.max_length)
        out = predict(model, dataset, mc_collator(self.tokenizer), self.args.eval_batch_size,
                      attack)
        gold = np.asarray(data.labels)
        return {"accuracy": float((out["logits"].argmax(-1) == gold).mean()),
                "examples": float(len(gold))}

    def word_attack(self, model, data, recipe: str, n: int, seed: int = 0) -> Dict[str, float]:
        raise TaskDataError("--word-attack supports classification models only")


class QAEvaluator(MultipleChoiceEvaluator):
    metric = "exact_match/f1"

    def load_model(self, path: str):
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(path)

    def load(self, path: str):
        from .qa_data import load_squad_file

        return load_squad_file(path, version_2=self.args.squad_v2,
                               max_examples=self.args.max_eval_examples,
                               encoding_errors=self.args.encoding_errors)

    def evaluate(self, model, data, attack: Optional[AttackConfig]) -> Dict[str, float]:
        from .qa_cli import evaluate_qa

        scores = evaluate_qa(model, self.tokenizer, data, self.args, attack=attack)
        # The attack maximises start + end cross-entropy of the first gold span.
        return {"exact_match": scores["exact_match"], "f1": scores["f1"],
                "examples": scores["total"]}


TASK_EVALUATORS = {"classification": ClassificationEvaluator,
                   "multiple-choice": MultipleChoiceEvaluator, "qa": QAEvaluator}
