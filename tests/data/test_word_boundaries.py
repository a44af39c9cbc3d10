"""Word-start tables agree with each tokenizer's own decoder on every vocabulary entry."""
import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from alum.data.vocab import MLMVocab
from alum.data.word_boundaries import (WordBoundaryConvention, build_word_boundary_tables,
                                       detect_convention, word_start_positions)

# The decoders are the tokenizers' own inverse: a token that starts a word is
# decoded with a space before it when it follows another token.
DECODERS = {
    "wordpiece": lambda: decoders.WordPiece(prefix="##", cleanup=False),
    "bpe": lambda: decoders.ByteLevel(),
    "unigram": lambda: decoders.Metaspace(),
}
EXPECTED = {"wordpiece": ("continuing_prefix", "##"), "bpe": ("start_marker", "\u0120"),
            "unigram": ("start_marker", "\u2581")}


@pytest.mark.parametrize("name", ["wordpiece", "bpe", "unigram"])
def test_convention_and_table_match_decoder(tokenizers, name):
    tok = tokenizers[name]
    conv = detect_convention(tok)
    assert (conv.kind, conv.marker) == EXPECTED[name]
    vocab = MLMVocab.from_tokenizer(tok)
    # <unk> follows the rule like any token (a piece in sentencepiece, a word in WordPiece)
    special = set(tok.all_special_ids) - {tok.unk_token_id}
    decoder = DECODERS[name]()
    starts = vocab.word_boundaries.starts
    checked = 0
    for token, index in tok.get_vocab().items():
        if index in special:
            assert starts[index]
            continue
        text = decoder.decode(["x", token])
        assert starts[index] == text.startswith("x "), (token, text)
        checked += 1
    assert checked > 100
    # Both kinds occur: a table of all-True would make whole-word masking trivial.
    assert 0.1 < starts.mean() < 0.9


def test_end_of_word_suffix_convention():
    texts = ["kalo miren tas vo", "quiber nus ta el", "orsa dun figol"] * 20
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=60, end_of_word_suffix="</w>",
                                                      special_tokens=["<unk>"]))
    conv = detect_convention(tok)
    assert conv == WordBoundaryConvention("end_suffix", "</w>")
    tables = build_word_boundary_tables(tok, tok.get_vocab_size(), [0])
    enc = tok.encode("kalo miren")
    starts = word_start_positions(np.array(enc.ids), tables)
    # Independent: a word starts at position 0 and after every token ending in "</w>".
    expected = [True] + [t.endswith("</w>") for t in enc.tokens[:-1]]
    assert starts.tolist() == expected
    assert sum(expected) == 2


def test_unknown_convention_raises():
    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    with pytest.raises(ValueError, match="word boundaries"):
        detect_convention(hf)


def test_sequence_starts_force_word_start(tokenizers):
    tok = tokenizers["bpe"]
    vocab = MLMVocab.from_tokenizer(tok)
    ids = np.array(tok("kalo miren", add_special_tokens=False)["input_ids"]
                   + tok("kalo miren", add_special_tokens=False)["input_ids"])
    half = ids.size // 2
    plain = word_start_positions(ids, vocab.word_boundaries)
    assert not plain[half]            # "kalo" without its leading space continues a word
    seq_starts = np.zeros(ids.size, dtype=bool)
    seq_starts[[0, half]] = True
    assert word_start_positions(ids, vocab.word_boundaries, seq_starts)[half]


def test_vocab_ids(tokenizers):
    bert = MLMVocab.from_tokenizer(tokenizers["wordpiece"])
    t = tokenizers["wordpiece"]
    assert (bert.cls, bert.sep, bert.pad, bert.mask) == (
        t.convert_tokens_to_ids("[CLS]"), t.convert_tokens_to_ids("[SEP]"),
        t.convert_tokens_to_ids("[PAD]"), t.convert_tokens_to_ids("[MASK]"))
    rob = MLMVocab.from_tokenizer(tokenizers["bpe"])
    t = tokenizers["bpe"]
    assert (rob.cls, rob.sep, rob.pad, rob.mask) == (
        t.convert_tokens_to_ids("<s>"), t.convert_tokens_to_ids("</s>"),
        t.convert_tokens_to_ids("<pad>"), t.convert_tokens_to_ids("<mask>"))
    assert not set(rob.random_ids.tolist()) & set(t.all_special_ids)
    assert len(rob.random_ids) == len(t) - len(set(t.all_special_ids))
