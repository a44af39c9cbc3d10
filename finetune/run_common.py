"""What every ``alum-finetune`` task path shares: Trainer arguments, saving, summaries."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any, Dict, NoReturn

from alum.atomic_write import atomic_path


def fail(message: str, prog: str = "alum-finetune") -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def add_task_file_arguments(group) -> None:
    """The options that say how to read a task file (format and fields), for every
    command that reads one (``alum-finetune``, ``alum-robustness``)."""
    group.add_argument("--format", dest="fmt", default="auto",
                       choices=("auto", "tsv", "csv", "jsonl", "parquet"),
                       help="file format; auto detects it from the extension (default)")
    group.add_argument("--no-header", action="store_true",
                       help="the TSV/CSV has no header row (e.g. CoLA); fields are then "
                            "0-based column indices")
    group.add_argument("--text-field", default="sentence",
                       help="column/key of the text (default: sentence)")
    group.add_argument("--text-pair-field", default=None,
                       help="column/key of the second text for sentence-pair tasks (e.g. "
                            "hypothesis, sentence2)")
    group.add_argument("--label-field", default="label",
                       help="column/key of the label (default: label)")
    group.add_argument("--ignore-label", action="append", default=[], metavar="VALUE",
                       help="drop rows with this label (repeatable; e.g. MNLI's '-')")
    group.add_argument("--encoding-errors", default="strict", choices=("strict", "replace"),
                       help="how to treat invalid UTF-8 in the data files: fail naming the "
                            "file (strict, default) or replace the bad bytes")


def training_arguments(args: argparse.Namespace, work_dir: str, evaluate: bool):
    """``TrainingArguments`` from the shared training options.

    ``evaluate``: the Trainer itself evaluates after each epoch (classification and
    multiple choice); QA evaluates outside it, since its metric needs postprocessing.
    """
    import torch
    from transformers import TrainingArguments

    extra: Dict[str, Any] = {}
    if getattr(args, "deepspeed", None):
        if not os.path.isfile(args.deepspeed):
            fail(f"--deepspeed {args.deepspeed!r}: no such DeepSpeed config file")
        from alum.parallel import skip_shm_comm_build

        # On CPU, DeepSpeed would otherwise compile a shared-memory comm op (40-85 s)
        # when the Trainer initialises it; gloo needs none.
        skip_shm_comm_build()
        extra["deepspeed"] = args.deepspeed
    use_cpu = args.cpu or cpu_processes()
    return TrainingArguments(
        output_dir=work_dir, num_train_epochs=args.epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr,
        weight_decay=args.weight_decay,
        # A float in [0, 1) is a fraction of the total steps in transformers 5.
        warmup_steps=float(args.warmup_ratio) if args.warmup_ratio > 0 else 0,
        max_grad_norm=args.max_grad_norm, seed=args.seed, data_seed=args.seed,
        bf16=args.bf16, fp16=args.fp16, use_cpu=use_cpu, logging_steps=args.logging_steps,
        logging_strategy="steps", report_to=args.report_to,
        eval_strategy="epoch" if evaluate else "no",
        save_strategy="epoch" if args.save_checkpoints else "no",
        disable_tqdm=args.no_progress, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available() and not use_cpu,
        remove_unused_columns=False, **extra)


def cpu_processes() -> bool:
    """True for several processes (``torchrun`` or the ``deepspeed`` launcher) on a machine
    with no accelerator: the Trainer must then be told it runs on the CPU, or accelerate
    starts no data-parallel group (each process trains alone on the whole data set, or
    DeepSpeed's batch check fails on a world size of 1)."""
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, XPU, MPS, ...
    has_accelerator = (accelerator.is_available() if accelerator is not None
                       else torch.cuda.is_available())
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator


def train_resumable(trainer, args: argparse.Namespace, work_dir: str) -> None:
    """``trainer.train()`` with verified checkpoints (alum.finetune.checkpoint_guard):
    every save gets a checksummed marker, and ``--resume`` starts from the newest intact
    checkpoint or refuses, in one line, when all are damaged."""
    from .checkpoint_guard import DamagedCheckpointsError, MarkCompleteCheckpoints, resume_point

    trainer.add_callback(MarkCompleteCheckpoints())
    point = None
    if args.resume:
        try:
            point = resume_point(work_dir, getattr(args, "resume_damaged", "refuse"),
                                 move=trainer.is_world_process_zero())
        except DamagedCheckpointsError as err:
            fail(str(err))
    trainer.train(resume_from_checkpoint=point)


def training_summary(trainer) -> Dict[str, Any]:
    """The run's layout (processes, DeepSpeed or not), ALUM step counts (each process
    counts its own micro-batches; ``adv_skipped`` is over all processes) and the mean of
    each logged ``adv_*`` statistic."""
    logs = [h for h in trainer.state.log_history if "adv_cos_delta_grad" in h]
    keys = sorted({k for h in logs for k in h if k.startswith("adv_")} - {"adv_skipped"})
    means = {k: sum(h[k] for h in logs if k in h) / max(1, sum(k in h for h in logs))
             for k in keys}
    # The last log's count is summed over the processes (AlumTrainer.log).
    skipped = next((h["adv_skipped"] for h in reversed(trainer.state.log_history)
                    if "adv_skipped" in h), trainer.adv_skipped)
    return {"processes": trainer.args.world_size,
            "deepspeed": bool(getattr(trainer, "is_deepspeed_enabled", False)),
            "adv_steps": trainer.adv_steps, "adv_skipped": skipped,
            "adv_stats_mean": means}


def save_atomically(trainer, tokenizer, output: str, summary: dict, overwrite: bool) -> None:
    """Writes the model directory under a temporary name, then renames it into place.

    Every rank calls ``save_model`` (its gathers are collective, and under ZeRO-3
    without a 16-bit gather every rank writes its shard), so the ranks first share one
    staging directory, ``<output>.partial``. Rank 0 then moves it into
    ``alum.atomic_write.atomic_path``, completes it (tokenizer, summary) and lets that
    replace ``output`` in one step; an error on the way leaves ``output`` as it was.
    """
    partial = output.rstrip("/") + ".partial"
    if trainer.is_world_process_zero():  # one rank clears a stale one, before any writes
        shutil.rmtree(partial, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(partial)
    trainer.accelerator.wait_for_everyone()  # every rank's files are in before the move
    if trainer.is_world_process_zero():
        if os.path.lexists(output) and not overwrite:
            raise FileExistsError(f"{output} appeared during the run; the model is in "
                                  f"{partial} (pass --overwrite to replace {output})")
        with atomic_path(output) as tmp:
            os.replace(partial, tmp)
            tokenizer.save_pretrained(tmp)
            with open(os.path.join(tmp, "alum_finetune.json"), "w") as fh:
                json.dump(summary, fh, indent=2, default=str)
