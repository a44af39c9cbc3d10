"""What the pre-training loop reports: the run summary and the logging window between two
log lines (the per-step metrics come from the step strategies, alum.pretrain.mlm_step and
alum.pretrain.pipeline_loop)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch.distributed as dist


def world() -> tuple:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1



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
