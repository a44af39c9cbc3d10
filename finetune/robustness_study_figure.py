"""The robustness study's figure: each arm's clean and attacked accuracy, with its spread.

Reads the ``results.json`` that benchmarks/robustness_study.py's report step writes
(``summary[arm][metric]`` = mean, sample std and the per-seed values; metrics ``clean``,
``r1``, ``r2``, ... for the PGD radii in ``radii``, and ``word`` for DeepWordBug). Each arm
is a group of bars, one per metric: the bar is the mean over seeds, the error bar ± one
sample standard deviation, and the dots the seeds themselves. The PNG carries the
plotted numbers (``alum.plotting``).

    python -m alum.finetune.robustness_study_figure results.json results.png
"""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional, Tuple

from alum.plotting import pyplot, results_to_png_main, save_png


def metrics_of(results: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(summary key, label) of each metric the study reports, in its table's order."""
    out = [("clean", "clean")]
    out += [(f"r{i + 1}", f"PGD r={r:g}") for i, r in enumerate(results["radii"])]
    out.append(("word", "DeepWordBug"))
    return out


def plot_study(results_json: str, png: str) -> str:
    """Draws the study in ``results_json`` to ``png``; returns ``png``."""
    with open(results_json) as fh:
        results = json.load(fh)
    summary = results.get("summary") or {}
    arms = [arm for arm, s in summary.items() if s.get("n")]
    if not arms:
        raise ValueError(f"{results_json}: no arm with finished runs in 'summary'")
    metrics = [(k, label) for k, label in metrics_of(results)
               if any(summary[a].get(k, {}).get("mean") is not None for a in arms)]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(arms) * len(metrics) / 3), 4.6))
    width = 0.8 / len(metrics)
    drawn: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for j, (key, label) in enumerate(metrics):
        xs, means, stds = [], [], []
        for i, arm in enumerate(arms):
            s = summary[arm].get(key) or {}
            if s.get("mean") is None:
                continue
            x = i + (j - (len(metrics) - 1) / 2) * width
            xs.append(x)
            means.append(100 * s["mean"])
            stds.append(100 * (s.get("std") or 0.0))
            values = [100 * v for v in s.get("values", [])]
            ax.plot([x] * len(values), values, "k.", markersize=3, zorder=3)
            drawn.setdefault(arm, {})[label] = {"mean": means[-1], "std": stds[-1],
                                                "values": values}
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=label, zorder=2)
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels([f"{a}\n(n={summary[a]['n']})" for a in arms], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Robustness study: mean over seeds, ± sample std, dots = seeds", fontsize=10)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    top = max(m["mean"] + m["std"] for bars in drawn.values() for m in bars.values())
    ax.set_ylim(0, max(100.0, top) * 1.12)  # room for the legend above the bars
    ax.legend(fontsize=8, ncol=len(metrics), loc="upper center")
    data = {"arms": arms, "metrics": [label for _, label in metrics], "bars": drawn}
    return save_png(fig, png, data)


def main(argv: Optional[List[str]] = None) -> int:
    return results_to_png_main(sys.argv[1:] if argv is None else argv, plot_study,
                               "robustness_study_figure", __doc__)


if __name__ == "__main__":
    sys.exit(main())
