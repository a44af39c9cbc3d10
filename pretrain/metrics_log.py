"""Where training metrics go: the console (rank 0) and TensorBoard when it is installed."""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional

logger = logging.getLogger("alum.pretrain")


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class MetricsLog:
    """Writes scalars to TensorBoard (if enabled and installed) and lines to the console.

    Only the main rank writes; others hold a no-op instance.
    """

    def __init__(self, directory: Optional[str], enabled: bool, use_tensorboard: bool):
        self.enabled = enabled
        self.writer = None
        if enabled and use_tensorboard and directory:
            if tensorboard_available():
                from torch.utils.tensorboard import SummaryWriter

                os.makedirs(directory, exist_ok=True)
                self.writer = SummaryWriter(directory)
            else:
                logger.info("tensorboard is not installed: metrics go to the console and "
                            "summary.json only")

    def scalars(self, prefix: str, values: Dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if value is not None:
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def line(self, text: str, progress=None) -> None:
        if not self.enabled:
            return
        if progress is not None:
            progress.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


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
