"""``alum-pretrain``: MLM pre-training with ALUM under DeepSpeed (docs/pretrain.md).

With no arguments it runs the README's main job on this machine's CPU (a few
minutes): the shipped sample corpus tokenized (WordPiece) and indexed into a
cache directory if not yet, a tiny megatron-core BERT, standard MLM for the first
half of the steps and ALUM (preset relative, alpha = 1) for the second, a
checkpoint, and a closing summary. Every default below is that job's setting.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import warnings
from typing import List, Optional

from alum.cli_args import add_alum_arguments, add_section, alum_config_from_args, section_values

from .config import (OPTION_CHOICES, CheckpointConfig, DataConfig, LoggingConfig, ModelChoice,
                     OptimConfig, PretrainConfig, TrainConfig)

logger = logging.getLogger("alum.pretrain")

# The main job: tiny BERT, 300 steps of batch 16 x 128 tokens, ALUM from step 150.
MAIN_JOB = {
    "train": dict(train_steps=300, micro_batch_size=16, eval_interval=100, log_interval=25,
                  ds_config="zero1", precision="fp32"),
    "optim": dict(lr=1e-3, warmup_steps=30, lr_decay="linear", weight_decay=0.01,
                  clip_grad=1.0),
    "model": dict(dropout=0.1),
    # Applied only to the default size (tiny), where no --hidden-size was given.
    "tiny_hidden_size": 128,
    "alum_start_fraction": 0.5,
}

EXAMPLES = """examples:
  # the main job (sample corpus, tiny BERT, standard then ALUM, ~3 min on 2 CPU cores)
  alum-pretrain
  # your data: preprocessed with alum-preprocess, BERT-base, bf16, ZeRO-2, 8 GPUs
  deepspeed --num_gpus 8 $(python -c "import alum.pretrain.run_pretrain as m; print(m.__file__)") \\
      --data-path data/wiki_bert --tokenizer tok/bert-wp --seq-length 512 \\
      --model-size base --train-steps 100000 --micro-batch-size 32 \\
      --ds-config zero2 --precision bf16 --lr 1e-4 --warmup-steps 10000 --adv-start-step 50000 \\
      --output-dir runs/bert-base-alum
  # continual pre-training of a local HF model with ALUM from the first step
  alum-pretrain --model-kind hf --hf-model ./bert-base-uncased --tokenizer ./bert-base-uncased \\
      --data-path data/wiki_bert --lr 2e-5 --adv-start-step 0
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alum-pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=EXAMPLES)
    choices = OPTION_CHOICES
    add_section(p, DataConfig, "data", choices=choices)
    add_section(p, ModelChoice, "model", defaults=MAIN_JOB["model"], choices=choices)
    add_section(p, OptimConfig, "optimizer and learning rate (None: the DeepSpeed JSON's value)",
                defaults=MAIN_JOB["optim"], choices=choices)
    add_section(p, TrainConfig, "training", defaults=MAIN_JOB["train"], choices=choices)
    add_section(p, CheckpointConfig, "checkpoints and resume", choices=choices)
    add_section(p, LoggingConfig, "logging", choices=choices)
    add_alum_arguments(p, default_preset="relative")
    p.add_argument("--alum-positions", choices=("masked", "all"), default="masked",
                   help="where ALUM's KL is taken: the predicted (masked) positions, as the "
                        "authors' pre-training code, or every non-padding position "
                        "(default: masked)")
    p.add_argument("--alum-order", choices=("auto", "fast", "lean"), default="auto",
                   help="the order of ALUM's passes: fast keeps the clean and perturbed graphs "
                        "alive together (about 2x the activation memory of a standard step); "
                        "lean runs one graph at a time (about 1x, one forward pass more). "
                        "Same gradients. auto: fast, or lean under pipeline parallelism "
                        "(default: auto)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    return p


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """The ``PretrainConfig`` the parsed options describe.

    Without ``--adv-start-step`` the curriculum switches ALUM on at half the steps
    (the main job's standard-then-ALUM schedule). The default size, tiny, gets a
    hidden size of 128 (the main job's model) unless ``--hidden-size`` is given or
    ``--init-from`` brings the architecture.
    """
    train = TrainConfig(**section_values(args, TrainConfig))
    model_values = section_values(args, ModelChoice)
    if model_values["model_size"] == "tiny" and model_values["hidden_size"] is None \
            and model_values["model_kind"] == "megatron" and not args.init_from:
        model_values["hidden_size"] = MAIN_JOB["tiny_hidden_size"]
    forced = {}
    if args.alum and args.adv_start_step is None:
        forced["start_step"] = int(train.train_steps * MAIN_JOB["alum_start_fraction"])
    alum = alum_config_from_args(args, **forced)
    return PretrainConfig(
        data=DataConfig(**section_values(args, DataConfig)),
        model=ModelChoice(**model_values),
        optim=OptimConfig(**section_values(args, OptimConfig)),
        train=train,
        checkpoint=CheckpointConfig(**section_values(args, CheckpointConfig)),
        logging=LoggingConfig(**section_values(args, LoggingConfig)),
        alum=alum, alum_positions=args.alum_positions, alum_order=args.alum_order)


def closing_summary(summary, cfg: PretrainConfig) -> str:
    """The lines printed when a run ends."""
    lines = ["", "=" * 72, "alum-pretrain summary", "=" * 72]
    if summary.end_step == summary.start_step:
        lines.append(f"nothing to train: the checkpoint is at step {summary.end_step} of "
                     f"{cfg.train.train_steps} (use another --output-dir, or --resume never "
                     f"with an empty one, to start over)")
    else:
        lines.append(f"steps {summary.start_step} -> {summary.end_step} of "
                     f"{cfg.train.train_steps} in {summary.wall_s:.1f} s")
    if summary.losses:
        # This invocation's own steps: after a resume, "first" means the first steps
        # trained here (from start_step), not the original run's step 1.
        k = max(1, min(10, len(summary.losses) // 10))
        head = sum(summary.losses[:k]) / k
        tail = sum(summary.losses[-k:]) / k
        trend = "down" if tail < head else "NOT down"
        first = f"first {k} steps" if summary.start_step == 0 else \
            f"first {k} steps after resuming at step {summary.start_step}"
        lines.append(f"train MLM loss: {head:.3f} ({first}) -> {tail:.3f} "
                     f"(last {k}) : {trend}")
    for e in summary.evals[:1] + summary.evals[-1:] if len(summary.evals) > 1 \
            else summary.evals:
        lines.append(f"validation at step {e['step']}: loss {e['loss']:.3f}, "
                     f"MLM accuracy {e['accuracy']:.3f}")
    if summary.tokens_per_s:
        tf = f", {summary.tflops_per_device:.3f} TFLOP/s per device" \
            if summary.tflops_per_device else ""
        mfu = f", MFU {100 * summary.mfu:.1f}%" if summary.mfu else ""
        lines.append(f"throughput: {summary.tokens_per_s:,.0f} tokens/s{tf}{mfu}")
    if cfg.alum is not None:
        lines.append(f"ALUM: on from step {cfg.alum.start_step} (alpha {cfg.alum.alpha}, "
                     f"{cfg.alum.update}, eps {cfg.alum.epsilon}, {cfg.alum.epsilon_scale}, "
                     f"direction {cfg.alum.direction}, fraction {cfg.alum.fraction:g}), "
                     f"{summary.alum_steps} ALUM steps in this run, "
                     f"{summary.adv_skipped} adversarial terms skipped (NaN/Inf)")
        if summary.adv_means:
            m = summary.adv_means
            lines.append("ALUM stats (means): " + ", ".join(
                f"{k} {v:.3g}" for k, v in m.items()))
            if m.get("delta_rel_norm", 1.0) < 1e-3:
                lines.append(f"  note: |delta| is {m['delta_rel_norm']:.1e} of each token's "
                             f"embedding norm: at these settings the term is a smoothness "
                             f"penalty at a tiny radius (flips include dropout's, which differs "
                             f"between the two passes); --alum-preset relative uses 10%")
        f = summary.flip_check
        if f:
            lines.append(f"ALUM flips {100 * f['alum']:.1f}% of the masked-token predictions; "
                         f"dropout alone flips {100 * f['dropout']:.1f}% (the same two passes "
                         f"with delta = 0; two whole clean passes: "
                         f"{100 * f['two_clean_passes']:.1f}%) ({f['positions']} validation "
                         f"positions, final weights)")
    else:
        lines.append("ALUM: off (--no-alum)")
    if summary.optimizer_steps_skipped:
        lines.append(f"optimizer steps skipped by fp16 loss scaling: "
                     f"{summary.optimizer_steps_skipped}")
    if summary.export_hf:
        lines.append(f"Hugging Face export: {summary.export_hf}")
    if summary.checkpoint:
        lines.append(f"checkpoint: {os.path.join(cfg.checkpoint.output_dir, 'checkpoints', summary.checkpoint)}")
    lines.append(f"run directory: {cfg.checkpoint.output_dir} (config.json, summary.json)")
    return "\n".join(lines)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex.*")
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    for name in ("DeepSpeed", "deepspeed", "megatron"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    try:
        cfg = config_from_args(args)
    except ValueError as err:
        print(f"alum-pretrain: error: {err}", file=sys.stderr)
        return 2
    from alum.output_errors import OutputError, check_writable_dir

    try:
        check_writable_dir(cfg.checkpoint.output_dir, "run directory")
    except OutputError as err:
        print(f"alum-pretrain: error: {err}", file=sys.stderr)
        return 1
    from .trainer import Trainer

    try:
        trainer = Trainer(cfg)
    except ValueError as err:
        print(f"alum-pretrain: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"alum-pretrain: error: {one_line(err)}", file=sys.stderr)
        return 1
    try:
        summary = trainer.train()
    except (OutputError, ValueError) as err:
        print(f"alum-pretrain: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"alum-pretrain: error: {one_line(err)}", file=sys.stderr)
        return 1
    if trainer.rank == 0:
        print(closing_summary(summary, cfg), flush=True)
    return 0


def one_line(err: OSError) -> str:
    """An OSError as one line naming the path and the cause (a full disk said so)."""
    from alum.output_errors import OutputError, describe_output_error

    if isinstance(err, OutputError):
        return str(err)
    path = err.filename or "output"
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return describe_output_error(err, "file", path)
    return f"{path}: {err.strerror or err}"


if __name__ == "__main__":
    sys.exit(main())
