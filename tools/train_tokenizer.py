"""alum-tokenizer: train a BERT/RoBERTa tokenizer from corpus files.

    alum-tokenizer --input wiki_dump/ --type wordpiece --vocab-size 30522 --output tok/

Reads the same inputs as alum-preprocess (same readers, same bad-input
policy). The output directory holds tokenizer.json + tokenizer_config.json
and loads with transformers.AutoTokenizer.from_pretrained(DIR), with the
family's special tokens set and added around inputs.
"""
import argparse
import io
import json
import os
import sys

from .readers import FORMATS, BadInputError, SkipLog, iter_texts
from .sentence_split import split_sentences
from .tokenizer_families import DEFAULT_FAMILY, FAMILIES

TYPES = ("wordpiece", "bpe", "unigram", "spm-bpe")

DESCRIPTION = __doc__.split("\n\n")[0] + """

Types:
  wordpiece  WordPiece with BERT's normalizer and pre-tokenizer (tokenizers)
  bpe        byte-level BPE as in GPT-2/RoBERTa (tokenizers)
  unigram    sentencepiece unigram model, converted to tokenizer.json
  spm-bpe    sentencepiece BPE model, converted to tokenizer.json
The sentencepiece types also keep the original model as DIR/spm.model.
""" + "\n".join(__doc__.split("\n\n")[2:])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alum-tokenizer", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="corpus files or directories, any format alum-preprocess reads")
    p.add_argument("--type", required=True, choices=TYPES, help="tokenizer model to train")
    p.add_argument("--vocab-size", type=int, required=True, metavar="N",
                   help="vocabulary size including the special tokens")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="directory for tokenizer.json and tokenizer_config.json (created)")
    p.add_argument("--family", choices=sorted(FAMILIES),
                   help="special tokens: bert ([CLS] [SEP] [MASK] [PAD] [UNK]) or roberta "
                        "(<s> </s> <mask> <pad> <unk>); default: bert for wordpiece, roberta "
                        "for the others")
    p.add_argument("--lowercase", action="store_true",
                   help="lowercase (and for wordpiece strip accents) before tokenizing; "
                        "for sentencepiece this is the nmt_nfkc_cf rule")
    p.add_argument("--min-frequency", type=int, default=2, metavar="N",
                   help="wordpiece/bpe: minimum count for a merge (default: 2)")
    p.add_argument("--model-max-length", type=int, default=512, metavar="N",
                   help="model_max_length saved in tokenizer_config.json (default: 512)")
    p.add_argument("--max-sentences", type=int, default=0, metavar="N",
                   help="sentencepiece: train on a random sample of N sentences "
                        "(input_sentence_size; default 0 = all)")
    p.add_argument("--format", default="auto", choices=FORMATS,
                   help="input format (default: auto, detected per file)")
    p.add_argument("--json-key", default="text", metavar="KEY",
                   help="key or column holding the text (default: text)")
    p.add_argument("--hf-split", metavar="NAME", help="for a saved DatasetDict: use only this split")
    p.add_argument("--strict", action="store_true",
                   help="stop at damaged input (file and line in the error) instead of skipping it")
    return p


def _wordpiece(family, lowercase, vocab=None):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordPiece(vocab, unk_token=family.unk) if vocab is not None
                    else models.WordPiece(unk_token=family.unk))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return tok


def _train_wordpiece(texts, args, family, first_pass_texts):
    """WordPiece, the same vocabulary and ids for the same corpus in every process.

    tokenizers' trainer numbers the continuing-subword characters (``##a``, ...) in
    hash-map order, new in every process, and breaks ties between equally frequent merges
    by those numbers, so one corpus gave different vocabularies run to run
    (huggingface/tokenizers#1794). A first pass (``first_pass_texts``, no merges) lists
    those tokens; the real training gets them sorted, as trainer special tokens, which
    take ids before anything else. The result is rebuilt from the trained vocabulary so
    that only the family's specials are special tokens.
    """
    from tokenizers import trainers

    probe = _wordpiece(family, args.lowercase)
    probe.train_from_iterator(first_pass_texts, trainers.WordPieceTrainer(vocab_size=0,
                                                                          show_progress=False))
    continuing = sorted(t for t in probe.get_vocab() if t.startswith("##") and len(t) == 3)
    trained = _wordpiece(family, args.lowercase)
    trainer = trainers.WordPieceTrainer(vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                                        special_tokens=family.specials + continuing,
                                        show_progress=False)
    trained.train_from_iterator(texts, trainer)
    tok = _wordpiece(family, args.lowercase, trained.get_vocab(with_added_tokens=False))
    tok.add_special_tokens(family.specials)
    tok.post_processor = family.post_processor(tok, byte_level=False)
    return tok


def _train_byte_level_bpe(texts, args, family):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if args.lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                                  special_tokens=family.specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = family.post_processor(tok, byte_level=True)
    return tok


def _train_sentencepiece(texts, args, family):
    import sentencepiece as spm

    from .spm_conversion import spm_to_tokenizer

    model_type = "unigram" if args.type == "unigram" else "bpe"
    # One sentence per item: sentencepiece drops items longer than
    # max_sentence_length, and whole documents easily are.
    sentences = (s for text in texts for s in split_sentences(text))
    model = io.BytesIO()
    specials = dict(zip(("pad", "unk", "cls", "sep", "mask"),
                        (family.pad, family.unk, family.cls, family.sep, family.mask)))
    order = family.specials
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences, model_writer=model, model_type=model_type,
        vocab_size=args.vocab_size, hard_vocab_limit=False,
        normalization_rule_name="nmt_nfkc_cf" if args.lowercase else "nmt_nfkc",
        input_sentence_size=args.max_sentences, shuffle_input_sentence=True,
        num_threads=os.cpu_count() or 1, minloglevel=2,
        pad_id=order.index(specials["pad"]), pad_piece=specials["pad"],
        unk_id=order.index(specials["unk"]), unk_piece=specials["unk"],
        bos_id=order.index(specials["cls"]), bos_piece=specials["cls"],
        eos_id=order.index(specials["sep"]), eos_piece=specials["sep"],
        control_symbols=[specials["mask"]])  # ids 0..3, then the mask at 4
    tok = spm_to_tokenizer(model.getvalue(), model_type, family.unk)
    tok.post_processor = family.post_processor(tok, byte_level=False)
    return tok, model.getvalue()


def train(args):
    """Train and save; returns the output directory."""
    from transformers import PreTrainedTokenizerFast

    family = FAMILIES[args.family or DEFAULT_FAMILY[args.type]]
    log = SkipLog(strict=args.strict)
    texts = iter_texts(args.input, args.format, args.json_key, args.hf_split, log)
    spm_model = None
    if args.type == "wordpiece":
        first_pass = iter_texts(args.input, args.format, args.json_key, args.hf_split,
                                SkipLog(strict=args.strict))  # its skips are counted below
        tok = _train_wordpiece(texts, args, family, first_pass)
    elif args.type == "bpe":
        tok = _train_byte_level_bpe(texts, args, family)
    else:
        tok, spm_model = _train_sentencepiece(texts, args, family)
    missing = [t for t in family.specials if tok.token_to_id(t) is None]
    if missing:
        raise RuntimeError(f"special tokens missing from the trained vocabulary: {missing}")
    wrapper = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=args.model_max_length,
                                      **family.wrapper_kwargs())
    os.makedirs(args.output, exist_ok=True)
    wrapper.save_pretrained(args.output)
    if spm_model is not None:
        with open(os.path.join(args.output, "spm.model"), "wb") as f:
            f.write(spm_model)
    with open(os.path.join(args.output, "training_args.json"), "w") as f:
        json.dump({**vars(args), "family": family.name, "vocab_size_trained": tok.get_vocab_size(),
                   "skipped": dict(log.counts)}, f, indent=1)
    skipped = ", ".join(f"{k} {v}" for k, v in log.counts.items()) or "none"
    print(f"trained {args.type} ({family.name} specials), vocabulary {tok.get_vocab_size()}, "
          f"skipped documents: {skipped}; saved to {args.output}", file=sys.stderr)
    return args.output


def train_tokenizer(inputs, tokenizer_type: str, vocab_size: int, output: str, **options) -> str:
    """alum-tokenizer as a library call: train on ``inputs`` (paths) and save to ``output``.

    ``options`` are the command's other options by their argument names
    (``lowercase``, ``family``, ``min_frequency``, ...), with the command's defaults.
    Bad input raises ``BadInputError`` / ``FileNotFoundError``. Returns ``output``.
    """
    args = build_parser().parse_args(["--input", *inputs, "--type", tokenizer_type,
                                      "--vocab-size", str(vocab_size), "--output", output])
    for name, value in options.items():
        if name in ("input", "type", "vocab_size", "output") or not hasattr(args, name):
            raise TypeError(f"train_tokenizer: unknown option {name!r}")
        setattr(args, name, value)
    return train(args)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.vocab_size < 10:
        build_parser().error("--vocab-size is too small")
    try:
        train(args)
    except (BadInputError, FileNotFoundError) as e:
        print(f"alum-tokenizer: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
