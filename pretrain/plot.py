"""``alum-plot``: the loss and ALUM-statistics curves of an ``alum-pretrain`` run, as a PNG.

Reads the run's own log, the scalars DeepSpeed's monitor wrote at every --log-interval
step (pretrain/metrics_log.py): the TensorBoard events under RUN_DIR/tensorboard, or,
when the run wrote none, the CSV files under RUN_DIR/csv. Draws six panels: MLM loss and
accuracy (train, and validation where evaluated), the learning rate, ALUM's adversarial
loss, the perturbation's size δ/‖e‖ and the ascent's cos(δ, g) with the flip rate; the
steps where ALUM's term was on are shaded. The PNG carries the plotted numbers
(``alum.plotting``).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Dict, List, Optional, Tuple

from alum.plotting import pyplot, save_png

from .metrics_log import CSV_DIR, TENSORBOARD_DIR

PROG = "alum-plot"

Series = Dict[str, List[Tuple[int, float]]]
"""scalar name (``train/loss``) -> (step, value) pairs in step order."""

PANELS: List[Tuple[str, List[str], bool]] = [
    ("MLM loss", ["train/loss", "valid/loss"], False),
    ("MLM accuracy", ["train/accuracy", "valid/accuracy"], False),
    ("learning rate", ["train/lr"], False),
    ("ALUM adversarial loss", ["train/adv_loss"], False),
    ("δ/‖e‖ (perturbation size)", ["train/delta_rel_norm"], True),
    ("cos(δ, g) and flip rate", ["train/cos_delta_grad", "train/flip_rate"], False),
]
"""(title, scalars drawn, log scale) of each panel, in reading order."""


def _last_per_step(pairs) -> List[Tuple[int, float]]:
    """A resumed run logs some steps twice (after the checkpoint it resumed from):
    the later value wins."""
    by_step: Dict[int, float] = {}
    for step, value in pairs:
        by_step[int(step)] = float(value)
    return sorted(by_step.items())


def read_tensorboard(directory: str) -> Series:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(directory, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: _last_per_step((e.step, e.value) for e in acc.Scalars(tag))
            for tag in acc.Tags().get("scalars", [])}


def read_csv_dir(directory: str) -> Series:
    """DeepSpeed's CSV monitor: ``train_loss.csv`` with rows ``step,loss``."""
    out: Series = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".csv"):
            continue
        prefix, _, rest = name[:-4].partition("_")
        with open(os.path.join(directory, name), newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and r[0] != "step"]
        out[f"{prefix}/{rest}"] = _last_per_step((int(r[0]), float(r[1])) for r in rows)
    return out


def to_optimizer_steps(series: Series) -> Series:
    """The monitor's x axis is samples trained on (pretrain/metrics_log.py); ``train/step``
    gives the samples per optimizer step (the global batch, fixed for a run), by which
    every series is put on optimizer steps. The ``train/step`` series is dropped."""
    pairs = series.get("train/step")
    if not pairs:
        return series
    samples, step = pairs[-1]
    per_step = samples / step
    return {name: [(int(round(x / per_step)), v) for x, v in values]
            for name, values in series.items()
            if name != "train/step" and not name.startswith("Train/Samples/")}


def read_run(run_dir: str) -> Series:
    """The scalars of the run in ``run_dir``; ``ValueError`` naming the folder if none."""
    if not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir}: no such run directory")
    tb = os.path.join(run_dir, TENSORBOARD_DIR)
    series: Series = {}
    if os.path.isdir(tb):
        series = read_tensorboard(tb)
    if not series.get("train/loss") and os.path.isdir(os.path.join(run_dir, CSV_DIR)):
        series = read_csv_dir(os.path.join(run_dir, CSV_DIR))
    if not series.get("train/loss"):
        raise ValueError(f"{run_dir}: no logged train/loss in {TENSORBOARD_DIR}/ or {CSV_DIR}/ "
                         f"(was it written by alum-pretrain with --tensorboard or --csv on, "
                         f"and has it passed a --log-interval step?)")
    return to_optimizer_steps(series)


def _alum_spans(series: Series) -> List[Tuple[int, int]]:
    """(first, last) logged steps of each stretch with ALUM on."""
    spans, start, prev = [], None, None
    for step, on in series.get("train/alum", []):
        if on and start is None:
            start = prev if prev is not None else step
        if not on and start is not None:
            spans.append((start, prev))
            start = None
        prev = step
    if start is not None:
        spans.append((start, prev))
    return spans


def draw_run(series: Series, title: str = ""):
    """The figure and what it shows: ``{panel title: [scalars drawn]}``, one line each."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharex=True)
    spans = _alum_spans(series)
    shown: Dict[str, List[str]] = {}
    for ax, (panel, names, log) in zip(axes.flat, PANELS):
        drawn = [n for n in names if series.get(n)]
        for name in drawn:
            steps, values = zip(*series[name])
            style = "o-" if name.startswith("valid/") else "-"
            ax.plot(steps, values, style, markersize=4, label=name)
        for a, b in spans:
            ax.axvspan(a, b, color="tab:red", alpha=0.08, lw=0)
        if log and drawn and all(v > 0 for n in drawn for _, v in series[n]):
            ax.set_yscale("log")
        if not drawn:
            ax.text(0.5, 0.5, "not logged (ALUM off?)", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
        ax.set_title(panel, fontsize=10)
        if ax in axes[-1]:
            ax.set_xlabel("optimizer step", fontsize=9)
        ax.grid(alpha=0.3)
        if len(drawn) > 1:
            ax.legend(fontsize=8)
        shown[panel] = drawn
    skipped = sum(v for _, v in series.get("train/adv_skipped", []))
    suptitle = title + ("; shaded: ALUM on" if spans else "")
    if skipped:
        suptitle += f"; {int(skipped)} adversarial terms skipped (NaN/Inf)"
    fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig, shown


def plot_run(run_dir: str, output: Optional[str] = None) -> str:
    """Draws the run in ``run_dir`` to ``output`` (default ``run_dir/curves.png``)."""
    series = read_run(run_dir)
    output = output or os.path.join(run_dir, "curves.png")
    fig, shown = draw_run(series, title=f"alum-pretrain: {os.path.basename(os.path.abspath(run_dir))}")
    data = {"panels": shown, "series": {n: series[n] for names in shown.values() for n in names},
            "alum_spans": _alum_spans(series)}
    return save_png(fig, output, data)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="an alum-pretrain output directory (--output-dir)")
    p.add_argument("--output", "-o", default=None, metavar="FILE.png",
                   help="where to write the PNG (default: RUN_DIR/curves.png)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = plot_run(args.run_dir, args.output)
    except ValueError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(f"{PROG}: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
