"""Fixtures for the MLM data tests: a synthetic corpus, three tiny tokenizers, indexed datasets.

The corpus is made of invented words built from syllables, so that a small
vocabulary splits many words into several sub-words (what whole-word masking
is about). Tokenizers are trained in-process (WordPiece and byte-level BPE with
``tokenizers``, unigram with ``sentencepiece``) and wrapped as
``transformers.PreTrainedTokenizerFast``; nothing is downloaded.
"""
from __future__ import annotations

import io
import os
import random
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore", message=".*Transformer Engine.*")
warnings.filterwarnings("ignore", message=".*Apex.*")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SYLLABLES = ["ka", "lo", "mi", "ren", "tas", "vo", "qui", "ber", "nus", "ta", "el", "or",
             "sa", "dun", "fi", "gol", "he", "jam", "pex", "wu"]


def make_corpus(num_docs: int = 240, seed: int = 0):
    """Documents as lists of sentences (strings)."""
    rnd = random.Random(seed)
    lexicon = ["".join(rnd.choice(SYLLABLES) for _ in range(rnd.choice([1, 1, 2, 2, 3, 4])))
               for _ in range(400)]
    docs = []
    for _ in range(num_docs):
        sentences = []
        for _ in range(rnd.randint(1, 6)):
            words = [rnd.choice(lexicon) for _ in range(rnd.randint(3, 14))]
            words[0] = words[0].capitalize()
            if rnd.random() < 0.3:
                words[rnd.randrange(len(words))] += ","
            sentences.append(" ".join(words) + rnd.choice([".", ".", "!", "?"]))
        docs.append(sentences)
    return docs


def pytest_configure(config):
    # megatron-core warns at import that Transformer Engine/Apex are absent (CPU).
    config.addinivalue_line("filterwarnings", "ignore:Transformer Engine:UserWarning")


@pytest.fixture(scope="session")
def corpus():
    return make_corpus()


@pytest.fixture(scope="session")
def corpus_text(corpus):
    return [" ".join(doc) for doc in corpus]


def _wordpiece(texts):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=220, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def _byte_bpe(texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=330, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                                   sep_token="</s>", mask_token="<mask>")


def _sentencepiece_unigram(texts):
    """A sentencepiece unigram model, moved into a fast tokenizer piece by piece
    (no protobuf needed): same pieces and scores, Metaspace pre-tokenizer."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=180, model_type="unigram",
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, user_defined_symbols=["<mask>"],
        minloglevel=2, num_threads=1)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = Tokenizer(models.Unigram(pieces, unk_id=0))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                 unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                                 sep_token="</s>", mask_token="<mask>")
    hf.sp_processor = sp  # kept for the tests' cross-check
    return hf


@pytest.fixture(scope="session")
def tokenizers(corpus):
    sentences = [s for doc in corpus for s in doc]
    return {"wordpiece": _wordpiece(sentences), "bpe": _byte_bpe(sentences),
            "unigram": _sentencepiece_unigram(sentences)}


def write_indexed(prefix, tokenizer, corpus, per_sentence=False):
    """Writes PREFIX.bin/.idx with megatron-core's builder: one sequence per
    document (or per sentence), ids without special tokens."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
    for doc in corpus:
        parts = doc if per_sentence else [" ".join(doc)]
        ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in parts]
        builder.add_document(np.array([t for seq in ids for t in seq], dtype=np.int64),
                             [len(seq) for seq in ids])
    builder.finalize(f"{prefix}.idx")
    return str(prefix)


@pytest.fixture(scope="session")
def indexed(tmp_path_factory, tokenizers, corpus):
    """{(tokenizer name, "doc"|"sent"): prefix}."""
    root = tmp_path_factory.mktemp("indexed")
    out = {}
    for name, tok in tokenizers.items():
        for layout in ("doc", "sent"):
            out[name, layout] = write_indexed(root / f"{name}_{layout}", tok, corpus,
                                              per_sentence=layout == "sent")
    return out
