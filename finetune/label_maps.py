"""Label-set mappings between NLI datasets (MNLI, ANLI, SciTail, SNLI).

The same relation is spelled differently across datasets (ANLI ``e/n/c``, SciTail
``entails/neutral``, MNLI ``entailment/neutral/contradiction``), and the label sets
differ in size: SciTail is 2-way, where ``neutral`` means "not entailed". Two kinds of
mapping cover the cross-dataset evaluations of the ALUM paper:

* a **label map** renames (and may merge) the labels of a file as it is read:
  ``--label-map anli-to-mnli`` trains an ANLI model with MNLI's names; evaluating a
  2-way SciTail model (labels ``entailment, neutral`` after ``scitail-to-mnli``) on
  MNLI uses ``--eval-label-map mnli-to-2way``, which merges contradiction into neutral;
* a **prediction map** merges the *model's* classes into the evaluation file's:
  a 3-way MNLI model on SciTail predicts ``contradiction``, which
  ``--prediction-map mnli-to-2way`` counts as ``neutral`` (not entailed).

A mapping is a named one (``NAMED_MAPS``) or ``SRC=DST,SRC=DST``; labels it does not
mention are kept as they are.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Optional, Sequence

import numpy as np

from .task_data import TaskData, TaskDataError

NAMED_MAPS: Dict[str, Dict[str, str]] = {
    # ANLI's letters (and its integer labels in the HF dataset: 0 e, 1 n, 2 c).
    "anli-to-mnli": {"e": "entailment", "n": "neutral", "c": "contradiction"},
    "anli-int-to-mnli": {"0": "entailment", "1": "neutral", "2": "contradiction"},
    # SciTail (2-way): neutral means "not entailed".
    "scitail-to-mnli": {"entails": "entailment", "neutral": "neutral"},
    # 3-way -> 2-way in MNLI's names: neither neutral nor contradiction is entailed.
    "mnli-to-2way": {"contradiction": "neutral"},
    # 3-way MNLI names -> SciTail's 2-way names.
    "mnli-to-scitail": {"entailment": "entails", "neutral": "neutral",
                        "contradiction": "neutral"},
    # GLUE RTE/QNLI style 2-way names.
    "mnli-to-rte": {"entailment": "entailment", "neutral": "not_entailment",
                    "contradiction": "not_entailment"},
}


def parse_label_map(spec: Optional[str]) -> Optional[Dict[str, str]]:
    """A named map or ``SRC=DST[,SRC=DST...]``; None for None/empty."""
    if not spec:
        return None
    if spec in NAMED_MAPS:
        return dict(NAMED_MAPS[spec])
    mapping: Dict[str, str] = {}
    for part in spec.split(","):
        src, sep, dst = part.partition("=")
        src, dst = src.strip(), dst.strip()
        if not sep or not src or not dst:
            raise TaskDataError(
                f"label map {spec!r}: {part!r} is not SRC=DST; give SRC=DST pairs separated "
                f"by commas, or one of the named maps {sorted(NAMED_MAPS)}")
        if src in mapping and mapping[src] != dst:
            raise TaskDataError(f"label map {spec!r} maps {src!r} twice")
        mapping[src] = dst
    return mapping


def remap_labels(data: TaskData, mapping: Optional[Dict[str, str]],
                 label_list: Optional[Sequence[str]] = None) -> TaskData:
    """``data`` with its label names passed through ``mapping`` and indexed in
    ``label_list`` (default: the sorted mapped names)."""
    if data.task != "classification":
        if mapping:
            raise TaskDataError(f"{data.source}: label maps apply to classification only")
        return data
    from .task_data import build_label_list

    mapping = mapping or {}
    names = [mapping.get(data.label_list[i], data.label_list[i]) for i in data.labels]
    target = list(label_list) if label_list is not None else build_label_list(names)
    index = {name: i for i, name in enumerate(target)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        how = " after the label map" if mapping else ""
        raise TaskDataError(
            f"{data.source}: label(s) {unknown}{how} are not among the model's labels "
            f"{target}; pass a label map (e.g. --eval-label-map mnli-to-2way) or a "
            f"--prediction-map")
    return replace(data, labels=[index[n] for n in names], label_list=target)


def prediction_index(model_labels: Sequence[str], eval_labels: Sequence[str],
                     mapping: Optional[Dict[str, str]]) -> np.ndarray:
    """Array P with P[model class] = evaluation class, through the prediction map."""
    index = {name: i for i, name in enumerate(eval_labels)}
    mapping = mapping or {}
    out: List[int] = []
    for name in model_labels:
        target = mapping.get(name, name)
        if target not in index:
            raise TaskDataError(
                f"the model's class {name!r}"
                + (f" (mapped to {target!r})" if target != name else "")
                + f" is not an evaluation label {list(eval_labels)}; add it to "
                  f"--prediction-map, e.g. {name}={eval_labels[-1]}")
        out.append(index[target])
    return np.asarray(out, dtype=np.int64)


def mapped_predictions(logits: np.ndarray, model_labels: Sequence[str],
                       eval_labels: Sequence[str],
                       mapping: Optional[Dict[str, str]]) -> np.ndarray:
    """Argmax over the model's classes, translated into evaluation class indices."""
    return prediction_index(model_labels, eval_labels, mapping)[np.asarray(logits).argmax(-1)]
