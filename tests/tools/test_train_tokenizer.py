"""alum-tokenizer: every type loads with AutoTokenizer, carries its family's
special tokens and adds them; sentencepiece conversions encode like spm."""
import pytest
from transformers import AutoTokenizer

from alum.data.sample import sample_corpus_path
from alum.tools.train_tokenizer import main

BERT = dict(cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", pad_token="[PAD]", unk_token="[UNK]")
ROBERTA = dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
               pad_token="<pad>", unk_token="<unk>")


def _train(tmp_path, kind, *extra):
    out = tmp_path / kind
    assert main(["--input", sample_corpus_path("openwebtext"), "--type", kind, "--vocab-size", "600",
                 "--output", str(out), *extra]) == 0
    return out


@pytest.mark.parametrize("kind, specials", [("wordpiece", BERT), ("bpe", ROBERTA),
                                            ("unigram", ROBERTA), ("spm-bpe", ROBERTA)])
def test_type_loads_with_family_specials(tmp_path, kind, specials):
    tok = AutoTokenizer.from_pretrained(_train(tmp_path, kind))
    for attribute, token in specials.items():
        assert getattr(tok, attribute) == token
        assert tok.convert_tokens_to_ids(token) != tok.unk_token_id or token == tok.unk_token
    assert 550 <= len(tok) <= 600
    ids = tok("a b")["input_ids"]
    plain = tok("a b", add_special_tokens=False)["input_ids"]
    assert ids == [tok.cls_token_id] + plain + [tok.sep_token_id]
    pair = tok("a b", "c")["input_ids"]
    assert pair[0] == tok.cls_token_id and pair[-1] == tok.sep_token_id
    # the mask token is one id, and text round-trips through decode
    assert tok("x <mask> y".replace("<mask>", tok.mask_token), add_special_tokens=False)["input_ids"].count(
        tok.mask_token_id) == 1
    text = "And Ruth said, Intreat me not to leave thee"
    decoded = tok.decode(tok(text, add_special_tokens=False)["input_ids"])
    assert decoded.replace(" ", "") == text.replace(" ", "")


def test_wordpiece_training_is_deterministic(tmp_path):
    """The same corpus gives the same vocabulary and ids every time: tokenizers numbers the
    ``##`` tokens in hash-map order and breaks merge ties by those numbers."""
    first = (_train(tmp_path / "a", "wordpiece") / "tokenizer.json").read_text()
    for again in ("b", "c"):
        assert (_train(tmp_path / again, "wordpiece") / "tokenizer.json").read_text() == first


def test_bert_family_has_segment_ids(tmp_path):
    tok = AutoTokenizer.from_pretrained(_train(tmp_path, "wordpiece"))
    enc = tok("a b", "c d")
    assert enc["token_type_ids"][0] == 0 and enc["token_type_ids"][-1] == 1


def test_family_override_and_lowercase(tmp_path):
    tok = AutoTokenizer.from_pretrained(_train(tmp_path, "unigram", "--family", "bert", "--lowercase"))
    assert tok.cls_token == "[CLS]" and tok.mask_token == "[MASK]"
    assert tok("NAOMI Said")["input_ids"] == tok("naomi said")["input_ids"]


@pytest.mark.parametrize("kind", ["unigram", "spm-bpe"])
def test_sentencepiece_conversion_encodes_like_sentencepiece(tmp_path, kind, sample_texts):
    import sentencepiece as spm

    out = _train(tmp_path, kind)
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    tok = AutoTokenizer.from_pretrained(out)
    lines = [line for text in sample_texts[::4] for line in text.split("\n")]
    lines += ["  double  spaces ", "Ｆｕｌｌ width ①", "naïve café", "tab\tand trailing "]
    for line in lines:
        assert tok(line, add_special_tokens=False)["input_ids"] == sp.encode(line), line


def test_damaged_input_counted_or_strict(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "one two three"}\n{"text": \xff}\n' + b'{"text": "four five six"}\n' * 20)
    assert main(["--input", str(bad), "--type", "wordpiece", "--vocab-size", "100",
                 "--output", str(tmp_path / "t"), "--min-frequency", "1"]) == 0
    assert "invalid_utf8 1" in capsys.readouterr().err
    assert main(["--input", str(bad), "--type", "wordpiece", "--vocab-size", "100",
                 "--output", str(tmp_path / "t2"), "--strict"]) == 1
    assert f"{bad}:2: invalid_utf8" in capsys.readouterr().err
