"""alum-convert: checkpoints to and from Hugging Face, and between TP x PP layouts.

Commands:
  to-hf SRC DST                 one of our checkpoints (any TP x PP, ZeRO 0-3,
                                fp32/bf16/fp16 training) -> a Hugging Face
                                BertForMaskedLM / RobertaForMaskedLM directory
  from-hf SRC DST [--tp N] [--pp N]
                                a local HF BERT/RoBERTa directory (with or without
                                its MLM head) -> our checkpoint, for
                                alum-pretrain --init-from
  reshape SRC DST --tp N --pp N our checkpoint -> another TP x PP layout (model
                                weights; the optimizer restarts)

SRC of to-hf/reshape: a run directory (alum-pretrain --output-dir; its latest
complete checkpoint), its checkpoints/ folder, or one global_stepN/ tag. DST is
written under a temporary name and renamed when complete; an existing DST is
refused unless --overwrite. docs/convert.md has the name map and the transforms.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .errors import ConvertError

DTYPE_CHOICES = ("fp32", "bf16", "fp16")

EXAMPLES = """examples:
  alum-convert from-hf ./all-MiniLM-L6-v2 ckpt/minilm --tp 1 --pp 1
  alum-pretrain --init-from ckpt/minilm --tokenizer ckpt/minilm/tokenizer --data-path data/x ...
  alum-convert to-hf runs/minilm-alum runs/minilm-alum-hf
  alum-convert reshape runs/bert-tp2pp2 ckpt/bert-tp1 --tp 1 --pp 1
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _command(sub, name: str, summary: str, description: str, src: str, dst: str,
             source_options: bool) -> argparse.ArgumentParser:
    """A subcommand with SRC, DST, --dtype, --overwrite (and --tag/--weights to read ours)."""
    p = sub.add_parser(name, help=summary, description=description,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help=src)
    p.add_argument("dst", metavar="DST", help=dst)
    if source_options:
        p.add_argument("--tag", default=None,
                       help="checkpoint tag under SRC/checkpoints (default: the one 'latest' "
                            "names, or the newest complete one)")
        p.add_argument("--weights", choices=("auto", "module", "masters"), default="auto",
                       help="which copy of the weights to read: 'module' (the model's tensors "
                            "in the training dtype), 'masters' (DeepSpeed's fp32 master weights "
                            "from the optimizer shards, rebuilt with zero_to_fp32; the only "
                            "copy under ZeRO-3) or 'auto': the module when it holds full fp32 "
                            "tensors, else the masters (default: auto)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32",
                   help="dtype of the written weights (default: fp32)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alum-convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=EXAMPLES)
    sub = p.add_subparsers(dest="command", metavar="{to-hf,from-hf,reshape}", required=True)
    ours = "run dir, its checkpoints/ dir, or a tag dir"
    _command(sub, "to-hf", "our checkpoint -> Hugging Face *ForMaskedLM",
             "Convert one of our checkpoints (any TP x PP, ZeRO stage 0-3, fp32/bf16/fp16 "
             "training) into a Hugging Face BertForMaskedLM or RobertaForMaskedLM directory "
             "(config.json, model.safetensors, the run's tokenizer) that from_pretrained loads "
             "without missing or unexpected weights. Tensors are streamed into the "
             "safetensors file one at a time.", ours, "the HF directory to write", True)
    from_hf = _command(
        sub, "from-hf", "Hugging Face BERT/RoBERTa -> our checkpoint",
        "Convert a local Hugging Face BERT or RoBERTa directory (*ForMaskedLM, "
        "*ForPreTraining or the bare encoder, safetensors or .bin) into our checkpoint split "
        "TP x PP, which alum-pretrain --init-from continues pre-training from. A missing MLM "
        "head is initialised (said on stderr); the pooler and NSP head are dropped (said "
        "too). The vocabulary is padded to a multiple of --make-vocab-size-divisible-by x TP.",
        "the HF model directory", "the checkpoint directory to write", False)
    from_hf.add_argument("--tp", type=_positive, default=1,
                         help="tensor-parallel size of the result (default: 1)")
    from_hf.add_argument("--pp", type=_positive, default=1,
                         help="pipeline-parallel size of the result (default: 1)")
    from_hf.add_argument("--make-vocab-size-divisible-by", type=_positive, default=128,
                         help="Megatron's vocabulary padding unit (default: 128)")
    from_hf.add_argument("--seed", type=int, default=0,
                         help="seed of a newly initialised MLM head (default: 0)")
    reshape = _command(
        sub, "reshape", "our checkpoint -> another TP x PP layout",
        "Rewrite one of our checkpoints at another tensor x pipeline-parallel layout. Model "
        "weights only: the optimizer state is not converted, so continue with alum-pretrain "
        "--init-from (fresh optimizer, LR schedule and step 0).",
        ours, "the checkpoint directory to write", True)
    reshape.add_argument("--tp", type=_positive, required=True, help="new tensor-parallel size")
    reshape.add_argument("--pp", type=_positive, required=True, help="new pipeline-parallel size")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "to-hf":
            from .to_hf import to_hf

            to_hf(args.src, args.dst, tag=args.tag, weights=args.weights, dtype=args.dtype,
                  overwrite=args.overwrite)
        elif args.command == "from-hf":
            from .from_hf import from_hf

            from_hf(args.src, args.dst, tp=args.tp, pp=args.pp, dtype=args.dtype,
                    make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
                    seed=args.seed, overwrite=args.overwrite)
        else:
            from .reshape import reshape

            reshape(args.src, args.dst, tp=args.tp, pp=args.pp, tag=args.tag,
                    weights=args.weights, dtype=args.dtype, overwrite=args.overwrite)
    except ConvertError as err:
        print(f"alum-convert: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
