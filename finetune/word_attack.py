"""Optional word-substitution attack through TextAttack, used only when it is installed.

ALUM's threat model is the embedding space (``embedding_attack``); word substitution
(TextFooler, PWWS, ...) is the discrete attack the robustness literature also reports.
TextAttack is not a dependency of this project: it is imported lazily, and asking for
it without having it installed is a clear error. Most recipes load word embeddings or
language models that TextAttack downloads on first use; on an offline machine they
must already be in its cache.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Dict, List, Optional, Sequence

LIBRARY = "textattack"


def available() -> bool:
    return importlib.util.find_spec(LIBRARY) is not None


def run_word_attack(model, tokenizer, texts: Sequence[str], pairs: Optional[Sequence[str]],
                    labels: Sequence[int], recipe: str, num_examples: int) -> Dict[str, float]:
    """Accuracy under a TextAttack recipe (e.g. ``TextFoolerJin2019``) on a classifier.

    Counts an example as robust when the attack fails; examples the model already gets
    wrong (TextAttack "skips" them) count as wrong, so the result is comparable with the
    clean accuracy.
    """
    if not available():
        raise RuntimeError(f"--word-attack needs the optional library {LIBRARY!r}, which is "
                           f"not installed; the embedding-space attack needs nothing extra")
    textattack = importlib.import_module(LIBRARY)
    from textattack.attack_results import FailedAttackResult  # type: ignore
    from textattack.models.wrappers import HuggingFaceModelWrapper  # type: ignore

    recipes = importlib.import_module("textattack.attack_recipes")
    if not hasattr(recipes, recipe):
        known = sorted(n for n in dir(recipes) if n[0].isupper() and "Recipe" not in n)
        raise RuntimeError(f"unknown TextAttack recipe {recipe!r}; known: {known}")
    model.eval()
    attack = getattr(recipes, recipe).build(HuggingFaceModelWrapper(model, tokenizer))
    if pairs is None:
        rows: List = [(t, y) for t, y in zip(texts, labels)]
        columns = ["text"]
    else:
        rows = [((t, p), y) for t, p, y in zip(texts, pairs, labels)]
        columns = ["premise", "hypothesis"]
    dataset = textattack.datasets.Dataset(rows, input_columns=columns)
    n = min(num_examples, len(rows))
    args = textattack.AttackArgs(num_examples=n, disable_stdout=True, silent=True)
    results = textattack.Attacker(attack, dataset, args).attack_dataset()
    robust = sum(isinstance(r, FailedAttackResult) for r in results)
    return {"accuracy": robust / max(1, len(results)), "examples": float(len(results))}
