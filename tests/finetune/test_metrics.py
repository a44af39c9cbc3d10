"""Tests of alum.finetune.metrics against metrics computed by hand with numpy."""
import math
import warnings

import numpy as np
import pytest

from alum.finetune.metrics import compute_metrics


def macro_f1_by_hand(pred, gold):
    """Mean over classes present in either array of 2TP / (2TP + FP + FN)."""
    scores = []
    for c in np.union1d(pred, gold):
        tp = np.sum((pred == c) & (gold == c))
        fp = np.sum((pred == c) & (gold != c))
        fn = np.sum((pred != c) & (gold == c))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def pearson_by_hand(x, y):
    x, y = x - x.mean(), y - y.mean()
    return float(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y)))


def ranks(x):
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        r[x == v] = r[x == v].mean()
    return r


@pytest.mark.parametrize("seed", range(5))
def test_classification_against_numpy(seed):
    rng = np.random.default_rng(seed)
    n, k = 200, 4
    gold = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), gold] += rng.uniform(0, 2)  # better than chance, not perfect
    pred = logits.argmax(1)

    for predictions in (logits, pred, pred.tolist()):
        got = compute_metrics("classification", predictions, gold.tolist(),
                              label_list=list("abcd"))
        assert set(got) == {"accuracy", "macro_f1"}
        assert all(type(v) is float for v in got.values())
        assert got["accuracy"] == pytest.approx(float(np.mean(pred == gold)), abs=1e-12)
        assert got["macro_f1"] == pytest.approx(macro_f1_by_hand(pred, gold), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_regression_against_numpy(seed):
    rng = np.random.default_rng(seed)
    gold = np.round(rng.uniform(0, 5, 100), 1)  # rounded: ties exercise average ranks
    pred = gold + rng.normal(scale=1.0, size=100)
    for predictions in (pred, pred[:, None], pred.tolist()):
        got = compute_metrics("regression", predictions, gold)
        assert set(got) == {"pearson", "spearman", "mse"}
        assert all(type(v) is float for v in got.values())
        assert got["pearson"] == pytest.approx(pearson_by_hand(pred, gold), abs=1e-10)
        assert got["spearman"] == pytest.approx(pearson_by_hand(ranks(pred), ranks(gold)),
                                                abs=1e-10)
        assert got["mse"] == pytest.approx(float(np.mean((pred - gold) ** 2)), abs=1e-12)


def test_constant_predictions():
    gold = np.array([0.5, 1.0, 2.0, 3.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConstantInputWarning either
        got = compute_metrics("regression", np.full(4, 2.0), gold)
        # Constant labels are just as undefined for correlations.
        got_labels = compute_metrics("regression", gold, np.full(4, 1.0))
        one = compute_metrics("regression", [1.0], [2.0])
    assert math.isnan(got["pearson"]) and math.isnan(got["spearman"])
    assert got["mse"] == pytest.approx(float(np.mean((2.0 - gold) ** 2)))
    assert math.isnan(got_labels["pearson"]) and not math.isnan(got_labels["mse"])
    assert math.isnan(one["spearman"]) and one["mse"] == 1.0

    # A classifier that always predicts one class: everything is defined.
    gold_cls = np.array([0, 1, 1, 2, 2, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = compute_metrics("classification", np.full(6, 2), gold_cls)
    assert got["accuracy"] == 0.5
    assert got["macro_f1"] == pytest.approx(macro_f1_by_hand(np.full(6, 2), gold_cls))
    assert not any(math.isnan(v) for v in got.values())


def test_perfect_scores():
    assert compute_metrics("classification", [0, 1, 2], [0, 1, 2]) == {
        "accuracy": 1.0, "macro_f1": 1.0}
    got = compute_metrics("regression", [1.0, 2.0, 4.0], [1.0, 2.0, 4.0])
    assert got["pearson"] == pytest.approx(1.0) and got["spearman"] == pytest.approx(1.0)
    assert got["mse"] == 0.0


def test_input_errors():
    with pytest.raises(ValueError, match="task"):
        compute_metrics("ranking", [0], [0])
    with pytest.raises(ValueError, match="zero examples"):
        compute_metrics("classification", [], [])
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        compute_metrics("regression", [1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="outside label_list"):
        compute_metrics("classification", [0, 3], [0, 1], label_list=["a", "b"])
    with pytest.raises(ValueError, match="columns"):
        compute_metrics("classification", np.zeros((2, 3)), [0, 1], label_list=["a", "b"])
    with pytest.raises(ValueError, match="integers"):
        compute_metrics("classification", [0.5, 1.0], [0, 1])
