"""Per-step metrics of the pre-training loop: the run summary, the logging window, the
data-parallel sums they are built from and the engine's per-step readings (gradient
norm, fp16 loss scale), shared by the PP=1 and pipeline steps."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

ADV_KEYS = ("adv_loss", "delta_rel_norm", "cos_delta_grad", "grad_share", "flip_rate")


def world() -> tuple:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def data_parallel_group():
    from megatron.core import parallel_state as ps

    return ps.get_data_parallel_group()


def all_reduce_sum(values: List[float]) -> List[float]:
    """Sums over the data-parallel group (TP ranks of a group hold the same values)."""
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, group=data_parallel_group())
    return t.tolist()


def grad_norm(engine) -> Optional[float]:
    value = engine.get_global_grad_norm()
    if value is None:
        return None
    return float(value.item() if torch.is_tensor(value) else value)


def current_loss_scale(engine) -> float:
    """DeepSpeed's dynamic fp16 loss scale (1 when not training in fp16)."""
    if not engine.fp16_enabled():
        return 1.0
    opt = engine.optimizer
    for holder in (opt, getattr(opt, "loss_scaler", None)):
        for name in ("cur_scale", "loss_scale"):
            value = getattr(holder, name, None) if holder is not None else None
            if isinstance(value, (int, float)) or torch.is_tensor(value):
                return float(value)
    return 1.0


class AlumTotals:
    """Sums and counts of ALUM's per-micro-batch statistics (``ADV_KEYS``) and the number of
    skipped terms: what a step strategy adds up and reduces over its ranks (``vector``),
    then turns into the step's metrics (``means``)."""

    def __init__(self) -> None:
        self.sums = dict.fromkeys(ADV_KEYS, 0.0)
        self.counts = dict.fromkeys(ADV_KEYS, 0.0)
        self.skipped = 0.0

    def add(self, key: str, value: Optional[Any]) -> None:
        """One micro-batch's value of ``key`` (None: not measured, not counted)."""
        if value is not None:
            self.sums[key] += float(value)
            self.counts[key] += 1

    def vector(self) -> List[float]:
        return [self.sums[k] for k in ADV_KEYS] + [self.counts[k] for k in ADV_KEYS] \
            + [self.skipped]

    @staticmethod
    def means(vector: List[float]) -> Dict[str, Optional[float]]:
        """The metrics from a (reduced) ``vector``: each key's mean (None when nothing was
        counted) and ``adv_skipped``."""
        n = len(ADV_KEYS)
        out: Dict[str, Optional[float]] = {
            k: vector[i] / vector[n + i] if vector[n + i] else None
            for i, k in enumerate(ADV_KEYS)}
        out["adv_skipped"] = vector[2 * n]
        return out


@dataclass
class TrainSummary:
    """What a run did (also written to ``output_dir/summary.json``)."""

    start_step: int
    end_step: int
    losses: List[float] = field(default_factory=list)
    """Mean clean MLM loss of each optimizer step of this invocation."""
    first_loss: Optional[float] = None
    """The run's first logged loss (from the checkpoint when resumed)."""
    last_loss: Optional[float] = None
    evals: List[Dict[str, float]] = field(default_factory=list)
    tokens_per_s: Optional[float] = None
    tflops_per_device: Optional[float] = None
    mfu: Optional[float] = None
    alum_steps: int = 0
    """Optimizer steps of this invocation with ALUM's term on."""
    adv_skipped: int = 0
    """Micro-batches whose adversarial term was skipped (NaN/Inf), whole run."""
    adv_means: Dict[str, float] = field(default_factory=dict)
    """Mean ALUM statistics over this invocation's ALUM micro-batches."""
    optimizer_steps_skipped: int = 0
    """Optimizer steps DeepSpeed skipped (fp16 overflow), whole run."""
    checkpoint: Optional[str] = None
    export_hf: Optional[str] = None
    """The Hugging Face directory written at the end (``CheckpointConfig.export_hf``)."""
    flip_check: Optional[Dict[str, float]] = None
    """ALUM runs: the share of predicted tokens ALUM's perturbed pass flips and the share
    dropout alone flips between two clean passes, on the validation batches at the end
    (alum.pretrain.flip_check)."""
    wall_s: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


class Window:
    """Running sums of per-step metrics between two log lines."""

    def __init__(self) -> None:
        self.steps = 0
        self.seconds = 0.0
        self.tokens = 0.0
        self.flops = 0.0
        self.sums: Dict[str, float] = {}
        self.counts: Dict[str, int] = {}

    def add(self, stats: Dict[str, Any], seconds: float, tokens: float, flops: float) -> None:
        self.steps += 1
        self.seconds += seconds
        self.tokens += tokens
        self.flops += flops
        for k, v in stats.items():
            if v is None:
                continue
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1

    def merge(self, other: "Window") -> None:
        self.steps += other.steps
        self.seconds += other.seconds
        self.tokens += other.tokens
        self.flops += other.flops

    def means(self) -> Dict[str, Optional[float]]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums if k != "adv_skipped"}
        out["adv_skipped"] = self.sums.get("adv_skipped", 0.0)
        return out
