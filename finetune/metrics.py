"""Evaluation metrics for fine-tuning: accuracy/macro-F1 and Pearson/Spearman/MSE.

Every value in the returned dict is a plain Python float, so results can be
logged as JSON directly.

Undefined values: Pearson and Spearman correlations are undefined when either
the predictions or the labels are constant (zero variance), or when there are
fewer than two examples; they are then reported as ``nan`` (without warnings)
instead of raising; non-finite predictions (a diverged model) give ``nan``
correlations and a ``nan``/``inf`` MSE. Accuracy, macro-F1 and MSE are always defined for
non-empty input. Macro-F1 averages per-class F1 = 2TP / (2TP + FP + FN) over
the classes that occur in the labels or the predictions, so every averaged
term is defined (a class that is predicted but never true contributes 0).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

TASKS = ("classification", "regression")


def compute_metrics(task: str, predictions, labels,
                    label_list: Sequence[str] | None = None) -> dict[str, float]:
    """Metrics for one evaluation pass.

    Args:
        task: ``"classification"`` or ``"regression"``.
        predictions: classification: class indices of shape (n,) or logits /
            probabilities of shape (n, num_classes) (argmax is taken);
            regression: values of shape (n,) or (n, 1).
        labels: gold class indices (classification) or values (regression).
        label_list: class names; when given, indices are checked against it.

    Returns:
        classification: ``{"accuracy", "macro_f1"}``;
        regression: ``{"pearson", "spearman", "mse"}``.

    Raises:
        ValueError: unknown task, empty input, length mismatch, or a class
            index outside ``label_list``.
    """
    if task == "classification":
        return classification_metrics(predictions, labels, label_list)
    if task == "regression":
        return regression_metrics(predictions, labels)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def classification_metrics(predictions, labels,
                           label_list: Sequence[str] | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 (scikit-learn) for class indices or logits."""
    from sklearn.metrics import accuracy_score, f1_score

    preds = np.asarray(predictions)
    if preds.ndim == 2:
        if label_list is not None and preds.shape[1] != len(label_list):
            raise ValueError(f"predictions have {preds.shape[1]} columns but label_list "
                             f"has {len(label_list)} classes")
        preds = preds.argmax(axis=1)
    gold = np.asarray(labels)
    preds, gold = _check_pair(preds, gold)
    for name, values in (("predictions", preds), ("labels", gold)):
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise ValueError(f"classification {name} must be class indices (integers)")
    preds, gold = preds.astype(np.int64), gold.astype(np.int64)
    if label_list is not None:
        bad = [int(v) for v in np.concatenate([preds, gold]) if not 0 <= v < len(label_list)]
        if bad:
            raise ValueError(f"class index {bad[0]} is outside label_list "
                             f"({len(label_list)} classes: {list(label_list)})")
    return {
        "accuracy": float(accuracy_score(gold, preds)),
        # zero_division only matters for classes absent from both; none are
        # included (sklearn uses the union of present classes).
        "macro_f1": float(f1_score(gold, preds, average="macro", zero_division=0)),
    }


def regression_metrics(predictions, labels) -> dict[str, float]:
    """Pearson and Spearman correlation (scipy) and mean squared error."""
    from scipy import stats

    preds = np.asarray(predictions, dtype=np.float64)
    if preds.ndim == 2 and preds.shape[1] == 1:
        preds = preds[:, 0]
    gold = np.asarray(labels, dtype=np.float64)
    preds, gold = _check_pair(preds, gold)
    mse = float(np.mean((preds - gold) ** 2))
    if not _correlation_defined(preds, gold):
        return {"pearson": math.nan, "spearman": math.nan, "mse": mse}
    return {
        "pearson": float(stats.pearsonr(preds, gold)[0]),
        "spearman": float(stats.spearmanr(preds, gold)[0]),
        "mse": mse,
    }


def _correlation_defined(a: np.ndarray, b: np.ndarray) -> bool:
    """Correlations need two points, finite values and variance in both inputs."""
    if a.size < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return False
    # Exact equality rather than a variance threshold: a tiny but real spread
    # still has a well-defined correlation.
    return bool(np.any(a != a[0]) and np.any(b != b[0]))


def _check_pair(preds: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if preds.ndim != 1 or gold.ndim != 1:
        raise ValueError(f"expected 1-D predictions and labels, got shapes "
                         f"{preds.shape} and {gold.shape}")
    if preds.shape[0] != gold.shape[0]:
        raise ValueError(f"{preds.shape[0]} predictions but {gold.shape[0]} labels")
    if preds.shape[0] == 0:
        raise ValueError("cannot compute metrics on zero examples")
    return preds, gold
