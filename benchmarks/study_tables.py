"""The robustness study's per-arm tables (results.md): each arm's accuracies, each arm
paired with its control by seed, and every run.

A metric is ``(key, label, get)``: ``get(record)`` is an accuracy in [0, 1] or None when
the record has no such measurement. Cells are points (accuracy × 100).
"""
from __future__ import annotations

import statistics
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from study_frontier import spread

Metric = Tuple[str, str, Callable[[Dict], Optional[float]]]


def mean_or_none(values: List[float]) -> Optional[float]:
    return statistics.mean(values) if values else None


def spread_cell(s: Dict, signed: bool = False) -> str:
    """``mean ± std`` of a ``spread`` in points; '–' when it has no values."""
    if s["mean"] is None:
        return "–"
    sign = "+" if signed else ""
    return f"{100 * s['mean']:{sign}.1f} ± {100 * s['std']:.1f}"


def arm_table(recs: Dict[str, Dict[int, Dict]], arms: Sequence[str],
              metrics: Sequence[Metric]) -> Tuple[List[str], Dict[str, Dict]]:
    """(table lines, per-arm summary): each arm with records, its metrics' mean ± std over
    its seeds and its mean training time, also as a ratio to standard's mean."""
    summary: Dict[str, Dict] = {}
    lines = ["| arm | n | " + " | ".join(label for _, label, _ in metrics)
             + " | train s | × standard time |",
             "|---|---|" + "---|" * len(metrics) + "---|---|"]
    std_time = mean_or_none([r["train_seconds"] for r in recs.get("standard", {}).values()])
    for arm in arms:
        runs = list(recs[arm].values())
        if not runs:
            continue
        cells, summary[arm] = [], {"n": len(runs)}
        for key, _, get in metrics:
            summary[arm][key] = spread([v for v in map(get, runs) if v is not None])
            cells.append(spread_cell(summary[arm][key]))
        t = mean_or_none([r["train_seconds"] for r in runs])
        summary[arm]["train_seconds"] = t
        ratio = f"{t / std_time:.2f}×" if std_time else "–"
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells)
                     + f" | {t:.0f} | {ratio} |")
    return lines, summary


def paired_rows(runs: Dict[int, Dict], base: Dict[int, Dict], metrics: Sequence[Metric]):
    """(per-metric spreads of ``runs`` minus ``base`` paired by seed, the table row's
    cells after the arm's name, per-seed rows); None when no seed has both."""
    seeds = sorted(set(runs) & set(base))
    if not seeds:
        return None
    spreads, cells = {}, []
    for key, _, get in metrics:
        diffs = [get(runs[s]) - get(base[s]) for s in seeds
                 if get(runs[s]) is not None and get(base[s]) is not None]
        spreads[key] = spread(diffs)
        cells.append(spread_cell(spreads[key], signed=True))
    ratios = [runs[s]["train_seconds"] / base[s]["train_seconds"] for s in seeds]
    spreads["time_ratio"] = spread(ratios)
    row = f"| {len(seeds)} | " + " | ".join(cells) + f" | {statistics.mean(ratios):.2f}× |"
    seed_rows = [f"| {s} | " + " | ".join(
        "–" if get(runs[s]) is None or get(base[s]) is None else
        f"{100 * (get(runs[s]) - get(base[s])):+.1f}" for _, _, get in metrics) + " |"
        for s in seeds]
    return spreads, row, seed_rows


def run_table(recs: Dict[str, Dict[int, Dict]], arms: Sequence[str],
              metrics: Sequence[Metric]) -> List[str]:
    """One row per run: each metric in points and the training time."""
    lines = ["| arm | seed | " + " | ".join(label for _, label, _ in metrics) + " | train s |",
             "|---|---|" + "---|" * len(metrics) + "---|"]
    for arm in arms:
        for seed, r in sorted(recs[arm].items()):
            lines.append(f"| {arm} | {seed} | " + " | ".join(
                "–" if get(r) is None else f"{100 * get(r):.1f}" for _, _, get in metrics)
                + f" | {r['train_seconds']:.0f} |")
    return lines
