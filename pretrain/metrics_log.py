"""Where training metrics go: DeepSpeed's monitor (TensorBoard, Weights & Biases, CSV) and
the console.

The writers are DeepSpeed's own: ``deepspeed.initialize`` builds a
``deepspeed.monitor.monitor.MonitorMaster`` (``engine.monitor``) from the ``tensorboard``,
``wandb`` and ``csv_monitor`` sections of the DeepSpeed config, and :class:`MetricsLog`
hands it our scalars as ``(name, value, step)`` events, the format its writers share. So
every writer gets the same scalars at the same steps, and a section written in a DeepSpeed
JSON (a W&B team, another folder) works as DeepSpeed documents it.
:func:`add_monitor_sections` fills in the sections the JSON lacks from ``LoggingConfig``
(TensorBoard on by default) and points their files into the run directory.

The x axis of every event is the number of samples trained on, DeepSpeed's convention
(its own ``Train/Samples/lr`` event, written at each optimizer step when a monitor is on):
W&B keeps one increasing step per run for all events, and would drop events logged at an
optimizer step, which is always behind the sample count. ``train/step`` maps one to the
other. The scalars, at every ``--log-interval`` step (names as TensorBoard and W&B show
them; the CSV monitor writes one ``csv/<name with _ for />.csv`` file each):

    train/loss, train/accuracy           clean MLM loss and accuracy (window means)
    train/adv_loss, train/delta_rel_norm, train/cos_delta_grad, train/grad_share,
    train/flip_rate, train/adv_skipped   the ALUM statistics (docs/alum_options.md)
    train/alum                           1 while ALUM's term is on
    train/step                           the optimizer step
    train/lr, train/grad_norm            learning rate, gradient norm
    train/tokens_per_s, train/tflops, train/mfu
    train/memory_gib, train/peak_memory_gib
    valid/loss, valid/accuracy           at every --eval-interval and at the end
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional

TENSORBOARD_DIR = "tensorboard"
CSV_DIR = "csv"


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def add_monitor_sections(ds: Dict[str, Any], logging_cfg, output_dir: str) -> Dict[str, Any]:
    """``ds`` with DeepSpeed monitor sections for the writers ``logging_cfg`` asks for.

    A section the DeepSpeed JSON already has is kept as written (an ``enabled`` false
    there turns that writer off); only an empty ``output_path`` is pointed into
    ``output_dir``. Raises ``ValueError`` naming the field when a writer's library is
    missing, before DeepSpeed would fail deeper down.
    """
    ds = copy.deepcopy(ds)
    wanted = {
        "tensorboard": {"enabled": bool(logging_cfg.tensorboard), "output_path": output_dir,
                        "job_name": TENSORBOARD_DIR},
        "csv_monitor": {"enabled": bool(logging_cfg.csv), "output_path": output_dir,
                        "job_name": CSV_DIR},
        "wandb": {"enabled": bool(logging_cfg.wandb), "project": logging_cfg.wandb_project,
                  "group": logging_cfg.wandb_group, "team": logging_cfg.wandb_team},
    }
    for name, section in wanted.items():
        if name not in ds:
            ds[name] = section
        elif "output_path" in section and not ds[name].get("output_path"):
            # DeepSpeed would write under the current directory (os.path.join("", job)).
            ds[name] = dict(ds[name], output_path=output_dir)
    for name, module, field in (("tensorboard", "tensorboard", "tensorboard"),
                                ("wandb", "wandb", "wandb")):
        if ds[name].get("enabled") and not _installed(module):
            raise ValueError(f"LoggingConfig.{field}: the {module} package is not installed "
                             f"(pip install {module}, or --{field} false)")
    if ds["wandb"].get("enabled"):
        # W&B keeps its run files (and, offline, the whole run) under WANDB_DIR, else the
        # current directory: the run directory is where people look for a run's files.
        os.environ.setdefault("WANDB_DIR", output_dir)
        os.makedirs(os.environ["WANDB_DIR"], exist_ok=True)
    return ds


def memory_scalars() -> Dict[str, float]:
    """Memory in GiB now and at its peak since the previous call, from DeepSpeed's
    accelerator: on GPUs torch's allocated bytes, on the CPU the process's resident
    set size (which DeepSpeed's CPU accelerator samples when asked)."""
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    now = float(acc.memory_allocated())
    peak = max(float(acc.max_memory_allocated()), now)
    acc.reset_peak_memory_stats()
    return {"memory_gib": now / 2 ** 30, "peak_memory_gib": peak / 2 ** 30}


class MetricsLog:
    """Writes scalars through DeepSpeed's monitor and lines to the console.

    ``monitor`` is ``engine.monitor`` (None: console only). Only the main rank writes;
    DeepSpeed's writers exist on rank 0 only, and other ranks hold a disabled log.
    """

    def __init__(self, monitor, enabled: bool):
        self.enabled = enabled
        self.monitor = monitor if enabled and monitor is not None and monitor.enabled \
            else None

    def scalars(self, prefix: str, values: Dict[str, Optional[float]], step: int) -> None:
        if self.monitor is None:
            return
        events = [(f"{prefix}/{key}", float(value), step) for key, value in values.items()
                  if value is not None]
        self.monitor.write_events(events)

    def line(self, text: str, progress=None) -> None:
        if not self.enabled:
            return
        if progress is not None:
            progress.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        """Flushes and closes the writers (TensorBoard's file, the W&B run)."""
        if self.monitor is None:
            return
        tb = getattr(self.monitor, "tb_monitor", None)
        if tb is not None and tb.summary_writer is not None:
            tb.summary_writer.close()
        if getattr(self.monitor, "wandb_monitor", None) is not None:
            import wandb

            wandb.finish()
        self.monitor = None


def format_metrics(step: int, total: int, values: Dict[str, Optional[float]]) -> str:
    """One console line: ``step 120/400 | loss 5.123 | lr 4.0e-04 | ...``."""
    parts = [f"step {step}/{total}"]
    for key, value in values.items():
        if value is None:
            continue
        if key in ("lr",) or (abs(value) < 1e-2 and value != 0):
            parts.append(f"{key} {value:.2e}")
        elif key.endswith("/s") or key == "tokens_per_s":
            parts.append(f"{key} {value:,.0f}")
        else:
            parts.append(f"{key} {value:.4g}")
    return " | ".join(parts)
