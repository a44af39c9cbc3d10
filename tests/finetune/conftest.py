"""Tiny BERT and RoBERTa model directories built from config, with tokenizers trained here."""
import os

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "finetune")


def _corpus():
    lines = []
    for name in sorted(os.listdir(FIXTURES)):
        with open(os.path.join(FIXTURES, name), encoding="utf-8") as fh:
            lines.extend(fh.read().splitlines())
    return lines


def build_tiny_model_dir(path, family):
    """Writes a randomly initialised tiny encoder + trained tokenizer that from_pretrained loads."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import (BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast,
                              RobertaConfig, RobertaForSequenceClassification)

    if family == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(vocab_size=400,
                                                                     special_tokens=specials))
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        tok.decoder = decoders.WordPiece()
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                       pad_token="[PAD]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]")
        config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32,
                            num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=128, pad_token_id=0)
        model = BertForSequenceClassification(config)
    else:
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.train_from_iterator(_corpus(), trainers.BpeTrainer(
            vocab_size=500, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        tok.decoder = decoders.ByteLevel()
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                                       sep_token="</s>", mask_token="<mask>")
        config = RobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32,
                               num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=130,
                               pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1)
        model = RobertaForSequenceClassification(config)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    return build_tiny_model_dir(str(tmp_path_factory.mktemp("tiny-bert")), "bert")


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory):
    return build_tiny_model_dir(str(tmp_path_factory.mktemp("tiny-roberta")), "roberta")


@pytest.fixture
def fixtures_dir():
    return FIXTURES
