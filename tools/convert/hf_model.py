"""The Hugging Face side: a local BERT/RoBERTa directory read lazily, and HF configs written.

Reading (``from-hf``) accepts what HF writes for these families:
``model.safetensors`` (or shards with ``model.safetensors.index.json``) or
``pytorch_model.bin`` (or its shards), with keys for ``*ForMaskedLM`` /
``*ForPreTraining`` (``bert.``/``roberta.`` prefixed) or for the bare encoder
(``BertModel``: no prefix, as the all-MiniLM checkpoints). Old TF-converted
names (``LayerNorm.gamma``/``beta``) are accepted. Tensors are read one at a
time (safetensors: memory-mapped; ``.bin``: ``torch.load(mmap=True)``).

What is not ours is ignored and said so (the pooler, the NSP head, position-id
buffers); a tied decoder copy must equal its source; anything else unknown is an
error (nothing is dropped silently). A checkpoint without the MLM head gets one
initialised as HF initialises it (dense N(0, initializer_range), zero biases,
LayerNorm 1/0; the decoder is the tied word embedding), reported on stderr.
"""
from __future__ import annotations

import glob
import json
import os
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from alum.models.hf_state_dict import (FAMILY_NAMES, HF_ARCHITECTURES, Entry, canonical_shape,
                                       entries, hf_shapes, hf_to_canonical, tied_hf_names)

from .errors import ConvertError

SUPPORTED_MODEL_TYPES = ("bert", "roberta")
IGNORED_SUFFIXES = ("position_ids", "token_type_ids")
IGNORED_PREFIXES = ("pooler.", "cls.seq_relationship.")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json",
                   "sentencepiece.bpe.model", "spiece.model")


def note(message: str) -> None:
    """A line on stderr (what a conversion did that the user should know)."""
    print(f"alum-convert: {message}", file=sys.stderr, flush=True)


def model_config_from_hf(src: str, make_vocab_size_divisible_by: int = 128):
    """Our ``ModelConfig`` of the HF model in ``src`` (ConvertError naming the field)."""
    from alum.models import ModelConfig

    path = os.path.join(src, "config.json")
    if not os.path.isfile(path):
        raise ConvertError(f"{path}: missing (not a Hugging Face model directory)")
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError) as err:
        raise ConvertError(f"{path}: unreadable ({err})") from None
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConvertError(f"{path}: model_type={model_type!r} (architectures "
                           f"{raw.get('architectures')}) is not supported; alum-convert "
                           f"converts {list(SUPPORTED_MODEL_TYPES)} models (post-LN encoders "
                           f"with an optional MLM head)")
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(src, local_files_only=True)
    requirements = (("hidden_act", "gelu", "our layers use exact (erf) GELU"),
                    ("position_embedding_type", "absolute", "learned absolute positions"),
                    ("is_decoder", False, "an encoder"),
                    ("add_cross_attention", False, "no cross-attention"),
                    ("tie_word_embeddings", True, "the MLM decoder is tied to the embedding"))
    for field, wanted, why in requirements:
        value = getattr(hf, field, wanted)
        if value != wanted:
            raise ConvertError(f"{path}: {field}={value!r} is not supported ({why}: "
                               f"{field}={wanted!r})")
    try:
        return ModelConfig(
            family=model_type, vocab_size=hf.vocab_size, hidden_size=hf.hidden_size,
            num_layers=hf.num_hidden_layers, num_attention_heads=hf.num_attention_heads,
            ffn_hidden_size=hf.intermediate_size,
            max_position_embeddings=hf.max_position_embeddings,
            type_vocab_size=hf.type_vocab_size, pad_token_id=hf.pad_token_id,
            layer_norm_eps=hf.layer_norm_eps, hidden_dropout=hf.hidden_dropout_prob,
            attention_dropout=hf.attention_probs_dropout_prob, init_std=hf.initializer_range,
            make_vocab_size_divisible_by=make_vocab_size_divisible_by)
    except ValueError as err:
        raise ConvertError(f"{path}: {err}") from None


def hf_config_for(cfg, **overrides: Any):
    """The transformers config of our ``ModelConfig`` (``*ForMaskedLM`` architecture)."""
    from transformers import BertConfig, RobertaConfig

    cls = BertConfig if cfg.family == "bert" else RobertaConfig
    values = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                  num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_attention_heads,
                  intermediate_size=cfg.ffn_hidden_size, hidden_act="gelu",
                  max_position_embeddings=cfg.max_position_embeddings,
                  type_vocab_size=cfg.type_vocab_size, pad_token_id=cfg.pad_token_id,
                  layer_norm_eps=cfg.layer_norm_eps, hidden_dropout_prob=cfg.hidden_dropout,
                  attention_probs_dropout_prob=cfg.attention_dropout,
                  initializer_range=cfg.init_std, tie_word_embeddings=True,
                  architectures=[HF_ARCHITECTURES[cfg.family]])
    values.update(overrides)
    return cls(**values)


def tokenizer_files(directory: Optional[str]) -> List[str]:
    """The tokenizer files present in ``directory``."""
    if not directory or not os.path.isdir(directory):
        return []
    return [os.path.join(directory, n) for n in TOKENIZER_FILES
            if os.path.isfile(os.path.join(directory, n))]


class HFWeights:
    """Lazy access to the tensors of an HF directory under our name map's HF names."""

    def __init__(self, src: str, cfg):
        self.src, self.cfg = src, cfg
        self._where: Dict[str, str] = {}      # file key -> file
        self._open: Dict[str, Any] = {}
        for path in self._weight_files():
            for key in self._keys(path):
                self._where[key] = path
        self.names = self._normalise(list(self._where))   # HF name -> file key

    # -- files -------------------------------------------------------------------
    def _weight_files(self) -> List[str]:
        for pattern in ("model*.safetensors", "pytorch_model*.bin"):
            found = sorted(glob.glob(os.path.join(self.src, pattern)))
            if found:
                return found
        raise ConvertError(f"{self.src}: no model.safetensors or pytorch_model.bin")

    def _keys(self, path: str) -> List[str]:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            handle = safe_open(path, framework="pt")
            self._open[path] = handle
            return list(handle.keys())
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        self._open[path] = state
        return list(state)

    def _read(self, key: str) -> torch.Tensor:
        path = self._where[key]
        handle = self._open[path]
        if path.endswith(".safetensors"):
            return handle.get_tensor(key)
        return handle[key]

    # -- names -------------------------------------------------------------------
    def _normalise(self, keys: List[str]) -> Dict[str, str]:
        base = FAMILY_NAMES[self.cfg.family]["base"] + "."
        out = {}
        for key in keys:
            name = key.replace("LayerNorm.gamma", "LayerNorm.weight") \
                      .replace("LayerNorm.beta", "LayerNorm.bias")
            if not name.startswith((base, "cls.", "lm_head.")):
                name = base + name
            out[name] = key
        return out

    def has(self, name: str) -> bool:
        return name in self.names

    def get(self, name: str) -> torch.Tensor:
        return self._read(self.names[name])

    # -- the model -----------------------------------------------------------------
    def canonical(self, seed: int = 0) -> Iterator[Tuple[Entry, torch.Tensor]]:
        """(entry, canonical tensor) in the model's order; a missing head is initialised."""
        cfg = self.cfg
        all_entries = list(entries(cfg.family, cfg.num_layers))
        self._check_names(all_entries)
        head_present = self._head_present(all_entries)
        generator = torch.Generator().manual_seed(seed)
        for entry in all_entries:
            if entry.param.block == "head" and not head_present:
                yield entry, self._new_head_tensor(entry, generator)
                continue
            tensors = [self.get(n) for n in entry.hf]
            for name, tensor, shape in zip(entry.hf, tensors, hf_shapes(entry, cfg)):
                if tuple(tensor.shape) != tuple(shape):
                    raise ConvertError(f"{self.src}: {name} has shape {list(tensor.shape)}, "
                                       f"config.json implies {list(shape)}")
            yield entry, hf_to_canonical(entry, tensors, cfg)

    def _head_present(self, all_entries: List[Entry]) -> bool:
        head = [n for e in all_entries if e.param.block == "head" for n in e.hf]
        present = [n for n in head if self.has(n)]
        if present and len(present) < len(head):
            missing = sorted(set(head) - set(present))
            raise ConvertError(f"{self.src}: the MLM head is incomplete (missing {missing})")
        if not present:
            note(f"{self.src} has no MLM head (e.g. a sentence-embedding encoder): a new one "
                 f"is initialised (dense ~ N(0, {self.cfg.init_std}), zero biases, LayerNorm "
                 f"1/0, decoder tied to the word embedding); continual pre-training trains it")
        return bool(present)

    def _new_head_tensor(self, entry: Entry, generator: torch.Generator) -> torch.Tensor:
        shape = canonical_shape(entry, self.cfg)
        if entry.ours == "head.dense.weight":
            return torch.randn(shape, generator=generator) * self.cfg.init_std
        if entry.ours == "head.layer_norm.weight":
            return torch.ones(shape)
        return torch.zeros(shape)

    def _check_names(self, all_entries: List[Entry]) -> None:
        """Every encoder tensor present; tied copies equal; nothing unknown left over."""
        wanted = {n for e in all_entries for n in e.hf}
        missing = sorted(n for e in all_entries if e.param.block != "head"
                         for n in e.hf if not self.has(n))
        if missing:
            raise ConvertError(f"{self.src}: missing weights {missing[:5]}"
                               + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        ignored, unknown = [], []
        tied = tied_hf_names(self.cfg.family)
        base = FAMILY_NAMES[self.cfg.family]["base"] + "."
        for name in self.names:
            if name in wanted:
                continue
            if name in tied:
                source = tied[name]
                if self.has(source) and not torch.equal(self.get(name), self.get(source)):
                    raise ConvertError(f"{self.src}: {name} differs from {source}: an untied "
                                       f"decoder is not supported (ours is tied)")
                continue
            short = name[len(base):] if name.startswith(base) else name
            if short.endswith(IGNORED_SUFFIXES) or short.startswith(IGNORED_PREFIXES):
                ignored.append(self.names[name])
            else:
                unknown.append(self.names[name])
        if unknown:
            raise ConvertError(f"{self.src}: weights the {self.cfg.family} name map does not "
                               f"know: {sorted(unknown)[:8]} (an unsupported variant?)")
        if ignored:
            note(f"ignored (not part of the masked LM): {', '.join(sorted(ignored))}")
