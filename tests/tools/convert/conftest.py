"""Fixtures for the alum-convert tests: tiny random HF models, a world of one process.

The HF models are small (hidden 64, 2 layers, vocabulary 1030 so that Megatron's
padding differs between TP sizes: 1152 at TP=1, 1280 at TP=2) and every weight is
perturbed away from its initial value, so a bias or LayerNorm mapped to the wrong
place cannot go unnoticed.
"""
from __future__ import annotations

import os

import pytest
import torch

from tests.pretrain.conftest import sample_cache, xdg_cache  # noqa: F401  (fixtures)

VOCAB = 1030


def make_hf_model(family: str, seed: int = 0, **changes):
    """A random ``BertForMaskedLM`` / ``RobertaForMaskedLM`` with non-trivial weights."""
    from transformers import BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

    values = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=256, max_position_embeddings=40, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    if family == "roberta":
        values.update(type_vocab_size=1, layer_norm_eps=1e-5)
    values.update(changes)
    cls, config_cls = ((BertForMaskedLM, BertConfig) if family == "bert"
                       else (RobertaForMaskedLM, RobertaConfig))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config_cls(**values))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture
def hf_dir(tmp_path):
    """``hf_dir(family, **config changes)`` -> (directory, model) of a saved random model."""
    def make(family: str = "bert", name: str = None, **changes):
        model = make_hf_model(family, **changes)
        path = tmp_path / (name or f"hf_{family}")
        model.save_pretrained(path)
        return str(path), model
    return make


def batch(family: str, vocab: int = VOCAB, b: int = 3, s: int = 12, seed: int = 0):
    """input_ids (with padding), attention_mask and token types for a family."""
    pad = 0 if family == "bert" else 1
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(pad + 1, vocab, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    ids[mask == 0] = pad
    types = torch.zeros_like(ids)
    if family == "bert":
        types[:, s // 2:] = 1
    return ids, mask, types


@pytest.fixture
def single_process_parallel():
    """megatron's parallel state for a world of one (TP=1, PP=1)."""
    from alum.parallel import destroy_parallel, initialize_parallel

    initialize_parallel(tp=1, pp=1, seed=1234)
    yield
    destroy_parallel()


def leftovers(path) -> list:
    """Anything alum-convert left next to ``path`` (temporary or moved-aside siblings)."""
    parent, name = os.path.split(str(path))
    return [n for n in os.listdir(parent) if n.startswith(name + ".")]
