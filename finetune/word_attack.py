"""Word-level attack through TextAttack, offline (the optional ``attack`` extra).

ALUM's threat model is the embedding space (``embedding_attack``); a word-level attack is
the discrete one the robustness literature also reports. The default recipe,
``deepwordbug`` (Gao et al. 2018, arXiv 1801.04354), perturbs characters of the words
that matter most to the classifier and needs no downloaded resource, so it runs on an
offline machine. Any other TextAttack recipe class (``TextFoolerJin2019``, ...) is
accepted by name; those load word embeddings or language models that must already be
in TextAttack's cache.

TextAttack 0.3.11 cannot be imported as shipped next to transformers 5 and offline:
* on first import it downloads NLTK corpora (``_post_install``); the cache directory gets
  its "post-install done" marker first, so no download is attempted;
* it imports ``flair`` at module level, whose current releases fail to import under
  transformers 5. flair serves only part-of-speech and named-entity constraints, which
  DeepWordBug does not use: when flair cannot be imported, a stand-in module is
  registered whose taggers raise a clear error if a recipe asks for them;
* importing it builds augmentation recipes whose stop-word constraint reads NLTK's
  English stop-word corpus, which is a download. When NLTK has no such corpus, one is
  written into this project's cache from scikit-learn's English stop-word list (318
  words; NLTK's has 179) and put on NLTK's search path. Recipes (DeepWordBug's
  "do not edit stop words" constraint among them) then use that list.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import random
import sys
import types
from typing import Dict, List, Optional, Sequence

LIBRARY = "textattack"
DEFAULT_RECIPE = "deepwordbug"
# TextAttack writes this file into its cache once its post-install downloads are done
# (textattack/shared/utils/install.py of the pinned version).
POST_INSTALL_MARKER = "post_install_check_3"


def available() -> bool:
    return importlib.util.find_spec(LIBRARY) is not None


def _check_post_install_marker() -> None:
    """TextAttack's own check for the marker, read from its source without importing it
    (the import is what downloads): a release that renamed the marker would download on
    import, so stop with its version instead. Still needed while tests/finetune/
    test_word_attack.py runs offline only with it."""
    from importlib.metadata import version

    root = importlib.util.find_spec(LIBRARY).submodule_search_locations[0]
    install = os.path.join(root, "shared", "utils", "install.py")
    try:
        with open(install, encoding="utf-8") as f:
            source = f.read()
    except OSError:
        source = ""
    if f'"{POST_INSTALL_MARKER}"' not in source:
        raise RuntimeError(
            f"textattack {version(LIBRARY)}: {install} no longer checks its post-install "
            f"marker {POST_INSTALL_MARKER!r}; alum.finetune.word_attack writes that marker "
            f"to import TextAttack offline and must be adapted (the tested release is 0.3.11)")


def _cache_dir() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "alum", "textattack")


class _FlairMissing:
    """What a recipe gets instead of flair's tagger: an error that says why."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            "this TextAttack recipe needs flair (part-of-speech / named-entity tagging), "
            "which cannot be imported next to this transformers version; use a recipe "
            f"without grammatical constraints, e.g. {DEFAULT_RECIPE!r}")

    @classmethod
    def load(cls, *args, **kwargs):
        return cls()


def _install_flair_stand_in() -> None:
    for name in [m for m in sys.modules if m == "flair" or m.startswith("flair.")]:
        del sys.modules[name]  # a half-imported real flair
    flair = types.ModuleType("flair")
    data = types.ModuleType("flair.data")
    models = types.ModuleType("flair.models")
    data.Sentence = _FlairMissing
    data.Tokenizer = type("Tokenizer", (), {})  # subclassed by textattack at import time
    models.SequenceTagger = _FlairMissing
    flair.data, flair.models, flair.device = data, models, None
    sys.modules.update({"flair": flair, "flair.data": data, "flair.models": models})


def import_textattack():
    """``textattack``, imported without network access (see the module docstring)."""
    if not available():
        raise RuntimeError(f"--word-attack needs the optional library {LIBRARY!r}: "
                           f"pip install -e .[attack] (see docs/robustness_study.md)")
    if "textattack" in sys.modules:
        return sys.modules["textattack"]
    _check_post_install_marker()
    cache = os.environ.setdefault("TA_CACHE_DIR", _cache_dir())
    os.makedirs(cache, exist_ok=True)
    marker = os.path.join(cache, POST_INSTALL_MARKER)
    if not os.path.exists(marker):
        open(marker, "w").close()
    _ensure_stopwords_corpus(cache)
    try:
        importlib.import_module("flair")
    except Exception:  # ImportError, or flair's own errors against transformers 5
        _install_flair_stand_in()
    # TextAttack configures its logger with logging.config.dictConfig at import, which
    # disables every logger that exists already (alum's among them): re-enable those.
    manager = logging.Logger.manager
    enabled = [lg for lg in manager.loggerDict.values()
               if isinstance(lg, logging.Logger) and not lg.disabled]
    module = importlib.import_module(LIBRARY)
    for lg in enabled:
        lg.disabled = False
    return module


def _ensure_stopwords_corpus(cache: str) -> None:
    """NLTK's English stop words, or scikit-learn's written where NLTK will find them."""
    import nltk

    try:
        nltk.data.find("corpora/stopwords")
        return
    except LookupError:
        pass
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    root = os.path.join(cache, "nltk_data")
    corpus = os.path.join(root, "corpora", "stopwords")
    english = os.path.join(corpus, "english")
    if not os.path.exists(english):
        from alum.atomic_write import atomic_write_text

        os.makedirs(corpus, exist_ok=True)
        atomic_write_text(english, "\n".join(sorted(ENGLISH_STOP_WORDS)) + "\n")
    if root not in nltk.data.path:
        nltk.data.path.append(root)


def build_attack(recipe: str, model_wrapper):
    """The TextAttack ``Attack`` for ``recipe`` (``deepwordbug`` or a recipe class name)."""
    import_textattack()
    recipes = importlib.import_module("textattack.attack_recipes")
    name = "DeepWordBugGao2018" if recipe.lower() == DEFAULT_RECIPE else recipe
    if not hasattr(recipes, name):
        known = sorted(n for n in dir(recipes) if n[0].isupper() and "Recipe" not in n)
        raise RuntimeError(f"unknown TextAttack recipe {recipe!r}; known: "
                           f"{[DEFAULT_RECIPE] + known}")
    return getattr(recipes, name).build(model_wrapper)


def _wrapper_class(base):
    """TextAttack's HF wrapper, tokenising as evaluation does.

    The stock wrapper pads every query to the tokenizer's ``model_max_length`` (512 for
    BERT) whatever ``max_length`` says: a tweet attack then pays for 512 positions per
    query. This one pads to the longest text of the batch and truncates at
    ``max_length``; the logits are the same (padding is masked out).
    """

    class BatchPaddedWrapper(base):
        def __call__(self, text_input_list):
            import torch

            inputs = self.tokenizer(text_input_list, add_special_tokens=True, padding=True,
                                    truncation=True, max_length=self.max_length,
                                    return_tensors="pt")
            inputs = inputs.to(next(self.model.parameters()).device)
            with torch.no_grad():
                return self.model(**inputs).logits

    return BatchPaddedWrapper


def run_word_attack(model, tokenizer, texts: Sequence[str], pairs: Optional[Sequence[str]],
                    labels: Sequence[int], recipe: str, num_examples: int,
                    seed: int = 0, max_length: Optional[int] = None) -> Dict[str, float]:
    """Accuracy under a word-level attack on the first ``num_examples`` examples.

    An example counts as robust when the attack fails; examples the model already gets
    wrong (TextAttack "skips" them) count as wrong, so the result is comparable with the
    clean accuracy of the same examples (also returned). ``seed`` fixes the random
    character edits; ``max_length`` truncates the attacked texts as in evaluation
    (default: what the model's position embeddings allow).
    """
    textattack = import_textattack()
    import numpy as np
    import torch
    from textattack.attack_results import FailedAttackResult, SkippedAttackResult  # type: ignore
    from textattack.models.wrappers import HuggingFaceModelWrapper  # type: ignore

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model.eval()
    limit = getattr(model.config, "max_position_embeddings", None) or 512
    if getattr(model.config, "model_type", None) == "roberta":
        limit -= 2  # RoBERTa's positions start after the padding index
    wrapper = _wrapper_class(HuggingFaceModelWrapper)(
        model, tokenizer, max_length=min(limit, max_length or limit))
    attack = build_attack(recipe, wrapper)
    if pairs is None:
        rows: List = [(t, int(y)) for t, y in zip(texts, labels)]
        columns = ["text"]
    else:
        rows = [((t, p), int(y)) for t, p, y in zip(texts, pairs, labels)]
        columns = ["premise", "hypothesis"]
    n = min(num_examples, len(rows))
    dataset = textattack.datasets.Dataset(rows[:n], input_columns=columns)
    args = textattack.AttackArgs(num_examples=n, disable_stdout=True, silent=True,
                                 random_seed=seed)
    results = textattack.Attacker(attack, dataset, args).attack_dataset()
    total = max(1, len(results))
    robust = sum(isinstance(r, FailedAttackResult) for r in results)
    correct = sum(not isinstance(r, SkippedAttackResult) for r in results)
    queries = [r.num_queries for r in results if not isinstance(r, SkippedAttackResult)]
    return {"accuracy": robust / total, "clean_accuracy": correct / total,
            "examples": float(len(results)),
            "mean_queries": float(np.mean(queries)) if queries else 0.0}
